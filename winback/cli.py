"""The `winback` command line: serve, worker, db, keys, import, demo, segments, lists."""

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
    console.print(f"  write key (tracking clients, Basic username): {write.secret}")
    console.print(f"  admin key (Authorization: Bearer …):          {admin.secret}")


@app.command()
def worker() -> None:
    """Process events and run background work until stopped (Ctrl-C)."""
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
    from winback.db.engine import reading
    from winback.segments import csvio, service

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with reading(runtime.engine) as session:
            service.get_segment(session, segment_id)
    except WinbackError as exc:
        raise fail(exc.message) from None
    rows = csvio.iter_members(
        runtime.engine, lambda after, size: csvio.segment_members_statement(segment_id, after, size)
    )
    written = _write_csv(csvio.SEGMENT_MEMBER_COLUMNS, rows, output)
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
    from winback.db.engine import reading
    from winback.segments import csvio, service

    runtime = _runtime()
    migrate.upgrade(runtime.engine)
    try:
        with reading(runtime.engine) as session:
            service.get_list(session, list_id)
    except WinbackError as exc:
        raise fail(exc.message) from None
    rows = csvio.iter_members(
        runtime.engine, lambda after, size: csvio.list_members_statement(list_id, after, size)
    )
    written = _write_csv(csvio.LIST_MEMBER_COLUMNS, rows, output)
    if output is not None:
        console.print(f"{written} members written to {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
