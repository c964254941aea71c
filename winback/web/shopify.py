"""`POST /webhooks/shopify`: verify, dedupe, drop stale updates, record in one transaction.

Responses follow what Shopify's delivery expects: any non-2xx is retried (for up to 48 hours), so
every delivery winback understands *and every one it deliberately does not use* gets a 200 —
`{"ok": true, "outcome": "accepted" | "duplicate" | "stale" | "ignored"}`. A topic winback has no
mapping for is acknowledged as `ignored` (retrying it could never succeed). Only what Shopify or the
operator can fix is refused: a bad signature (401), no secret configured (503, retried until the
operator sets WINBACK_SHOPIFY_WEBHOOK_SECRET), a delivery without its id/topic headers or a payload
lacking what its topic needs (400).

Every delivery taken leaves a `shopify_webhook_receipts` row (its outcome says what became of it),
written in the same transaction as its events, catalog changes or erasure, so a failure writes
nothing and the redelivery starts afresh.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from winback.commerce import catalog
from winback.db.models import Customer, CustomerIdentity, ShopifyWebhookReceipt
from winback.ingest import segment, store
from winback.ingest import shopify as mapping
from winback.kernel.errors import InvalidInput, PayloadTooLarge, Unauthorized, WinbackError
from winback.profiles import contact, erasure
from winback.web.auth import RuntimeDep

router = APIRouter(tags=["shopify"])
log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024  # Shopify orders with hundreds of lines stay far below this
ATTEMPTS = 2  # a unique violation that is not our own duplicate (two new products racing) is retried once

HMAC_HEADER = "X-Shopify-Hmac-Sha256"
TOPIC_HEADER = "X-Shopify-Topic"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
TRIGGERED_AT_HEADER = "X-Shopify-Triggered-At"


class WebhooksNotConfigured(WinbackError):
    """The operator has not set the shared secret; Shopify retries until they do."""

    code = "shopify_webhooks_not_configured"
    http_status = 503


@router.post("/webhooks/shopify")
async def receive_webhook(request: Request, runtime: RuntimeDep) -> JSONResponse:
    secret = runtime.settings.shopify_webhook_secret
    if not secret:
        raise WebhooksNotConfigured(
            "Shopify webhooks are not configured: set WINBACK_SHOPIFY_WEBHOOK_SECRET to the key Shopify "
            "signs them with (your app's client secret, or for webhooks made in the Shopify admin the key "
            "shown under Settings → Notifications → Webhooks)"
        )
    body = await _read_body(request)
    if not mapping.is_signature_valid(secret, body, request.headers.get(HMAC_HEADER)):
        raise Unauthorized(
            f"the {HMAC_HEADER} signature does not match the body; check WINBACK_SHOPIFY_WEBHOOK_SECRET",
            field=HMAC_HEADER,
        )
    delivery = mapping.Delivery(
        webhook_id=_required_header(request, WEBHOOK_ID_HEADER),
        topic=_required_header(request, TOPIC_HEADER),
        triggered_at=mapping.parse_triggered_at(request.headers.get(TRIGGERED_AT_HEADER)),
        received_at=runtime.clock.now(),
    )
    payload = segment.decode_json(body, what=f"the {delivery.topic} payload")
    settings = runtime.settings
    plan = mapping.plan_delivery(
        delivery, payload, store_url=settings.store_url, store_currency=settings.store_currency
    )
    outcome = await run_in_threadpool(record_delivery, runtime.engine, delivery, plan)
    return JSONResponse({"ok": True, "outcome": outcome})


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"webhook body is {declared} bytes; the limit is {MAX_BODY_BYTES}", limit_bytes=MAX_BODY_BYTES
        )
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"webhook body exceeds the limit of {MAX_BODY_BYTES} bytes", limit_bytes=MAX_BODY_BYTES
        )
    return body


def _required_header(request: Request, name: str) -> str:
    value = (request.headers.get(name) or "").strip()
    if not value:
        raise InvalidInput(f"the {name} header is missing", field=name)
    if len(value) > segment.ID_MAX_LENGTH:
        raise InvalidInput(f"the {name} header is longer than {segment.ID_MAX_LENGTH} characters", field=name)
    return value


# --- recording ------------------------------------------------------------------------------------


def record_delivery(engine: Engine, delivery: mapping.Delivery, plan: mapping.Plan) -> str:
    """Record one planned delivery; returns the response outcome.

    Concurrent deliveries of one webhook id meet at the receipts' unique index: the loser's
    transaction rolls back and it answers `duplicate`.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                return _record(session, delivery, plan)
        except IntegrityError:
            if _is_received(engine, delivery.webhook_id):
                return "duplicate"
            if attempt == ATTEMPTS:
                raise
            log.info("retrying Shopify webhook %s after a write conflict", delivery.webhook_id)
    raise AssertionError("unreachable")  # pragma: no cover


def _record(session: Session, delivery: mapping.Delivery, plan: mapping.Plan) -> str:
    if session.get_bind().dialect.name == "postgresql" and plan.resource_key:
        # Updates of one resource are checked and recorded one at a time, so two racing
        # deliveries cannot both pass the stale check. (SQLite writers are serial already.)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(plan.resource_key)})
    if _is_received_in(session, delivery.webhook_id):
        return "duplicate"
    if (plan.is_stale_checked and _is_stale(session, plan.resource_key, delivery.triggered_at)) or (
        plan.customer_key and _redacted_since(session, plan.customer_key, delivery.triggered_at)
    ):
        _add_receipt(session, delivery, plan.resource_key, "stale")
        return "stale"
    _add_receipt(session, delivery, plan.resource_key, plan.outcome)
    session.flush()  # a concurrent duplicate fails here, before anything else is written
    now = delivery.received_at
    catalog.upsert_products(session, plan.products, now)
    if plan.withdrawn:
        catalog.withdraw_products(session, plan.withdrawn, now)
    session.flush()
    store.append_events(session.connection(), plan.events)
    if plan.privacy is not None:
        _apply_privacy(session, plan.privacy, now)
    return "ignored" if plan.outcome == "ignored" else "accepted"


def _add_receipt(
    session: Session, delivery: mapping.Delivery, resource_key: str | None, outcome: str
) -> None:
    session.add(
        ShopifyWebhookReceipt(
            webhook_id=delivery.webhook_id,
            topic=delivery.topic[:100],
            resource_key=resource_key,
            triggered_at=delivery.triggered_at,
            received_at=delivery.received_at,
            outcome=outcome,
        )
    )


def _is_stale(session: Session, resource_key: str | None, triggered_at: datetime | None) -> bool:
    """Older than the newest delivery already recorded for the resource (ties are not stale)."""
    if resource_key is None or triggered_at is None:
        return False
    newest = _newest_triggered_at(session, resource_key)
    return newest is not None and triggered_at < newest


def _redacted_since(session: Session, customer_key: str, triggered_at: datetime | None) -> bool:
    """Was the customer redacted by a request triggered after this delivery? (An order or
    checkout created before the erasure and delivered after it must not bring the person back.)"""
    if triggered_at is None:
        return False
    redacted = _newest_triggered_at(session, customer_key, topic="customers/redact")
    return redacted is not None and triggered_at < redacted


def _newest_triggered_at(session: Session, resource_key: str, topic: str | None = None) -> datetime | None:
    """When the newest delivery recorded for a resource (of one topic, if given) was triggered."""
    query = select(func.max(ShopifyWebhookReceipt.triggered_at)).where(
        ShopifyWebhookReceipt.resource_key == resource_key
    )
    if topic is not None:
        query = query.where(ShopifyWebhookReceipt.topic == topic)
    return session.scalar(query)


def _is_received_in(session: Session, webhook_id: str) -> bool:
    return (
        session.scalar(select(ShopifyWebhookReceipt.id).where(ShopifyWebhookReceipt.webhook_id == webhook_id))
        is not None
    )


def _is_received(engine: Engine, webhook_id: str) -> bool:
    with Session(engine) as session:
        return _is_received_in(session, webhook_id)


def _lock_key(resource_key: str) -> int:
    """A signed 64-bit advisory-lock key for a resource."""
    return int.from_bytes(hashlib.blake2b(resource_key.encode(), digest_size=8).digest(), "big", signed=True)


# --- privacy --------------------------------------------------------------------------------------


def _apply_privacy(session: Session, action: mapping.PrivacyAction, now: datetime) -> None:
    """customers/redact erases the person (every profile they are known by); shop/redact erases
    everyone; customers/data_request is recorded (the export is GET /api/v1/customers/{id}/export)."""
    if action.kind == "erase_shop":
        erasure.erase_all_customers(session, now)
    elif action.kind == "erase_customer":
        for customer_id in customers_matching(session, action):
            erasure.erase_customer(session, customer_id, now)


def customers_matching(session: Session, action: mapping.PrivacyAction) -> list[int]:
    """Profiles known by the Shopify customer id, email or phone of a privacy request."""
    identities: list[tuple[str, str]] = []
    if action.shopify_customer_id:
        identities.append(("user_id", action.shopify_customer_id))
    for kind, raw, normalised in (
        ("email", action.email, contact.normalise_email(action.email)),
        ("phone", action.phone, contact.normalise_phone(action.phone)),
    ):
        identities.extend((kind, value) for value in dict.fromkeys(v for v in (normalised, raw) if v))
    if not identities:
        return []
    matches = or_(
        *((CustomerIdentity.kind == kind) & (CustomerIdentity.value == value) for kind, value in identities)
    )
    found = set(session.scalars(select(CustomerIdentity.customer_id).where(matches)))
    if action.shopify_customer_id:
        found.update(
            session.scalars(select(Customer.id).where(Customer.user_id == action.shopify_customer_id))
        )
    return sorted(found)
