"""The sending pipeline: outbox rows become messages, and messages go out through providers.

Two stages, each safe to run in any number of workers:

1. **Intake** claims `pending` outbox rows (the flows' commands) like flow runs are claimed
   (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite). A discount command makes
   its code at once (message copy names it); a message command becomes a `messages` row, `queued`.
2. **Delivery** claims due messages, highest flow priority first, and for each one:
   policies (address, suppression, consent, quiet hours, frequency caps: `policy.decide`) → render
   the copy once (Liquid, tracked links, open pixel, the MMS cart grid) → pace (per provider and
   sender) → mark it `sending` and commit → call the provider outside any transaction → record
   the outcome. A worker killed between `sending` and the outcome leaves the message `sending`;
   whoever finds it after its lease is over records `unknown` and never calls the provider again
   blindly. Retries back off exponentially with jitter; permanent failures suppress bad addresses.

Paced providers (a rate in `send_rates`) are sent by one worker at a time — the one holding the
`send:{provider}` lease — so the pace holds across workers; unpaced ones are shared freely.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any, Final

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import index_order_only, reading, transaction
from winback.db.expressions import one_of
from winback.db.models import (
    Checkout,
    Customer,
    DiscountCode,
    Event,
    FlowRun,
    Message,
    MessageEvent,
    OutboxEntry,
    PushSubscription,
    Suppression,
)
from winback.flows import definition as d
from winback.flows import stepping
from winback.messaging import (
    caps,
    context,
    engagement,
    imagegrid,
    media,
    pacing,
    policy,
    quiet_hours,
    records,
    retry,
    shopify_discounts,
    sms_text,
    templating,
)
from winback.messaging.channels.base import Channel, ChannelName, OutgoingMessage, SendOutcome, family
from winback.messaging.registry import CHANNELS, KIND_CHANNEL, Registry
from winback.runtime import Runtime
from winback.segments import evaluator
from winback.settings import StoreProfile

log = logging.getLogger(__name__)

MESSAGES: Table = Message.__table__  # type: ignore[assignment]
MESSAGE_EVENTS: Table = MessageEvent.__table__  # type: ignore[assignment]

# Each paced window is kept 20 ms longer than a second, so a send that starts or arrives a little
# late cannot put a provider's one-second window over its rate (98 % of the rate is used).
PACE_MARGIN_S: Final = 0.02
MARK_LEAD_S: Final = 0.25  # how far ahead of its pacing slot a message may be marked `sending`
CARRY_MAX_S: Final = 10.0  # a message prepared longer ago than this is decided again
PREPARE_CHUNK: Final = 8  # messages prepared in one transaction (while the sending thread sends)
OUTCOME_BATCH: Final = 20  # outcomes recorded together (a crash leaves at most these `sending`)
OUTCOME_FLUSH_S: Final = 0.5  # … or those of the last half second, whichever comes first
OPEN_STATUSES: Final = ("queued", "deferred", "retrying", "sending")
SENT_STATUSES: Final = ("sending", "sent", "delivered", "unknown")
CLAIM_LEASE: Final = timedelta(minutes=5)  # a claimed message is due again after this if its worker died
SHOPIFY_LEASE: Final = "shopify-discounts"  # one worker pushes codes to Shopify
SHOPIFY_GIVE_UP: Final = timedelta(days=3)  # codes older than this are no longer pushed
LOCAL_PROVIDERS: Final = frozenset({"outbox", "console"})
# Channels where acceptance by the receiving server is the delivery we can know of (a bounce
# recorded later turns it into a failure); SMS delivery comes from the carrier's callback.
DELIVERED_ON_ACCEPT: Final = frozenset({"email", "push"})


@dataclass
class SendReport:
    """What one pass of the pipeline did."""

    taken: int = 0  # outbox rows turned into messages or discount codes
    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    failed: int = 0
    retrying: int = 0
    unknown: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return (
            self.taken + self.sent + self.deferred + self.skipped + self.failed + self.retrying + self.unknown
        )

    def describe(self) -> str:
        parts = [f"{n} {what}" for what, n in vars(self).items() if isinstance(n, int) and n]
        why = "; ".join(f"{n} × {reason}" for reason, n in sorted(self.by_reason.items()))
        return (", ".join(parts) or "nothing to send") + (f" (why: {why})" if why else "")

    def merge(self, other: SendReport) -> None:
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count


@dataclass
class _Prepared:
    """A message ready for its provider call (what phase A hands to phase B)."""

    message_id: int
    channel: ChannelName
    adapter: Channel
    outgoing: OutgoingMessage
    provider: str
    sender: str
    units: int


class Sender:
    """One process's sending pipeline (the worker keeps one for its life: pacing state lives here)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        registry: Registry | None = None,
        holds: Callable[[str], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.registry = registry or Registry.for_runtime(runtime)
        self.holds = holds or (lambda _name: True)
        self._leased = holds is not None  # paced providers are shared out by leases (a worker)
        self.sleep = sleep
        self.monotonic = monotonic
        self.rng = rng or random.SystemRandom()
        self.pacers = pacing.Pacers(self.settings.send_rates, margin_s=PACE_MARGIN_S)
        self.policy = policy.SendPolicy.from_settings(self.settings)
        self.shopify = shopify_discounts.ShopifyDiscounts.from_settings(self.settings)
        self._shopify_due: dict[int, float] = {}  # discount code id → monotonic time of the next push
        self._shopify_attempts: dict[int, int] = {}
        self._carried: list[tuple[_Prepared, float]] = []  # prepared, unsent at the last deadline
        self._mark_s = 0.0  # how long marking a message `sending` takes lately (seconds)
        self._held_since: dict[str, float] = {}  # paced provider → when this process took its lease
        self._plans: dict[int, stepping.Plan] = {}  # flow version id → plan

    def close(self) -> None:
        self._release([item.message_id for item, _ in self._carried])
        self._carried = []
        self.registry.close()
        if self.shopify is not None:
            self.shopify.close()

    # --- the pass ---------------------------------------------------------------------------------

    def run(self, budget_s: float = 2.0) -> SendReport:
        """Take new outbox rows, push new discount codes to Shopify, then send what is due for up
        to `budget_s` seconds."""
        report = SendReport()
        pending, due = self._waiting()  # reads only: an idle round takes no write lock
        if pending:
            report.taken = self.take_outbox()
        if self.shopify is not None and self.holds(SHOPIFY_LEASE):
            self.push_discounts()
        if pending or due or self._carried:
            self.deliver(report, deadline=self.monotonic() + budget_s)
        return report

    def _waiting(self) -> tuple[bool, bool]:
        """Whether outbox rows are pending, and whether messages are due."""
        now = self.runtime.clock.now()
        with reading(self.runtime.engine) as session:
            pending = session.scalar(select(OutboxEntry.id).where(OutboxEntry.status == "pending").limit(1))
            due = session.scalar(
                select(Message.id)
                .where(Message.next_attempt_at <= now, Message.status.in_(OPEN_STATUSES))
                .limit(1)
            )
        return pending is not None, due is not None

    def push_discounts(self, limit: int = 20) -> int:
        """Push codes not yet in Shopify (each call outside any transaction); returns codes pushed."""
        assert self.shopify is not None
        now = self.runtime.clock.now()
        mono = self.monotonic()
        with reading(self.runtime.engine) as session:
            codes = list(
                session.scalars(
                    select(DiscountCode)
                    .where(
                        DiscountCode.shopify_status.is_(None),
                        DiscountCode.created_at >= now - SHOPIFY_GIVE_UP,
                    )
                    .order_by(DiscountCode.id)
                    .limit(limit * 5)
                )
            )
        pushed = 0
        for code in [c for c in codes if self._shopify_due.get(c.id, 0.0) <= mono][:limit]:
            result = self.shopify.push(code)
            with transaction(self.runtime.engine) as session:
                row = session.get(DiscountCode, code.id)
                if row is None:
                    continue
                shopify_discounts.apply_result(row, result)
            if result.status == "retry":
                attempt = self._shopify_attempts.get(code.id, 0) + 1
                self._shopify_attempts[code.id] = attempt
                delay = retry.backoff(attempt, base_s=5.0, rng=self.rng, retry_after_s=result.retry_after_s)
                self._shopify_due[code.id] = mono + delay
                log.warning(
                    "discount code %s not in Shopify yet (%s); retrying in %.0f s",
                    code.code,
                    result.error,
                    delay,
                )
            else:
                self._shopify_due.pop(code.id, None)
                self._shopify_attempts.pop(code.id, None)
                if result.status == "pushed":
                    pushed += 1
                else:
                    log.error("discount code %s could not be created in Shopify: %s", code.code, result.error)
        return pushed

    def take_outbox(self, limit: int | None = None) -> int:
        """Turn pending outbox rows into messages (and discount codes); returns rows taken."""
        limit = limit or self.settings.send_batch_size
        now = self.runtime.clock.now()
        with transaction(self.runtime.engine) as session:
            query = (
                select(OutboxEntry)
                .where(OutboxEntry.status == "pending")
                .order_by(OutboxEntry.id)
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            with index_order_only(session):  # walks ix_outbox_status_id, never sorts what is pending
                rows = list(session.scalars(query))
            shop = store.profile_in(session, self.settings)
            for row in rows:
                try:
                    with session.begin_nested():
                        self._take(session, row, shop, now)
                except Exception as exc:  # one broken row must not hold up the others
                    log.exception("outbox row %s (%s) could not be taken", row.id, row.kind)
                    row.status = "failed"
                    row.payload = {**(row.payload or {}), "error": f"{type(exc).__name__}: {exc}"}
                    row.updated_at = now
        return len(rows)

    def _take(self, session: Session, row: OutboxEntry, shop: StoreProfile, now: datetime) -> None:
        from winback.messaging import discounts

        action = (row.payload or {}).get("action") or {}
        run = session.get(FlowRun, row.run_id) if row.run_id is not None else None
        if row.kind == "create_discount":
            discounts.issue_code(
                session,
                action=d.CreateDiscount.model_validate(action),
                customer_id=row.customer_id,
                outbox_id=row.id,
                run_id=row.run_id,
                node_id=row.node_id,
                currency=shop.currency,
                now=now,
                rng=self.rng,
            )
            row.status = "applied"
            row.updated_at = now
            return
        channel = KIND_CHANNEL[row.kind]
        flow = self._plan(session, run.flow_version_id).flow if run is not None else None
        message = Message(
            outbox_id=row.id,
            flow_id=row.flow_id,
            run_id=row.run_id,
            node_id=row.node_id,
            customer_id=row.customer_id,
            channel=channel,
            transactional=bool(action.get("transactional", False)),
            category=flow.category if flow is not None else None,
            priority=flow.priority if flow is not None else 50,
            status="queued",
            attempts=0,
            media_urls=[],
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(message)
        session.flush()
        records.record(session, message, "queued", now)
        row.status = "queued"
        row.updated_at = now

    def send_now(self, message_id: int) -> SendReport:
        """Send one message at once, whatever its due time (a test send), pacing included."""
        report = SendReport()
        outcomes = [
            outcome
            for item in self._prepare_chunk([message_id], report, deadline=float("inf"))
            if (outcome := self._send_prepared(item)) is not None
        ]
        self._record_outcomes(outcomes, report)
        return report

    def deliver(self, report: SendReport, *, deadline: float) -> None:
        """Send due messages until none is left or the time budget is spent.

        A preparing thread claims due messages and prepares them a chunk at a time (policies and
        copy, one transaction per chunk) while this thread sends the prepared ones, each in its
        pacing slot — so the waits between slots and the preparation of what follows overlap.
        Whatever is claimed but not sent by the deadline is given back (rendered copy kept).
        """
        allowed = [channel for channel in CHANNELS if self._may_send(channel)]
        carried, self._carried = self._carried, []
        fresh = [
            item for item, at in carried if self.monotonic() - at <= CARRY_MAX_S and item.channel in allowed
        ]
        self._release([item.message_id for item, _ in carried if item not in fresh])
        if not allowed:
            return
        ready: queue.Queue[_Prepared] = queue.Queue(maxsize=PREPARE_CHUNK * 2 + len(fresh))
        for item in fresh:  # prepared last pass, claimed still: they go first
            ready.put_nowait(item)
        stop, produced = threading.Event(), threading.Event()
        preparing = SendReport()

        def produce() -> None:
            try:
                while not stop.is_set() and self.monotonic() < deadline:
                    ids = self._claim(allowed)
                    if not ids:
                        return
                    for start in range(0, len(ids), PREPARE_CHUNK):
                        if stop.is_set() or self.monotonic() >= deadline:
                            self._release(ids[start:])
                            return
                        chunk = ids[start : start + PREPARE_CHUNK]
                        try:
                            items = self._prepare_chunk(chunk, preparing, deadline)
                        except Exception:
                            log.exception("messages %s…: could not be prepared; retried later", chunk[:5])
                            self._release(chunk, delay=timedelta(seconds=60))
                            continue
                        for index, item in enumerate(items):
                            if not self._hand_over(ready, item, stop):
                                self._release(
                                    [i.message_id for i in items[index:]] + ids[start + len(chunk) :]
                                )
                                return
            except Exception:
                log.exception("the preparing thread failed; unsent messages are due again after their lease")
            finally:
                produced.set()

        producer = threading.Thread(target=produce, name="winback-send-prepare", daemon=True)
        producer.start()
        outcomes: list[tuple[int, SendOutcome]] = []
        flushed_at = self.monotonic()
        try:
            while True:
                try:
                    item = ready.get(timeout=0.05)
                except queue.Empty:
                    if produced.is_set() and ready.empty():
                        break
                    continue
                if self.monotonic() >= deadline:
                    stop.set()
                    self._carry(item)
                    continue
                outcome = self._send_prepared(item)
                if outcome is not None:
                    outcomes.append(outcome)
                if len(outcomes) >= OUTCOME_BATCH or self.monotonic() - flushed_at >= OUTCOME_FLUSH_S:
                    self._record_outcomes(outcomes, report)
                    outcomes, flushed_at = [], self.monotonic()
        finally:
            stop.set()
            producer.join()
            while not ready.empty():
                self._carry(ready.get_nowait())
            self._record_outcomes(outcomes, report)
            report.merge(preparing)

    def _carry(self, item: _Prepared) -> None:
        """Keep a prepared message (still claimed) for the next pass, so a paced sender's next
        slot is not lost to preparing again; given back if the next pass is too late for it."""
        self._carried.append((item, self.monotonic()))

    @staticmethod
    def _hand_over(ready: queue.Queue[_Prepared], item: _Prepared, stop: threading.Event) -> bool:
        """Queue a prepared message for the sending thread; False once sending has stopped."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _may_send(self, channel: ChannelName) -> bool:
        provider = self.registry.provider(channel)
        paced = any(
            key == provider or key.startswith(f"{provider}:")
            for key, rate in self.pacers.rates.items()
            if rate > 0
        )
        if provider in LOCAL_PROVIDERS or not paced:
            return True
        if not self.holds(f"send:{provider}"):
            self._held_since.pop(provider, None)
            return False
        if not self._leased:
            return True
        # A worker that has just taken the lease over knows nothing of the last second's sends
        # of the one before: it waits one pacing window before its first send.
        since = self._held_since.setdefault(provider, self.monotonic())
        return self.monotonic() - since >= 1 + PACE_MARGIN_S

    def _claim(self, channels: list[ChannelName]) -> list[int]:
        if not channels:
            return []
        now = self.runtime.clock.now()
        with transaction(self.runtime.engine) as session:
            query = (
                select(Message.id)
                .where(
                    Message.next_attempt_at <= now,
                    Message.status.in_(OPEN_STATUSES),
                    one_of(Message.channel, channels),
                )
                .order_by(Message.priority.desc(), Message.next_attempt_at, Message.id)
                .limit(self.settings.send_batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if ids:
                session.execute(
                    update(Message).where(one_of(Message.id, ids)).values(next_attempt_at=now + CLAIM_LEASE),
                    execution_options={"synchronize_session": False},
                )
        return ids

    def _release(self, ids: list[int], delay: timedelta = timedelta(0)) -> None:
        """Give claimed messages back (due again after `delay`), e.g. when the budget ran out."""
        if not ids:
            return
        now = self.runtime.clock.now()
        with transaction(self.runtime.engine) as session:
            session.execute(
                update(Message)
                .where(one_of(Message.id, ids), Message.status != "sending")
                .values(next_attempt_at=now + delay),
                execution_options={"synchronize_session": False},
            )

    # --- a batch of messages -------------------------------------------------------------------

    def _prepare_chunk(self, ids: list[int], report: SendReport, deadline: float) -> list[_Prepared]:
        """Policies and copy for a chunk of claimed messages; the ones a paced sender has no room
        for before the deadline are given back at once."""
        # Before any transaction opens: the adapters (web push reads its keys through its own
        # transaction, which SQLite's single writer would refuse inside ours) and the MMS cart
        # grids (product images fetched over the network).
        channels, grid_urls = self._peek(ids)
        for channel in set(channels.values()):
            self.registry.channel(channel)
        grids = {message_id: media.cart_grid(urls) for message_id, urls in grid_urls.items()}
        prepared, unprepared = self._prepare_batch(ids, grids, report, deadline)
        self._release(unprepared)
        return prepared

    def _send_prepared(self, item: _Prepared) -> tuple[int, SendOutcome] | None:
        """In its pacing slot: mark the message `sending` (committed), then call the provider
        outside any transaction. None when the message is no longer ours to send."""
        # A reserved slot is always used (never wasted), even a little past the budget. The mark
        # is committed a little ahead of the slot (MARK_LEAD_S, or longer if marks take longer
        # lately), so a wait for the database's write lock does not make the call late; a crash
        # can leave at most that lead between the mark and the call.
        booked = self.pacers.reserve(item.provider, item.sender, self.monotonic(), item.units)
        wait = booked - max(self._mark_s, MARK_LEAD_S) - self.monotonic()
        if wait > 0:
            self.sleep(wait)
        marking = self.monotonic()
        if not self._mark_sending(item):
            return None
        self._mark_s = 0.8 * self._mark_s + 0.2 * (self.monotonic() - marking)
        wait = booked - self.monotonic()
        if wait > 0:
            self.sleep(wait)
        self.pacers.started(item.provider, item.sender, booked, self.monotonic())
        try:
            outcome = item.adapter.send(item.outgoing)
        except Exception as exc:  # adapters report outcomes; raising is a bug in one
            log.exception("the %s adapter raised for message %s", item.adapter.provider, item.message_id)
            outcome = SendOutcome("failed", error=f"the {item.adapter.provider} adapter failed: {exc}")
        return item.message_id, outcome

    def _peek(self, ids: list[int]) -> tuple[dict[int, ChannelName], dict[int, list[str]]]:
        """Each message's channel, and the product image URLs of the MMS that still need a grid."""
        with reading(self.runtime.engine) as session:
            rows = session.execute(
                select(
                    Message.id, Message.channel, Message.body, Message.outbox_id, Message.customer_id
                ).where(one_of(Message.id, ids))
            ).all()
            channels: dict[int, ChannelName] = {row.id: row.channel for row in rows}
            grid_urls: dict[int, list[str]] = {}
            for row in rows:
                if row.channel != "mms" or row.body is not None:
                    continue
                outbox = session.get(OutboxEntry, row.outbox_id) if row.outbox_id is not None else None
                payload = (outbox.payload or {}) if outbox else {}
                if ((payload.get("action") or {}).get("media") or "cart_grid") != "cart_grid":
                    continue
                customer = session.get(Customer, row.customer_id) if row.customer_id is not None else None
                urls = context.cart_image_urls(session, customer, payload.get("trigger"))
                if urls:
                    grid_urls[row.id] = urls
        return channels, grid_urls

    def _prepare_batch(
        self,
        ids: list[int],
        grids: dict[int, imagegrid.GridImage | None],
        report: SendReport,
        deadline: float,
    ) -> tuple[list[_Prepared], list[int]]:
        """Policies and copy for each message, in one transaction (a savepoint each, so one that
        breaks is contained). Returns the messages ready to send, in claim order, and those left
        for a later pass (a paced sender has no more room before the deadline)."""
        now = self.runtime.clock.now()
        prepared: list[_Prepared] = []
        unprepared: list[int] = []
        failed: list[int] = []
        room: dict[tuple[str, str], float] = {}  # units a paced sender can still take this pass
        planned: dict[int, list[caps.SentRecord]] = {}  # marketing sends decided in this batch
        with transaction(self.runtime.engine) as session:
            shop = store.profile_in(session, self.settings)
            loaded = self._preload(session, ids)
            for message_id in ids:
                try:
                    with session.begin_nested():
                        item = self._prepare_one(
                            session, message_id, grids.get(message_id), shop, now, report, planned
                        )
                except Exception:
                    log.exception("message %s could not be prepared; it will be retried", message_id)
                    failed.append(message_id)
                    continue
                if item is None:
                    continue
                key = (item.provider, item.sender)
                rate = self.pacers.rate_for(*key)
                if rate > 0 and item.provider not in LOCAL_PROVIDERS:
                    left = room.setdefault(key, rate * max(deadline - self.monotonic(), 0.0) + 1)
                    if left < item.units and prepared:
                        unprepared.append(message_id)
                        continue
                    room[key] = left - item.units
                prepared.append(item)
            del loaded
        self._release(failed, delay=timedelta(seconds=60))
        return prepared, unprepared

    @staticmethod
    def _preload(session: Session, ids: list[int], *, related: bool = True) -> list[Any]:
        """The chunk's messages (and their customers, outbox rows and runs), a query each: the
        session's identity map then answers each message's `session.get` — as long as the caller
        keeps the returned list, since the map holds its objects weakly."""
        messages = list(session.scalars(select(Message).where(one_of(Message.id, ids))))
        loaded: list[Any] = list(messages)
        keys_of = (
            (Customer, {m.customer_id for m in messages if m.customer_id is not None}),
            (OutboxEntry, {m.outbox_id for m in messages if m.outbox_id is not None} if related else set()),
            (FlowRun, {m.run_id for m in messages if m.run_id is not None} if related else set()),
        )
        for model, keys in keys_of:
            if keys:
                loaded += session.scalars(select(model).where(one_of(model.id, sorted(keys))))  # type: ignore[attr-defined]
        return loaded

    def _prepare_one(
        self,
        session: Session,
        message_id: int,
        grid: imagegrid.GridImage | None,
        shop: StoreProfile,
        now: datetime,
        report: SendReport,
        planned: dict[int, list[caps.SentRecord]],
    ) -> _Prepared | None:
        """Policies and copy for one message; None when it is not to be sent now (recorded why)."""
        message = session.get(Message, message_id)
        if message is None or message.status not in OPEN_STATUSES:
            return None
        if message.status == "sending":
            records.record(
                session,
                message,
                "unknown",
                now,
                reason="the worker sending it stopped before the provider answered; "
                "it is not sent again blindly (check the provider's log)",
            )
            message.next_attempt_at = None
            _count(report, "unknown", "worker stopped mid-send")
            return None
        customer = session.get(Customer, message.customer_id) if message.customer_id is not None else None
        blocked = self._blocked(session, message, customer)
        if blocked is not None:
            self._finish(session, message, "skipped", now, blocked, report)
            return None
        waiting = self._discounts_not_ready(session, message)
        if waiting is not None:
            if waiting.startswith("failed:"):
                self._finish(session, message, "failed", now, waiting.removeprefix("failed:"), report)
            else:
                self._defer(session, message, now, now + timedelta(seconds=30), waiting, report)
            return None
        address = self._address(session, message, customer)
        message.to_address = address  # shown with a deferral or a skip too ("which number?")
        decision = self._decide(session, message, customer, address, shop, now, planned)
        if decision.action == "skip":
            self._finish(session, message, "skipped", now, decision.reason, report)
            return None
        if decision.action == "defer":
            until = decision.until or now + timedelta(minutes=15)
            self._defer(session, message, now, until, decision.reason, report)
            return None
        if message.body is None and message.subject is None:
            try:
                self._render(session, message, customer, address, shop, now, grid)
            except templating.RenderError as exc:
                self._finish(session, message, "failed", now, f"the message copy failed: {exc}", report)
                return None
        if not message.transactional and message.customer_id is not None:
            planned.setdefault(message.customer_id, []).append(
                caps.SentRecord(at=now, channel=family(message.channel), category=message.category)
            )
        adapter = self.registry.channel(message.channel)  # type: ignore[arg-type]
        outgoing = self._outgoing(session, message, customer, address)
        sender = adapter.sender(outgoing)
        units = (message.sms_parts or 1) if family(message.channel) == "sms" else 1
        message.provider = adapter.provider
        message.sender = sender
        return _Prepared(message.id, message.channel, adapter, outgoing, adapter.provider, sender, units)  # type: ignore[arg-type]

    def _mark_sending(self, item: _Prepared) -> bool:
        """Committed before the provider is called: a worker that dies after this leaves a
        message that is never sent again blindly. False if it is no longer ours to send."""
        now = self.runtime.clock.now()
        with self.runtime.engine.begin() as connection:  # two statements: no ORM session needed
            changed = connection.execute(
                MESSAGES.update()
                .where(
                    MESSAGES.c.id == item.message_id,
                    MESSAGES.c.status.in_(("queued", "deferred", "retrying")),
                )
                .values(
                    status="sending",
                    status_reason=None,
                    attempts=MESSAGES.c.attempts + 1,
                    next_attempt_at=now + CLAIM_LEASE,
                    updated_at=now,
                )
            ).rowcount
            if not changed:
                return False
            connection.execute(
                MESSAGE_EVENTS.insert(),
                {
                    "message_id": item.message_id,
                    "status": "sending",
                    "reason": None,
                    "details": {},
                    "at": now,
                },
            )
        return True

    def _defer(
        self,
        session: Session,
        message: Message,
        now: datetime,
        until: datetime,
        reason: str | None,
        report: SendReport,
    ) -> None:
        """Due again at `until`; a deferral for the same reason as the last is not written twice."""
        message.next_attempt_at = until
        if message.status == "deferred" and message.status_reason == reason:
            message.updated_at = now
        else:
            records.record(
                session, message, "deferred", now, reason=reason, details={"until": until.isoformat()}
            )
        _count(report, "deferred", reason)

    def _blocked(self, session: Session, message: Message, customer: Customer | None) -> str | None:
        """Reasons a message must not go out that no policy would change."""
        if message.customer_id is not None and (customer is None or customer.erased_at is not None):
            return "the customer's profile was erased"
        if customer is not None and customer.merged_into_id is not None:
            message.customer_id = customer.merged_into_id  # the profile lives on in another
        if message.run_id is not None and not message.transactional:
            run = session.get(FlowRun, message.run_id)
            if (
                run is not None
                and run.status == "exited"
                and run.finished_at is not None
                and run.finished_at >= message.created_at
            ):
                return f"the flow run ended before it was sent ({run.exit_reason or 'exit condition'})"
            if run is not None:
                reason = self._exit_since_queued(session, message, run, customer)
                if reason is not None:
                    return f"the flow's exit rule holds since it was queued ({reason})"
        return None

    def _exit_since_queued(
        self, session: Session, message: Message, run: FlowRun, customer: Customer | None
    ) -> str | None:
        """ "Stop once they buy" for a message that waited (quiet hours, a cap, a retry): the flow's
        exit conditions, checked against what happened since the message was queued — a run may
        have moved on without exiting (an order answered its wait), leaving this message behind."""
        plan = self._plan(session, run.flow_version_id)
        node = plan.nodes.get(message.node_id or "")
        if not plan.flow.exit_when or getattr(node, "ignore_exit_conditions", False):
            return None
        names = sorted({c.event for c in plan.flow.exit_when if isinstance(c, d.EventSinceEntryExit)})
        events = []
        if names and message.customer_id is not None:
            events = [
                evaluator.EventFact(name, timestamp, properties or {})
                for name, timestamp, properties in session.execute(
                    select(Event.event, Event.timestamp, Event.properties).where(
                        Event.customer_id == message.customer_id,
                        one_of(Event.event, names),
                        Event.timestamp >= message.created_at,
                    )
                )
            ]
        checkout_status = None
        if run.checkout_id is not None and any(
            isinstance(c, d.CheckoutCompletedExit) for c in plan.flow.exit_when
        ):
            checkout_status = session.scalar(
                select(Checkout.status).where(
                    Checkout.external_id == run.checkout_id, Checkout.customer_id == message.customer_id
                )
            )
        profile = {
            f"{channel}_consent": getattr(customer, f"{channel}_consent", None)
            for channel in ("email", "sms", "push")
        }
        context = stepping.StepContext(
            facts=evaluator.CustomerFacts(profile=profile),
            trigger={},
            events_since_entry=events,
            checkout_status=checkout_status,
        )
        return stepping.exit_reason(plan.flow.exit_when, context)

    def _discounts_not_ready(self, session: Session, message: Message) -> str | None:
        """With Shopify connected, a message waits until its run's codes exist there (a code the
        shopper cannot use is worse than a minute's wait); a code Shopify refused fails it."""
        if self.shopify is None or message.run_id is None or message.body is not None:
            return None
        from winback.messaging import discounts

        for code in discounts.codes_for_run(session, message.run_id).values():
            if code.shopify_status == "failed":
                return f"failed:discount code {code.code} could not be created in Shopify"
            if code.shopify_status is None:
                return f"waiting for discount code {code.code} to be created in Shopify"
        return None

    def _address(self, session: Session, message: Message, customer: Customer | None) -> str | None:
        if customer is None and message.to_address:
            return message.to_address  # a test send: addressed by the merchant, not to a profile
        channel = family(message.channel)
        if channel == "sms":
            return customer.phone if customer else None
        if channel == "email":
            return customer.email if customer else None
        if channel == "push":
            if customer is None:
                return None
            subscriptions = engagement.push_subscriptions_for(session, customer.id)
            return subscriptions[-1].endpoint if subscriptions else None  # the newest browser
        action = self._action(session, message)
        if channel == "webhook":
            return str(action.get("url") or "")
        if channel == "meta":
            return str(action.get("audience_id") or "")
        return ""  # slack: the incoming webhook is configuration

    def _decide(
        self,
        session: Session,
        message: Message,
        customer: Customer | None,
        address: str | None,
        shop: StoreProfile,
        now: datetime,
        planned: dict[int, list[caps.SentRecord]] | None = None,
    ) -> policy.Decision:
        channel = family(message.channel)
        suppression = None
        if address and channel in ("sms", "email", "push"):
            suppression = session.scalars(
                select(Suppression.reason).where(
                    Suppression.channel == channel, Suppression.address == _normal_address(channel, address)
                )
            ).first()
        consent = getattr(customer, f"{channel}_consent", None) if customer is not None else None
        zones = quiet_hours.recipient_timezones(
            profile_timezone=customer.timezone if customer else None,
            phone_e164=customer.phone if customer else None,
            country=customer.country if customer else None,
            store_timezone=shop.timezone,
        )
        history = self._history(session, message, now) if not message.transactional and customer else []
        if customer is not None and planned:
            history += planned.get(customer.id, [])
        return self.policy.decide(
            policy.SendRequest(
                channel=message.channel,  # type: ignore[arg-type]
                now=now,
                transactional=message.transactional,
                category=message.category,
                consent=consent,  # type: ignore[arg-type]
                suppression=suppression,  # type: ignore[arg-type]
                has_address=bool(address),
                address=address,
                zones=zones,
                country=customer.country if customer else None,
                region=customer.region if customer else None,
                history=tuple(history),
                when_capped=self._when_capped(session, message),  # type: ignore[arg-type]
            )
        )

    def _history(self, session: Session, message: Message, now: datetime) -> list[caps.SentRecord]:
        """Marketing messages already sent to this person on this channel family (for caps)."""
        longest = max((cap.window for cap in self.policy.caps), default=timedelta(0))
        if not longest:
            return []
        channels = ["sms", "mms"] if family(message.channel) == "sms" else [message.channel]
        rows = session.execute(
            select(Message.sent_at, Message.updated_at, Message.channel, Message.category).where(
                Message.customer_id == message.customer_id,
                one_of(Message.channel, channels),
                Message.transactional.is_(False),
                Message.status.in_(SENT_STATUSES),
                Message.id != message.id,
                Message.updated_at >= now - longest,
            )
        ).all()
        return [
            caps.SentRecord(at=sent_at or updated_at, channel=family(channel), category=category)
            for sent_at, updated_at, channel, category in rows
        ]

    def _when_capped(self, session: Session, message: Message) -> str:
        run = session.get(FlowRun, message.run_id) if message.run_id is not None else None
        return self._plan(session, run.flow_version_id).flow.when_capped if run is not None else "skip"

    def _plan(self, session: Session, version_id: int) -> stepping.Plan:
        """A flow version's plan, parsed once per process (versions never change once written)."""
        plan = self._plans.get(version_id)
        if plan is None:
            from winback.flows.engine import plan_of

            plan = self._plans[version_id] = plan_of(session, version_id)
        return plan

    def _action(self, session: Session, message: Message) -> dict[str, Any]:
        row = session.get(OutboxEntry, message.outbox_id) if message.outbox_id is not None else None
        return dict(((row.payload or {}) if row else {}).get("action") or {})

    # --- rendering --------------------------------------------------------------------------------

    def _render(
        self,
        session: Session,
        message: Message,
        customer: Customer | None,
        address: str | None,
        shop: StoreProfile,
        now: datetime,
        grid: imagegrid.GridImage | None = None,
    ) -> None:
        """Fill the message's copy from its action's Liquid, once (a retry sends the same text)."""
        from winback.messaging import links

        row = session.get(OutboxEntry, message.outbox_id) if message.outbox_id is not None else None
        payload = (row.payload or {}) if row else {}
        action = dict(payload.get("action") or {})
        unsubscribe_url = self._unsubscribe_url(session, message)
        sources = [
            v for k, v in action.items() if k in ("body", "text", "html", "subject", "title", "url") and v
        ]
        ctx = context.build(
            session,
            customer=customer,
            trigger=payload.get("trigger"),
            run_id=message.run_id,
            shop=shop,
            sources=sources,
            unsubscribe_url=unsubscribe_url,
            message_id=message.id,
            now=now,
        )

        def render(source: str | None, *, html: bool = False) -> str | None:
            if not source:
                return None
            return templating.render(
                source, ctx.values, currency=ctx.currency, locale=ctx.locale, timezone=ctx.timezone, html=html
            )

        shorten = links.shortener(
            session, message.id, public_url=self._public_url, rng=self.rng, now=now, fresh=True
        )

        keep = {unsubscribe_url}
        channel = family(message.channel)
        message.to_address = address
        if channel == "sms":
            body = links.rewrite_text(render(action.get("body")) or "", shorten, keep=keep)
            message.body = body
            analysis = sms_text.analyse(body)
            message.sms_encoding = analysis.encoding
            message.sms_parts = analysis.parts
            if message.channel == "mms":
                message.media_urls = self._media(session, action, ctx, grid, now)
        elif channel == "email":
            text = render(action.get("text")) or ""
            html = render(action.get("html"), html=True) or _html_from_text(text)
            message.subject = render(action.get("subject"))
            message.body = links.rewrite_text(text, shorten, keep=keep)
            pixel = engagement.open_pixel_url(self._public_url, self._link_key(session), message.id)
            message.html = _with_pixel(links.rewrite_html(html, shorten, keep=keep), pixel)
        elif channel == "push":
            message.subject = render(action.get("title"))
            message.body = render(action.get("body")) or ""
            url = render(action.get("url"))
            message.media_urls = [shorten(url)] if url else []  # the page a click opens
        elif channel == "slack":
            message.body = render(action.get("text")) or ""
        else:  # webhook, meta: data, not copy
            message.body = ""

    def _media(
        self,
        session: Session,
        action: dict[str, Any],
        ctx: context.RenderContext,
        grid: imagegrid.GridImage | None,
        now: datetime,
    ) -> list[str]:
        source = action.get("media") or "cart_grid"
        if source != "cart_grid":
            url = templating.render(
                source, ctx.values, currency=ctx.currency, locale=ctx.locale, timezone=ctx.timezone
            )
            return [url]
        if grid is None:
            return []  # no product image could be used: the MMS goes out with its text alone
        asset = media.store_image(session, grid.data, grid.content_type, now)
        return [f"{self._public_url}/media/{asset.token}"]

    def _outgoing(
        self, session: Session, message: Message, customer: Customer | None, address: str | None
    ) -> OutgoingMessage:
        channel = family(message.channel)
        data: dict[str, Any] = {}
        headers: dict[str, str] = {"X-Winback-Message-Id": str(message.id)}
        if channel == "email" and not message.transactional:
            headers["List-Unsubscribe"] = f"<{self._unsubscribe_url(session, message)}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if channel == "push":
            subscription = session.scalars(
                select(PushSubscription).where(PushSubscription.endpoint == address)
            ).first()
            if subscription is not None:
                data["subscription"] = {
                    "endpoint": subscription.endpoint,
                    "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
                }
            data["url"] = message.media_urls[0] if message.media_urls else None
        elif channel == "webhook":
            row = session.get(OutboxEntry, message.outbox_id) if message.outbox_id is not None else None
            payload = (row.payload or {}) if row else {}
            data["payload"] = {
                "message_id": message.id,
                "flow_id": message.flow_id,
                "run_id": message.run_id,
                "node_id": message.node_id,
                "customer": context.customer_value(customer) if customer is not None else None,
                "trigger": payload.get("trigger"),
                "data": (payload.get("action") or {}).get("payload"),
            }
        elif channel == "meta":
            action = self._action(session, message)
            data["operation"] = "remove" if action.get("type") == "meta_audience_remove" else "add"
            data["email"] = customer.email if customer else None
            data["phone"] = customer.phone if customer else None
        return OutgoingMessage(
            message_id=message.id,
            channel=message.channel,  # type: ignore[arg-type]
            to=address or "",
            body=message.body or "",
            subject=message.subject,
            html=message.html,
            media_urls=tuple(message.media_urls or ()) if message.channel == "mms" else (),
            headers=headers,
            data=data,
            idempotency_key=f"message:{message.id}",
            status_callback_url=f"{self._public_url}/webhooks/twilio/status" if channel == "sms" else None,
        )

    # --- outcomes ---------------------------------------------------------------------------------

    def _record_outcomes(self, outcomes: list[tuple[int, SendOutcome]], report: SendReport) -> None:
        """What the providers said, for several messages in one transaction."""
        if not outcomes:
            return
        now = self.runtime.clock.now()
        with transaction(self.runtime.engine) as session:
            loaded = self._preload(session, [message_id for message_id, _ in outcomes], related=False)
            for message_id, outcome in outcomes:
                message = session.get(Message, message_id)
                if message is not None:
                    self._apply_outcome(session, message, outcome, now, report)
            del loaded

    def _apply_outcome(
        self, session: Session, message: Message, outcome: SendOutcome, now: datetime, report: SendReport
    ) -> None:
        details = {k: v for k, v in dict(outcome.details).items() if isinstance(v, str | int | float | bool)}
        if outcome.provider_status:
            details["provider_status"] = outcome.provider_status
        if outcome.status == "sent":
            message.provider_message_id = outcome.provider_message_id
            message.next_attempt_at = None
            records.record(session, message, "sent", now, details=details)
            if message.provider in LOCAL_PROVIDERS or family(message.channel) in DELIVERED_ON_ACCEPT:
                records.record(session, message, "delivered", now)
            if message.channel == "push" and message.to_address:
                session.execute(
                    update(PushSubscription)
                    .where(PushSubscription.endpoint == message.to_address)
                    .values(last_success_at=now)
                )
            report.sent += 1
        elif outcome.status == "retry" and message.attempts < self.settings.send_max_attempts:
            delay = retry.backoff(message.attempts, rng=self.rng, retry_after_s=outcome.retry_after_s)
            until = now + timedelta(seconds=delay)
            message.next_attempt_at = until
            reason = (
                f"{outcome.error or 'the provider asked to retry'} (attempt {message.attempts} of "
                f"{self.settings.send_max_attempts}; next at {until:%Y-%m-%d %H:%M:%S} UTC)"
            )
            records.record(
                session, message, "retrying", now, reason=reason, details={"until": until.isoformat()}
            )
            _count(report, "retrying", outcome.error)
        elif outcome.status == "unknown":
            message.next_attempt_at = None
            records.record(
                session,
                message,
                "unknown",
                now,
                reason=f"{outcome.error or 'no answer'}: the provider may have accepted it; "
                "not sent again blindly",
                details=details,
            )
            _count(report, "unknown", outcome.error)
        else:
            reason = outcome.error or "the provider refused it"
            if outcome.status == "retry":
                reason = f"gave up after {message.attempts} attempts: {reason}"
            if outcome.address_invalid:
                self._invalid_address(session, message, now, reason)
            self._finish(session, message, "failed", now, reason, report, details=details)

    def _invalid_address(self, session: Session, message: Message, now: datetime, reason: str) -> None:
        from winback.db.expressions import insert_or_ignore

        channel = family(message.channel)
        if not message.to_address:
            return
        if channel == "push":  # the subscription is gone (404/410): forget it
            session.execute(
                PushSubscription.__table__.delete().where(PushSubscription.endpoint == message.to_address)
            )
            return
        if channel in ("sms", "email"):
            session.execute(
                insert_or_ignore(
                    session.get_bind().dialect.name, Suppression.__table__, ["channel", "address"]
                ),
                {
                    "channel": channel,
                    "address": _normal_address(channel, message.to_address),
                    "reason": "invalid" if channel == "sms" else "bounced",
                    "details": {"message_id": message.id, "reason": reason},
                    "created_at": now,
                },
            )

    def _finish(
        self,
        session: Session,
        message: Message,
        status: str,
        now: datetime,
        reason: str | None,
        report: SendReport,
        details: dict[str, Any] | None = None,
    ) -> None:
        message.next_attempt_at = None
        records.record(session, message, status, now, reason=reason, details=details)
        _count(report, status, reason)

    # --- keys -------------------------------------------------------------------------------------

    @property
    def _public_url(self) -> str:
        return self.settings.public_url.rstrip("/")

    def _unsubscribe_url(self, session: Session, message: Message) -> str:
        """The message's one-click unsubscribe link (the same every time it is asked for)."""
        return engagement.unsubscribe_url(self._public_url, self._link_key(session), message_id=message.id)

    def _link_key(self, session: Session) -> bytes:
        from winback.messaging import secrets

        return secrets.link_signing_key(session)


def _count(report: SendReport, status: str, reason: str | None) -> None:
    setattr(report, status, getattr(report, status) + 1)
    if reason:
        short = reason.split(":")[0][:80]
        report.by_reason[short] = report.by_reason.get(short, 0) + 1


def _normal_address(channel: str, address: str) -> str:
    return engagement.normalise_address(channel, address) or address


def _html_from_text(text: str) -> str:
    paragraphs = [escape(part).replace("\n", "<br>\n") for part in text.strip().split("\n\n") if part.strip()]
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f'<!doctype html>\n<html><body style="font-family: sans-serif">\n{body}\n</body></html>'


def _with_pixel(html: str, pixel_url: str) -> str:
    pixel = f'<img src="{escape(pixel_url)}" width="1" height="1" alt="" style="display:none">'
    index = html.lower().rfind("</body>")
    return html[:index] + pixel + html[index:] if index != -1 else html + pixel
