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
from sqlalchemy import Engine, func, select

from winback import demo
from winback.db.engine import make_engine, reading, transaction
from winback.db.migrate import upgrade
from winback.db.models import Flow, FlowVersion, Message
from winback.flows import service
from winback.ingest import segment, store
from winback.profiles import contact

SHOPPERS = 30
SEED = 13  # plans every kind of shopper the messages need: SMS opt-ins by day and by night, a comeback
ANY_PLACES = demo.Places(day=demo.CITIES[:2], night=demo.CITIES[-2:])


def _planned(
    seed: int = SEED, shoppers: int = SHOPPERS, places: demo.Places = ANY_PLACES
) -> list[demo.Journey]:
    return demo.plan_scenario(
        seed, shoppers, run_tag="t", store_url="http://127.0.0.1:1", pace=0.1, places=places
    )


def _order_totals(journeys: list[demo.Journey], event: str) -> Decimal:
    return sum(
        (Decimal(str(c.message["properties"]["total"])) for j in journeys for c in (*j.calls, *j.comeback)
         if c.message.get("event") == event),
        Decimal("0"),
    )  # fmt: skip


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


def _counts(text: str, total: int) -> dict[str, int]:
    """ "8 sms, 4 email" → {"sms": 8, "email": 4}; a single "quiet hours" stands for all `total`."""
    found = [re.fullmatch(r"(\d+) (.+)", part) for part in text.split(", ")]
    if len(found) == 1 and found[0] is None:
        return {text: total}
    assert all(found), text
    return {match.group(2): int(match.group(1)) for match in found if match}


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

    # and the time of day only moves shoppers between cities: who they are and what they do stays
    elsewhere = _planned(places=demo.Places(day=demo.CITIES[5:6], night=demo.CITIES[:1]))
    assert [(j.persona, j.night, j.sms_opt_in, j.phone is None, bool(j.comeback)) for j in first] == [
        (j.persona, j.night, j.sms_opt_in, j.phone is None, bool(j.comeback)) for j in elsewhere
    ]
    for journey in first:
        assert journey.city in (ANY_PLACES.night if journey.night else ANY_PLACES.day)


def test_every_demo_phone_number_is_valid_and_comebacks_are_daytime_sms_opt_ins() -> None:
    # given a large plan
    journeys = _planned(shoppers=400)

    # then every phone number is one winback keeps (an invalid one would be dropped silently)
    phones = [j.phone for j in journeys if j.phone]
    assert len(phones) > 50
    assert all(contact.normalise_phone(phone) == phone for phone in phones)
    for city in demo.CITIES:
        assert contact.normalise_phone(city.phone(0.0)) and contact.normalise_phone(city.phone(0.9999))

    # and only shoppers who will get the SMS now come back to order with its code
    for journey in journeys:
        if journey.comeback:
            assert journey.persona == "checkout_abandoner" and journey.sms_opt_in and not journey.night


def test_places_split_cities_by_the_quiet_hours_window() -> None:
    from winback.settings import Settings

    # given 12:45 UTC and the default window 08:00-21:00
    noon = datetime(2026, 3, 2, 12, 45, tzinfo=UTC)
    places = demo.places_at(noon, Settings(database_url="sqlite://"))

    # then London (12:45) and Tokyo (21:45) fall on their sides, and New York (07:45, day in 15 minutes)
    # on neither: it would change sides during the run
    names = lambda cities: {city.name for city in cities}  # noqa: E731
    assert "London" in names(places.day) and "Tokyo" in names(places.night)
    assert "New York" not in names(places.day) and "New York" not in names(places.night)

    # and a window the user set is the one that counts
    places = demo.places_at(noon, Settings(database_url="sqlite://", quiet_hours_window="06:00-21:00"))
    assert "New York" in names(places.day)


def test_demo_flows_are_made_once_and_kept_live(engine: Engine) -> None:
    # given the demo flows made on a database
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    ids = demo.ensure_demo_flows(engine, now)
    assert set(ids) == set(demo.DEMO_FLOWS)

    # when someone pauses one and the demo starts again
    with transaction(engine) as session:
        service.set_status(session, ids[demo.SMS_FLOW], "paused", now)
    again = demo.ensure_demo_flows(engine, now)

    # then the same flows are found by name, live again, with no new version
    assert again == ids
    with reading(engine) as session:
        flows = session.scalars(select(Flow)).all()
        assert len(flows) == len(demo.DEMO_FLOWS)
        assert {flow.status for flow in flows} == {"live"}
        assert session.scalar(select(func.count()).select_from(FlowVersion)) == len(demo.DEMO_FLOWS)

    # and the summary reads them (nothing sent yet)
    summary = demo.summarise(engine)
    assert [flow.name for flow in summary.flows] == list(demo.DEMO_FLOWS)
    assert summary.settled and sum(summary.sent.values()) == 0


def test_demo_once_fills_the_database_and_reports_it(tmp_path: Path) -> None:
    # given an empty SQLite database and the plan the demo will follow for this seed
    database = tmp_path / "demo.db"
    journeys = _planned()
    personas = Counter(j.persona for j in journeys)
    buyers = [j for j in journeys if j.persona in ("buyer", "refunded_buyer")]
    identified = [j for j in journeys if any(c.kind == "identify" for c in j.calls)]
    abandoners = [j for j in journeys if j.persona == "checkout_abandoner"]
    comebacks = [j for j in abandoners if j.comeback]
    sms_now = [j for j in abandoners if j.sms_opt_in and not j.night]
    sms_at_night = [j for j in abandoners if j.sms_opt_in and j.night]
    no_opt_in = [j for j in abandoners if j.phone and not j.sms_opt_in]
    no_phone = [j for j in abandoners if not j.phone]
    signups = [j for j in journeys if j.signs_up]
    assert comebacks and sms_at_night and no_opt_in and signups  # the seed shows every case

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
    assert int(orders.group(1)) == len(buyers) + len(comebacks) > 0

    # and the messages the demo flows sent: SMS with a code to opted-in abandoners where it is day,
    # waiting for the morning where it is night, skipped without an opt-in; welcome emails
    messages = re.search(
        r"messages (\d+) sent \(([^)]*)\) · (\d+) skipped \(([^)]*)\) · (\d+) deferred \(([^)]*)\)", output
    )
    assert messages is not None, output
    sent, by_channel, skipped, why_skipped, deferred, why_deferred = messages.groups()
    channels = _counts(by_channel, int(sent))
    assert (
        channels["sms"] == len(sms_now)
        and channels["email"] >= len(signups)
        and sum(channels.values()) == int(sent)
    )
    assert _counts(why_skipped, int(skipped)) == {
        why: len(who) for why, who in (("no SMS opt-in", no_opt_in), ("no phone number", no_phone)) if who
    }
    assert _counts(why_deferred, int(deferred)) == {"quiet hours": len(sms_at_night)}
    assert f"discount codes {len(abandoners)} made, {len(comebacks)} used" in output
    checkout_sms = re.search(r"Demo: abandoned checkout SMS (\d+) sent · (\d+) clicked · (\d+) converted, "
                             r"revenue USD ([\d,.]+)", output)  # fmt: skip
    assert checkout_sms is not None, output
    comeback_revenue = _order_totals(comebacks, "Order Completed")
    assert checkout_sms.groups() == (
        str(len(sms_now)),
        str(len(comebacks)),
        str(len(comebacks)),
        f"{comeback_revenue:,.2f}",
    )
    assert re.search(rf"Demo: welcome email {len(signups)} sent", output), output

    # and the numbers are the database's: every planned order, abandonment and message is there
    engine = make_engine(f"sqlite:///{database}")
    summary = demo.summarise(engine)
    assert summary.customers == SHOPPERS
    assert summary.pending_events == 0
    assert summary.checkouts["abandoned"] == len(abandoners) - len(comebacks)
    assert summary.checkouts["recovered"] == len(comebacks)
    assert summary.checkouts["completed"] == len(buyers)
    assert summary.derived["Checkout Abandoned"] == personas["checkout_abandoner"]
    assert summary.derived["Cart Abandoned"] == personas["cart_abandoner"]
    assert summary.orders == len(buyers) + len(comebacks)
    planned_totals = _order_totals(buyers + comebacks, "Order Completed")
    planned_refunds = _order_totals(buyers, "Order Refunded")
    assert summary.refunded == {"USD": planned_refunds}
    assert summary.revenue == {"USD": planned_totals - planned_refunds}
    assert orders.group(2) == f"{planned_totals - planned_refunds:,.2f}"
    with reading(engine) as session:
        bodies = session.scalars(
            select(Message.body).where(Message.channel == "sms", Message.sent_at.is_not(None))
        )
        for body in bodies:
            assert re.fullmatch(r"Northwind Roasters: \S+, your cart is saved\. 10% off with code WB-\w{8}: "
                                r"http://127\.0\.0\.1:\d+/l/\w+ Reply STOP to opt out", body or ""), body  # fmt: skip
        assert (
            session.scalar(select(func.count()).select_from(Message).where(Message.provider != "outbox")) == 0
        )
    engine.dispose()


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
