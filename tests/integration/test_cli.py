"""The command line: keys, migrations and settings errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from winback import apikeys
from winback.cli import app
from winback.db.engine import make_engine

runner = CliRunner()


def test_keys_create_prints_the_key_alone_on_the_last_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WINBACK_DATABASE_URL", database_url)
    result = runner.invoke(app, ["keys", "create", "--name", "storefront", "--scope", "write"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("wk_")
    engine = make_engine(database_url)
    try:
        assert apikeys.KeyVerifier(engine).scope_of(secret) == "write"
    finally:
        engine.dispose()


def test_keys_create_refuses_an_unknown_scope(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINBACK_DATABASE_URL", database_url)
    result = runner.invoke(app, ["keys", "create", "--name", "x", "--scope", "root"])
    assert result.exit_code == 1
    assert "scope must be one of write, admin" in result.output


def test_invalid_settings_fail_with_the_variable_named(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WINBACK_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    monkeypatch.setenv("WINBACK_STORE_TIMEZONE", "Mars/Olympus")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    assert "WINBACK_STORE_TIMEZONE" in result.output


def test_db_current_reports_head_after_upgrade(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WINBACK_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    assert "run `winback db upgrade`" in runner.invoke(app, ["db", "current"]).output
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["db", "current"]).output.strip().endswith("(head)")
