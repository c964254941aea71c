"""What shoppers and providers do with messages after they leave: opens, clicks, unsubscribes,
delivery callbacks, inbound SMS keywords, bounces and complaints, web push subscriptions.

Every function works in the caller's transaction and takes `now`; none commits.

Decisions:
- **Opens**: every pixel load is a `message_events` row, but only the first open of a message
  emits `Message Opened` to the stream (and sets `opened_at`). Mail clients and privacy proxies
  load images repeatedly; segments count stream events, so repeated loads must not inflate them.
- **Clicks**: every click is a `message_events` row; `Message Clicked` is emitted for the first
  click of each tracked link (so "clicked link X" and "clicked N links" mean something, while a
  link scanner or an impatient double-click does not multiply the count).
- **A click on an email that was never seen opened counts as its open** (an `opened` event with
  `inferred_from: click`, and `Message Opened` to the stream): the reader had images off, or the
  mail client blocked the pixel, and open rates and "opened" segments should not miss them.
- **Unsubscribes take effect at once**: a `suppressions` row for the address is written in the
  same transaction (the sending pipeline checks it before every marketing send), and an
  `identify` event with `{channel}_consent: unsubscribed`, `consent_source` and
  `consent_evidence` is appended to the stream, so the processor records the consent with its
  proof, refreshes segments and ends flow runs like any other consent change.
- **Suppressions only get stronger**: `unsubscribed` (marketing only) is upgraded to `bounced`,
  `complained` or `invalid` (every message), never the reverse; START removes only an
  `unsubscribed` suppression.
- **Push subscriptions** are stored at once; when the subscriber is not a known profile yet (the
  processor creates profiles asynchronously), the row waits with `customer_id` NULL beside an
  identify event `push-subscribe:{subscription id}:…` carrying `push_consent: subscribed`; once
  the processor has resolved that event, `push_subscriptions_for` links the row to its profile.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parseaddr
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from sqlalchemy import Connection, Table, delete, select, update
from sqlalchemy.orm import Session

from winback.db.expressions import insert_or_ignore
from winback.db.models import (
    Customer,
    CustomerIdentity,
    Event,
    Message,
    MessageEvent,
    PushSubscription,
    Suppression,
)
from winback.ingest import store as event_store
from winback.ingest.segment import EventRow, derived_event
from winback.kernel.errors import InvalidInput, NotFound
from winback.messaging import keywords, links, tokens
from winback.messaging.channels.base import family
from winback.messaging.records import record
from winback.profiles import erasure
from winback.profiles.contact import normalise_email, normalise_phone
from winback.settings import StoreProfile

CONSENT_CHANNELS: Final = ("email", "sms", "push")

SUPPRESSIONS: Table = Suppression.__table__  # type: ignore[assignment]
PUSH_SUBSCRIPTIONS: Table = PushSubscription.__table__  # type: ignore[assignment]

# How strongly a suppression stops sending: `unsubscribed` stops marketing, the others everything.
SUPPRESSION_STRENGTH: Final[dict[str, int]] = {
    "unsubscribed": 1,
    "manual": 2,
    "invalid": 2,
    "bounced": 2,
    "complained": 2,
}

# Twilio error codes after which a number is not worth texting again: unknown destination handset,
# landline or unreachable carrier.
TWILIO_INVALID_NUMBER_CODES: Final = frozenset({"30005", "30006"})
# "Unreachable destination handset": switched off or out of coverage, often for a day. The number
# is suppressed only after this many texts to it in a row failed so (one delivery resets it).
TWILIO_UNREACHABLE_CODE: Final = "30003"
UNREACHABLE_STREAK_TO_SUPPRESS: Final = 3
TWILIO_OPTED_OUT_CODE: Final = "21610"  # Twilio itself has the recipient as opted out (they sent STOP)

# Twilio MessageStatus → our message status, and how far along delivery each one is.
TWILIO_STATUSES: Final[dict[str, str]] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
PROGRESS: Final[dict[str, int]] = {
    "queued": 0,
    "deferred": 0,
    "sending": 1,
    "unknown": 1,
    "sent": 2,
    "delivered": 3,
    "failed": 3,
    "skipped": 3,
}

PUSH_EVENT_PREFIX: Final = "push-subscribe:"


# --- URLs the pipeline puts into messages --------------------------------------------------------


def open_pixel_url(public_url: str, key: bytes, message_id: int) -> str:
    """`{public_url}/o/{token}.gif`: the 1×1 image whose loading records an open."""
    return f"{public_url.rstrip('/')}/o/{tokens.make_token(key, tokens.OPEN, message_id)}.gif"


def unsubscribe_token(
    key: bytes, *, message_id: int | None = None, customer_id: int | None = None, channel: str | None = None
) -> str:
    """A token for the unsubscribe page: for one message, or for a customer and channel."""
    if message_id is not None:
        return tokens.make_token(key, tokens.UNSUBSCRIBE, "m", message_id)
    if customer_id is None or channel is None:
        raise ValueError("an unsubscribe token needs a message id, or a customer id and a channel")
    return tokens.make_token(key, tokens.UNSUBSCRIBE, "c", customer_id, family(channel))


def unsubscribe_url(
    public_url: str,
    key: bytes,
    *,
    message_id: int | None = None,
    customer_id: int | None = None,
    channel: str | None = None,
) -> str:
    """`{public_url}/u/{token}`: the page (GET) and the RFC 8058 one-click target (POST)."""
    token = unsubscribe_token(key, message_id=message_id, customer_id=customer_id, channel=channel)
    return f"{public_url.rstrip('/')}/u/{token}"


# --- suppressions --------------------------------------------------------------------------------


def normalise_address(channel: str, address: str | None) -> str | None:
    """The form suppressions are stored in: E.164 for SMS, the lower-cased address for email."""
    if not address:
        return None
    channel = family(channel)
    if channel == "sms":
        return normalise_phone(address) or address.strip()
    if channel == "email":
        plain = parseaddr(address)[1] or address
        return normalise_email(plain) or plain.strip().lower()
    return address.strip()


def suppress(
    session: Session,
    *,
    channel: str,
    address: str,
    reason: str,
    now: datetime,
    details: Mapping[str, Any] | None = None,
) -> bool:
    """Stop messages on `channel` to `address` (already normalised). True when this changed anything.

    Race-safe: insert-or-ignore on (channel, address); an existing weaker suppression is upgraded.
    """
    channel = family(channel)
    connection = session.connection()
    statement = insert_or_ignore(connection.dialect.name, SUPPRESSIONS, ["channel", "address"])
    statement = statement.returning(SUPPRESSIONS.c.id)  # rowcount is unreliable for ON CONFLICT on psycopg
    values: dict[str, Any] = {
        "channel": channel,
        "address": address,
        "reason": reason,
        "details": dict(details or {}),
    }
    if connection.execute(statement, {**values, "created_at": now}).first() is not None:
        return True
    existing = session.scalar(
        select(Suppression).where(Suppression.channel == channel, Suppression.address == address)
    )
    if existing is None or SUPPRESSION_STRENGTH.get(reason, 2) <= SUPPRESSION_STRENGTH.get(
        existing.reason, 2
    ):
        return False
    existing.details = {**values["details"], "replaced": existing.reason}
    existing.reason = reason
    existing.created_at = now
    return True


def lift_unsubscribe(session: Session, *, channel: str, address: str) -> bool:
    """Remove an `unsubscribed` suppression (never a bounce, complaint or invalid number)."""
    result = session.execute(
        delete(Suppression).where(
            Suppression.channel == family(channel),
            Suppression.address == address,
            Suppression.reason == "unsubscribed",
        )
    )
    return bool(getattr(result, "rowcount", 0))


# --- consent -------------------------------------------------------------------------------------


def _live_customer(session: Session, customer_id: int) -> Customer | None:
    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    customer = erasure.survivor_of(session, customer)
    return None if customer.erased_at is not None else customer


def _append_consent(
    session: Session,
    customer: Customer,
    channel: str,
    status: str,
    source: str,
    evidence: Mapping[str, Any],
    now: datetime,
) -> None:
    traits = {
        f"{channel}_consent": status,
        "consent_source": source,
        # `at` makes each change's proof distinct, so it is never mistaken for a replayed consent.
        "consent_evidence": {**evidence, "at": now.isoformat()},
    }
    event_store.append_events(
        session.connection(),
        [
            derived_event(
                message_id=f"derived:consent:{channel}:{customer.id}:{uuid.uuid4().hex}",
                customer_id=customer.id,
                user_id=customer.user_id,
                at=now,
                type="identify",
                traits=traits,
            )
        ],
    )


def _customer_address(customer: Customer, channel: str) -> str | None:
    if channel == "email":
        return normalise_address("email", customer.email)
    if channel == "sms":
        return normalise_address("sms", customer.phone)
    return None


def _check_channel(channel: str) -> str:
    channel = family(channel)
    if channel not in CONSENT_CHANNELS:
        raise InvalidInput(
            f"channel must be one of {', '.join(CONSENT_CHANNELS)}, got {channel!r}", field="channel"
        )
    return channel


def unsubscribe(
    session: Session,
    *,
    customer_id: int | None,
    channel: str,
    source: str,
    evidence: Mapping[str, Any],
    now: datetime,
    message_id: int | None = None,
) -> bool:
    """Unsubscribe a customer (and/or the address a message went to) from marketing on `channel`.

    Takes effect immediately (a suppression row); the consent change with its proof follows
    through the event stream. True when the customer or address was found.
    """
    channel = _check_channel(channel)
    message = session.get(Message, message_id) if message_id is not None else None
    if customer_id is None and message is not None:
        customer_id = message.customer_id
    customer = _live_customer(session, customer_id) if customer_id is not None else None
    addresses: list[str] = []
    if message is not None and family(message.channel) == channel:
        addresses.append(normalise_address(channel, message.to_address) or "")
    if customer is not None:
        addresses.append(_customer_address(customer, channel) or "")
    details = {"source": source, **({"message_id": message.id} if message is not None else {})}
    for address in dict.fromkeys(a for a in addresses if a):
        suppress(session, channel=channel, address=address, reason="unsubscribed", now=now, details=details)
    if customer is not None:
        proof = {**evidence, **({"sent_message_id": str(message.id)} if message is not None else {})}
        _append_consent(session, customer, channel, "unsubscribed", source, proof, now)
    if message is not None:
        already = session.scalar(
            select(MessageEvent.id)
            .where(MessageEvent.message_id == message.id, MessageEvent.status == "unsubscribed")
            .limit(1)
        )
        record(
            session,
            message,
            "unsubscribed",
            now,
            reason=source,
            details={"channel": channel},
            stream=already is None,
        )
    return customer is not None or bool(addresses)


def resubscribe(
    session: Session,
    *,
    customer_id: int | None,
    channel: str,
    source: str,
    evidence: Mapping[str, Any],
    now: datetime,
    address: str | None = None,
) -> bool:
    """The reverse of `unsubscribe` (an SMS START): lifts the `unsubscribed` suppression and records
    the opt-in with its proof. Bounces, complaints and invalid numbers stay suppressed."""
    channel = _check_channel(channel)
    customer = _live_customer(session, customer_id) if customer_id is not None else None
    addresses = [normalise_address(channel, address) if address else None]
    if customer is not None:
        addresses.append(_customer_address(customer, channel))
    for each in dict.fromkeys(a for a in addresses if a):
        lift_unsubscribe(session, channel=channel, address=each)
    if customer is not None:
        _append_consent(session, customer, channel, "subscribed", source, evidence, now)
    return customer is not None


# --- opens and clicks ----------------------------------------------------------------------------


def record_open(session: Session, message_id: int, now: datetime, *, user_agent: str | None) -> bool:
    """An open-pixel load. Every load is a message event; only the first emits `Message Opened`."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None:
        return False
    first = message.opened_at is None
    details = {"user_agent": user_agent} if user_agent else {}
    record(session, message, "opened", now, details=details, stream=first)
    return True


def record_click(session: Session, code: str, now: datetime, *, user_agent: str | None) -> str | None:
    """A tracked-link click: the URL to redirect to, or None for an unknown code."""
    link = links.resolve(session, code)
    if link is None:
        return None
    first_of_link = links.record_click(session, link, now) == 1  # atomic count: one first click
    if link.message_id is not None:
        message = session.get(Message, link.message_id, with_for_update=True)
        if message is not None:
            agent = {"user_agent": user_agent} if user_agent else {}
            if message.channel == "email" and message.opened_at is None:
                record(session, message, "opened", now, details={"inferred_from": "click", **agent})
            details: dict[str, Any] = {"url": link.url, "link_code": link.code, **agent}
            record(session, message, "clicked", now, details=details, stream=first_of_link)
    return link.url


# --- Twilio callbacks and inbound SMS ------------------------------------------------------------


def apply_status_callback(
    session: Session, provider_message_id: str, status: str, error_code: str | None, now: datetime
) -> bool:
    """Apply Twilio's `MessageStatus` for a message; False when the sid is not one of ours.

    Late or repeated callbacks never move a message backwards (a `sent` arriving after
    `delivered` changes nothing) and never repeat a state already recorded.
    """
    message = session.scalar(
        select(Message)
        .where(Message.provider_message_id == provider_message_id)
        .order_by(Message.id.desc())
        .limit(1)
        .with_for_update()
    )
    if message is None:
        return False
    mapped = TWILIO_STATUSES.get(status.strip().lower())
    if mapped is None:
        return True  # a status we do not track (e.g. `receiving`): acknowledged, nothing changes
    code = (error_code or "").strip() or None
    current = PROGRESS.get(message.status, 0)
    if mapped == message.status or (mapped in ("queued", "sending", "sent") and current >= PROGRESS[mapped]):
        return True
    if mapped == "failed":
        reason = f"twilio {status}" + (_error_suffix(code) if code else "")
        record(
            session,
            message,
            "failed",
            now,
            reason=reason,
            details={"provider_status": status, "error_code": code},
        )
        address = normalise_address("sms", message.to_address)
        streak = code == TWILIO_UNREACHABLE_CODE and _unreachable_streak(session, message)
        if address and (code in TWILIO_INVALID_NUMBER_CODES or streak):
            details = {"error_code": code, "message_id": message.id}
            if streak:
                details["consecutive_failures"] = UNREACHABLE_STREAK_TO_SUPPRESS
            suppress(session, channel="sms", address=address, reason="invalid", now=now, details=details)
        elif address and code == TWILIO_OPTED_OUT_CODE:
            suppress(
                session,
                channel="sms",
                address=address,
                reason="unsubscribed",
                now=now,
                details={"error_code": code, "message_id": message.id, "source": "twilio"},
            )
        return True
    record(session, message, mapped, now, details={"provider_status": status})
    return True


def _unreachable_streak(session: Session, message: Message) -> bool:
    """Whether the last UNREACHABLE_STREAK_TO_SUPPRESS texts to this message's number that got a
    final answer (this one included) all failed as unreachable. Looked up through the customer's
    messages (indexed); a message with no customer never makes a streak."""
    if message.customer_id is None:
        return False
    answers = session.scalars(
        select(Message.status_reason)
        .where(
            Message.customer_id == message.customer_id,
            Message.channel.in_(("sms", "mms")),
            Message.to_address == message.to_address,
            Message.status.in_(("delivered", "failed")),
        )
        .order_by(Message.id.desc())
        .limit(UNREACHABLE_STREAK_TO_SUPPRESS)
    ).all()
    marker = _error_suffix(TWILIO_UNREACHABLE_CODE)  # how the failure's reason ends (above)
    return len(answers) == UNREACHABLE_STREAK_TO_SUPPRESS and all(
        reason is not None and reason.endswith(marker) for reason in answers
    )


def _error_suffix(code: str) -> str:
    """How a Twilio failure's status reason names its error code."""
    return f" (error {code})"


def default_help_text(shop: StoreProfile) -> str:
    contact = shop.support_email or shop.support_phone or shop.url
    return f"{shop.name}: help at {contact}. Reply STOP to opt out."


def customers_reached_at(session: Session, kind: str, address: str, limit: int = 20) -> list[Customer]:
    """Every live profile reached at this address — `kind` "phone" (E.164) or "email" — by an
    identity or by the profile's own field."""
    column = Customer.phone if kind == "phone" else Customer.email
    owners = set(
        session.scalars(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == kind, CustomerIdentity.value == address
            )
        )
    )
    owners.update(session.scalars(select(Customer.id).where(column == address).limit(limit)))
    found: dict[int, Customer] = {}
    for customer_id in sorted(owners)[:limit]:
        customer = _live_customer(session, customer_id)
        if customer is not None:
            found[customer.id] = customer
    return list(found.values())


def handle_inbound_sms(
    session: Session,
    *,
    from_number: str,
    to_number: str,
    body: str,
    provider_message_id: str,
    now: datetime,
    help_text: str | None,
    shop: StoreProfile,
) -> str | None:
    """An SMS a shopper sent us: STOP/START/HELP keywords, else an `SMS Received` event.

    Returns the reply text (None: no reply). STOP from a number we do not know still suppresses
    it, so it is never texted.
    """
    phone = normalise_phone(from_number) or from_number.strip()
    customers = customers_reached_at(session, "phone", phone)
    evidence = {
        "inbound_message_sid": provider_message_id,
        "from": from_number,
        "to": to_number,
        "body": body[:160],
    }
    keyword = keywords.classify(body)
    if keyword == "stop":
        suppress(
            session,
            channel="sms",
            address=phone,
            reason="unsubscribed",
            now=now,
            details={"source": "sms:keyword", **evidence},
        )
        for customer in customers:
            unsubscribe(
                session,
                customer_id=customer.id,
                channel="sms",
                source="sms:keyword",
                evidence=evidence,
                now=now,
            )
        return f"You have been unsubscribed from {shop.name} messages. Reply START to resubscribe."
    if keyword == "start":
        lift_unsubscribe(session, channel="sms", address=phone)
        for customer in customers:
            resubscribe(
                session,
                customer_id=customer.id,
                channel="sms",
                source="sms:keyword",
                evidence=evidence,
                now=now,
                address=phone,
            )
        return f"You have been resubscribed to {shop.name} messages. Reply STOP to opt out."
    if keyword == "help":
        return help_text or default_help_text(shop)
    if customers:
        customer = customers[0]
        event_store.append_events(
            session.connection(),
            [
                derived_event(
                    message_id=f"twilio:inbound:{provider_message_id}",
                    customer_id=customer.id,
                    user_id=customer.user_id,
                    at=now,
                    event="SMS Received",
                    properties={
                        "body": body,
                        "from": phone,
                        "to": to_number,
                        "provider_message_id": provider_message_id,
                    },
                )
            ],
        )
    return None


# --- email bounces and complaints ----------------------------------------------------------------


def record_bounce(
    session: Session,
    *,
    email: str,
    kind: Literal["bounce", "complaint"],
    reason: str | None,
    now: datetime,
    message_id: int | None = None,
) -> Message | None:
    """A hard bounce or a spam complaint for an address; returns the message it was about, if found.

    The address is suppressed for every email; the message (given, else the latest email to the
    address) records `failed` or `complained`; a complaint also unsubscribes the address's
    profiles from email marketing (source `email:complaint`).
    """
    address = normalise_address("email", email)
    if not address or "@" not in address:
        raise InvalidInput(f"email: not an email address: {email!r}", field="email")
    if kind not in ("bounce", "complaint"):
        raise InvalidInput("type must be 'bounce' or 'complaint'", field="type")
    message: Message | None
    if message_id is not None:
        message = session.get(Message, message_id, with_for_update=True)
        if message is None:
            raise NotFound(f"no message {message_id}", field="message_id", message_id=message_id)
    else:
        message = session.scalar(
            select(Message)
            .where(Message.channel == "email", Message.to_address.in_(_address_spellings(email, address)))
            .order_by(Message.id.desc())
            .limit(1)
        )
    suppression_reason = "bounced" if kind == "bounce" else "complained"
    details = {"reason": reason, **({"message_id": message.id} if message is not None else {})}
    suppress(session, channel="email", address=address, reason=suppression_reason, now=now, details=details)
    if message is not None:
        status = "failed" if kind == "bounce" else "complained"
        record(
            session,
            message,
            status,
            now,
            reason=reason or ("bounced" if kind == "bounce" else "spam complaint"),
            details={"kind": kind},
        )
    if kind == "complaint":
        targets = {c.id for c in customers_reached_at(session, "email", address)}
        if message is not None and message.customer_id is not None:
            targets.add(message.customer_id)
        evidence = {"complaint": reason or "spam complaint", "email": address}
        for customer_id in sorted(targets):
            unsubscribe(
                session,
                customer_id=customer_id,
                channel="email",
                source="email:complaint",
                evidence=evidence,
                now=now,
            )
    return message


def _address_spellings(raw: str, address: str) -> list[str]:
    return list(dict.fromkeys([address, raw.strip(), raw.strip().lower()]))


# --- web push subscriptions ----------------------------------------------------------------------


def parse_subscription(subscription: Any) -> tuple[str, str, str]:
    """(endpoint, p256dh, auth) of a browser's `PushSubscription.toJSON()`; InvalidInput naming the field."""
    if not isinstance(subscription, dict):
        raise InvalidInput(
            "subscription: must be an object {endpoint, keys: {p256dh, auth}}", field="subscription"
        )
    endpoint = subscription.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise InvalidInput(
            "subscription.endpoint: required (the push service URL)", field="subscription.endpoint"
        )
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.netloc or len(endpoint) > 2000:
        raise InvalidInput(
            "subscription.endpoint: must be an https URL of at most 2000 characters",
            field="subscription.endpoint",
        )
    keys = subscription.get("keys")
    if not isinstance(keys, dict):
        raise InvalidInput("subscription.keys: required, with p256dh and auth", field="subscription.keys")
    found: list[str] = []
    for name, limit in (("p256dh", 200), ("auth", 100)):
        value = keys.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise InvalidInput(
                f"subscription.keys.{name}: required, base64url text of at most {limit} characters",
                field=f"subscription.keys.{name}",
            )
        found.append(value.strip())
    return endpoint, found[0], found[1]


def save_push_subscription(
    session: Session,
    *,
    customer_id: int | None,
    subscription: dict[str, Any],
    user_agent: str | None,
    now: datetime,
) -> PushSubscription:
    """Insert or update (by endpoint) a browser's push subscription."""
    endpoint, p256dh, auth = parse_subscription(subscription)
    connection: Connection = session.connection()
    agent = user_agent[:500] if user_agent else None
    connection.execute(
        insert_or_ignore(connection.dialect.name, PUSH_SUBSCRIPTIONS, ["endpoint"]),
        {
            "customer_id": customer_id,
            "endpoint": endpoint,
            "p256dh": p256dh,
            "auth": auth,
            "user_agent": agent,
            "created_at": now,
        },
    )
    session.execute(
        update(PushSubscription)
        .where(PushSubscription.endpoint == endpoint)
        .values(customer_id=customer_id, p256dh=p256dh, auth=auth, user_agent=agent),
        execution_options={"synchronize_session": False},
    )
    row = session.scalar(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
    assert row is not None
    session.refresh(row)
    return row


def remove_push_subscription(session: Session, endpoint: str) -> bool:
    result = session.execute(delete(PushSubscription).where(PushSubscription.endpoint == endpoint.strip()))
    return bool(getattr(result, "rowcount", 0))


def find_customer_id(session: Session, *, user_id: str | None, anonymous_id: str | None) -> int | None:
    """The live profile a tracking call's ids already point at (user id first), else None."""
    for kind, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
        if not value:
            continue
        owner = session.scalar(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == kind, CustomerIdentity.value == value
            )
        )
        if owner is None and kind == "user_id":
            owner = session.scalar(select(Customer.id).where(Customer.user_id == value))
        if owner is not None:
            customer = _live_customer(session, owner)
            if customer is not None:
                return customer.id
    return None


def subscribe_event(
    subscription: PushSubscription,
    *,
    user_id: str | None,
    anonymous_id: str | None,
    user_agent: str | None,
    ip: str | None,
    now: datetime,
) -> EventRow:
    """The identify event that records a push opt-in (with the endpoint as proof) and lets the
    processor resolve — or create — the subscriber's profile."""
    return EventRow(
        message_id=f"{PUSH_EVENT_PREFIX}{subscription.id}:{uuid.uuid4().hex}",
        source="derived",
        type="identify",
        user_id=user_id,
        anonymous_id=anonymous_id,
        traits={
            "push_consent": "subscribed",
            "consent_source": "web:push-subscribe",
            "consent_evidence": {
                "endpoint": subscription.endpoint,
                "subscription_id": subscription.id,
                "at": now.isoformat(),
            },
        },
        context={k: v for k, v in {"userAgent": user_agent, "ip": ip}.items() if v},
        timestamp=now,
        received_at=now,
    )


def push_subscriptions_for(session: Session, customer_id: int) -> list[PushSubscription]:
    """A profile's push subscriptions (its merged-in profiles' too), first linking rows whose
    subscribe event the processor has since resolved to this profile."""
    ids = erasure.person_ids(session, customer_id)
    _link_waiting_subscriptions(session, ids)
    return list(
        session.scalars(
            select(PushSubscription)
            .where(PushSubscription.customer_id.in_(ids))
            .order_by(PushSubscription.id)
        )
    )


def _link_waiting_subscriptions(session: Session, customer_ids: Iterable[int]) -> None:
    ids = list(customer_ids)
    claimed: set[int] = set()
    for message_id in session.scalars(
        select(Event.message_id).where(
            Event.customer_id.in_(ids),
            Event.type == "identify",
            Event.source == "derived",
            Event.message_id.startswith(PUSH_EVENT_PREFIX, autoescape=True),
        )
    ):
        head = message_id.removeprefix(PUSH_EVENT_PREFIX).partition(":")[0]
        if head.isdigit():
            claimed.add(int(head))
    if not claimed:
        return
    waiting = list(
        session.scalars(
            select(PushSubscription).where(
                PushSubscription.id.in_(claimed), PushSubscription.customer_id.is_(None)
            )
        )
    )
    for subscription in waiting:
        # Only the latest subscribe call for the endpoint decides whose it is.
        latest = session.execute(
            select(Event.customer_id)
            .where(Event.message_id.startswith(f"{PUSH_EVENT_PREFIX}{subscription.id}:", autoescape=True))
            .order_by(Event.id.desc())
            .limit(1)
        ).scalar()
        if latest in ids:
            subscription.customer_id = ids[0]
