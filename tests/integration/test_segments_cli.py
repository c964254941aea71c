"""`winback segments` and `winback lists` on both databases, through typer's CliRunner."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from winback.cli import app
from winback.db.engine import make_engine, transaction
from winback.db.migrate import upgrade
from winback.db.models import Customer, ListMembership, Segment

runner = CliRunner()
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI's database, with Ann (6 orders, 750 spent), Bob (1 order, 40) and Cat (vip)."""
    monkeypatch.setenv("WINBACK_DATABASE_URL", database_url)
    engine = make_engine(database_url, poolclass=sa.NullPool)
    upgrade(engine)
    ids: dict[str, int] = {}
    with transaction(engine) as session:
        for key, fields in {
            "ann": {"user_id": "u-ann", "email": "ann@example.com", "first_name": "Ann", "orders_count": 6,
                    "total_spent": Decimal("750")},
            "bob": {"user_id": "u-bob", "email": "bob@example.com", "first_name": "Bob", "orders_count": 1,
                    "total_spent": Decimal("40")},
            "cat": {"email": "cat@example.com", "first_name": "Cat", "tags": ["vip"]},
        }.items():  # fmt: skip
            row = Customer(first_seen_at=T0, last_seen_at=T0, created_at=T0, updated_at=T0, **fields)
            session.add(row)
            session.flush()
            ids[key] = row.id
    yield engine, ids
    engine.dispose()


def write_json(path: Path, data: Any) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def test_segments_create_from_a_file_prints_id_and_member_count(db: Any, tmp_path: Path) -> None:
    engine, _ids = db
    # given a file with a name and a definition
    file = write_json(
        tmp_path / "spenders.json",
        {"name": "Spenders", "definition": {"type": "money_spent", "compare": {"op": "gte", "value": 30}}},
    )
    # when it is created
    result = runner.invoke(app, ["segments", "create", str(file)])
    # then the segment is saved and evaluated
    assert result.exit_code == 0, result.output
    with engine.connect() as connection:
        segment_id, count = connection.execute(sa.select(Segment.id, Segment.member_count)).one()
    assert result.stdout == f"segment {segment_id} 'Spenders': 2 members\n"
    assert count == 2


def test_segments_create_takes_a_bare_rule_named_by_option_or_file(db: Any, tmp_path: Path) -> None:
    file = write_json(tmp_path / "vip-people.json", {"type": "tag", "tag": "vip"})
    named = runner.invoke(app, ["segments", "create", str(file), "--name", "VIPs"])
    assert named.exit_code == 0, named.output
    assert named.stdout.endswith("'VIPs': 1 members\n")
    # the same rule again without --name is saved under the file's name
    unnamed = runner.invoke(app, ["segments", "create", str(file)])
    assert unnamed.stdout.endswith("'vip-people': 1 members\n")


def test_segments_create_from_a_template(db: Any) -> None:
    result = runner.invoke(app, ["segments", "create", "--template", "high-value"])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("'High-value customers': 1 members\n")
    unknown = runner.invoke(app, ["segments", "create", "--template", "big-fish"])
    assert unknown.exit_code == 1
    assert "no ready-made segment 'big-fish'; known: high-value, casual-shoppers" in unknown.output


def test_an_invalid_rule_file_fails_naming_every_path(db: Any, tmp_path: Path) -> None:
    engine, _ids = db
    file = write_json(
        tmp_path / "broken.json",
        {
            "type": "all",
            "rules": [{"type": "order_count", "compare": {"op": "gte", "value": -1}}, {"type": "tag"}],
        },
    )
    result = runner.invoke(app, ["segments", "create", str(file)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # rich may wrap long lines
    assert "invalid segment rule at rule.rules[0].compare: Value error, counts are whole numbers" in output
    assert "rule.rules[1].tag: Field required" in output
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0


def test_a_file_that_is_not_json_fails_with_its_line(db: Any, tmp_path: Path) -> None:
    file = tmp_path / "bad.json"
    file.write_text('{\n  "type": "tag",\n  "tag": vip\n}\n')
    result = runner.invoke(app, ["segments", "create", str(file)])
    assert result.exit_code == 1
    assert "bad.json, line 3, column 10: not valid JSON" in " ".join(result.output.split())


def test_segments_count_of_a_saved_segment_and_of_a_file(db: Any, tmp_path: Path) -> None:
    engine, _ids = db
    file = write_json(
        tmp_path / "spenders.json", {"type": "money_spent", "compare": {"op": "gte", "value": 500}}
    )
    # a file is counted without saving
    preview = runner.invoke(app, ["segments", "count", str(file)])
    assert preview.exit_code == 0, preview.output
    assert preview.stdout == "1\n"
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    # a saved segment answers its stored count
    runner.invoke(app, ["segments", "create", str(file), "--name", "Big"])
    with engine.connect() as connection:
        segment_id = connection.scalar(sa.select(Segment.id))
    assert runner.invoke(app, ["segments", "count", str(segment_id)]).stdout == "1\n"
    missing = runner.invoke(app, ["segments", "count", "999"])
    assert missing.exit_code == 1
    assert "segment 999 does not exist" in missing.output


def test_segments_export_writes_csv_to_stdout_or_a_file(db: Any, tmp_path: Path) -> None:
    engine, ids = db
    runner.invoke(app, ["segments", "create", "--template", "casual-shoppers"])
    with engine.connect() as connection:
        segment_id, entered_at = connection.execute(
            sa.text("SELECT segment_id, entered_at FROM segment_memberships")
        ).one()
    stamp = entered_at if isinstance(entered_at, str) else entered_at.isoformat()
    expected_stamp = datetime.fromisoformat(stamp).astimezone(UTC).isoformat()
    expected = (
        "id,user_id,email,phone,first_name,last_name,entered_at\r\n"
        f"{ids['bob']},u-bob,bob@example.com,,Bob,,{expected_stamp}\r\n"
    )
    to_stdout = runner.invoke(app, ["segments", "export", str(segment_id), "--csv"])
    assert to_stdout.exit_code == 0, to_stdout.output
    assert to_stdout.stdout == expected.replace("\r\n", "\n")  # click's runner folds CRLF in what it captured
    target = tmp_path / "casual.csv"
    to_file = runner.invoke(app, ["segments", "export", str(segment_id), "-o", str(target)])
    assert to_file.exit_code == 0
    assert target.read_bytes() == expected.encode()
    assert f"1 members written to {target}" in " ".join(to_file.output.split())


def test_segments_list_and_templates(db: Any) -> None:
    runner.invoke(app, ["segments", "create", "--template", "vip"])
    listed = runner.invoke(app, ["segments", "list"])
    assert listed.exit_code == 0
    segment_id, name, members, state, evaluated = listed.stdout.rstrip("\n").split("\t")
    assert (name, members, state) == ("VIP", "1", "active")
    assert datetime.fromisoformat(evaluated).tzinfo is not None
    templates = runner.invoke(app, ["segments", "templates"]).stdout.splitlines()
    assert templates[0] == (
        "high-value\tHigh-value customers\tSpent at least 500 (net of refunds) over at least 5 orders, all time."
    )
    assert len(templates) == 13


def test_lists_create_import_and_export(db: Any, tmp_path: Path) -> None:
    engine, ids = db
    # given a list
    created = runner.invoke(app, ["lists", "create", "Newsletter"])
    assert created.exit_code == 0, created.output
    list_id = int(created.stdout.strip())
    # when a CSV naming Ann, Bob (by user id), an unknown person and a bad address is imported
    file = tmp_path / "people.csv"
    file.write_text("email,user_id\nann@example.com,\n,u-bob\nghost@example.com,\nnot-an-email,\n")
    imported = runner.invoke(app, ["lists", "import", str(list_id), str(file)])
    # then the found ones are added and the others reported by line
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.endswith(
        "people.csv: 4 rows, 2 added, 0 already members, 1 not found, 1 invalid\n"
    )
    output = " ".join(imported.output.split())
    assert "line 4: email 'ghost@example.com' no customer with this email" in output
    assert "line 5: email 'not-an-email' not a valid email address" in output
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(ListMembership.customer_id, ListMembership.source).order_by(ListMembership.customer_id)
        ).all()
    assert [tuple(row) for row in rows] == [(ids["ann"], "csv:people.csv"), (ids["bob"], "csv:people.csv")]
    # and importing again adds nobody
    again = runner.invoke(app, ["lists", "import", str(list_id), str(file)])
    assert again.stdout.endswith("4 rows, 0 added, 2 already members, 1 not found, 1 invalid\n")
    # and the export lists both
    exported = runner.invoke(app, ["lists", "export", str(list_id), "--csv"])
    assert exported.exit_code == 0
    lines = exported.stdout.splitlines()
    assert lines[0] == "id,user_id,email,phone,first_name,last_name,added_at,source"
    assert [line.split(",")[:3] for line in lines[1:3]] == [
        [str(ids["ann"]), "u-ann", "ann@example.com"],
        [str(ids["bob"]), "u-bob", "bob@example.com"],
    ]
    assert runner.invoke(app, ["lists", "list"]).stdout == f"{list_id}\tNewsletter\t2\n"


def test_lists_import_refuses_a_file_without_an_identifying_column(db: Any, tmp_path: Path) -> None:
    engine, _ids = db
    list_id = int(runner.invoke(app, ["lists", "create", "Newsletter"]).stdout.strip())
    file = tmp_path / "names.csv"
    file.write_text("name\nAnn\n")
    result = runner.invoke(app, ["lists", "import", str(list_id), str(file)])
    assert result.exit_code == 1
    assert (
        "names.csv, line 1: no email, user_id or phone column among: name; nothing was imported"
        in " ".join(result.output.split())
    )
    unknown_list = runner.invoke(app, ["lists", "import", "999", str(file)])
    assert unknown_list.exit_code == 1
    assert "list 999 does not exist" in unknown_list.output
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(ListMembership)) == 0


def test_lists_create_refuses_a_duplicate_name(db: Any) -> None:
    assert runner.invoke(app, ["lists", "create", "Newsletter"]).exit_code == 0
    again = runner.invoke(app, ["lists", "create", "Newsletter"])
    assert again.exit_code == 1
    assert "a list named 'Newsletter' already exists" in again.output
