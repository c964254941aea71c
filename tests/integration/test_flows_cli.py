"""`winback flows` on both databases, through typer's CliRunner."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.cli import app
from winback.db.engine import make_engine
from winback.db.migrate import upgrade
from winback.db.models import CustomerList, Flow, FlowVersion
from winback.flows import definition, files, library

runner = CliRunner()


@pytest.fixture
def engine(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI's database (the same one the command opens)."""
    monkeypatch.setenv("WINBACK_DATABASE_URL", database_url)
    db = make_engine(database_url, poolclass=sa.NullPool)
    upgrade(db)
    yield db
    db.dispose()


def _flows(engine: sa.Engine) -> list[tuple[int, str, str, list[int]]]:
    with engine.connect() as connection:
        flows = connection.execute(sa.select(Flow.id, Flow.name, Flow.status).order_by(Flow.id)).all()
        return [
            (
                flow_id,
                name,
                status,
                list(
                    connection.scalars(
                        sa.select(FlowVersion.version)
                        .where(FlowVersion.flow_id == flow_id)
                        .order_by(FlowVersion.version)
                    )
                ),
            )
            for flow_id, name, status in flows
        ]


def test_apply_creates_then_versions_and_leaves_an_unchanged_file_alone(engine: Any, tmp_path: Path) -> None:
    # given the abandoned-cart flow as YAML and a second flow as JSON
    cart = tmp_path / "cart.yaml"
    cart.write_text(files.dump_flow(definition.parse_flow(ABANDONED_CART), "yaml"))
    with engine.begin() as connection:  # the list the welcome series adds people to
        now = datetime.now(UTC)
        list_id = connection.execute(
            sa.insert(CustomerList)
            .values(name="newsletter", created_at=now, updated_at=now)
            .returning(CustomerList.id)
        ).scalar_one()
    welcome = tmp_path / "welcome.json"
    welcome.write_text(files.dump_flow(library.render("welcome-series", list_id=list_id), "json"))
    # when both are applied
    result = runner.invoke(app, ["flows", "apply", str(cart), str(welcome)])
    # then each is a new draft
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{cart}: created flow 1 'cart' (draft, version 1)",
        f"{welcome}: created flow 2 'welcome' (draft, version 1)",
    ]
    # when the cart file is edited and both are applied again
    edited = copy.deepcopy(ABANDONED_CART)
    edited["nodes"][3]["duration"] = {"amount": 2, "unit": "hours"}
    cart.write_text(files.dump_flow(definition.parse_flow(edited), "yaml"))
    result = runner.invoke(app, ["flows", "apply", str(cart), str(welcome)])
    # then the cart flow gets version 2 and the unchanged one stays as it is
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{cart}: flow 1 'cart' now at version 2 (draft; runs under way stay on their version)",
        f"{welcome}: flow 2 'welcome' unchanged (version 1)",
    ]
    assert _flows(engine) == [(1, "cart", "draft", [1, 2]), (2, "welcome", "draft", [1])]


def test_an_invalid_file_lists_every_problem_by_node_and_writes_nothing(engine: Any, tmp_path: Path) -> None:
    # given a valid file and one with a dangling link and an unreachable node
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ABANDONED_CART))
    broken = copy.deepcopy(ABANDONED_CART)
    broken["nodes"][1]["next"] = "nowhere"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    # when both are applied
    result = runner.invoke(app, ["flows", "apply", str(bad), str(good)])
    # then it exits 1 naming each problem with its node, and only the valid file is saved
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "node 'wait-vip': leads to 'nowhere', which is not a node" in output
    assert "node 'mms': is unreachable from 'start'" in output
    assert "1 of 2 files not applied" in output
    assert f"{good}: created flow 1 'good' (draft, version 1)" in result.stdout
    assert _flows(engine) == [(1, "good", "draft", [1])]


def test_create_from_a_template_then_list_activate_pause_show_and_export(engine: Any, tmp_path: Path) -> None:
    # when a flow is created from the library with a parameter and a name
    result = runner.invoke(
        app, ["flows", "create", "--template", "abandoned-cart", "--param", "reminder_after_hours=48",
              "--name", "Carts"],
    )  # fmt: skip
    # then it is saved as a draft
    assert result.exit_code == 0, result.output
    assert result.stdout == "created flow 1 'Carts' (draft); turn it on with `winback flows activate 1`\n"
    # and it can be turned on, listed and paused
    assert runner.invoke(app, ["flows", "activate", "1"]).stdout == "flow 1 'Carts' is live\n"
    assert runner.invoke(app, ["flows", "list"]).stdout == "1\tCarts\tlive\tv1\t0 in progress\n"
    assert runner.invoke(app, ["flows", "pause", "1"]).stdout == "flow 1 'Carts' is paused\n"
    # and show prints the summary and a row per node
    shown = runner.invoke(app, ["flows", "show", "1"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "flow 1 'Carts' — paused, version 1 of 1"
    rendered = library.render("abandoned-cart", reminder_after_hours=48)
    assert (
        f"trigger: event 'Checkout Abandoned'; start: {rendered.start}; {len(rendered.nodes)} nodes" in lines
    )
    for node in rendered.nodes:
        assert any(line.startswith(f"│ {node.id} ") for line in lines), node.id
    # and export gives back a file that loads to the same definition
    exported = runner.invoke(app, ["flows", "export", "1", "--format", "json"])
    assert exported.exit_code == 0, exported.output
    assert files.load_flow_text(exported.stdout, "json") == rendered
    as_yaml = runner.invoke(app, ["flows", "export", "1"]).stdout
    assert files.load_flow_text(as_yaml, "yaml") == rendered


def test_templates_are_listed_with_their_parameters(engine: Any) -> None:
    result = runner.invoke(app, ["flows", "templates"])
    assert result.exit_code == 0
    names = [line.split("\t")[0] for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert names == [info.name for info in library.templates()]
    assert "  --param reminder_after_hours=…" in result.stdout


def test_bad_arguments_fail_with_a_message(engine: Any) -> None:
    unknown = runner.invoke(app, ["flows", "show", "7"])
    assert (unknown.exit_code, " ".join(unknown.output.split())) == (1, "error: no flow with id 7")
    bad_param = runner.invoke(app, ["flows", "create", "--template", "abandoned-cart", "--param", "oops"])
    assert bad_param.exit_code == 1
    assert "--param 'oops': write it as key=value" in bad_param.output
    wrong = runner.invoke(app, ["flows", "create", "--template", "abandoned-cart", "--param", "nope=1"])
    assert wrong.exit_code == 1
    assert "template 'abandoned-cart' takes no parameter 'nope'" in " ".join(wrong.output.split())
    fmt = runner.invoke(app, ["flows", "export", "1", "--format", "xml"])
    assert fmt.exit_code == 1
    assert "--format must be yaml or json, not 'xml'" in fmt.output
    assert _flows(engine) == []
