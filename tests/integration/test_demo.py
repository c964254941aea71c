"""`winback demo`: the seeded shopper plan, and `--once` end to end as a real process on SQLite."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from winback import demo
from winback.db.engine import make_engine
from winback.db.migrate import upgrade
from winback.ingest import segment, store

SHOPPERS = 30
SEED = 11


def _planned(seed: int = SEED, shoppers: int = SHOPPERS) -> list[demo.Journey]:
    return demo.plan_scenario(seed, shoppers, run_tag="t", store_url="http://127.0.0.1:1", pace=0.1)


def _run_demo(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WINBACK_DATABASE_URL": f"sqlite:///{database}", "COLUMNS": "200"}
    env.pop("WINBACK_SETTINGS_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "winback.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=database.parent,
    )


def test_the_same_seed_plans_the_same_shoppers_with_valid_segment_calls() -> None:
    # given two plans from the same seed and one from another
    first, second, other = _planned(), _planned(), _planned(seed=SEED + 1)

    # then the same seed gives the same journeys, another seed different ones
    assert first == second
    assert [j.persona for j in first] != [j.persona for j in other]

    # and every call is a message the tracking API accepts
    received_at = datetime(2026, 3, 2, tzinfo=UTC)
    for journey in first:
        for call in journey.calls:
            row = segment.parse_message(call.message, received_at=received_at, message_type=call.kind)
            assert row.anonymous_id is not None
    personas = Counter(j.persona for j in first)
    assert set(personas) <= {name for name, _ in demo.PERSONAS}
    assert personas["checkout_abandoner"] > 0 and personas["buyer"] + personas["refunded_buyer"] > 0


def test_demo_once_fills_the_database_and_reports_it(tmp_path: Path) -> None:
    # given an empty SQLite database and the plan the demo will follow for this seed
    database = tmp_path / "demo.db"
    journeys = _planned()
    personas = Counter(j.persona for j in journeys)
    buyers = [j for j in journeys if j.persona in ("buyer", "refunded_buyer")]
    identified = [j for j in journeys if any(c.kind == "identify" for c in j.calls)]

    # when `winback demo --once` runs on any free port
    result = _run_demo(database, "--once", "--port", "0", "--shoppers", str(SHOPPERS), "--seed", str(SEED))

    # then it exits 0 and prints a summary
    assert result.returncode == 0, result.stderr
    output = " ".join(result.stdout.split())
    customers = re.search(r"customers (\d+) \((\d+) known, (\d+) anonymous\)", output)
    assert customers is not None, output
    assert tuple(map(int, customers.groups())) == (SHOPPERS, len(identified), SHOPPERS - len(identified))
    orders = re.search(r"orders (\d+), revenue USD ([\d,.]+) \(refunded USD ([\d,.]+)\)", output)
    assert orders is not None, output
    assert int(orders.group(1)) == len(buyers) > 0

    # and the numbers are the database's: every planned order and abandonment is there
    summary = demo.summarise(make_engine(f"sqlite:///{database}"))
    assert summary.customers == SHOPPERS
    assert summary.pending_events == 0
    assert summary.checkouts["abandoned"] == personas["checkout_abandoner"] >= 1
    assert summary.checkouts["completed"] == len(buyers)
    assert summary.derived["Checkout Abandoned"] == personas["checkout_abandoner"]
    assert summary.derived["Cart Abandoned"] == personas["cart_abandoner"]
    assert summary.orders == len(buyers)
    planned_totals = sum(
        (Decimal(str(c.message["properties"]["total"])) for j in buyers for c in j.calls
         if c.message.get("event") == "Order Completed"),
        Decimal("0"),
    )  # fmt: skip
    planned_refunds = sum(
        (Decimal(str(c.message["properties"]["total"])) for j in buyers for c in j.calls
         if c.message.get("event") == "Order Refunded"),
        Decimal("0"),
    )  # fmt: skip
    assert summary.refunded == {"USD": planned_refunds}
    assert summary.revenue == {"USD": planned_totals - planned_refunds}
    assert orders.group(2) == f"{planned_totals - planned_refunds:,.2f}"


def test_demo_fails_clearly_when_the_port_is_taken(tmp_path: Path) -> None:
    # given something already listening on a port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        # when the demo is asked to use it
        result = _run_demo(tmp_path / "demo.db", "--once", "--port", str(port))

    # then it exits non-zero and says which port and what to do
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"error: cannot listen on 127.0.0.1:{port}" in message
    assert "Pass --port with a free port" in message


def test_demo_refuses_a_database_with_real_data(tmp_path: Path) -> None:
    # given a database that already holds an event a real store sent
    database = tmp_path / "shop.db"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    store.store_events(
        engine,
        [segment.parse_message({"type": "track", "userId": "u", "event": "Order Completed", "messageId": "real-1"},
                               received_at=now)],
    )  # fmt: skip
    engine.dispose()

    # when the demo is started on it
    result = _run_demo(database, "--once", "--port", "0")

    # then it refuses, explaining how to run it on its own database
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "already holds 1 events the demo did not send" in message
    assert "WINBACK_DATABASE_URL=sqlite:///./demo.db winback demo" in message


@pytest.mark.parametrize("once", [True, False])
def test_demo_windows_are_seconds_unless_set_explicitly(once: bool) -> None:
    from winback.settings import Settings

    # given settings where the user chose a browse window of ten minutes
    settings = Settings(database_url="sqlite://", browse_abandoned_after_s=600)

    # when the demo derives its settings
    derived = demo.demo_settings(settings, once=once, store_url="http://127.0.0.1:9999")

    # then the other windows are shortened, the user's choice is kept, and the store URL is the demo's
    expected = 3.0 if once else 30.0
    assert (derived.checkout_abandoned_after_s, derived.search_abandoned_after_s) == (expected, expected)
    assert derived.browse_abandoned_after_s == 600
    assert derived.store_url == "http://127.0.0.1:9999"
