"""The `winback` command line: serve, worker, db, keys, import, demo, segments, lists, flows,
channels, messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

from winback import apikeys
from winback.db import migrate
from winback.kernel.errors import WinbackError
from winback.runtime import Runtime

app = typer.Typer(
    help="winback: self-hosted marketing automation that brings shoppers back.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema: apply migrations, show the revision.", no_args_is_help=True)
keys_app = typer.Typer(help="Write keys (ingest) and admin keys (admin API).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
segments_app = typer.Typer(
    help="Segments: save rules, count and export members, ready-made ones.", no_args_is_help=True
)
lists_app = typer.Typer(help="Static lists: create, import people from CSV, export.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")
app.add_typer(lists_app, name="lists")

console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.callback()
def configure(
    log_level: Annotated[
        str, typer.Option(envvar="WINBACK_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Logging for every command: to stderr, through rich."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise fail(f"unknown log level {log_level!r}; use debug, info, warning or error")
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for chatty in ("alembic", "httpx", "httpcore"):  # a line per migration step / HTTP request
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def _runtime() -> Runtime:
    try:
        return Runtime.from_settings()
    except (ValidationError, FileNotFoundError) as exc:
        raise fail(f"invalid settings (WINBACK_* variables or the settings file):\n{exc}") from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (WINBACK_DATABASE_URL, default sqlite:///./winback.db)."""
    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    console.print(f"database at revision {migrate.current_revision(runtime.engine)} (head)")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision and whether it is the newest."""
    runtime = _runtime()
    current, head = migrate.current_revision(runtime.engine), migrate.head_revision(runtime.engine)
    typer.echo(
        f"{current or 'empty'}{' (head)' if current == head else f' (head is {head}: run `winback db upgrade`)'}"
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for, e.g. 'storefront'.")],
    scope: Annotated[str, typer.Option(help="write (ingest only) or admin (admin API).")] = "write",
) -> None:
    """Create a key and print it once, alone on the last line."""
    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        issued = apikeys.create_key(runtime.engine, name=name, scope=scope, now=runtime.clock.now())
    except WinbackError as exc:
        raise fail(exc.message) from None
    console.print(f"created {issued.scope} key #{issued.id} '{issued.name}'; it is shown only now:")
    typer.echo(issued.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (their prefixes only: secrets are not stored)."""
    runtime = _runtime()
    for key in apikeys.list_keys(runtime.engine):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        typer.echo(f"{key.id}\t{key.scope}\t{key.prefix}…\t{key.name}\t{state}")


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key by its id (see `winback keys list`)."""
    runtime = _runtime()
    if not apikeys.revoke_key(runtime.engine, key_id, runtime.clock.now()):
        raise fail(f"no active key with id {key_id}")
    console.print(f"key {key_id} revoked")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; run `winback worker` elsewhere.")
    ] = False,
) -> None:
    """Run the HTTP API (and, unless --no-worker, a worker) after applying migrations."""
    import uvicorn

    from winback.web.app import create_app

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    _first_start_keys(runtime)
    console.print(f"winback on http://{host}:{port}  (database {runtime.engine.url.render_as_string()})")
    uvicorn.run(create_app(runtime, embedded_worker=not no_worker), host=host, port=port, log_level="info")


def _first_start_keys(runtime: Runtime) -> None:
    """On a database with no keys at all, create one write and one admin key and show them once."""
    if apikeys.list_keys(runtime.engine):
        return
    now = runtime.clock.now()
    write = apikeys.create_key(runtime.engine, name="default write key", scope="write", now=now)
    admin = apikeys.create_key(runtime.engine, name="default admin key", scope="admin", now=now)
    console.print("[bold]First start: created keys (shown only now, store them safely):[/bold]")
    console.print(f"  write key (tracking clients, Basic username): {write.secret}", soft_wrap=True)
    console.print(f"  admin key (Authorization: Bearer …):          {admin.secret}", soft_wrap=True)


@app.command()
def worker() -> None:
    """Apply events, detect abandonment, keep segments current and run flows until stopped (Ctrl-C)."""
    from winback.worker.runner import run_forever

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    run_forever(runtime)


@app.command("import")
def import_command(
    file: Annotated[
        Path, typer.Argument(help="NDJSON of Segment messages, or a CSV of customers, orders or products.")
    ],
    kind: Annotated[
        str, typer.Option(help="auto (from extension and header), segment, customers, orders or products.")
    ] = "auto",
    process: Annotated[
        bool, typer.Option("--process/--no-process", help="Apply the imported events to profiles right away.")
    ] = True,
) -> None:
    """Import a file; nothing is written unless every line is valid, and re-importing changes nothing."""
    from winback import importing

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        report, applied = importing.run_with_progress(
            runtime, file, kind=kind, process=process, console=console
        )
    except importing.ImportInterrupted as exc:
        raise fail(exc.message) from None
    except WinbackError as exc:
        raise fail(f"{exc.message}\nnothing was imported") from None
    line = report.summary()
    if applied is not None:
        line += f"; {applied} events applied to profiles"
    console.print(line)


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option("--once", help="Run a short scenario, print the summary and exit.")
    ] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8000,
    rate: Annotated[float, typer.Option(help="New shoppers per minute (without --once).")] = 20.0,
    shoppers: Annotated[int, typer.Option(help="Shoppers in the --once scenario.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed plans the same shoppers.")] = 7,
    force: Annotated[
        bool, typer.Option("--force", help="Run even on a database holding non-demo events.")
    ] = False,
) -> None:
    """Run winback with a simulated store sending shopper traffic through the tracking API."""
    from rich.console import Console as RichConsole

    from winback import demo as demo_module

    options = demo_module.Options(
        once=once, host=host, port=port, rate=rate, shoppers=shoppers, seed=seed, force=force
    )
    try:
        demo_module.run(_runtime(), options, console, RichConsole())
    except demo_module.DemoFailed as exc:
        raise fail(exc.message) from None
    except KeyboardInterrupt:
        console.print("demo stopped")


# --- segments and lists -------------------------------------------------------------------------


def _rule_failure(exc: WinbackError) -> typer.Exit:
    """A rule error with every problem on its own line (`path: message`)."""
    problems = exc.details.get("problems") or []
    lines = [exc.message] + [f"  {problem['path']}: {problem['message']}" for problem in problems[1:]]
    return fail("\n".join(lines))


def _read_json(file: Path) -> Any:
    import json

    try:
        return json.loads(file.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise fail(f"{file} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise fail(f"{file}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None


def _segment_file(file: Path) -> tuple[dict[str, Any], str | None, str | None]:
    """(definition, name, description) from a file holding a definition, a bare rule, or
    `{"name": …, "description": …, "definition": …}`."""
    data = _read_json(file)
    if not isinstance(data, dict):
        raise fail(f"{file}: expected a JSON object (a segment definition or rule)")
    if "definition" in data:
        unknown = sorted(set(data) - {"name", "description", "definition"})
        if unknown:
            raise fail(
                f"{file}: unknown field {unknown[0]!r} (a segment file has name, description, definition)"
            )
        definition = data["definition"]
        if not isinstance(definition, dict):
            raise fail(f"{file}: 'definition' must be a JSON object")
        name, description = data.get("name"), data.get("description")
        if name is not None and not isinstance(name, str):
            raise fail(f"{file}: 'name' must be a string")
        if description is not None and not isinstance(description, str):
            raise fail(f"{file}: 'description' must be a string")
        return definition, name, description
    return data, None, None


def _store_timezone(runtime: Runtime) -> str:
    from winback import store

    return store.current_profile(runtime.engine, runtime.settings).timezone


@segments_app.command("create")
def segments_create(
    file: Annotated[
        Path | None,
        typer.Argument(help="JSON: a definition, a bare rule, or {name, description, definition}."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name to save it under (default: from the file or template).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the segment is for.")] = None,
    template: Annotated[
        str | None,
        typer.Option(help="A ready-made segment instead of a file (see `winback segments templates`)."),
    ] = None,
) -> None:
    """Save a segment, evaluate it, and print its id and member count."""
    from winback.db.engine import transaction
    from winback.segments import library, service

    if (file is None) == (template is None):
        raise fail("give a FILE.json or --template NAME (one of them)")
    if template is not None:
        try:
            chosen = library.get(template)
        except WinbackError as exc:
            raise fail(exc.message) from None
        definition, file_name, file_description = chosen.definition, chosen.name, chosen.description
    else:
        assert file is not None
        definition, file_name, file_description = _segment_file(file)
        file_name = file_name or file.stem
    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with transaction(runtime.engine) as session:
            segment = service.create_segment(
                session,
                name=name or file_name,
                description=description if description is not None else file_description,
                definition=definition,
                now=runtime.clock.now(),
                timezone=_store_timezone(runtime),
            )
            segment_id, saved_name, count = segment.id, segment.name, segment.member_count
    except WinbackError as exc:
        raise _rule_failure(exc) from None
    typer.echo(f"segment {segment_id} {saved_name!r}: {count} members")


def _looks_like_id(target: str) -> bool:
    return target.isdigit() and not Path(target).exists()


@segments_app.command("count")
def segments_count(
    target: Annotated[
        str, typer.Argument(help="A saved segment's id, or a JSON file to count without saving.")
    ],
) -> None:
    """Print the number of members: stored for a saved segment, computed now for a file."""
    import time

    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import Segment
    from winback.segments import compiler, service

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    if _looks_like_id(target):
        with reading(runtime.engine) as session:
            count = session.scalar(select(Segment.member_count).where(Segment.id == int(target)))
        if count is None:
            raise fail(f"segment {target} does not exist (see `winback segments list`)")
        typer.echo(str(count))
        return
    definition, _name, _description = _segment_file(Path(target))
    timezone = _store_timezone(runtime)
    started = time.perf_counter()
    try:
        with reading(runtime.engine) as session:
            parsed = service.validate_definition(session, definition, segment_id=None)
            context = compiler.CompileContext(
                now=runtime.clock.now(), timezone=timezone, dialect=runtime.engine.dialect.name
            )
            count = session.scalar(compiler.count_query(parsed.rule, context)) or 0
    except WinbackError as exc:
        raise _rule_failure(exc) from None
    console.print(f"counted in {(time.perf_counter() - started) * 1000:.0f} ms, not saved")
    typer.echo(str(count))


def _write_csv(header: tuple[str, ...], rows: Any, output: Path | None) -> int:
    """Write the rows as CSV to `output` (or stdout); the number of data rows written."""
    import sys

    from winback.segments import csvio

    written = 0

    def counted() -> Any:
        nonlocal written
        for row in rows:
            written += 1
            yield row

    handle = output.open("w", encoding="utf-8", newline="") if output is not None else sys.stdout
    try:
        for chunk in csvio.csv_chunks(header, counted()):
            handle.write(chunk)
    finally:
        if output is not None:
            handle.close()
        else:
            handle.flush()
    return written


@segments_app.command("export")
def segments_export(
    segment_id: Annotated[int, typer.Argument(help="The segment's id.")],
    csv_format: Annotated[
        bool, typer.Option("--csv", help="CSV (the only format so far; the default).")
    ] = True,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Export a segment's members as CSV: id, user_id, email, phone, first_name, last_name, entered_at."""
    from winback.segments import csvio, service

    _export_members(
        lambda session: service.get_segment(session, segment_id),
        lambda after, size: csvio.segment_members_statement(segment_id, after, size),
        csvio.SEGMENT_MEMBER_COLUMNS,
        output,
    )


def _export_members(check: Any, statement_for: Any, columns: Any, output: Path | None) -> None:
    """Stream a segment's or list's members as CSV (after `check` confirms it exists)."""
    from winback.db.engine import reading
    from winback.segments import csvio

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with reading(runtime.engine) as session:
            check(session)
    except WinbackError as exc:
        raise fail(exc.message) from None
    written = _write_csv(columns, csvio.iter_members(runtime.engine, statement_for), output)
    if output is not None:
        console.print(f"{written} members written to {output}")


@segments_app.command("list")
def segments_list() -> None:
    """List saved segments: id, name, members, state, last full evaluation."""
    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import Segment

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    with reading(runtime.engine) as session:
        for segment in session.scalars(select(Segment).order_by(Segment.id)):
            state = "active" if segment.is_active else "inactive"
            evaluated = segment.evaluated_at.isoformat() if segment.evaluated_at else "never"
            typer.echo(f"{segment.id}\t{segment.name}\t{segment.member_count}\t{state}\t{evaluated}")


@segments_app.command("templates")
def segments_templates() -> None:
    """List the ready-made segments (`winback segments create --template KEY` saves one)."""
    from winback.segments import library

    for template in library.TEMPLATES:
        typer.echo(f"{template.key}\t{template.name}\t{template.description}")


@lists_app.command("create")
def lists_create(
    name: Annotated[str, typer.Argument(help="The list's name (unique).")],
    description: Annotated[str | None, typer.Option(help="What the list is for.")] = None,
) -> None:
    """Create a static list and print its id."""
    from winback.db.engine import transaction
    from winback.segments import service

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with transaction(runtime.engine) as session:
            created = service.create_list(
                session, name=name, description=description, now=runtime.clock.now()
            )
            list_id = created.id
    except WinbackError as exc:
        raise fail(exc.message) from None
    console.print(f"created list {list_id} {name.strip()!r}")
    typer.echo(str(list_id))


@lists_app.command("list")
def lists_list() -> None:
    """List static lists: id, name, members."""
    from sqlalchemy import func, select

    from winback.db.engine import reading
    from winback.db.models import Customer, CustomerList, ListMembership

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    with reading(runtime.engine) as session:
        counts: dict[int, int] = {
            list_id: count
            for list_id, count in session.execute(
                select(ListMembership.list_id, func.count())
                .join(Customer, Customer.id == ListMembership.customer_id)
                .where(Customer.merged_into_id.is_(None), Customer.erased_at.is_(None))
                .group_by(ListMembership.list_id)
            )
        }
        for found in session.scalars(select(CustomerList).order_by(CustomerList.id)):
            typer.echo(f"{found.id}\t{found.name}\t{counts.get(found.id, 0)}")


@lists_app.command("import")
def lists_import(
    list_id: Annotated[int, typer.Argument(help="The list's id.")],
    file: Annotated[Path, typer.Argument(help="CSV with an email, user_id or phone column.")],
) -> None:
    """Add the people of a CSV to a list; report added, already there, not found and invalid rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from winback import store
    from winback.db.engine import reading
    from winback.profiles import contact
    from winback.segments import csvio, membership, service

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with reading(runtime.engine) as session:
            service.get_list(session, list_id)
        if not file.is_file():
            raise fail(f"no such file: {file}")

        def open_text() -> Any:
            return file.open(encoding="utf-8-sig", newline="")

        total = csvio.check(open_text, file.name)
        now = runtime.clock.now()
        region = contact.region_of_locale(store.current_profile(runtime.engine, runtime.settings).locale)
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            task = progress.add_task(f"importing {file.name}", total=total)
            report = csvio.import_rows(
                runtime.engine,
                list_id,
                open_text,
                file.name,
                lambda session, target, ids: membership.add_to_list(
                    session, target, ids, source=f"csv:{file.name}"[:100], now=now
                ),
                phone_region=region,
                on_progress=lambda done: progress.update(task, completed=done),
            )
    except WinbackError as exc:
        raise fail(exc.message) from None
    for problem in report.problems[:PROBLEMS_SHOWN]:
        column = f" {problem.column} {problem.value!r}" if problem.column else ""
        console.print(f"  line {problem.line}:{column} {problem.reason}")
    hidden = report.not_found.count + report.invalid.count - min(len(report.problems), PROBLEMS_SHOWN)
    if hidden > 0:
        console.print(f"  … and {hidden} more rows not added")
    typer.echo(report.summary())


PROBLEMS_SHOWN = 20  # rows not added listed after `winback lists import`


@lists_app.command("export")
def lists_export(
    list_id: Annotated[int, typer.Argument(help="The list's id.")],
    csv_format: Annotated[
        bool, typer.Option("--csv", help="CSV (the only format so far; the default).")
    ] = True,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Export a list's members as CSV: id, user_id, email, phone, first_name, last_name, added_at, source."""
    from winback.segments import csvio, service

    _export_members(
        lambda session: service.get_list(session, list_id),
        lambda after, size: csvio.list_members_statement(list_id, after, size),
        csvio.LIST_MEMBER_COLUMNS,
        output,
    )


# --- flows --------------------------------------------------------------------------------------

flows_app = typer.Typer(
    help="Flows: apply files, create from the library, list, show counts, turn on and off, export, back-test (simulate).",
    no_args_is_help=True,
)
app.add_typer(flows_app, name="flows")


def _flow_problem_lines(exc: WinbackError) -> list[str]:
    """A flow error, then every problem on its own line: where (line, node, path) and what."""
    problems = exc.details.get("problems") or []
    lines = [exc.message]
    for problem in problems:
        where = []
        if problem.get("line"):
            where.append(f"line {problem['line']}")
        if problem.get("node_id"):
            where.append(f"node {problem['node_id']!r}")
        if problem.get("path"):
            where.append(str(problem["path"]))
        lines.append(f"  {', '.join(where) or 'flow'}: {problem['message']}")
    return lines


def _flow_failure(exc: WinbackError) -> typer.Exit:
    _print_flow_problems(exc)
    return typer.Exit(1)


def _flow_or_fail(session: Any, flow_id: int) -> Any:
    from winback.flows import service

    try:
        return service.get_flow(session, flow_id)
    except WinbackError as exc:
        raise fail(exc.message) from None


@flows_app.command("apply")
def flows_apply(
    files: Annotated[list[Path], typer.Argument(help="Flow files (.yaml, .yml or .json).")],
    name: Annotated[
        str | None, typer.Option(help="Name to save under (one file only; default: the file name).")
    ] = None,
) -> None:
    """Save each file as a flow: a new draft, or a new version of the flow of that name.

    An invalid file is reported with every problem and nothing from it is written; the others are
    still applied, and the command exits 1. A file identical to the current version changes nothing."""
    from sqlalchemy import select

    from winback.db.engine import transaction
    from winback.db.models import Flow, FlowVersion
    from winback.flows import files as flow_files
    from winback.flows import service

    if name is not None and len(files) != 1:
        raise fail("--name goes with a single file")
    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    failed = 0
    for file in files:
        try:
            parsed = flow_files.load_flow_file(file)
        except WinbackError as exc:
            failed += 1
            _print_flow_problems(exc)
            continue
        flow_name = (name or file.stem).strip()
        data = parsed.model_dump(mode="json")
        try:
            with transaction(runtime.engine) as session:
                existing = session.scalar(select(Flow).where(Flow.name == flow_name))
                if existing is None:
                    flow = service.create_flow(
                        session, name=flow_name, definition=data, now=runtime.clock.now()
                    )
                    typer.echo(f"{file}: created flow {flow.id} {flow_name!r} (draft, version 1)")
                    continue
                current = session.get(FlowVersion, existing.current_version_id)
                if current is not None and current.definition == data:
                    typer.echo(
                        f"{file}: flow {existing.id} {flow_name!r} unchanged (version {current.version})"
                    )
                    continue
                version = service.update_definition(session, existing.id, data, runtime.clock.now())
                typer.echo(
                    f"{file}: flow {existing.id} {flow_name!r} now at version {version.version} "
                    f"({existing.status}; runs under way stay on their version)"
                )
        except WinbackError as exc:
            failed += 1
            _print_flow_problems(exc, prefix=f"{file}: ")
    if failed:
        raise fail(f"{failed} of {len(files)} files not applied")


def _print_flow_problems(exc: WinbackError, prefix: str = "") -> None:
    lines = _flow_problem_lines(exc)
    console.print("[red]error:[/red] ", end="")
    console.print(prefix + "\n".join(lines), markup=False, highlight=False)


@flows_app.command("list")
def flows_list() -> None:
    """List flows: id, name, status, current version, runs in progress."""
    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import Flow
    from winback.flows import reporting

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    with reading(runtime.engine) as session:
        flows = list(session.scalars(select(Flow).order_by(Flow.id)))
        runs = reporting.runs_by_version(session, [flow.id for flow in flows])
        numbers = reporting.version_numbers(
            session, [flow.current_version_id for flow in flows if flow.current_version_id is not None]
        )
        owners = reporting.version_owners(session, runs)
    in_progress: dict[int, int] = {}
    for version_id, counted in runs.items():
        owner = owners[version_id]
        in_progress[owner] = in_progress.get(owner, 0) + counted["in_progress"]
    for flow in flows:
        version = numbers.get(flow.current_version_id) if flow.current_version_id else None
        typer.echo(
            f"{flow.id}\t{flow.name}\t{flow.status}\tv{version}\t{in_progress.get(flow.id, 0)} in progress"
        )


def _describe_trigger(trigger: Any) -> str:
    if trigger.type == "event":
        where = f" where {len(trigger.where)} filter(s)" if trigger.where else ""
        return f"event {trigger.event!r}{where}"
    if trigger.type in ("segment_entered", "segment_exited"):
        return f"{trigger.type.replace('_', ' ')} {trigger.segment_id}"
    if trigger.type == "list_joined":
        return f"list joined {trigger.list_id}"
    if trigger.type == "date":
        return f"{trigger.property} {trigger.offset_days:+d} days at {trigger.at.isoformat('minutes')}"
    if trigger.type == "property_changed":
        return f"property {trigger.property!r} changed"
    return f"schedule for segment {trigger.segment_id}: " + (trigger.cron or f"once at {trigger.at}")


@flows_app.command("show")
def flows_show(flow_id: Annotated[int, typer.Argument(help="The flow's id.")]) -> None:
    """A flow's summary and, per node, runs entered, waiting, passed and exited (current version)."""
    from rich.console import Console as RichConsole
    from rich.table import Table
    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import FlowVersion
    from winback.flows import definition, reporting

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    with reading(runtime.engine) as session:
        flow = _flow_or_fail(session, flow_id)
        versions = list(
            session.scalars(
                select(FlowVersion).where(FlowVersion.flow_id == flow.id).order_by(FlowVersion.version)
            )
        )
        current = next(version for version in versions if version.id == flow.current_version_id)
        parsed = definition.parse_flow(current.definition)
        counts = reporting.flow_counts(session, flow.id, current.id, parsed)
        overall = reporting.flow_counts(session, flow.id, None, parsed)
    out = RichConsole(width=160)
    out.print(
        f"[bold]flow {flow.id}[/bold] {flow.name!r} — {flow.status}, version {current.version} of {len(versions)}"
    )
    if flow.description:
        out.print(flow.description)
    out.print(
        f"trigger: {_describe_trigger(parsed.trigger)}; start: {parsed.start}; {len(parsed.nodes)} nodes"
    )
    if parsed.exit_when:
        out.print(
            "exits when: "
            + ", ".join(c.type + (f" {c.event!r}" if hasattr(c, "event") else "") for c in parsed.exit_when)
        )
    totals = counts.runs
    out.print(
        f"runs on version {current.version}: {totals.started} started, {totals.in_progress} in progress, "
        f"{totals.completed} completed, {totals.exited} exited (all versions: {overall.runs.started} started)"
    )
    table = Table("node", "type", "entered", "waiting", "passed", "exited", "outcomes")
    for node in counts.nodes:
        kind = f"{node.type}: {node.action}" if node.action else (node.type or "(older version)")
        table.add_row(
            node.node_id,
            kind,
            str(node.entered),
            str(node.waiting),
            str(node.passed),
            ", ".join(f"{reason} {count}" for reason, count in node.exited.items()),
            ", ".join(f"{outcome} {count}" for outcome, count in node.outcomes.items()),
        )
    out.print(table)


def _set_flow_status(flow_id: int, status: str) -> None:
    from winback.db.engine import transaction
    from winback.flows import service

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with transaction(runtime.engine) as session:
            flow = service.set_status(session, flow_id, status, runtime.clock.now())
            name = flow.name
    except WinbackError as exc:
        raise fail(exc.message) from None
    typer.echo(f"flow {flow_id} {name!r} is {status}")


@flows_app.command("activate")
def flows_activate(flow_id: Annotated[int, typer.Argument(help="The flow's id.")]) -> None:
    """Turn a flow on: its trigger enrols customers into the current version."""
    _set_flow_status(flow_id, "live")


@flows_app.command("pause")
def flows_pause(flow_id: Annotated[int, typer.Argument(help="The flow's id.")]) -> None:
    """Stop enrolling; runs already under way carry on to their end."""
    _set_flow_status(flow_id, "paused")


@flows_app.command("templates")
def flows_templates() -> None:
    """List the ready flows and their parameters (`winback flows create --template NAME`)."""
    from winback.flows import library

    for info in library.templates():
        typer.echo(f"{info.name}\t{info.title}\t{info.description}")
        for parameter in info.parameters:
            default = "required" if parameter.default is None else f"default {parameter.default}"
            typer.echo(f"  --param {parameter.name}=…  ({parameter.type}, {default}) {parameter.description}")


@flows_app.command("create")
def flows_create(
    template: Annotated[str, typer.Option(help="A ready flow (see `winback flows templates`).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="key=value for the template; repeat for each.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name to save under (default: the template's title).")
    ] = None,
) -> None:
    """Save a draft flow from the library; print its id."""
    from winback.db.engine import transaction
    from winback.flows import library, service

    parameters: dict[str, str] = {}
    for item in param or []:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise fail(f"--param {item!r}: write it as key=value")
        if key.strip() in parameters:
            raise fail(f"--param {key.strip()!r} is given twice")
        parameters[key.strip()] = value
    try:
        info = library.get(template)
        rendered = library.render(template, **parameters)
    except WinbackError as exc:
        raise _flow_failure(exc) from None
    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with transaction(runtime.engine) as session:
            flow = service.create_flow(
                session,
                name=name or info.title,
                description=info.description,
                definition=rendered.model_dump(mode="json"),
                now=runtime.clock.now(),
            )
            flow_id, saved_name = flow.id, flow.name
    except WinbackError as exc:
        raise _flow_failure(exc) from None
    typer.echo(
        f"created flow {flow_id} {saved_name!r} (draft); turn it on with `winback flows activate {flow_id}`"
    )


@flows_app.command("export")
def flows_export(
    flow_id: Annotated[int, typer.Argument(help="The flow's id.")],
    file_format: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
    version: Annotated[int | None, typer.Option(help="A version number (default: the current one).")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write a flow's definition as a file `winback flows apply` takes back."""
    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import FlowVersion
    from winback.flows import definition
    from winback.flows import files as flow_files

    if file_format not in ("yaml", "json"):
        raise fail(f"--format must be yaml or json, not {file_format!r}")
    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    with reading(runtime.engine) as session:
        flow = _flow_or_fail(session, flow_id)
        query = select(FlowVersion).where(FlowVersion.flow_id == flow.id)
        if version is None:
            query = query.where(FlowVersion.id == flow.current_version_id)
        else:
            query = query.where(FlowVersion.version == version)
        found = session.scalar(query)
        if found is None:
            raise fail(f"flow {flow_id} has no version {version}")
        stored = found.definition
    text = flow_files.dump_flow(definition.parse_flow(stored), file_format)  # type: ignore[arg-type]
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"flow {flow_id} written to {output}")


@flows_app.command("simulate")
def flows_simulate(
    flow: Annotated[str, typer.Argument(help="A flow id, or a flow file (YAML/JSON) to try before saving.")],
    start: Annotated[
        str, typer.Option("--from", help="Start date or date-time (store timezone when no zone).")
    ],
    end: Annotated[str, typer.Option("--to", help="End date or date-time (exclusive).")],
    attribution_days: Annotated[
        float, typer.Option(help="Days after entry an order counts for the flow.")
    ] = 5,
) -> None:
    """Back-test a flow: replay the stored events of a period through it on a virtual clock (a date
    or schedule trigger fires at each of its moments in the period), with no sends and no change to
    live data, and print what it would have done."""
    import json
    from datetime import timedelta

    from rich.progress import Progress

    from winback import store
    from winback.db.engine import reading
    from winback.db.models import FlowVersion
    from winback.flows import definition, simulate
    from winback.flows import files as flow_files
    from winback.messaging.policy import SendPolicy
    from winback.segments import periods

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    flow_id = 0  # a flow file that is not saved yet
    with reading(runtime.engine) as session:
        timezone = store.profile_in(session, runtime.settings).timezone
        try:
            if flow.isdigit():
                found = _flow_or_fail(session, int(flow))
                flow_id = found.id
                version = session.get(FlowVersion, found.current_version_id)
                plan = definition.parse_flow(version.definition if version else {})
            else:
                plan = flow_files.load_flow_file(Path(flow))
        except WinbackError as exc:
            raise fail(exc.message) from None
    start_at, end_at = periods.parse_instant(start, timezone), periods.parse_instant(end, timezone)
    if start_at is None or end_at is None:
        raise fail("--from and --to take ISO dates or date-times, e.g. 2026-03-01 or 2026-03-01T09:00")
    if end_at <= start_at:
        raise fail("--to must be after --from")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying events", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            report = simulate.simulate_flow(
                runtime.engine, plan, start_at, end_at, timezone=timezone, flow_id=flow_id,
                attribution_window=timedelta(days=attribution_days), progress=advance,
                policy=SendPolicy.from_settings(runtime.settings),
            )  # fmt: skip
        except WinbackError as exc:
            raise fail(exc.message) from None
    typer.echo(json.dumps(report.to_dict(), indent=2, default=str))


def main() -> None:
    app()


if __name__ == "__main__":
    main()


# --- channels and messages ----------------------------------------------------------------------

channels_app = typer.Typer(
    help="Messaging channels: are they set up, does a test get through.", no_args_is_help=True
)
messages_app = typer.Typer(help="Messages sent (or not) and why.", no_args_is_help=True)
app.add_typer(channels_app, name="channels")
app.add_typer(messages_app, name="messages")


@channels_app.command("status")
def channels_status() -> None:
    """Each channel's provider and whether its settings and credentials work (exit 1 if any fails)."""
    from winback.messaging import admin

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    statuses = admin.channel_statuses(runtime)
    for channel, status in statuses.items():
        mark = "[green]ok[/green]" if status.ok else "[red]not working[/red]"
        console.print(f"{channel}\t{status.provider}\t{mark}\t{status.detail}")
    if not all(status.ok for status in statuses.values()):
        raise typer.Exit(1)


@channels_app.command("test")
def channels_test(
    channel: Annotated[str, typer.Argument(help="sms, mms, email, push, slack or webhook.")],
    to: Annotated[
        str, typer.Argument(help="Phone (E.164), email address, push endpoint or webhook URL; '-' for Slack.")
    ],
    text: Annotated[str | None, typer.Option(help="The message text.")] = None,
    subject: Annotated[str | None, typer.Option(help="Email subject / push title.")] = None,
) -> None:
    """Send one real test message through the channel's configured provider and say what happened."""
    from winback.messaging import admin

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        result = admin.test_send(runtime, channel, "" if to == "-" else to, text=text, subject=subject)
    except WinbackError as exc:
        raise fail(str(exc)) from None
    line = f"message {result.message_id} via {result.provider or '?'}: {result.status}"
    if result.provider_message_id:
        line += f" (provider id {result.provider_message_id})"
    if result.reason:
        line += f": {result.reason}"
    if result.status in ("sent", "delivered"):
        typer.echo(line)
        return
    raise fail(line)


@messages_app.command("list")
def messages_list(
    status: Annotated[str | None, typer.Option(help="Only messages in this status.")] = None,
    customer: Annotated[int | None, typer.Option(help="Only this customer's messages.")] = None,
    flow: Annotated[int | None, typer.Option(help="Only this flow's messages.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """The latest messages: id, channel, status, recipient, why."""
    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import Message

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    query = select(Message).order_by(Message.id.desc()).limit(limit)
    if status:
        query = query.where(Message.status == status)
    if customer is not None:
        query = query.where(Message.customer_id == customer)
    if flow is not None:
        query = query.where(Message.flow_id == flow)
    with reading(runtime.engine) as session:
        for message in session.scalars(query):
            typer.echo(
                f"{message.id}\t{message.channel}\t{message.status}\t{message.to_address or '-'}\t"
                f"flow {message.flow_id or '-'}\t{message.status_reason or ''}"
            )


@messages_app.command("show")
def messages_show(message_id: Annotated[int, typer.Argument(help="The message's id.")]) -> None:
    """One message: its text and every change of its state, with reasons."""
    from sqlalchemy import select

    from winback.db.engine import reading
    from winback.db.models import Message, MessageEvent

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    with reading(runtime.engine) as session:
        message = session.get(Message, message_id)
        if message is None:
            raise fail(f"no message with id {message_id}")
        typer.echo(
            f"message {message.id}: {message.channel} to {message.to_address or '-'}: {message.status}"
        )
        if message.status_reason:
            typer.echo(f"  why: {message.status_reason}")
        if message.subject:
            typer.echo(f"  subject: {message.subject}")
        if message.body:
            typer.echo("  " + message.body.replace("\n", "\n  "))
        for event in session.scalars(
            select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
        ):
            typer.echo(
                f"  {event.at:%Y-%m-%d %H:%M:%S} {event.status}{': ' + event.reason if event.reason else ''}"
            )
