"""Back-testing flows over a stored history: exact per-node counts, messages, consent skips and the
orders that followed — and not one row written."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.commerce import abandonment
from winback.db.models import Base
from winback.flows import definition, simulate
from winback.flows.simulate import simulate_flow
from winback.ingest.segment import parse_message
from winback.ingest.store import store_events
from winback.kernel.clock import VirtualClock
from winback.processing.processor import process_pending
from winback.runtime import Runtime

PERIOD_START = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)  # the day after the clock's start
PERIOD_END = datetime(2026, 3, 6, 0, 0, tzinfo=UTC)
ABANDONED_AT = datetime(2026, 3, 3, 10, 1, tzinfo=UTC)  # the sweep an hour after the checkouts
PRODUCTS = [{"product_id": "p1", "name": "Boots", "price": 120, "quantity": 1}]


def _send(runtime: Runtime, kind: str, user_id: str, **message: Any) -> None:
    """One Segment call received now, as the ingest API stores it."""
    now = runtime.clock.now()
    row = parse_message({"userId": user_id, "timestamp": now.isoformat(), **message}, received_at=now,
                        message_type=kind)  # fmt: skip
    store_events(runtime.engine, [row])


def _order(runtime: Runtime, user_id: str, order_id: str, total: int, checkout_id: str | None = None) -> None:
    properties: dict[str, Any] = {"order_id": order_id, "total": total, "products": PRODUCTS}
    if checkout_id:
        properties["checkout_id"] = checkout_id
    _send(runtime, "track", user_id, event="Order Completed", properties=properties)


def _checkout(runtime: Runtime, user_id: str, checkout_id: str, value: int = 120) -> None:
    _send(runtime, "track", user_id, event="Checkout Started",
          properties={"checkout_id": checkout_id, "value": value, "products": PRODUCTS})  # fmt: skip


def _store_history(runtime: Runtime, clock: VirtualClock) -> None:
    """Five shoppers, processed and swept on the virtual clock:

    - ann (casual, SMS consent) orders three hours after abandoning checkout k1;
    - bob (5 orders, $600 before the period: high value; no SMS consent) abandons k2, never orders;
    - cat (casual, SMS consent) orders 30 minutes after abandoning k3, before any message;
    - eve (4 orders, $600 before the period: casual THEN) abandons k5 and orders the next
      afternoon, after the reminder — her stored profile now shows 5 orders and $750;
    - dan (casual, SMS consent) abandons k4 on the evening before the period ends.
    """
    for user_id, consent in (("ann", "subscribed"), ("bob", None), ("cat", "subscribed"),
                             ("dan", "subscribed"), ("eve", "subscribed")):  # fmt: skip
        traits: dict[str, Any] = {"email": f"{user_id}@example.com", "phone": "+14155550123"}
        if consent:
            traits |= {
                "sms_consent": consent,
                "email_consent": consent if user_id in ("ann", "eve") else None,
            }
        _send(runtime, "identify", user_id, traits={k: v for k, v in traits.items() if v is not None})
    for number in range(5):
        _order(runtime, "bob", f"bob-{number}", 120)
    for number in range(4):
        _order(runtime, "eve", f"eve-{number}", 150)
    process_pending(runtime)
    clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    for user_id, checkout_id in (("ann", "k1"), ("bob", "k2"), ("cat", "k3"), ("eve", "k5")):
        _checkout(runtime, user_id, checkout_id)
    process_pending(runtime)
    clock.set(ABANDONED_AT)
    assert abandonment.sweep(runtime).checkouts_abandoned == 4
    process_pending(runtime)
    clock.set(ABANDONED_AT + timedelta(minutes=30))
    _order(runtime, "cat", "cat-1", 80, checkout_id="k3")
    clock.set(ABANDONED_AT + timedelta(hours=3))
    _order(runtime, "ann", "ann-1", 120, checkout_id="k1")
    clock.set(ABANDONED_AT + timedelta(hours=30))
    _order(runtime, "eve", "eve-4", 150, checkout_id="k5")
    process_pending(runtime)
    clock.set(datetime(2026, 3, 5, 20, 0, tzinfo=UTC))
    _checkout(runtime, "dan", "k4")
    process_pending(runtime)
    clock.set(datetime(2026, 3, 5, 21, 1, tzinfo=UTC))
    assert abandonment.sweep(runtime).checkouts_abandoned == 1
    process_pending(runtime)
    clock.set(datetime(2026, 6, 20, tzinfo=UTC))  # the back-test runs long after the period


def _row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
        }


def _nodes(report: dict[str, Any]) -> dict[str, tuple[int, int, int, dict[str, int], dict[str, int]]]:
    return {n["node_id"]: (n["entered"], n["waiting"], n["passed"], n["outcomes"], n["exited"])
            for n in report["nodes"]}  # fmt: skip


def test_abandoned_cart_flow_back_tested_over_the_stored_history(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given a store's history with five abandoned checkouts, three orders and mixed consent
    _store_history(runtime, clock)
    before = _row_counts(runtime.engine)
    calls: list[tuple[int, int]] = []
    # when the abandoned-cart flow is simulated over the period
    report = simulate_flow(
        runtime.engine, definition.parse_flow(ABANDONED_CART), PERIOD_START, PERIOD_END,
        timezone="UTC", progress=lambda done, total: calls.append((done, total)),
    ).to_dict()  # fmt: skip
    # then nothing was written anywhere
    assert _row_counts(runtime.engine) == before
    # the 13 events of the period were replayed (4 + 1 checkouts started, 5 abandoned, 3 orders)
    assert report["events_replayed"] == 13
    assert calls == [(0, 13), (13, 13)]
    assert report["period"] == {"start": "2026-03-03T00:00:00+00:00", "end": "2026-03-06T00:00:00+00:00",
                                "timezone": "UTC"}  # fmt: skip
    assert (report["triggered"], report["not_entered"]) == (5, {})
    assert report["runs"] == {
        "entered": 5, "waiting_at_end": 1, "completed": 3, "exited": 1,
        "exit_reasons": {"Order Completed since entry": 1},
    }  # fmt: skip
    # bob alone is high value; eve was casual THEN (4 orders), though her profile now has 5
    assert _nodes(report) == {
        "high-value": (5, 0, 5, {"no": 4, "yes": 1}, {}),
        "wait-vip": (1, 0, 1, {"passed": 1}, {}),
        "mms": (1, 0, 1, {"passed": 1}, {}),
        "wait-casual": (4, 0, 3, {"exited": 1, "passed": 3}, {"Order Completed since entry": 1}),
        "sms": (3, 0, 3, {"passed": 3}, {}),
        "ordered": (4, 1, 3, {"event": 1, "timeout": 2}, {}),
        "thanks": (1, 0, 0, {"passed": 1}, {"completed": 1}),
        "reminder": (2, 0, 0, {"passed": 2}, {"completed": 2}),
    }
    # bob has no SMS consent: his MMS and reminder are skipped; two casual SMS fall at night in
    # San Francisco (the phones' timezone), and so does one reminder: deferred to the morning —
    # by when ann has ordered, so hers is not sent ("stop once they buy")
    assert report["messages"] == [
        {
            "node_id": "mms",
            "kind": "send_mms",
            "would_send": 0,
            "skipped": {"skipped: no consent": 1},
            "deferred": {},
        },
        {
            "node_id": "sms",
            "kind": "send_sms",
            "would_send": 2,
            "skipped": {"skipped: exit rule held while it waited (Order Completed since entry)": 1},
            "deferred": {"quiet hours": 2},
        },
        {"node_id": "thanks", "kind": "send_sms", "would_send": 1, "skipped": {}, "deferred": {}},
        {
            "node_id": "reminder",
            "kind": "send_sms",
            "would_send": 1,
            "skipped": {"skipped: no consent": 1},
            "deferred": {"quiet hours": 1},
        },
    ]
    assert report["channels"] == {
        "send_mms": {"would_send": 0, "skipped": {"skipped: no consent": 1}, "deferred": {}},
        "send_sms": {
            "would_send": 4,
            "skipped": {
                "skipped: exit rule held while it waited (Order Completed since entry)": 1,
                "skipped: no consent": 1,
            },
            "deferred": {"quiet hours": 3},
        },
    }
    assert report["actions"] == {"send_mms": 1, "send_sms": 6}
    # cat's, ann's and eve's orders followed their entries; eve's came after the reminder; ann's
    # came in the night, before her deferred SMS, and cat's before any message: not attributed
    assert report["orders"] == {
        "after_entry": {"orders": 3, "revenue": {"USD": "350.00"}},
        "held_out": {"orders": 0, "revenue": {}},
        "by_node": {"reminder": {"orders": 1, "revenue": {"USD": "150.00"}}},
    }  # fmt: skip
    assert any("quiet hours in the recipient's timezone" in note for note in report["notes"])


def test_a_97_day_delay_is_simulated_in_milliseconds(runtime: Runtime, clock: VirtualClock) -> None:
    # given the same history and a flow that emails 97 days after an abandoned checkout
    _store_history(runtime, clock)
    flow = definition.parse_flow({
        "trigger": {"type": "event", "event": "Checkout Abandoned"},
        "start": "wait",
        "nodes": [
            {"id": "wait", "type": "delay", "duration": {"amount": 97, "unit": "days"}, "next": "email"},
            {"id": "email", "type": "action", "action": {"type": "send_email", "subject": "Still there?", "text": "Hi"}},
        ],
    })  # fmt: skip
    # when it is simulated up to 9 June, past the morning-of-3-March entries' wake-ups (8 June 10:01)
    # but not dan's (10 June 21:01)
    began = time.perf_counter()
    report = simulate_flow(
        runtime.engine, flow, PERIOD_START, datetime(2026, 6, 9, tzinfo=UTC), timezone="UTC"
    )
    elapsed = time.perf_counter() - began
    # then four runs waited 97 days and reached the email (email is opt-out: nobody of the four
    # unsubscribed, so all four would get it), one waits
    summary = report.to_dict()
    assert summary["runs"] == {
        "entered": 5,
        "waiting_at_end": 1,
        "completed": 4,
        "exited": 0,
        "exit_reasons": {},
    }
    assert _nodes(summary) == {
        "wait": (5, 1, 4, {"passed": 4}, {}),
        "email": (4, 0, 0, {"passed": 4}, {"completed": 4}),
    }
    assert summary["messages"] == [
        {"node_id": "email", "kind": "send_email", "would_send": 4, "skipped": {}, "deferred": {}}
    ]
    # the emails went out in June: the orders of March are outside their 5-day windows, but every
    # one followed an entry
    assert summary["orders"]["after_entry"] == {"orders": 3, "revenue": {"USD": "350.00"}}
    assert summary["orders"]["by_node"] == {}
    assert elapsed < 2.0


def test_a_flow_whose_trigger_never_fires_reports_zeros(runtime: Runtime, clock: VirtualClock) -> None:
    _store_history(runtime, clock)
    flow = dict(ABANDONED_CART, trigger={"type": "event", "event": "Gift Card Redeemed"})
    report = simulate_flow(
        runtime.engine, definition.parse_flow(flow), PERIOD_START, PERIOD_END, timezone="UTC"
    )
    summary = report.to_dict()
    assert summary["events_replayed"] == 13
    assert (summary["triggered"], summary["not_entered"]) == (0, {})
    assert summary["runs"] == {
        "entered": 0,
        "waiting_at_end": 0,
        "completed": 0,
        "exited": 0,
        "exit_reasons": {},
    }
    assert {
        n["node_id"]: (n["entered"], n["waiting"], n["passed"]) for n in summary["nodes"]
    } == dict.fromkeys(
        ["high-value", "wait-vip", "mms", "wait-casual", "sms", "ordered", "thanks", "reminder"], (0, 0, 0)
    )
    assert (summary["messages"], summary["channels"], summary["actions"]) == ([], {}, {})
    assert summary["orders"]["after_entry"] == {"orders": 0, "revenue": {}}


def test_a_period_that_ends_before_it_starts_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        simulate_flow(runtime.engine, definition.parse_flow(ABANDONED_CART), PERIOD_END, PERIOD_START,
                      timezone="UTC")  # fmt: skip


def test_events_are_streamed_in_chunks_with_progress_and_the_same_result(
    runtime: Runtime, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_history(runtime, clock)
    flow = definition.parse_flow(ABANDONED_CART)
    whole = simulate_flow(runtime.engine, flow, PERIOD_START, PERIOD_END, timezone="UTC").to_dict()
    # when the events come five at a time
    monkeypatch.setattr(simulate, "CHUNK_SIZE", 5)
    calls: list[tuple[int, int]] = []
    chunked = simulate_flow(runtime.engine, flow, PERIOD_START, PERIOD_END, timezone="UTC",
                            progress=lambda done, total: calls.append((done, total))).to_dict()  # fmt: skip
    # then progress is reported per chunk and the report is the same
    assert calls == [(0, 13), (5, 13), (10, 13), (13, 13)]
    assert chunked == whole
