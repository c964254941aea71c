"""The `winback` command line: serve, worker, db, keys, import, demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
