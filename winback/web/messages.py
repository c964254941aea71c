"""Messages over HTTP: the admin's view of what was sent (and why not), and every URL a message or a
provider calls back: tracked links, the open pixel, unsubscribe pages, Twilio callbacks, bounces,
web push subscriptions and MMS media.

Admin (`/api/v1`, Bearer admin key):
- `GET /api/v1/messages` — filters `customer_id`, `flow_id`, `channel`, `status`; newest first,
  keyset-paged like the other lists;
- `GET /api/v1/messages/{id}` — the message with every state change in order (the answer to "why
  wasn't this sent?": each event's status, reason and details);
- `POST /api/v1/messages/bounces` — `{email, type: bounce|complaint, reason?, message_id?}`.

Shopper-facing (no key; tokens are signed, see winback/messaging/tokens.py):
- `GET /l/{code}` → 302 to the link's URL; `GET /o/{token}.gif` → a 1×1 GIF that records an open;
- `GET /u/{token}` → a page asking to confirm (GET never unsubscribes: mail scanners follow links);
  `POST /u/{token}` → unsubscribes at once: a browser's form (HTML confirmation) or an RFC 8058
  one-click POST (`List-Unsubscribe=One-Click`, answered `200` with an empty body);
- `GET /media/{token}` → an MMS image, cached for a year.

Providers:
- `POST /webhooks/twilio/status`, `POST /webhooks/twilio/inbound` — form-encoded, signed with
  `X-Twilio-Signature`. The signature covers the URL Twilio was given, so it is checked against
  `WINBACK_PUBLIC_URL` + path (+ query), never against the URL this process sees: behind a proxy
  or load balancer that terminates TLS the request arrives as `http://internal-host:8000/…`.
  `WINBACK_PUBLIC_URL` must therefore be exactly the scheme, host (and any path prefix) configured
  at Twilio; an explicit default port (`:443`) is tolerated either way.

Web push (the storefront's script, with the tracking write key like the tracking API):
- `GET /api/v1/push/vapid-public-key` (public; also `/v1/push/vapid-public-key`, the one in the
  OpenAPI schema, as /api/v1 is otherwise the admin API), `GET /push/sw.js` (the service worker),
  `POST /v1/push/subscribe`, `POST /v1/push/unsubscribe`.
"""

from __future__ import annotations

import html
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from winback import store
from winback.db.engine import reading, transaction
from winback.db.models import MediaAsset, Message, MessageEvent
from winback.ingest import segment
from winback.ingest import store as event_store
from winback.kernel.errors import Forbidden, InvalidInput, NotFound
from winback.messaging import engagement, keywords, secrets, tokens
from winback.messaging.channels import twilio
from winback.messaging.channels.base import family
from winback.runtime import Runtime
from winback.web import schemas
from winback.web.admin import DEFAULT_LIMIT, MAX_ID, Cursor, Limit, OptionalCustomerId, page_by_id
from winback.web.auth import AdminDep, RuntimeDep, basic_username, require_admin, require_write_key
from winback.web.tracking import read_body

PREFIX = "/api/v1"

# A 1×1 transparent GIF (GIF89a, one-colour palette, transparency extension).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
MEDIA_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}
ONE_CLICK_BODY = "One-Click"  # RFC 8058: the body of a one-click POST is List-Unsubscribe=One-Click
CHANNEL_LABELS = {"email": "email", "sms": "SMS", "push": "push notification"}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorResponse, "description": "missing, unknown or revoked admin key"},
    403: {"model": schemas.ErrorResponse, "description": "a write key was used on the admin API"},
    422: {"model": schemas.ErrorResponse, "description": "a parameter or body field is invalid"},
}

admin_router = APIRouter(
    prefix=PREFIX, dependencies=[Depends(require_admin)], responses=_ERRORS, tags=["messages"]
)
public_router = APIRouter(tags=["messaging"])
router = APIRouter()


# --- shapes -------------------------------------------------------------------------------------


class MessageSummary(schemas.Public):
    id: int
    outbox_id: int | None
    flow_id: int | None
    run_id: int | None
    node_id: str | None
    customer_id: int | None
    channel: str
    transactional: bool
    category: str | None
    priority: int
    status: str
    status_reason: str | None
    provider: str | None
    sender: str | None
    to_address: str | None
    subject: str | None
    sms_encoding: str | None
    sms_parts: int | None
    provider_message_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None


class MessageEventPublic(schemas.Public):
    id: int
    status: str
    reason: str | None
    details: dict[str, Any]
    at: datetime


class MessageDetail(MessageSummary):
    body: str | None
    html: str | None
    media_urls: list[str]
    events: list[MessageEventPublic] = Field(description="every change of state, oldest first")


class BounceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    type: Literal["bounce", "complaint"]
    reason: str | None = Field(default=None, max_length=2000)
    message_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class BounceResult(BaseModel):
    email: str
    suppression: Literal["bounced", "complained"]
    message_id: int | None = Field(description="the message the bounce was matched to, if any")


# --- admin ---------------------------------------------------------------------------------------


@admin_router.get(
    "/messages",
    summary="List messages, newest first",
    response_model=schemas.Page[MessageSummary],
    responses={400: {"model": schemas.ErrorResponse, "description": "a parameter is invalid"}},
)
def list_messages(
    runtime: AdminDep,
    customer_id: OptionalCustomerId = None,
    flow_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="only this flow's")] = None,
    channel: Annotated[
        Literal["sms", "mms", "email", "push", "slack", "webhook", "meta"] | None, Query()
    ] = None,
    status: Annotated[
        Literal[
            "queued", "deferred", "retrying", "sending", "sent", "delivered", "failed", "skipped", "unknown"
        ]
        | None,
        Query(),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> schemas.Page[MessageSummary]:
    statement = select(Message)
    if customer_id is not None:
        statement = statement.where(Message.customer_id == customer_id)
    if flow_id is not None:
        statement = statement.where(Message.flow_id == flow_id)
    if channel is not None:
        statement = statement.where(Message.channel == channel)
    if status is not None:
        statement = statement.where(Message.status == status)
    with reading(runtime.engine) as session:
        rows, next_cursor = page_by_id(session, statement, Message.id, limit, cursor, newest_first=True)
        items = [MessageSummary.model_validate(row) for row in rows]
    return schemas.Page(items=items, next_cursor=next_cursor)


@admin_router.get(
    "/messages/{message_id}",
    summary="A message and every change of its state (why it was or wasn't sent)",
    response_model=MessageDetail,
    responses={404: {"model": schemas.ErrorResponse, "description": "no such message"}},
)
def get_message(
    message_id: Annotated[int, Path(ge=1, le=MAX_ID, description="winback message id")], runtime: AdminDep
) -> MessageDetail:
    with reading(runtime.engine) as session:
        message = session.get(Message, message_id)
        if message is None:
            raise NotFound(f"no message {message_id}", field="message_id", message_id=message_id)
        events = session.scalars(
            select(MessageEvent)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.at, MessageEvent.id)
        )
        return MessageDetail.model_validate(
            {
                **{name: getattr(message, name) for name in MessageDetail.model_fields if name != "events"},
                "events": [MessageEventPublic.model_validate(row) for row in events],
            }
        )


@admin_router.post(
    "/messages/bounces",
    summary="Report an email bounce or spam complaint: the address is suppressed",
    response_model=BounceResult,
    responses={
        400: {"model": schemas.ErrorResponse, "description": "the email is not an address"},
        404: {"model": schemas.ErrorResponse, "description": "no such message_id"},
    },
)
def post_bounce(body: BounceIn, runtime: AdminDep) -> BounceResult:
    with transaction(runtime.engine) as session:
        message = engagement.record_bounce(
            session,
            email=body.email,
            kind=body.type,
            reason=body.reason,
            now=runtime.clock.now(),
            message_id=body.message_id,
        )
        address = engagement.normalise_address("email", body.email) or body.email
        return BounceResult(
            email=address,
            suppression="bounced" if body.type == "bounce" else "complained",
            message_id=message.id if message is not None else None,
        )


# --- tracked links and the open pixel ------------------------------------------------------------


def _user_agent(request: Request) -> str | None:
    agent = request.headers.get("user-agent")
    return agent[:500] if agent else None


def _client_ip(request: Request) -> str | None:
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip() or None
    return request.client.host if request.client else None


@public_router.get(
    "/l/{code}",
    summary="A tracked link: records the click and redirects",
    status_code=302,
    responses={404: {"model": schemas.ErrorResponse, "description": "unknown link code"}},
)
def follow_link(code: str, request: Request, runtime: RuntimeDep) -> RedirectResponse:
    with transaction(runtime.engine) as session:
        url = engagement.record_click(session, code, runtime.clock.now(), user_agent=_user_agent(request))
    if url is None:
        raise NotFound(f"no link {code!r}: it was mistyped or cut short", field="code")
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@public_router.get("/o/{token}.gif", summary="The open pixel: a 1×1 GIF that records an open")
def open_pixel(token: str, request: Request, runtime: RuntimeDep) -> Response:
    key = secrets.link_signing_key(runtime.engine)
    try:
        (raw_id,) = tokens.read_token(key, tokens.OPEN, token)
        message_id = int(raw_id)
    except (tokens.InvalidToken, ValueError):
        message_id = None  # never an error for an image: a broken pixel just records nothing
    if message_id is not None:
        with transaction(runtime.engine) as session:
            engagement.record_open(session, message_id, runtime.clock.now(), user_agent=_user_agent(request))
    return Response(PIXEL_GIF, media_type="image/gif", headers=NO_STORE)


# --- unsubscribe ---------------------------------------------------------------------------------


class _Target(BaseModel):
    customer_id: int | None
    channel: str
    message_id: int | None


def _unsubscribe_target(runtime: Runtime, token: str) -> _Target:
    """Who and which channel an unsubscribe token stands for; InvalidInput when it is not valid."""
    key = secrets.link_signing_key(runtime.engine)
    try:
        parts = tokens.read_token(key, tokens.UNSUBSCRIBE, token)
    except tokens.InvalidToken as exc:
        raise InvalidInput(f"this unsubscribe link is not valid: {exc}", field="token") from None
    try:
        if parts[0] == "m" and len(parts) == 2:
            message_id = int(parts[1])
            with reading(runtime.engine) as session:
                message = session.get(Message, message_id)
            if message is None:
                raise InvalidInput(
                    "this unsubscribe link is no longer valid (its message was deleted)", field="token"
                )
            channel = family(message.channel)
            if channel not in engagement.CONSENT_CHANNELS:
                raise InvalidInput(f"{message.channel} messages have no unsubscribe", field="token")
            return _Target(customer_id=message.customer_id, channel=channel, message_id=message_id)
        if parts[0] == "c" and len(parts) == 3 and parts[2] in engagement.CONSENT_CHANNELS:
            return _Target(customer_id=int(parts[1]), channel=parts[2], message_id=None)
    except ValueError:
        pass
    raise InvalidInput(
        "this unsubscribe link is not valid: it names nothing to unsubscribe from", field="token"
    )


def _page(title: str, body_html: str, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"
        "line-height:1.5;color:#222}button{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=NO_STORE)


def _shop_name(runtime: Runtime) -> str:
    return store.current_profile(runtime.engine, runtime.settings).name


def _invalid_link_page(exc: InvalidInput) -> HTMLResponse:
    return _page(
        "This link is not valid",
        f"<p>{html.escape(exc.message)}.</p><p>Please use the unsubscribe link from the most recent message "
        "exactly as it was sent, or reply to that message asking to be unsubscribed.</p>",
        status_code=400,
    )


@public_router.get(
    "/u/{token}", summary="The unsubscribe page (asks to confirm)", response_class=HTMLResponse
)
def unsubscribe_page(token: str, runtime: RuntimeDep) -> HTMLResponse:
    try:
        target = _unsubscribe_target(runtime, token)
    except InvalidInput as exc:
        return _invalid_link_page(exc)
    shop = _shop_name(runtime)
    label = CHANNEL_LABELS[target.channel]
    # No `action`: the form posts back to the URL the page was served at, whatever path prefix a
    # proxy puts in front of winback.
    return _page(
        f"Unsubscribe from {shop} {label} messages?",
        f"<p>You will no longer receive marketing {html.escape(label)} messages from {html.escape(shop)}. "
        "Messages about your orders are not affected.</p>"
        '<form method="post">'
        '<input type="hidden" name="confirm" value="yes">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def _form(request: Request) -> dict[str, list[str]]:
    """A form-encoded body (no multipart: providers and our own forms send urlencoded)."""
    raw = await request.body()
    try:
        return parse_qs(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise InvalidInput("the form body is not UTF-8", field="body") from None


@public_router.post("/u/{token}", summary="Unsubscribe at once (form or RFC 8058 one-click)")
async def unsubscribe_now(token: str, request: Request, runtime: RuntimeDep) -> Response:
    form = await _form(request)
    one_click = ONE_CLICK_BODY in form.get("List-Unsubscribe", [])
    try:
        target = await run_in_threadpool(_unsubscribe_target, runtime, token)
    except InvalidInput as exc:
        if one_click:
            raise
        return _invalid_link_page(exc)
    evidence = {
        "method": "one-click" if one_click else "unsubscribe-page",
        "ip": _client_ip(request),
        "user_agent": _user_agent(request),
        "url": str(request.url.path),
    }

    def apply() -> None:
        with transaction(runtime.engine) as session:
            engagement.unsubscribe(
                session,
                customer_id=target.customer_id,
                channel=target.channel,
                source="email:one-click" if one_click else f"{target.channel}:unsubscribe-page",
                evidence={k: v for k, v in evidence.items() if v},
                now=runtime.clock.now(),
                message_id=target.message_id,
            )

    await run_in_threadpool(apply)
    if one_click:
        return Response(status_code=200, headers=NO_STORE)
    shop = await run_in_threadpool(_shop_name, runtime)
    label = CHANNEL_LABELS[target.channel]
    return _page(
        "You have been unsubscribed",
        f"<p>You will no longer receive marketing {html.escape(label)} messages from {html.escape(shop)}.</p>",
    )


# --- Twilio --------------------------------------------------------------------------------------


def _public_url_of(runtime: Runtime, request: Request) -> str:
    url = runtime.settings.public_url.rstrip("/") + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


async def _twilio_params(request: Request, runtime: Runtime) -> dict[str, list[str]]:
    """The callback's parameters, once its signature is proven to be Twilio's."""
    token = runtime.settings.twilio_auth_token
    if not token:
        raise Forbidden(
            "Twilio callbacks are refused: WINBACK_TWILIO_AUTH_TOKEN is not set, so their signature cannot be checked",
            field="X-Twilio-Signature",
        )
    params = await _form(request)
    header = request.headers.get("x-twilio-signature", "")
    if not header:
        raise Forbidden("missing X-Twilio-Signature header", field="X-Twilio-Signature")
    if not twilio.verify_signature(_public_url_of(runtime, request), params, header, token):
        raise Forbidden(
            "X-Twilio-Signature does not match: check WINBACK_PUBLIC_URL is the URL given to Twilio "
            "and WINBACK_TWILIO_AUTH_TOKEN is the account's auth token",
            field="X-Twilio-Signature",
        )
    return params


def _first(params: dict[str, list[str]], *names: str) -> str | None:
    for name in names:
        values = params.get(name)
        if values and values[0].strip():
            return values[0].strip()
    return None


@public_router.post(
    "/webhooks/twilio/status",
    summary="Twilio message status callback",
    responses={403: {"model": schemas.ErrorResponse, "description": "missing or bad X-Twilio-Signature"}},
)
async def twilio_status(request: Request, runtime: RuntimeDep) -> JSONResponse:
    params = await _twilio_params(request, runtime)
    sid = _first(params, "MessageSid", "SmsSid")
    status = _first(params, "MessageStatus", "SmsStatus")
    if sid is None:
        raise InvalidInput("MessageSid: required", field="MessageSid")
    if status is None:
        raise InvalidInput("MessageStatus: required", field="MessageStatus")
    error_code = _first(params, "ErrorCode")

    def apply() -> bool:
        with transaction(runtime.engine) as session:
            return engagement.apply_status_callback(session, sid, status, error_code, runtime.clock.now())

    known = await run_in_threadpool(apply)
    return JSONResponse({"success": True, "known": known})


def twiml(reply: str | None) -> Response:
    if reply is None:
        body = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    else:
        body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{xml_escape(reply)}</Message></Response>'
    return Response(body, media_type="application/xml")


@public_router.post(
    "/webhooks/twilio/inbound",
    summary="An SMS a shopper sent: STOP/START/HELP, or kept as an `SMS Received` event",
    responses={403: {"model": schemas.ErrorResponse, "description": "missing or bad X-Twilio-Signature"}},
)
async def twilio_inbound(request: Request, runtime: RuntimeDep) -> Response:
    params = await _twilio_params(request, runtime)
    sid = _first(params, "MessageSid", "SmsSid")
    sender = _first(params, "From")
    if sid is None:
        raise InvalidInput("MessageSid: required", field="MessageSid")
    if sender is None:
        raise InvalidInput("From: required", field="From")
    to_number = _first(params, "To") or ""
    text = (params.get("Body") or [""])[0]

    def apply() -> str | None:
        with transaction(runtime.engine) as session:
            shop = store.profile_in(session, runtime.settings)
            return engagement.handle_inbound_sms(
                session,
                from_number=sender,
                to_number=to_number,
                body=text,
                provider_message_id=sid,
                now=runtime.clock.now(),
                help_text=runtime.settings.sms_help_text,
                shop=shop,
            )

    reply = await run_in_threadpool(apply)
    if reply is not None and not keywords.winback_replies(runtime.settings.sms_keyword_replies, to_number):
        reply = None  # Twilio answers the keyword itself
    return twiml(reply)


# --- web push ------------------------------------------------------------------------------------


# Public, unlike the rest of /api/v1 (the admin API, whose every operation documents 401/403): the
# documented path is the storefront one beside /v1/push/subscribe; /api/v1/… answers the same and is
# kept out of the schema.
@public_router.get("/v1/push/vapid-public-key", summary="The VAPID public key browsers subscribe with")
@public_router.get("/api/v1/push/vapid-public-key", include_in_schema=False)
def vapid_public_key(runtime: RuntimeDep) -> dict[str, str]:
    _private, public = secrets.vapid_keys(runtime.engine)
    return {"public_key": public}


@lru_cache(maxsize=1)
def _service_worker() -> str:
    return (
        resources.files("winback.messaging.channels")
        .joinpath("push_service_worker.js")
        .read_text(encoding="utf-8")
    )


@public_router.get("/push/sw.js", summary="The service worker that shows push notifications")
def service_worker() -> Response:
    try:
        script = _service_worker()
    except FileNotFoundError:
        raise NotFound("the push service worker script is not installed") from None
    return Response(
        script,
        media_type="application/javascript",
        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
    )


async def _push_body(request: Request, runtime: Runtime) -> dict[str, Any]:
    body = segment.decode_json(await read_body(request, runtime.settings.max_event_bytes))
    require_write_key(runtime, basic_username(request) or segment.write_key_from_body(body))
    if not isinstance(body, dict):
        raise InvalidInput("body: must be a JSON object", field="body")
    return body


def _optional_id(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{name}: must be a string", field=name)
    text = str(value).strip()
    if len(text) > segment.ID_MAX_LENGTH:
        raise InvalidInput(f"{name}: at most {segment.ID_MAX_LENGTH} characters", field=name)
    return text or None


@public_router.post(
    "/v1/push/subscribe",
    summary="Store a browser's push subscription and record the opt-in (tracking write key)",
    responses={
        400: {"model": schemas.ErrorResponse, "description": "a body field is invalid"},
        401: {"model": schemas.ErrorResponse, "description": "missing or unknown write key"},
    },
)
async def push_subscribe(request: Request, runtime: RuntimeDep) -> JSONResponse:
    body = await _push_body(request, runtime)
    user_id = _optional_id(body, "userId")
    anonymous_id = _optional_id(body, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise InvalidInput(
            "userId or anonymousId: one is required, as in every tracking call", field="userId"
        )
    subscription: Any = body.get("subscription")
    engagement.parse_subscription(subscription)  # refuse a bad body before any write
    user_agent = _user_agent(request)
    ip = _client_ip(request)

    def apply() -> tuple[int, int | None]:
        now = runtime.clock.now()
        with transaction(runtime.engine) as session:
            customer_id = engagement.find_customer_id(session, user_id=user_id, anonymous_id=anonymous_id)
            row = engagement.save_push_subscription(
                session, customer_id=customer_id, subscription=subscription, user_agent=user_agent, now=now
            )
            event = engagement.subscribe_event(
                row, user_id=user_id, anonymous_id=anonymous_id, user_agent=user_agent, ip=ip, now=now
            )
            event_store.append_events(session.connection(), [event])
            return row.id, customer_id

    subscription_id, customer_id = await run_in_threadpool(apply)
    return JSONResponse({"success": True, "subscription_id": subscription_id, "customer_id": customer_id})


@public_router.post(
    "/v1/push/unsubscribe",
    summary="Forget a browser's push subscription (tracking write key)",
    responses={401: {"model": schemas.ErrorResponse, "description": "missing or unknown write key"}},
)
async def push_unsubscribe(request: Request, runtime: RuntimeDep) -> JSONResponse:
    body = await _push_body(request, runtime)
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise InvalidInput("endpoint: required (the subscription's push service URL)", field="endpoint")

    def apply() -> bool:
        with transaction(runtime.engine) as session:
            return engagement.remove_push_subscription(session, endpoint)

    removed = await run_in_threadpool(apply)
    return JSONResponse({"success": True, "removed": removed})


# --- media ---------------------------------------------------------------------------------------


@public_router.get(
    "/media/{token}",
    summary="An image winback serves for MMS",
    responses={404: {"model": schemas.ErrorResponse, "description": "unknown media token"}},
)
def media(token: str, runtime: RuntimeDep) -> Response:
    with reading(runtime.engine) as session:
        asset = session.scalar(select(MediaAsset).where(MediaAsset.token == token))
        if asset is None:
            raise NotFound(f"no media {token!r}", field="token")
        return Response(asset.data, media_type=asset.content_type, headers=MEDIA_CACHE)


router.include_router(admin_router)
router.include_router(public_router)
