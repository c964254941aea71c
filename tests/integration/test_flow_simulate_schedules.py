"""Back-testing flows with date and schedule triggers on both databases: a daily audience whose
members change during the period, birthdays at each customer's local time, and over HTTP — with
nothing written."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.integration.test_flow_scheduler import HELLO, _customer
from tests.integration.test_flow_simulate import _order, _row_counts, _send
from winback.db.engine import transaction
from winback.db.models import Customer
from winback.flows import definition, simulate_schedules
from winback.flows.simulate import simulate_flow
from winback.kernel.clock import VirtualClock
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.segments import service as segments

DAILY_AT_NINE = {"type": "schedule", "segment_id": 0, "cron": "0 9 * * *"}
BIRTHDAY_AHEAD = {"type": "date", "property": "birthday", "offset_days": -3, "at": "10:00"}


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _flow(trigger: dict[str, Any]) -> definition.FlowDefinition:
    return definition.parse_flow(
        {"trigger": trigger, "entry": {"reentry": {"mode": "every_time"}}, "start": "hello", "nodes": HELLO}
    )


def _apply(runtime: Runtime) -> None:
    """Apply what was sent, then the Segment Entered/Exited events that produced."""
    process_pending(runtime)
    process_pending(runtime)


def _buyers_history(runtime: Runtime, clock: VirtualClock) -> int:
    """A "has ordered" segment whose members change during the period; returns its id.

    - ann ordered before the segment existed: a member throughout, with no transition recorded;
    - bob orders on 3 March at noon: a member from then;
    - cat orders on 4 March at noon and cancels that evening: a member for six hours, between
      two nine o'clocks.
    """
    for name in ("ann", "bob", "cat"):
        _send(runtime, "identify", name, traits={"email": f"{name}@example.com"})
    _order(runtime, "ann", "ann-1", 50)
    _apply(runtime)
    with transaction(runtime.engine) as session:
        segment_id = segments.create_segment(
            session, name="buyers", definition={"type": "order_count", "compare": {"op": "gte", "value": 1}},
            now=clock.now(), timezone="UTC",
        ).id  # fmt: skip
    clock.set(_utc(2026, 3, 3, 12))
    _order(runtime, "bob", "bob-1", 60)
    _apply(runtime)
    clock.set(_utc(2026, 3, 4, 12))
    _order(runtime, "cat", "cat-1", 70)
    _apply(runtime)
    clock.set(_utc(2026, 3, 4, 18))
    _send(runtime, "track", "cat", event="Order Cancelled", properties={"order_id": "cat-1"})
    _apply(runtime)
    clock.set(_utc(2026, 6, 1))  # the back-test runs long after
    return segment_id


def _names(runtime: Runtime) -> dict[int, str]:
    with Session(runtime.engine) as session:
        return dict(session.execute(sa.select(Customer.id, Customer.user_id)).all())


def test_a_daily_audience_is_back_tested_with_each_days_members(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given a segment that ann is in throughout, bob joins on 3 March and cat is in for six hours
    segment_id = _buyers_history(runtime, clock)
    trigger = {**DAILY_AT_NINE, "segment_id": segment_id}
    start, end = _utc(2026, 3, 3), _utc(2026, 3, 6)
    before = _row_counts(runtime.engine)
    # when the daily flow's triggers are replayed over three days
    with Session(runtime.engine) as session:
        entries = list(
            simulate_schedules.scheduled_entries(session, _flow(trigger).trigger, 7, start, end, "UTC")
        )
    names = _names(runtime)
    # then each nine o'clock enrols those who were members then: never cat
    assert [(e.timestamp, names[e.customer_id]) for e in entries] == [
        (_utc(2026, 3, 3, 9), "ann"),
        (_utc(2026, 3, 4, 9), "ann"), (_utc(2026, 3, 4, 9), "bob"),
        (_utc(2026, 3, 5, 9), "ann"), (_utc(2026, 3, 5, 9), "bob"),
    ]  # fmt: skip
    assert entries[0].event == "Scheduled" and entries[0].properties["segment_id"] == segment_id
    assert entries[0].message_id == f"schedule:7:{_utc(2026, 3, 3, 9).isoformat()}:{entries[0].customer_id}"
    # and the whole back-test starts and steps those five runs, writing nothing
    report = simulate_flow(runtime.engine, _flow(trigger), start, end, timezone="UTC", flow_id=7).to_dict()
    assert (report["triggered"], report["runs"]["entered"], report["runs"]["completed"]) == (5, 5, 5)
    assert report["actions"] == {"send_sms": 5}
    assert _row_counts(runtime.engine) == before


def test_a_birthday_flow_is_back_tested_at_each_customers_local_ten(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given birthdays on 10 March in Paris and New York, one in April, a tombstone and no birthday
    _customer(runtime, "paris", birthday=date(1990, 3, 10), timezone="Europe/Paris")
    _customer(runtime, "new-york", birthday=date(1985, 3, 10), timezone="America/New_York")
    _customer(runtime, "april", birthday=date(1990, 4, 20))
    survivor = _customer(runtime, "survivor")
    _customer(runtime, "merged", birthday=date(1991, 3, 10), merged_into_id=survivor)
    _customer(runtime, "none")
    start, end = _utc(2026, 3, 1), _utc(2026, 4, 1)
    # when a "three days before the birthday, at 10:00" flow is back-tested over March
    with Session(runtime.engine) as session:
        flow = _flow(BIRTHDAY_AHEAD)
        entries = list(simulate_schedules.scheduled_entries(session, flow.trigger, 3, start, end, "UTC"))
    names = _names(runtime)
    # then each fires on 7 March at ten on their own clock (New York is still on EST then)
    assert [
        (e.timestamp, names[e.customer_id], e.properties["date"], e.properties["years"]) for e in entries
    ] == [
        (_utc(2026, 3, 7, 9), "paris", "2026-03-10", 36),
        (_utc(2026, 3, 7, 15), "new-york", "2026-03-10", 41),
    ]
    report = simulate_flow(runtime.engine, flow, start, end, timezone="UTC", flow_id=3).to_dict()
    assert (report["triggered"], report["runs"]["entered"]) == (2, 2)


def test_the_simulate_endpoint_back_tests_a_scheduled_flow(
    admin_client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    # given the buyers segment's history and a saved daily flow to it
    segment_id = _buyers_history(runtime, clock)
    flow = {"trigger": {**DAILY_AT_NINE, "segment_id": segment_id}, "entry": {"reentry": {"mode": "every_time"}},
            "start": "hello", "nodes": HELLO}  # fmt: skip
    created = admin_client.post("/api/v1/flows", json={"name": "daily", "definition": flow})
    assert created.status_code == 201, created.text
    # when it is back-tested over HTTP
    response = admin_client.post(
        f"/api/v1/flows/{created.json()['id']}/simulate",
        json={"from": "2026-03-03T00:00:00Z", "to": "2026-03-06T00:00:00Z"},
    )
    # then the report counts the five scheduled entries
    assert response.status_code == 200, response.text
    assert (response.json()["triggered"], response.json()["runs"]["entered"]) == (5, 5)
