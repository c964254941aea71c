"""Flow files: YAML and JSON load and dump round-trip exactly; errors name the file, line, node and path."""

from __future__ import annotations

import json
from datetime import time
from pathlib import Path

import pytest

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.flows import definition as d
from winback.flows import files, library
from winback.kernel.errors import InvalidInput

FLOW_YAML = """\
# the abandoned-cart flow, trimmed
trigger: {type: event, event: Checkout Abandoned}
entry:
  reentry: {mode: every_time}
  one_run_per: checkout
exit_when:
  - {type: event_since_entry, event: Order Completed}
start: high-value
nodes:
  - id: high-value
    type: condition
    trigger:
      - {property: value, op: gt, value: 200}
    yes: sms
    no: later
  - id: later
    type: delay
    until_time: 10:00
    weekdays: [sat, sun]
    next: sms
  - id: sms
    type: action
    action: {type: send_sms, body: "{{ customer.first_name }}, your cart: {{ checkout.recovery_url }}"}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        files.load_flow_file(path)
    return caught.value


def test_yaml_reads_yes_no_keys_and_times_as_written(tmp_path: Path) -> None:
    flow = files.load_flow_file(_write(tmp_path, "cart.yaml", FLOW_YAML))
    condition, delay = flow.nodes[0], flow.nodes[1]
    assert isinstance(condition, d.ConditionNode) and (condition.yes, condition.no) == ("sms", "later")
    assert isinstance(delay, d.DelayNode) and delay.until_time == time(10, 0)


@pytest.mark.parametrize("file_format", ["yaml", "json"])
def test_dump_and_load_round_trip_exactly(tmp_path: Path, file_format: files.Format) -> None:
    given = d.parse_flow(ABANDONED_CART)
    text = files.dump_flow(given, file_format)
    path = _write(tmp_path, f"flow.{file_format}", text)
    loaded = files.load_flow_file(path)
    assert loaded == given
    assert files.dump_flow(loaded, file_format) == text  # stable: a second trip changes no byte


@pytest.mark.parametrize("name", [info.name for info in library.templates()])
def test_every_library_flow_round_trips_through_both_formats(name: str) -> None:
    required = {"segment_id": 1, "list_id": 1, "product_id": "p1"}
    info = library.get(name)
    flow = library.render(name, **{p.name: required[p.name] for p in info.parameters if p.required})
    for file_format in ("yaml", "json"):
        text = files.dump_flow(flow, file_format)
        assert files.load_flow_text(text, file_format) == flow
        assert files.dump_flow(files.load_flow_text(text, file_format), file_format) == text


def test_yaml_dump_is_readable_numbers_times_and_multi_line_copy() -> None:
    flow = files.load_flow_text(FLOW_YAML, "yaml")
    text = files.dump_flow(flow, "yaml")
    assert "until_time: '10:00'\n" in text  # quoted, so YAML 1.1 tools do not read 600
    assert "'yes': sms\n" in text
    assert "value: 200\n" in text
    assert "reentry:\n    mode: every_time\n" in text
    assert "priority" not in text  # defaults are left out
    email = files.dump_flow(library.render("welcome-series", list_id=3), "yaml")
    assert "    text: |\n      Hi {{ customer.first_name }},\n\n" in email


def test_json_dump_keeps_decimals_exact() -> None:
    flow = d.parse_flow({
        "trigger": {"type": "event", "event": "Signed Up"}, "start": "ab",
        "nodes": [
            {"id": "ab", "type": "random_split", "branches": [{"percent": "33.33", "next": "a"},
                                                              {"percent": "66.67", "next": "b"}]},
            {"id": "a", "type": "exit"}, {"id": "b", "type": "exit"},
        ],
    })  # fmt: skip
    data = json.loads(files.dump_flow(flow, "json"))
    assert [branch["percent"] for branch in data["nodes"][0]["branches"]] == [33.33, 66.67]
    assert files.load_flow_text(files.dump_flow(flow, "json"), "json") == flow


# --- errors -------------------------------------------------------------------------------------


def test_a_schema_error_names_the_file_line_node_and_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "cart.yaml", FLOW_YAML.replace("    until_time: 10:00\n", ""))
    error = _error(path)
    assert error.message == (
        f"{path}:16: invalid flow at node 'later' (nodes[1]): "
        "Value error, a delay takes exactly one of 'duration', 'until_time', 'until_property' or 'supply'"
    )
    assert error.details["file"] == str(path)
    assert error.details["problems"][0]["node_id"] == "later"


def test_a_bad_field_inside_an_action_points_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "cart.yaml", FLOW_YAML.replace("type: send_sms, body:", "type: send_sms, text:"))
    error = _error(path)
    assert error.message.startswith(f"{path}:23: invalid flow at node 'sms' (nodes[2].action.body): ")
    paths = [problem["path"] for problem in error.details["problems"]]
    assert paths == ["nodes[2].action.body", "nodes[2].action.text"]
    assert error.message.endswith("(and 1 more)")


def test_every_structural_problem_is_listed_with_its_node_and_line(tmp_path: Path) -> None:
    text = FLOW_YAML.replace("    next: sms\n", "    next: nowhere\n") + "  - {id: orphan, type: exit}\n"
    path = _write(tmp_path, "cart.yaml", text)
    error = _error(path)
    assert error.message == (
        f"{path}:16: invalid flow at node 'later': leads to 'nowhere', which is not a node (and 1 more)"
    )
    assert error.details["problems"] == [
        {"node_id": "later", "path": None, "line": 16, "message": "leads to 'nowhere', which is not a node"},
        {"node_id": "orphan", "path": None, "line": 24, "message": "is unreachable from 'start'"},
    ]


def test_a_flow_level_error_in_json_names_the_path_and_line(tmp_path: Path) -> None:
    data = json.loads(json.dumps(ABANDONED_CART))
    data["trigger"] = {"type": "schedule", "segment_id": 0, "cron": "0 10 * * *"}
    path = _write(tmp_path, "cart.json", json.dumps(data, indent=2))
    error = _error(path)
    assert error.message == (
        f"{path}:4: invalid flow at trigger.segment_id: Input should be greater than or equal to 1"
    )


def test_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    yaml_error = _error(
        _write(tmp_path, "bad.yaml", "trigger:\n  type: event\n  event: [unclosed\nstart: x\n")
    )
    assert yaml_error.message.startswith(f"{tmp_path / 'bad.yaml'}:4: not valid YAML: ")
    json_error = _error(_write(tmp_path, "bad.json", '{\n  "trigger": {,\n}'))
    assert json_error.message.startswith(f"{tmp_path / 'bad.json'}:2: not valid JSON: ")


def test_files_that_are_not_one_flow_are_refused_by_name(tmp_path: Path) -> None:
    listing = _write(tmp_path, "list.yml", "- a\n- b\n")
    assert _error(listing).message.startswith(f"{listing}: the file must hold one flow definition")
    text = _write(tmp_path, "flow.txt", FLOW_YAML)
    assert _error(text).message == (
        f"{text}: cannot tell the format from the extension '.txt'; use one of .yaml, .yml, .json"
    )
    missing = tmp_path / "missing.yaml"
    assert _error(missing).message.startswith(f"{missing}: cannot be read: ")


def test_dump_refuses_an_unknown_format() -> None:
    with pytest.raises(InvalidInput, match="unknown flow file format 'toml'"):
        files.dump_flow(d.parse_flow(ABANDONED_CART), "toml")  # type: ignore[arg-type]
