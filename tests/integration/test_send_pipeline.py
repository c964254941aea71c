"""The sending pipeline on SQLite and PostgreSQL: outbox → message → policies → copy → provider →
outcome, with every state change recorded and the reasons a person can read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.peers.twilio import FakeTwilio
from winback import apikeys
from winback.db.engine import transaction
from winback.db.models import Event, FlowRun, Message, MessageEvent, Suppression, TrackedLink
from winback.flows import engine as flow_engine
from winback.flows import service
from winback.kernel.clock import VirtualClock
from winback.messaging import admin
from winback.messaging.pipeline import CLAIM_LEASE, Sender, SendReport
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.settings import Settings
from winback.web.app import create_app

PHONE = "+14155550123"  # San Francisco: America/Los_Angeles
SMS_FLOW = {
    "trigger": {"type": "event", "event": "Product Viewed"},
    "start": "sms",
    "nodes": [
        {
            "id": "sms",
            "type": "action",
            "action": {
                "type": "send_sms",
                "body": "Hi {{ customer.first_name }}, still thinking about it? {{ event.url }} Reply STOP to opt out",
            },
        }
    ],
}


@pytest.fixture
def make_runtime(database_url: str) -> Iterator[Callable[..., Runtime]]:
    """A runtime on the test database with extra settings; the clock starts at 17:00 UTC
    (09:00 in San Francisco: inside the default quiet-hours window)."""
    made: list[Runtime] = []

    def make(clock: VirtualClock | None = None, **settings: Any) -> Runtime:
        runtime = Runtime.from_settings(
            Settings(database_url=database_url, **settings),
            clock=clock or VirtualClock(datetime.fromisoformat("2026-03-02T17:00:00+00:00")),
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.engine.dispose()


def _live_flow(runtime: Runtime, definition: dict[str, Any], name: str = "flow") -> int:
    with transaction(runtime.engine) as session:
        flow = service.create_flow(session, name=name, definition=definition, now=runtime.clock.now())
        service.set_status(session, flow.id, "live", runtime.clock.now())
        return flow.id


def _tracker(runtime: Runtime) -> Callable[..., Any]:
    key = apikeys.create_key(runtime.engine, name="store", scope="write", now=runtime.clock.now()).secret
    client = TestClient(create_app(runtime))

    def track(kind: str, **message: Any) -> Any:
        response = client.post(f"/v1/{kind}", json=message, auth=(key, ""))
        assert response.status_code == 200, response.text
        return response

    return track


def _shopper(track: Callable[..., Any], user_id: str = "u1", **traits: Any) -> None:
    track(
        "identify",
        userId=user_id,
        traits={"firstName": "Ann", "phone": PHONE, "sms_consent": "subscribed", **traits},
    )


def _view(track: Callable[..., Any], runtime: Runtime, user_id: str = "u1") -> None:
    track(
        "track",
        userId=user_id,
        event="Product Viewed",
        properties={"product_id": "p1", "url": "https://shop.example/products/boots"},
    )
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)


def _messages(runtime: Runtime) -> list[Message]:
    with Session(runtime.engine) as session:
        return list(session.scalars(sa.select(Message).order_by(Message.id)))


def _history(runtime: Runtime, message_id: int) -> list[tuple[str, str | None]]:
    with Session(runtime.engine) as session:
        return [
            (event.status, event.reason)
            for event in session.scalars(
                sa.select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
            )
        ]


def test_sms_is_rendered_tracked_sent_and_streamed(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    flow_id = _live_flow(runtime, SMS_FLOW)
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)

    report = Sender(runtime).run()

    assert (report.taken, report.sent) == (1, 1)
    [message] = _messages(runtime)
    assert message.status == "delivered" and message.provider == "outbox"
    assert message.to_address == PHONE and message.flow_id == flow_id
    assert message.body is not None and message.body.startswith("Hi Ann, still thinking about it? http://")
    assert "shop.example" not in message.body  # the link is a tracked short link
    assert (message.sms_encoding, message.sms_parts) == ("GSM-7", 1)
    with Session(runtime.engine) as session:
        [link] = session.scalars(sa.select(TrackedLink))
        assert link.url == "https://shop.example/products/boots" and link.message_id == message.id
    assert [status for status, _ in _history(runtime, message.id)] == [
        "queued",
        "sending",
        "sent",
        "delivered",
    ]
    # segments read the engagement events: flow_id as a string, the channel
    process_pending(runtime)
    with Session(runtime.engine) as session:
        delivered = session.scalars(sa.select(Event).where(Event.event == "Message Delivered")).one()
        assert delivered.properties["flow_id"] == str(flow_id)
        assert delivered.properties["channel"] == "sms"
        assert delivered.customer_id == message.customer_id


def test_no_recorded_opt_in_skips_with_the_reason(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    _live_flow(runtime, SMS_FLOW)
    track = _tracker(runtime)
    track("identify", userId="u1", traits={"firstName": "Ann", "phone": PHONE})  # a phone is no opt-in
    _view(track, runtime)

    report = Sender(runtime).run()

    assert report.skipped == 1
    [message] = _messages(runtime)
    assert message.status == "skipped"
    assert message.status_reason is not None and "opt-in" in message.status_reason
    assert message.body is None  # nothing was rendered for a message that never goes


def test_quiet_hours_defer_to_the_local_morning(make_runtime: Callable[..., Runtime]) -> None:
    clock = VirtualClock(datetime.fromisoformat("2026-03-02T06:00:00+00:00"))  # 22:00 in San Francisco
    runtime = make_runtime(clock)
    _live_flow(runtime, SMS_FLOW)
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)
    sender = Sender(runtime)

    assert sender.run().deferred == 1
    [message] = _messages(runtime)
    assert message.status == "deferred"
    assert message.next_attempt_at == datetime.fromisoformat("2026-03-02T16:00:00+00:00")  # 08:00 PST
    assert "America/Los_Angeles" in (message.status_reason or "")
    clock.advance(timedelta(hours=9, minutes=59))
    assert sender.run().sent == 0
    clock.advance(timedelta(minutes=1))
    assert sender.run().sent == 1
    assert [s for s, _ in _history(runtime, message.id)] == [
        "queued",
        "deferred",
        "sending",
        "sent",
        "delivered",
    ]


def test_a_frequency_cap_across_flows_skips_the_second_sms(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    _live_flow(runtime, SMS_FLOW, name="first")
    _live_flow(runtime, {**SMS_FLOW, "priority": 10}, name="second")
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)

    report = Sender(runtime).run()

    assert (report.sent, report.skipped) == (1, 1)
    first, second = sorted(_messages(runtime), key=lambda m: -m.priority)
    assert first.status == "delivered"  # the higher-priority flow goes first
    assert second.status == "skipped"
    assert "at most 1 sms per 24 h" in (second.status_reason or "")


def test_copy_that_fails_for_one_customer_fails_that_message_only(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    broken = {
        **SMS_FLOW,
        "nodes": [
            {**SMS_FLOW["nodes"][0], "action": {"type": "send_sms", "body": "Your code {{ discount.code }}"}}
        ],
    }
    _live_flow(runtime, broken, name="broken")
    _live_flow(runtime, SMS_FLOW, name="fine")
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)

    report = Sender(runtime, rng=None).run()

    statuses = {m.flow_id: (m.status, m.status_reason) for m in _messages(runtime)}
    assert report.failed == 1 and report.sent == 1
    failed = next(reason for status, reason in statuses.values() if status == "failed")
    assert failed is not None and "the message copy failed" in failed and "discount" in failed


def test_a_buyer_is_not_sent_a_reminder_deferred_before_the_order(
    make_runtime: Callable[..., Runtime],
) -> None:
    clock = VirtualClock(datetime.fromisoformat("2026-03-02T06:00:00+00:00"))  # 22:00 in San Francisco
    runtime = make_runtime(clock)
    two_reminders = {
        **SMS_FLOW,
        "exit_when": [{"type": "event_since_entry", "event": "Order Completed"}],
        "nodes": [
            {**SMS_FLOW["nodes"][0], "next": "later"},
            {"id": "later", "type": "delay", "duration": {"amount": 3, "unit": "days"}, "next": "again"},
            {**SMS_FLOW["nodes"][0], "id": "again"},
        ],
    }
    _live_flow(runtime, two_reminders)
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)
    sender = Sender(runtime)
    assert sender.run().deferred == 1  # queued at night: deferred to the morning
    # the shopper orders before the morning: the run ends
    clock.advance(timedelta(hours=2))
    track("track", userId="u1", event="Order Completed", properties={"order_id": "o1", "total": 50})
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    with Session(runtime.engine) as session:
        assert session.scalars(sa.select(FlowRun.status)).one() == "exited"
    clock.advance(timedelta(hours=9))

    report = sender.run()

    [message] = _messages(runtime)
    assert report.skipped == 1 and message.status == "skipped"
    assert "flow run ended before it was sent" in (message.status_reason or "")


def test_twilio_refusals_retries_and_unknown_outcomes(make_runtime: Callable[..., Runtime]) -> None:
    with FakeTwilio() as twilio:
        runtime = make_runtime(**twilio.settings(webhook_timeout_s=0.5))
        _live_flow(runtime, SMS_FLOW)
        track = _tracker(runtime)
        _shopper(track)
        _view(track, runtime)
        sender = Sender(runtime)

        # a 500 is retried later, with the reason and the time of the next attempt
        twilio.fail_next(1, status=500)
        assert sender.run().retrying == 1
        [message] = _messages(runtime)
        assert message.status == "retrying" and message.next_attempt_at is not None
        assert "attempt 1 of 8" in (message.status_reason or "")
        runtime.clock.advance(message.next_attempt_at - runtime.clock.now())  # type: ignore[attr-defined]
        assert sender.run().sent == 1
        [message] = _messages(runtime)
        assert message.status == "sent" and message.provider_message_id == twilio.messages[-1].sid
        assert message.attempts == 2

        # a timeout after the request reached Twilio: unknown, never sent again blindly
        _shopper(track, user_id="u2", phone="+14155550124")
        _view(track, runtime, user_id="u2")
        twilio.hang_next(1, seconds=1.5)
        assert sender.run().unknown == 1
        arrived = len(twilio.messages)
        runtime.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
        assert sender.run().sent == 0
        assert len(twilio.messages) == arrived
        assert _messages(runtime)[-1].status == "unknown"
        sender.close()


def test_an_invalid_number_fails_and_is_suppressed(make_runtime: Callable[..., Runtime]) -> None:
    with FakeTwilio() as twilio:
        runtime = make_runtime(**twilio.settings())
        _live_flow(runtime, SMS_FLOW)
        track = _tracker(runtime)
        _shopper(track, phone="+15005550001", timezone="America/Los_Angeles")  # Twilio magic invalid number
        _view(track, runtime)

        assert Sender(runtime).run().failed == 1
        [message] = _messages(runtime)
        assert message.status == "failed"
        with Session(runtime.engine) as session:
            suppression = session.scalars(sa.select(Suppression)).one()
        assert (suppression.channel, suppression.address, suppression.reason) == (
            "sms",
            "+15005550001",
            "invalid",
        )


def test_a_worker_killed_mid_send_leaves_an_unknown_message(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    _live_flow(runtime, SMS_FLOW)
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)
    sender = Sender(runtime)
    sender.take_outbox()
    [message] = _messages(runtime)
    # the worker committed "sending" and died before the provider answered
    report = SendReport()
    [prepared], _ = sender._prepare_batch([message.id], {}, report, deadline=float("inf"))
    assert sender._mark_sending(prepared) and report.total == 0
    assert _messages(runtime)[0].status == "sending"
    assert Sender(runtime).run().sent == 0  # its lease is not over yet
    runtime.clock.advance(CLAIM_LEASE)  # type: ignore[attr-defined]
    assert Sender(runtime).run().unknown == 1
    [message] = _messages(runtime)
    assert message.status == "unknown" and "not sent again blindly" in (message.status_reason or "")


def test_test_send_and_channel_status(make_runtime: Callable[..., Runtime]) -> None:
    with FakeTwilio() as twilio:
        runtime = make_runtime(**twilio.settings())
        result = admin.test_send(runtime, "sms", "+1 (415) 555-0199", text="Hello from the test")
        assert (result.status, result.provider) == ("sent", "twilio")
        assert twilio.messages[-1].to == "+14155550199" and twilio.messages[-1].body == "Hello from the test"
        statuses = admin.channel_statuses(runtime)
        assert statuses["sms"].ok and statuses["sms"].provider == "twilio"
        assert statuses["email"].provider == "outbox"
    bad = make_runtime(sms_provider="twilio", twilio_account_sid="AC" + "0" * 32, twilio_auth_token="x")
    statuses = admin.channel_statuses(bad)
    assert not statuses["sms"].ok and "TWILIO_FROM_NUMBER" in statuses["sms"].detail.upper()


def test_a_deferred_message_is_not_sent_once_the_flow_exit_rule_holds(
    make_runtime: Callable[..., Runtime],
) -> None:
    # given a flow whose SMS is deferred by quiet hours, and whose run waits for an order to say
    # thanks (so the order moves the run on instead of ending it)
    clock = VirtualClock(datetime.fromisoformat("2026-03-02T06:00:00+00:00"))  # 22:00 in San Francisco
    runtime = make_runtime(clock)
    flow = {
        **SMS_FLOW,
        "exit_when": [{"type": "event_since_entry", "event": "Order Completed"}],
        "nodes": [
            {**SMS_FLOW["nodes"][0], "next": "ordered"},
            {"id": "ordered", "type": "wait_for_event", "event": "Order Completed",
             "timeout": {"amount": 1, "unit": "days"}, "on_event": "thanks", "on_timeout": "done"},
            {"id": "thanks", "type": "action", "ignore_exit_conditions": True,
             "action": {"type": "send_sms", "body": "Thanks!", "transactional": True}},
            {"id": "done", "type": "exit"},
        ],
    }  # fmt: skip
    _live_flow(runtime, flow)
    track = _tracker(runtime)
    _shopper(track)
    _view(track, runtime)
    sender = Sender(runtime)
    assert sender.run().deferred == 1
    # when the shopper orders in the night: the run thanks them and completes
    clock.advance(timedelta(hours=1))
    track("track", userId="u1", event="Order Completed", properties={"order_id": "o1", "total": 50})
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    # then in the morning the thank-you (transactional) has gone, and the reminder does not
    clock.advance(timedelta(hours=9))
    sender.run()
    reminder, thanks = _messages(runtime)
    assert thanks.status == "delivered"
    assert reminder.status == "skipped"
    assert reminder.status_reason == (
        "the flow's exit rule holds since it was queued (Order Completed since entry)"
    )


def test_a_worker_taking_over_a_paced_provider_waits_one_window(make_runtime: Callable[..., Runtime]) -> None:
    # given a paced Twilio and a worker that has just taken its `send:twilio` lease
    runtime = make_runtime(sms_provider="twilio", send_rates={"twilio": 1.0})
    ticks = iter([100.0, 100.0, 100.5, 100.5, 101.1, 101.1])
    held: list[str] = []
    sender = Sender(runtime, holds=lambda name: held.append(name) is None, monotonic=lambda: next(ticks))
    # then it sends nothing on that provider for a pacing window (the last holder's sends of the
    # last second are unknown to it), and sends once the window has passed
    assert sender._may_send("sms") is False
    assert sender._may_send("sms") is False
    assert sender._may_send("sms") is True
    assert held == ["send:twilio"] * 3
    # while the outbox provider, never paced, needs no lease
    assert Sender(make_runtime(), holds=lambda _name: False)._may_send("email") is True
