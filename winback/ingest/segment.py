"""The Segment HTTP Tracking API wire format: validate messages and turn them into event rows.

Pure: no I/O. A message that breaks the spec raises `InvalidInput` naming the field (and, inside a
batch, the index of the bad message), so a whole batch is refused before anything is written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from winback.kernel.errors import InvalidInput, PayloadTooLarge

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

# Short paths used by analytics.js / analytics-next: /v1/t, /v1/i, ...
SHORT_PATHS = {
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
}

ID_MAX_LENGTH = 255
EVENT_NAME_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class EventRow:
    """One validated message, ready to be written to the `events` table."""

    message_id: str
    source: str
    type: str
    timestamp: datetime
    received_at: datetime
    event: str | None = None
    name: str | None = None
    category: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    customer_id: int | None = None  # known up front only for derived events

    def as_insert(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "source": self.source,
            "type": self.type,
            "event": self.event,
            "name": self.name,
            "category": self.category,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "group_id": self.group_id,
            "previous_id": self.previous_id,
            "properties": self.properties,
            "traits": self.traits,
            "context": self.context,
            "timestamp": self.timestamp,
            "original_timestamp": self.original_timestamp,
            "sent_at": self.sent_at,
            "received_at": self.received_at,
            "customer_id": self.customer_id,
        }


DERIVED_SOURCE = "derived"


def anonymous_id_of(customer_id: int) -> str:
    """The anonymous id winback's own events carry for a profile that has no user id."""
    return f"winback-customer:{customer_id}"


def derived_event(
    *,
    message_id: str,
    customer_id: int,
    user_id: str | None,
    at: datetime,
    event: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    type: str = "track",
) -> EventRow:
    """An event winback adds to the stream about a known profile (abandonment, segment and list
    changes, messages, consent from an unsubscribe, …), timed and received at `at`."""
    return EventRow(
        message_id=message_id,
        source=DERIVED_SOURCE,
        type=type,
        event=event,
        user_id=user_id,
        anonymous_id=None if user_id else anonymous_id_of(customer_id),
        properties=properties or {},
        traits=traits or {},
        timestamp=at,
        received_at=at,
        customer_id=customer_id,
    )


def decode_json(body: bytes, *, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}", field="body") from exc


def parse_timestamp(value: Any, field_name: str, index: int | None = None) -> datetime | None:
    """ISO-8601 (with or without zone; naive means UTC) or epoch milliseconds; None when absent."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        raise ValueError
    except (ValueError, OverflowError, OSError):
        raise _invalid(
            f"'{field_name}' must be an ISO-8601 date-time, got {value!r}", field_name, index
        ) from None


def _invalid(message: str, field_name: str, index: int | None) -> InvalidInput:
    if index is None:
        return InvalidInput(message, field=field_name)
    return InvalidInput(f"batch[{index}]: {message}", field=field_name, index=index)


def _optional_id(raw: dict[str, Any], key: str, index: int | None) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if type(value) is str:  # the common case, checked first: this runs for every id of every event
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        raise _invalid(f"'{key}' must be a string", key, index)
    if len(text) > ID_MAX_LENGTH:
        raise _invalid(f"'{key}' is longer than {ID_MAX_LENGTH} characters", key, index)
    return text


def _object(raw: dict[str, Any], key: str, index: int | None) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"'{key}' must be an object", key, index)
    return value


def _short_text(raw: dict[str, Any], key: str, index: int | None) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"'{key}' must be a string", key, index)
    if len(value) > EVENT_NAME_MAX_LENGTH:
        raise _invalid(f"'{key}' is longer than {EVENT_NAME_MAX_LENGTH} characters", key, index)
    return value


def corrected_timestamp(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """Segment's clock-skew correction: the client's offset between event and send, applied to
    the server's receive time. Without `sentAt` the client's timestamp is trusted as is."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return received_at - (sent_at - timestamp)


def parse_message(
    raw: Any,
    *,
    received_at: datetime,
    message_type: str | None = None,
    index: int | None = None,
    batch_context: dict[str, Any] | None = None,
    batch_sent_at: datetime | None = None,
    source: str = "segment",
) -> EventRow:
    """Validate one Segment message; `message_type` comes from the URL for single calls."""
    if not isinstance(raw, dict):
        raise _invalid("each message must be a JSON object", "body", index)
    declared = raw.get("type")
    kind = message_type or declared
    if kind not in MESSAGE_TYPES:
        raise _invalid(f"'type' must be one of {', '.join(MESSAGE_TYPES)}, got {declared!r}", "type", index)

    user_id = _optional_id(raw, "userId", index)
    anonymous_id = _optional_id(raw, "anonymousId", index)
    previous_id = _optional_id(raw, "previousId", index)
    group_id = _optional_id(raw, "groupId", index)

    if kind == "alias":
        if previous_id is None:
            raise _invalid("alias needs 'previousId'", "previousId", index)
        if user_id is None and anonymous_id is None:
            raise _invalid("alias needs 'userId'", "userId", index)
    elif user_id is None and anonymous_id is None:
        raise _invalid("either 'userId' or 'anonymousId' is required", "userId", index)

    event_name = _short_text(raw, "event", index)
    if kind == "track" and not event_name:
        raise _invalid("track needs 'event' (the event name)", "event", index)
    if kind == "group" and group_id is None:
        raise _invalid("group needs 'groupId'", "groupId", index)

    properties = _object(raw, "properties", index)
    traits = _object(raw, "traits", index)
    context = _object(raw, "context", index)
    if batch_context:
        context = {**batch_context, **context}
    if kind == "identify" and not traits and isinstance(context.get("traits"), dict):
        traits = context["traits"]

    original = parse_timestamp(raw.get("timestamp"), "timestamp", index)
    if original is None:
        original = parse_timestamp(raw.get("originalTimestamp"), "originalTimestamp", index)
    sent_at = parse_timestamp(raw.get("sentAt"), "sentAt", index) or batch_sent_at

    message_id = _optional_id(raw, "messageId", index) or f"winback-{uuid.uuid4()}"
    return EventRow(
        message_id=message_id,
        source=source,
        type=kind,
        event=event_name if kind == "track" else None,
        name=_short_text(raw, "name", index) if kind in ("page", "screen") else None,
        category=_short_text(raw, "category", index) if kind == "page" else None,
        user_id=user_id,
        anonymous_id=anonymous_id,
        group_id=group_id,
        previous_id=previous_id,
        properties=properties,
        traits=traits,
        context=context,
        timestamp=corrected_timestamp(original, sent_at, received_at),
        original_timestamp=original,
        sent_at=sent_at,
        received_at=received_at,
    )


def parse_batch(body: Any, *, received_at: datetime, max_event_bytes: int) -> list[EventRow]:
    """Validate a `/v1/batch` body; any bad message refuses the whole batch."""
    if not isinstance(body, dict):
        raise InvalidInput("batch body must be a JSON object with a 'batch' array", field="batch")
    messages = body.get("batch")
    if not isinstance(messages, list):
        raise InvalidInput("'batch' must be an array of messages", field="batch")
    batch_context = body.get("context") if isinstance(body.get("context"), dict) else None
    batch_sent_at = parse_timestamp(body.get("sentAt"), "sentAt")
    rows = []
    for index, raw in enumerate(messages):
        check_message_size(raw, max_event_bytes, index)
        rows.append(
            parse_message(
                raw,
                received_at=received_at,
                index=index,
                batch_context=batch_context,
                batch_sent_at=batch_sent_at,
            )
        )
    return rows


def check_message_size(raw: Any, max_event_bytes: int, index: int | None = None) -> None:
    size = len(orjson.dumps(raw))
    if size > max_event_bytes:
        where = f"batch[{index}]: " if index is not None else ""
        details: dict[str, Any] = {"field": "body", "limit_bytes": max_event_bytes, "size_bytes": size}
        if index is not None:
            details["index"] = index
        raise PayloadTooLarge(
            f"{where}message is {size} bytes; the limit is {max_event_bytes} bytes per event", **details
        )


def write_key_from_body(body: Any) -> str | None:
    if isinstance(body, dict):
        key = body.get("writeKey")
        if isinstance(key, str) and key:
            return key
    return None
