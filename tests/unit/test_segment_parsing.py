"""The Segment wire format: validation, skew correction and batch all-or-nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from winback.ingest import segment
from winback.kernel.errors import InvalidInput, PayloadTooLarge

RECEIVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_track_keeps_fields_and_corrects_client_clock_skew() -> None:
    # given a client whose clock runs 1 hour fast, sending an event 5 seconds after it happened
    row = segment.parse_message(
        {
            "messageId": "m-1",
            "userId": "u1",
            "event": "Product Viewed",
            "properties": {"product_id": "p1"},
            "context": {"ip": "203.0.113.9", "campaign": {"source": "newsletter"}},
            "timestamp": "2026-03-02T12:59:55Z",
            "sentAt": "2026-03-02T13:00:00Z",
        },
        received_at=RECEIVED,
        message_type="track",
    )
    # then the event time is placed 5 seconds before the server received it
    assert row.timestamp == RECEIVED - timedelta(seconds=5)
    assert row.original_timestamp == datetime(2026, 3, 2, 12, 59, 55, tzinfo=UTC)
    assert row.event == "Product Viewed"
    assert row.context["campaign"] == {"source": "newsletter"}
    assert row.received_at == RECEIVED


def test_missing_identity_is_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        segment.parse_message({"event": "x"}, received_at=RECEIVED, message_type="track")
    assert caught.value.details["field"] == "userId"


def test_track_without_event_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="'event'"):
        segment.parse_message({"userId": "u"}, received_at=RECEIVED, message_type="track")


def test_batch_names_the_index_of_the_bad_message() -> None:
    body = {"batch": [{"type": "track", "userId": "u", "event": "A"}, {"type": "track", "event": "B"}]}
    with pytest.raises(InvalidInput) as caught:
        segment.parse_batch(body, received_at=RECEIVED, max_event_bytes=32_000)
    assert caught.value.details["index"] == 1
    assert caught.value.message.startswith("batch[1]:")


def test_batch_refuses_an_oversized_event() -> None:
    body = {"batch": [{"type": "track", "userId": "u", "event": "A", "properties": {"x": "y" * 40_000}}]}
    with pytest.raises(PayloadTooLarge) as caught:
        segment.parse_batch(body, received_at=RECEIVED, max_event_bytes=32 * 1024)
    assert caught.value.details["index"] == 0


def test_batch_context_and_sent_at_apply_to_each_message() -> None:
    body = {
        "batch": [{"type": "identify", "anonymousId": "a1", "traits": {"email": "x@example.com"}, "timestamp": "2026-03-02T11:59:00Z"}],
        "context": {"library": {"name": "analytics-python"}},
        "sentAt": "2026-03-02T12:00:00Z",
    }
    [row] = segment.parse_batch(body, received_at=RECEIVED, max_event_bytes=32_000)
    assert row.context == {"library": {"name": "analytics-python"}}
    assert row.timestamp == RECEIVED - timedelta(minutes=1)


def test_alias_needs_previous_id() -> None:
    with pytest.raises(InvalidInput, match="previousId"):
        segment.parse_message({"userId": "u"}, received_at=RECEIVED, message_type="alias")


def test_timestamp_without_zone_is_utc_and_garbage_is_refused() -> None:
    row = segment.parse_message(
        {"anonymousId": "a", "timestamp": "2026-03-01T10:00:00"}, received_at=RECEIVED, message_type="page"
    )
    assert row.timestamp == datetime(2026, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="timestamp"):
        segment.parse_message({"anonymousId": "a", "timestamp": "yesterday"}, received_at=RECEIVED, message_type="page")
