"""Flow definitions as files: load one from YAML or JSON, dump one to either, round-trip exact.

YAML is read with YAML 1.2 scalar rules, not PyYAML's YAML 1.1 defaults: only `true`/`false` are
booleans (a condition's `yes:`/`no:` keys stay strings), `10:00` is a string rather than the
sexagesimal 600, and date-times stay strings. Errors name the file, the line when it can be found,
the node id and the path inside the definition, for every problem `definition.parse_flow` reports.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

from winback.flows import definition
from winback.kernel.errors import InvalidInput

Format = Literal["yaml", "json"]
EXTENSIONS: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
MAX_FILE_BYTES = 2_000_000  # a flow of 500 nodes with long copy stays far below this


class Loader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 core-schema scalars (see the module docstring)."""


_REPLACED_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float", "timestamp")}
Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))
Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)


def read_yaml(text: str) -> Any:
    """YAML text as plain data, with the scalar rules of `Loader`."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader


# --- loading ------------------------------------------------------------------------------------


def load_flow_file(path: str | Path) -> definition.FlowDefinition:
    """The flow defined in a `.yaml`/`.yml` or `.json` file; InvalidInput naming the file otherwise."""
    path = Path(path)
    file_format = EXTENSIONS.get(path.suffix.lower())
    if file_format is None:
        raise InvalidInput(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            f"use one of {', '.join(EXTENSIONS)}",
            file=str(path),
        )
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path}: larger than {MAX_FILE_BYTES} bytes", file=str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot be read: {exc}", file=str(path)) from None
    return load_flow_text(text, file_format, source=str(path))


def load_flow_text(text: str, file_format: Format, source: str = "<text>") -> definition.FlowDefinition:
    """The flow defined in YAML or JSON text; errors are prefixed with `source`."""
    if file_format == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"{source}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})",
                file=source,
                line=exc.lineno,
            ) from None
    else:
        try:
            data = read_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            where = f"{source}:{line}" if line else source
            raise InvalidInput(f"{where}: not valid YAML: {problem}", file=source, line=line) from None
    if not isinstance(data, dict):
        raise InvalidInput(
            f"{source}: the file must hold one flow definition (a mapping with 'trigger', 'start' and "
            f"'nodes'), not {type(data).__name__}",
            file=source,
        )
    try:
        return definition.parse_flow(data)
    except InvalidInput as exc:
        raise _located(exc, data, text, source) from None


def _located(error: InvalidInput, data: dict[str, Any], text: str, source: str) -> InvalidInput:
    """parse_flow's error restated for a file: file, line, node id and a readable path per problem."""
    lines = _line_finder(text)
    problems = []
    for problem in error.details.get("problems", []):
        node_id = problem.get("node_id")
        parts = _clean_path(problem["path"], data) if problem.get("path") else None
        if parts is not None:
            line = lines(parts)
        elif node_id is not None:
            line = lines(_node_path(data, node_id))
        else:
            line = None
        problems.append(
            {
                "node_id": node_id,
                "path": _display(parts) if parts is not None else None,
                "line": line,
                "message": problem["message"],
            }
        )
    if not problems:  # parse_flow always lists its problems; keep its message if it ever does not
        return InvalidInput(f"{source}: {error.message}", file=source)
    first = problems[0]
    where = f"{source}:{first['line']}" if first["line"] else source
    subject = []
    if first["node_id"] is not None:
        subject.append(f"node {first['node_id']!r}")
    if first["path"] is not None:
        subject.append(f"({first['path']})" if subject else first["path"])
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    about = " ".join(subject) or "the flow"
    return InvalidInput(
        f"{where}: invalid flow at {about}: {first['message']}{more}",
        file=source,
        field=first["path"],
        problems=problems,
    )


def _clean_path(dotted: str, data: Any) -> list[str | int]:
    """parse_flow's dotted path with pydantic's union tags dropped, following the submitted data:
    `nodes.5.wait_for_event.timeout` → `["nodes", 5, "timeout"]`."""
    cleaned: list[str | int] = []
    current: Any = data
    tag_skipped = False  # pydantic names the tag once per tagged mapping, right on entering it
    for part in dotted.split("."):
        if isinstance(current, list) and part.isdigit():
            index = int(part)
            cleaned.append(index)
            current = current[index] if index < len(current) else None
            tag_skipped = False
        elif isinstance(current, dict) and not tag_skipped and part == current.get("type"):
            tag_skipped = True
        else:
            cleaned.append(part)
            current = current.get(part) if isinstance(current, dict) else None
            tag_skipped = False
    return cleaned


def _display(parts: list[str | int]) -> str:
    """`["nodes", 5, "timeout"]` → `nodes[5].timeout`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(root)"


def _node_path(data: dict[str, Any], node_id: str) -> list[str | int]:
    nodes = data.get("nodes")
    if isinstance(nodes, list):
        for index, node in enumerate(nodes):
            if isinstance(node, dict) and node.get("id") == node_id:
                return ["nodes", index]
    return []


def _line_finder(text: str) -> Any:
    """A function from a path to the 1-based line of the deepest part of it found in the text
    (JSON is YAML for this purpose); None when the text cannot be composed."""
    try:
        root = yaml.compose(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except yaml.YAMLError:
        root = None

    def find(parts: list[str | int]) -> int | None:
        if root is None:
            return None
        node = root
        for part in parts:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node = child
        line: int = node.start_mark.line + 1
        return line

    return find


# --- dumping ------------------------------------------------------------------------------------


def to_data(flow: definition.FlowDefinition) -> dict[str, Any]:
    """Plain data for a file: defaults left out (the schema version kept), numbers as numbers."""
    data = flow.model_dump(mode="python", exclude_defaults=True)
    plain: dict[str, Any] = {"schema_version": flow.schema_version, **_plain(data)}
    return plain


def dump_flow(flow: definition.FlowDefinition, file_format: Format = "yaml") -> str:
    """The flow as YAML or JSON text; `load_flow_text(dump_flow(f, x), x) == f`."""
    data = to_data(flow)
    if file_format == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if file_format == "yaml":
        text: str = yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000
        )
        return text
    raise InvalidInput(f"unknown flow file format {file_format!r}; use 'yaml' or 'json'", field="format")


class _Dumper(yaml.SafeDumper):
    """Multi-line copy as literal blocks; long lines left whole (never folded inside `{{ … }}`)."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_text)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, time):
        return value.isoformat(timespec="minutes" if not value.second and not value.microsecond else "auto")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
