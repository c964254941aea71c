"""Back-testing over HTTP and the command line: the stored history through a saved flow."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.cli import app
from winback.commerce import abandonment
from winback.db.models import FlowRun, OutboxEntry
from winback.kernel.clock import VirtualClock
from winback.processing.processor import process_pending
from winback.runtime import Runtime


@pytest.fixture
def history(runtime: Runtime, clock: VirtualClock, track) -> str:  # type: ignore[no-untyped-def]
    """One shopper who abandoned a checkout (SMS consent given) and never ordered; returns the start."""
    start = clock.now().isoformat()
    track("identify", userId="u1", traits={"phone": "+14155550123", "sms_consent": "subscribed"})
    track("track", userId="u1", event="Checkout Started", properties={"checkout_id": "k1", "value": 80,
          "products": [{"product_id": "p1", "price": 80, "quantity": 1}]})  # fmt: skip
    process_pending(runtime)
    clock.advance(timedelta(hours=2))
    abandonment.sweep(runtime)
    process_pending(runtime)
    clock.advance(timedelta(days=3))
    return start


def test_simulate_endpoint_reports_what_the_flow_would_have_done(
    admin_client: TestClient, history: str, clock: VirtualClock, engine: sa.Engine
) -> None:
    flow_id = admin_client.post("/api/v1/flows", json={"name": "cart", "definition": ABANDONED_CART}).json()[
        "id"
    ]
    response = admin_client.post(
        f"/api/v1/flows/{flow_id}/simulate", json={"from": history, "to": clock.now().isoformat()}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["triggered"], report["runs"]["entered"], report["runs"]["completed"]) == (1, 1, 1)
    sent = {(m["node_id"], m["would_send"]) for m in report["messages"]}
    assert sent == {("sms", 1), ("reminder", 1)}
    with Session(engine) as session:  # a back-test writes nothing
        assert session.scalar(sa.select(sa.func.count()).select_from(FlowRun)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxEntry)) == 0


def test_simulate_endpoint_refuses_a_backwards_period(admin_client: TestClient, clock: VirtualClock) -> None:
    flow_id = admin_client.post("/api/v1/flows", json={"name": "cart", "definition": ABANDONED_CART}).json()[
        "id"
    ]
    response = admin_client.post(
        f"/api/v1/flows/{flow_id}/simulate",
        json={"from": "2026-03-05T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
    )
    assert response.status_code == 422
    assert "'to' must be after 'from'" in response.json()["error"]["message"]


def test_cli_simulates_a_flow_file_before_it_is_saved(
    history: str, clock: VirtualClock, database_url: str, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WINBACK_DATABASE_URL", database_url)
    flow_file = tmp_path / "cart.json"
    flow_file.write_text(json.dumps(ABANDONED_CART))
    result = CliRunner().invoke(
        app, ["flows", "simulate", str(flow_file), "--from", history, "--to", clock.now().isoformat()]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"]["entered"] == 1
    bad = CliRunner().invoke(app, ["flows", "simulate", str(flow_file), "--from", "soon", "--to", "later"])
    assert bad.exit_code == 1
    assert "--from and --to take ISO dates" in bad.output
