"""Running flows: enrolling customers when triggers fire, and stepping runs that fall due.

Runs are rows (`flow_runs`). A worker claims due runs in one transaction — `FOR UPDATE SKIP
LOCKED` on PostgreSQL, the single-writer `BEGIN IMMEDIATE` path on SQLite — so the row locks are
its lease: a worker that dies mid-way rolls back and the runs are claimed again. Each run is
stepped by the pure `stepping.step`; the batch's outbox rows and new states are then written with
one executemany each (the visits of the step appended to the run's `history` in SQL, never
rewritten). A run whose step raises, or whose commands act inside winback, is written in its own
savepoint, so one failing run records its error and is retried later without disturbing the
others; should the batch write fail, the transaction is rolled back and every run of the batch
goes that way. Commands land in `outbox` keyed `"{run_id}:{node_id}"` (at most once); actions
inside winback (tags, lists, properties, goals) are applied in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    Table,
    exists,
    select,
    update,
)
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import transaction
from winback.db.expressions import insert_or_ignore, one_of
from winback.db.models import (
    Checkout,
    Customer,
    CustomerList,
    Event,
    Flow,
    FlowRun,
    FlowVersion,
    ListMembership,
    OutboxEntry,
)
from winback.flows import definition as d
from winback.flows import stepping
from winback.ingest import store as event_store
from winback.ingest.segment import derived_event
from winback.kernel.clock import as_utc
from winback.runtime import Runtime
from winback.segments import evaluator, facts, membership

log = logging.getLogger(__name__)

STEP_BATCH = 200  # runs stepped per transaction
RETRY_BASE = 60.0  # seconds before a failed run is tried again; doubles per attempt
RETRY_MAX = 6 * 3600.0  # seconds
ACTIVE = ("active", "waiting")
# Actions carried out by the sending pipeline (messages and calls to other services).
OUTBOUND = frozenset(
    {"send_sms", "send_mms", "send_email", "send_push", "notify_slack", "webhook", "meta_audience_add",
     "meta_audience_remove", "create_discount"}
)  # fmt: skip

_plans: dict[bytes, stepping.Plan] = {}  # definition digest → plan (parsing is the costly part)


def plan_of(session: Session, version_id: int) -> stepping.Plan:
    """The parsed plan of a flow version (versions never change once written)."""
    version = session.get(FlowVersion, version_id)  # the session's identity map: one query per batch
    if version is None:
        raise LookupError(f"flow version {version_id} does not exist")
    return _plan_for(version.definition)


def plans_of(session: Session, version_ids: Iterable[int]) -> dict[int, stepping.Plan]:
    """The parsed plans of several flow versions, read with one query (on the raw driver: this runs
    once per batch of stepped runs, and a Core statement costs ten times as much to execute)."""
    wanted = sorted(set(version_ids))
    connection = session.connection()
    parameters: tuple[Any, ...]
    if connection.dialect.name == "postgresql":
        sql, parameters = "SELECT id, definition FROM flow_versions WHERE id = ANY(%s)", (wanted,)
    else:
        marks = ", ".join("?" * len(wanted))
        sql, parameters = f"SELECT id, definition FROM flow_versions WHERE id IN ({marks})", tuple(wanted)
    plans = {}
    for version_id, definition in connection.exec_driver_sql(sql, parameters):
        plans[version_id] = _plan_for(orjson.loads(definition) if isinstance(definition, str) else definition)
    for version_id in set(wanted) - plans.keys():
        raise LookupError(f"flow version {version_id} does not exist")
    return plans


def _plan_for(definition: dict[str, Any]) -> stepping.Plan:
    digest = hashlib.blake2b(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
    plan = _plans.get(digest)
    if plan is None:
        if len(_plans) > 1_000:
            _plans.clear()
        plan = stepping.Plan(d.parse_flow(definition))
        _plans[digest] = plan
    return plan


# --- enrolment ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """An event the processor has just applied, as trigger matching sees it."""

    customer_id: int
    event: str | None  # track name; None for identify/page/…
    type: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    timestamp: datetime
    message_id: str


def trigger_matches(trigger: Any, applied: AppliedEvent) -> bool:
    """Whether an applied event fires a (non-scheduled) trigger. Pure."""
    if isinstance(trigger, d.EventTrigger):
        return applied.event == trigger.event and stepping.filters_pass(trigger.where, applied.properties)
    if isinstance(trigger, d.SegmentTrigger):
        name = "Segment Entered" if trigger.type == "segment_entered" else "Segment Exited"
        return applied.event == name and applied.properties.get("segment_id") == trigger.segment_id
    if isinstance(trigger, d.ListTrigger):
        return applied.event == "List Joined" and applied.properties.get("list_id") == trigger.list_id
    if isinstance(trigger, d.PropertyChangedTrigger):
        return applied.type == "identify" and trigger.property in applied.traits
    return False  # date and schedule triggers enrol from the scheduler, not from events


def active_key(flow_id: int, customer_id: int, scope: str | None) -> str:
    return f"{flow_id}:{customer_id}" + (f":{scope}" if scope else "")


def trigger_checkout_id(properties: Mapping[str, Any]) -> str | None:
    """The checkout (or cart) a trigger event is about."""
    return str(properties.get("checkout_id") or properties.get("cart_id") or "") or None


def run_scope(one_run_per: str, properties: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(checkout id, scope) of a run entering on a trigger with these properties. The scope is what
    "never two active runs" counts within besides flow and customer: the checkout for one run per
    checkout (whose completion exit rules then follow), the order for one run per order."""
    if one_run_per == "checkout":
        checkout_id = trigger_checkout_id(properties)
        return checkout_id, checkout_id
    if one_run_per == "order":
        order_id = str(properties.get("order_id") or "")
        return None, f"order:{order_id}" if order_id else None
    return None, None


def reentry_allows(policy: d.ReentryPolicy, last_entered_at: datetime | None, now: datetime) -> bool:
    """Pure: may a customer whose last run of this flow began at `last_entered_at` enter again?"""
    if last_entered_at is None or policy.mode == "every_time":
        return True
    if policy.mode == "once":
        return False
    assert policy.days is not None
    return now - last_entered_at >= timedelta(days=policy.days)


def any_live_flows(session: Session) -> bool:
    return session.scalar(select(exists().where(Flow.status == "live"))) is True


# Derived events stamped when winback noticed something, not when the shopper did it, and the
# property that says when that was.
NOTICED_LATER = {
    "Checkout Abandoned": "last_activity_at",
    "Cart Abandoned": "last_activity_at",
    "Browse Abandoned": "last_activity_at",
    "Search Abandoned": "last_activity_at",
    "Segment Entered": "caused_at",  # set when the events that moved them were older than now
    "Segment Exited": "caused_at",
}


def occurred_at(event: AppliedEvent) -> datetime:
    """When what an event reports happened: its timestamp, or for an abandonment the shopper's last
    activity (the sweep stamps the event when it notices, maybe long after: an imported checkout),
    for a segment change the time of the events that caused it (imported history)."""
    name = NOTICED_LATER.get(event.event or "")
    value = event.properties.get(name) if name else None
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    return event.timestamp


def may_trigger(event: AppliedEvent, live_since: datetime, now: datetime, max_age: timedelta) -> bool:
    """Whether an event may start runs of a flow live since `live_since`: it came after the flow
    went live (or was last edited), and what it reports happened within `max_age` of now. Imported
    history and events long delayed start nothing. Pure."""
    return event.timestamp >= as_utc(live_since) and occurred_at(event) >= now - max_age


def enrol_for_events(
    session: Session,
    applied: Sequence[AppliedEvent],
    now: datetime,
    timezone: str,
    max_age: timedelta,
) -> int:
    """Start runs of live flows whose trigger these events fire (and `may_trigger` lets start);
    returns how many started."""
    if not applied:
        return 0
    live = _live_flows(session)
    candidates: list[tuple[Flow, int, stepping.Plan, AppliedEvent]] = []
    for flow, version_id in live:
        plan = plan_of(session, version_id)
        candidates.extend(
            (flow, version_id, plan, event)
            for event in applied
            if trigger_matches(plan.flow.trigger, event) and may_trigger(event, flow.updated_at, now, max_age)
        )
    return enrol(session, candidates, now, timezone)


def enrol(
    session: Session,
    candidates: Sequence[tuple[Flow, int, stepping.Plan, AppliedEvent]],
    now: datetime,
    timezone: str,
) -> int:
    """Start runs for explicit (flow, version, plan, trigger event) candidates, through the entry
    filter, the re-entry policy and the one-active-run rule; returns how many started. The
    scheduler enrols date and schedule triggers through here with a synthetic trigger event."""
    if not candidates:
        return 0
    allowed = _entry_filter(session, list(candidates), now, timezone)
    last_entries = _last_entries(session, {(flow.id, event.customer_id) for flow, _, _, event in allowed})
    started = 0
    rows: list[dict[str, Any]] = []
    for flow, version_id, plan, event in allowed:
        if not reentry_allows(plan.flow.entry.reentry, last_entries.get((flow.id, event.customer_id)), now):
            continue
        checkout_id, scope = run_scope(plan.flow.entry.one_run_per, event.properties)
        rows.append(
            {
                "flow_id": flow.id,
                "flow_version_id": version_id,
                "customer_id": event.customer_id,
                "status": "active",
                "node_id": None,
                "due_at": now,
                "entered_at": now,
                "trigger": {
                    "event": event.event or event.type,
                    "message_id": event.message_id,
                    "timestamp": event.timestamp.isoformat(),
                    "properties": event.properties,
                },
                "checkout_id": checkout_id,
                "active_key": active_key(flow.id, event.customer_id, scope),
                "history": [],
                "attempts": 0,
                "updated_at": now,
            }
        )
        last_entries[(flow.id, event.customer_id)] = now  # two triggers in one batch start one run
    runs: Table = FlowRun.__table__  # type: ignore[assignment]
    for row in rows:
        # The unique active_key refuses a second active run for the same flow and customer (and
        # checkout or order).
        statement = insert_or_ignore(session.get_bind().dialect.name, runs, ["active_key"]).returning(
            runs.c.id
        )
        if session.execute(statement, row).first() is not None:
            started += 1
    return started


def _live_flows(session: Session) -> list[tuple[Flow, int]]:
    flows = session.scalars(select(Flow).where(Flow.status == "live", Flow.current_version_id.is_not(None)))
    return [(flow, flow.current_version_id) for flow in flows if flow.current_version_id is not None]


def _entry_filter(
    session: Session,
    candidates: list[tuple[Flow, int, stepping.Plan, AppliedEvent]],
    now: datetime,
    timezone: str,
) -> list[tuple[Flow, int, stepping.Plan, AppliedEvent]]:
    context = evaluator.EvalContext(now=now, timezone=timezone)
    filtered = [c for c in candidates if c[2].flow.entry.filter is not None]
    if not filtered:
        return candidates
    needs = evaluator.FactNeeds()
    for _, _, plan, _ in filtered:
        needs = needs.merge(evaluator.needs(plan.flow.entry.filter, context))
    known = facts.load_facts(session, {event.customer_id for _, _, _, event in filtered}, needs, context)
    kept = []
    for candidate in candidates:
        entry_filter = candidate[2].flow.entry.filter
        customer_facts = known.get(candidate[3].customer_id)
        if entry_filter is None or (
            customer_facts is not None and evaluator.evaluate(entry_filter, customer_facts, context)
        ):
            kept.append(candidate)
    return kept


def _last_entries(session: Session, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], datetime]:
    if not pairs:
        return {}
    found: dict[tuple[int, int], datetime] = {}
    customer_ids = {customer for _, customer in pairs}
    query = select(FlowRun.flow_id, FlowRun.customer_id, FlowRun.entered_at).where(
        one_of(FlowRun.customer_id, customer_ids), one_of(FlowRun.flow_id, {flow for flow, _ in pairs})
    )
    for flow_id, customer_id, entered_at in session.execute(query):
        key = (flow_id, customer_id)
        if key in pairs and (key not in found or entered_at > found[key]):
            found[key] = entered_at
    return found


def wake_for_events(session: Session, customer_ids: Iterable[int], now: datetime) -> None:
    """Waiting runs of these customers are looked at now: an order may end them, an awaited event
    may resume them. Their own timers (`wake_at`) are untouched."""
    ids = list(set(customer_ids))
    if not ids:
        return
    session.execute(
        update(FlowRun)
        .where(one_of(FlowRun.customer_id, ids), FlowRun.status == "waiting")
        .where((FlowRun.due_at.is_(None)) | (FlowRun.due_at > now))
        .values(due_at=now),
        execution_options={"synchronize_session": False},
    )


# --- stepping due runs --------------------------------------------------------------------------

_RUNS: Table = FlowRun.__table__  # type: ignore[assignment]


class ClaimedRun(NamedTuple):
    """What stepping reads of a claimed run. Not its `history`: `step` only appends to it, so the
    engine steps each run from an empty history and appends the new visits in SQL."""

    id: int
    flow_id: int
    flow_version_id: int
    customer_id: int
    status: str
    node_id: str | None
    entered_at: datetime
    node_entered_at: datetime | None
    wake_at: datetime | None
    exit_reason: str | None
    trigger: dict[str, Any]
    checkout_id: str | None
    attempts: int


# The hot statements run on the raw driver (as a bare claim-and-update loop would): SQLAlchemy's
# per-row parameter and result processing was about a third of the time of a drain.
_CLAIM_COLUMNS = ", ".join(ClaimedRun._fields)
_CLAIM = {
    "sqlite": (
        f"SELECT {_CLAIM_COLUMNS} FROM flow_runs WHERE due_at <= ? AND status IN ('active', 'waiting') "
        "ORDER BY due_at, id LIMIT ?"
    ),
    "postgresql": (
        f"SELECT {_CLAIM_COLUMNS} FROM flow_runs WHERE due_at <= %s AND status IN ('active', 'waiting') "
        "ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
    ),
}
# The new state of a stepped run, its parameters in the order of `_state_params`. The step's
# visits are appended to `history` without reading it back. PostgreSQL: jsonb `||` with the JSON
# array of the new visits. SQLite (JSON as text, numbered parameters): ?7 is the new visits' items
# without the brackets; a non-empty stored array (of objects, ending "}]") loses its closing
# bracket (and any trailing blanks) and gets "," + the items + "]"; an empty or missing history
# becomes the new array; no new visits leave it as it is. A finished run (`finished_at` given)
# frees its `active_key`.
_STATE_UPDATE = {
    "sqlite": (
        "UPDATE flow_runs SET node_id = ?1, status = ?2, node_entered_at = ?3, wake_at = ?4, due_at = ?5, "
        "exit_reason = ?6, history = CASE WHEN ?7 = '' THEN history "
        "WHEN json_array_length(history) > 0 THEN rtrim(history, '] ' || char(9, 10, 13)) || ',' || ?7 || ']' "
        "ELSE '[' || ?7 || ']' END, "
        "updated_at = ?8, last_error = NULL, attempts = 0, finished_at = coalesce(?9, finished_at), "
        "active_key = CASE WHEN ?9 IS NULL THEN active_key END WHERE id = ?10"
    ),
    "postgresql": (
        "UPDATE flow_runs SET node_id = %s, status = %s, node_entered_at = %s::timestamptz, "
        "wake_at = %s::timestamptz, due_at = %s::timestamptz, exit_reason = %s, "
        "history = CASE WHEN jsonb_typeof(history) = 'array' THEN history ELSE '[]'::jsonb END || %s::jsonb, "
        "updated_at = %s::timestamptz, last_error = NULL, attempts = 0, "
        "finished_at = coalesce(%s::timestamptz, finished_at), "
        "active_key = CASE WHEN %s::timestamptz IS NULL THEN active_key END WHERE id = %s"
    ),
}
# Every column of `outbox` the engine writes; a column added to the table must be added here (or
# have a server-side default): tests/integration/test_flow_engine.py checks it.
OUTBOX_COLUMNS = (
    "idempotency_key", "run_id", "flow_id", "node_id", "customer_id", "kind", "payload", "status",
    "created_at", "updated_at",
)  # fmt: skip
_OUTBOX_INSERT = {
    "sqlite": (
        f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES ({', '.join('?' * len(OUTBOX_COLUMNS))}) "
        "ON CONFLICT (idempotency_key) DO NOTHING"
    ),
    "postgresql": (
        f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES "
        f"({', '.join('%s::jsonb' if c == 'payload' else '%s' for c in OUTBOX_COLUMNS)}) "
        "ON CONFLICT (idempotency_key) DO NOTHING"
    ),
}


class _Driver:
    """Values to and from the raw driver as SQLAlchemy's column types write and read them: UTC
    datetimes (on SQLite the text SQLAlchemy stores, each distinct value converted once), JSON
    through orjson like the engines' json_serializer."""

    def __init__(self, dialect: Any) -> None:
        self.name: str = dialect.name
        self.sqlite = self.name == "sqlite"
        column_type = _RUNS.c.updated_at.type.dialect_impl(dialect)
        self._time: Callable[[datetime], Any] = column_type.bind_processor(dialect) or (lambda value: value)
        self._times: dict[datetime, Any] = {}

    def time(self, value: datetime | None) -> Any:
        if value is None:
            return None
        converted = self._times.get(value)
        if converted is None:
            converted = self._times[value] = self._time(value)
        return converted

    def json(self, value: Any) -> str:
        return orjson.dumps(value, default=str).decode()

    def claimed(self, row: Sequence[Any]) -> ClaimedRun:
        (run_id, flow_id, version_id, customer_id, status, node_id, entered_at, node_entered_at, wake_at,
         exit_reason, trigger, checkout_id, attempts) = row  # fmt: skip
        if self.sqlite:  # datetimes as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC), JSON as text
            entered_at = _from_text(entered_at)
            node_entered_at = node_entered_at and _from_text(node_entered_at)
            wake_at = wake_at and _from_text(wake_at)
            trigger = orjson.loads(trigger) if trigger else None
        else:
            entered_at = entered_at.astimezone(UTC)
            node_entered_at = node_entered_at and node_entered_at.astimezone(UTC)
            wake_at = wake_at and wake_at.astimezone(UTC)
        return ClaimedRun(
            run_id, flow_id, version_id, customer_id, status, node_id, entered_at, node_entered_at, wake_at,
            exit_reason, trigger or {}, checkout_id, attempts,
        )  # fmt: skip


def _from_text(value: str) -> datetime:
    """A stored UTC datetime; parsed with its offset (`datetime.replace` would cost five times as much)."""
    return datetime.fromisoformat(value + "+00:00")


class _BatchWriteFailed(Exception):
    """The one-statement write of a batch failed: the batch is stepped again, run by run."""


def step_due_runs(runtime: Runtime, limit: int = STEP_BATCH) -> int:
    """Claim up to `limit` due runs, step each, apply its commands; returns runs stepped."""
    try:
        return _step_due(runtime, limit, careful=False)
    except _BatchWriteFailed:
        log.exception("writing a batch of stepped runs at once failed; stepping them one by one")
        return _step_due(runtime, limit, careful=True)


def _step_due(runtime: Runtime, limit: int, careful: bool) -> int:
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        connection = session.connection()
        driver = _Driver(connection.dialect)
        claimed = connection.exec_driver_sql(_CLAIM[driver.name], (driver.time(now), limit)).all()
        if not claimed:
            return 0
        runs = [driver.claimed(row) for row in claimed]
        plans = plans_of(session, {run.flow_version_id for run in runs})  # parsed once per batch
        # The store's timezone is read by the same plans that read profiles (segment-rule
        # conditions, delays in local time or until a birthday); other plans never look at it.
        timezone = (
            store.profile_in(session, runtime.settings).timezone
            if any(_reads_profile(plan) for plan in plans.values())
            else "UTC"
        )
        contexts = _contexts(session, runs, plans, now, timezone)
        # Fast path: step every run in memory, then write all their outbox rows and all their new
        # states with one executemany each. Runs whose commands act inside winback (tags, lists,
        # …) and runs whose step raised take the careful path: one savepoint each, so a broken run
        # is contained. Should the batch write itself fail, the transaction is rolled back and the
        # batch stepped again with every run on the careful path (`_BatchWriteFailed`).
        slow: list[ClaimedRun] = []
        stepped: list[tuple[ClaimedRun, stepping.StepResult]] = []
        for run in runs:
            if careful:
                slow.append(run)
                continue
            try:
                result = _step(run, plans[run.flow_version_id], contexts[run.id], now)
            except Exception:
                slow.append(run)
                continue
            if any(command.action.type not in OUTBOUND for command in result.commands):
                slow.append(run)
            else:
                stepped.append((run, result))
        if stepped:
            try:
                _write_batch(session, driver, stepped, now)
            except Exception as exc:
                raise _BatchWriteFailed from exc
        for run in slow:
            try:
                with session.begin_nested():
                    _step_one(session, driver, run, plans[run.flow_version_id], contexts[run.id], now)
            except Exception as exc:  # contained: one broken run never stops the others
                log.exception("flow run %s failed at node %s", run.id, run.node_id)
                _record_failure(session, run, exc, now)
        return len(runs)


def _write_batch(
    session: Session, driver: _Driver, stepped: list[tuple[ClaimedRun, stepping.StepResult]], now: datetime
) -> None:
    """Outbox rows of many runs in one executemany INSERT (a key already there is skipped: a
    replay), then their states in one executemany UPDATE."""
    connection = session.connection()
    actions: dict[int, str] = {}  # id(action) → its JSON: a plan holds one action object per node
    created = driver.time(now)
    rows = []
    for run, result in stepped:
        for command in result.commands:
            action = command.action
            action_json = actions.get(id(action))
            if action_json is None:
                action_json = actions[id(action)] = driver.json(action.model_dump(mode="json"))
            payload = driver.json(_payload(run, orjson.Fragment(action_json)))
            rows.append((command.key, run.id, run.flow_id, command.node_id, run.customer_id, action.type,
                         payload, "pending" if action.type in OUTBOUND else "applied", created, created))  # fmt: skip
    if rows:
        connection.exec_driver_sql(_OUTBOX_INSERT[driver.name], rows)
    _store_states(session, driver, [(run.id, result.state) for run, result in stepped], now)


def _record_failure(session: Session, run: ClaimedRun, exc: Exception, now: datetime) -> None:
    attempts = (run.attempts or 0) + 1
    delay = min(RETRY_BASE * 2 ** (attempts - 1), RETRY_MAX)
    session.execute(
        update(FlowRun)
        .where(FlowRun.id == run.id)
        .values(
            attempts=attempts,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
            due_at=now + timedelta(seconds=delay),
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )


def _step(
    run: ClaimedRun, plan: stepping.Plan, context: stepping.StepContext, now: datetime
) -> stepping.StepResult:
    state = _state_of(run)
    return stepping.step(plan, state, _stimulus(plan, state, context), context, now)


def _step_one(
    session: Session,
    driver: _Driver,
    run: ClaimedRun,
    plan: stepping.Plan,
    context: stepping.StepContext,
    now: datetime,
) -> None:
    result = _step(run, plan, context, now)
    for command in result.commands:
        _apply(session, run, command, context, now)
    _store_states(session, driver, [(run.id, result.state)], now)


def _state_of(run: ClaimedRun) -> stepping.RunState:
    """The run as `step` takes it, with an empty history: `step` never reads past visits, only
    appends new ones, and those are all the engine needs to write."""
    return stepping.RunState(
        run.id,
        run.node_id,
        run.status,  # type: ignore[arg-type]
        run.entered_at,
        run.node_entered_at,
        run.wake_at,
        run.exit_reason,
    )


def _store_states(
    session: Session, driver: _Driver, states: list[tuple[int, stepping.RunState]], now: datetime
) -> None:
    """Write stepped runs' states, appending to each run's history the visits its step recorded
    (the states were stepped from an empty history, so they hold only the new visits)."""
    stamp = now.isoformat()
    bound_now = driver.time(now)
    sqlite = driver.sqlite
    params: list[tuple[Any, ...]] = []
    for run_id, state in states:
        status = state.status
        wake_at = driver.time(state.wake_at)
        visits = orjson.dumps(
            [
                {
                    "node_id": visit.node_id,
                    "at": stamp if visit.at is now else visit.at.isoformat(),
                    "outcome": visit.outcome,
                }
                for visit in state.history
            ]
        ).decode()
        finished_at = bound_now if status == "completed" or status == "exited" else None
        due_at = wake_at if status == "waiting" else (bound_now if status == "active" else None)
        common = (
            state.node_id,
            status,
            driver.time(state.node_entered_at),
            wake_at,
            due_at,
            state.exit_reason,
        )
        if sqlite:
            params.append((*common, visits[1:-1], bound_now, finished_at, run_id))
        else:
            params.append((*common, visits, bound_now, finished_at, finished_at, run_id))
    session.connection().exec_driver_sql(_STATE_UPDATE[driver.name], params)


def _stimulus(
    plan: stepping.Plan, state: stepping.RunState, context: stepping.StepContext
) -> stepping.Stimulus:
    """The awaited event, when one arrived since the run started waiting; else a tick."""
    node = plan.nodes.get(state.node_id) if state.node_id else None
    if isinstance(node, d.WaitForEventNode) and state.node_entered_at is not None:
        for event in context.events_since_entry:
            if (
                event.event == node.event
                and event.timestamp >= state.node_entered_at
                and stepping.filters_pass(node.where, event.properties, context.trigger)
            ):
                return stepping.EventArrived(event.event, event.timestamp, event.properties)
    return stepping.Tick()


def _event_names(plan: stepping.Plan) -> set[str]:
    names = {c.event for c in plan.flow.exit_when if isinstance(c, d.EventSinceEntryExit)}
    for node in plan.flow.nodes:
        if isinstance(node, d.WaitForEventNode):
            names.add(node.event)
        if isinstance(node, d.ConditionNode) and node.did_since_entry is not None:
            names.add(node.did_since_entry.event)
    return names


def _reads_profile(plan: stepping.Plan) -> bool:
    """Whether stepping this plan may read the customer's profile: segment-rule conditions,
    unsubscribe exits, and delays in the customer's timezone or until their birthday."""
    if any(isinstance(condition, d.UnsubscribedExit) for condition in plan.flow.exit_when):
        return True
    return any(
        (isinstance(node, d.ConditionNode) and node.rule is not None)
        or (isinstance(node, d.DelayNode) and node.duration is None)
        for node in plan.flow.nodes
    )


def _contexts(
    session: Session, runs: list[ClaimedRun], plans: dict[int, stepping.Plan], now: datetime, timezone: str
) -> dict[int, stepping.StepContext]:
    """Everything the step function may read, loaded for all claimed runs with a few queries."""
    eval_context = evaluator.EvalContext(now=now, timezone=timezone)
    needs = evaluator.FactNeeds()
    names: set[str] = set()
    reads_profile: dict[int, bool] = {}
    for version_id, plan in plans.items():
        names |= _event_names(plan)
        reads_profile[version_id] = _reads_profile(plan)
        for node in plan.flow.nodes:
            if isinstance(node, d.ConditionNode) and node.rule is not None:
                needs = needs.merge(evaluator.needs(node.rule, eval_context))
    # Profiles only for runs whose plan reads them (a plain delay-then-message flow reads none).
    profiled = {run.customer_id for run in runs if reads_profile[run.flow_version_id]}
    known = facts.load_facts(session, profiled, needs, eval_context) if profiled else {}
    events: dict[int, list[evaluator.EventFact]] = defaultdict(list)
    if names:
        earliest = min(run.entered_at for run in runs)
        query = (
            select(Event.customer_id, Event.event, Event.timestamp, Event.properties)
            .where(
                one_of(Event.customer_id, {run.customer_id for run in runs}),
                one_of(Event.event, names),
                Event.timestamp >= earliest,
            )
            .order_by(Event.timestamp, Event.id)
        )
        for customer_id, name, timestamp, properties in session.execute(query):
            events[customer_id].append(evaluator.EventFact(name, timestamp, properties or {}))
    checkout_ids = {run.checkout_id for run in runs if run.checkout_id}
    statuses: dict[str, str] = {}
    if checkout_ids:
        query = select(Checkout.external_id, Checkout.status).where(
            Checkout.kind == "checkout", one_of(Checkout.external_id, checkout_ids)
        )
        statuses = {external_id: status for external_id, status in session.execute(query)}
    nobody = evaluator.CustomerFacts(profile={})  # read-only: the facts of a run whose plan reads none
    contexts = {}
    for run in runs:
        customer_facts = known.get(run.customer_id) or nobody
        own_events = events.get(run.customer_id)
        contexts[run.id] = stepping.StepContext(
            facts=customer_facts,
            trigger=(run.trigger or {}).get("properties", {}),
            events_since_entry=tuple(e for e in own_events if e.timestamp >= run.entered_at)
            if own_events
            else (),
            checkout_status=statuses.get(run.checkout_id) if run.checkout_id else None,
            customer_timezone=customer_facts.profile.get("timezone"),
            store_timezone=timezone,
        )
    return contexts


# --- commands -----------------------------------------------------------------------------------


def _payload(run: ClaimedRun, action: Any) -> dict[str, Any]:
    """An outbox row's payload: the action (its JSON) and what the sending pipeline needs of the run."""
    return {"action": action, "trigger": run.trigger, "run_id": run.id, "flow_id": run.flow_id}


def _outbox_row(run: ClaimedRun, command: stepping.Command, now: datetime) -> dict[str, Any]:
    kind = command.action.type
    return {
        "idempotency_key": command.key,
        "run_id": run.id,
        "flow_id": run.flow_id,
        "node_id": command.node_id,
        "customer_id": run.customer_id,
        "kind": kind,
        "payload": _payload(run, command.action.model_dump(mode="json")),
        "status": "pending" if kind in OUTBOUND else "applied",
        "created_at": now,
        "updated_at": now,
    }


def _apply(
    session: Session, run: ClaimedRun, command: stepping.Command, context: stepping.StepContext, now: datetime
) -> None:
    outbox: Table = OutboxEntry.__table__  # type: ignore[assignment]
    inserted = session.execute(
        insert_or_ignore(session.get_bind().dialect.name, outbox, ["idempotency_key"]).returning(outbox.c.id),
        _outbox_row(run, command, now),
    )
    if inserted.first() is None or command.action.type in OUTBOUND:
        return  # already done once (a replay), or the sending pipeline's to carry out
    _apply_inside(session, run, command.action, now)


def _apply_inside(session: Session, run: ClaimedRun, action: Any, now: datetime) -> None:
    """Actions on winback's own data, in the run's transaction."""
    customer = session.get(Customer, run.customer_id)
    if customer is None:
        return
    if isinstance(action, d.TagAction):
        tags = list(customer.tags or [])
        if action.type == "add_tag" and action.tag not in tags:
            customer.tags = [*tags, action.tag]
        elif action.type == "remove_tag" and action.tag in tags:
            customer.tags = [tag for tag in tags if tag != action.tag]
    elif isinstance(action, d.SetProperty):
        customer.properties = {**(customer.properties or {}), action.property: action.value}
    elif isinstance(action, d.ListAction):
        target = session.get(CustomerList, action.list_id)
        if target is None:
            raise LookupError(f"list {action.list_id} does not exist")
        membership_row = session.get(ListMembership, (action.list_id, run.customer_id))
        if action.type == "add_to_list" and membership_row is None:
            session.add(
                ListMembership(
                    list_id=action.list_id,
                    customer_id=run.customer_id,
                    added_at=now,
                    source=f"flow:{run.flow_id}",
                )
            )
            # Through the event stream, not in place: the processor then refreshes the segments
            # that use the list and starts list-joined flows (taking the membership lock here,
            # under the runs' row locks, would invert the processor's lock order).
            session.flush()
            event_store.append_events(
                session.connection(), [membership.list_event(target, customer.id, customer.user_id, now)]
            )
        elif action.type == "remove_from_list" and membership_row is not None:
            session.delete(membership_row)
            session.flush()
            event_store.append_events(
                session.connection(), [membership.list_left_event(target, customer.id, customer.user_id, now)]
            )
    elif isinstance(action, d.ConversionGoal):
        event_store.append_events(
            session.connection(),
            [
                derived_event(
                    message_id=f"derived:goal:{run.id}:{action.name}",
                    customer_id=customer.id,
                    user_id=customer.user_id,
                    at=now,
                    event="Conversion Goal Reached",
                    properties={"goal": action.name, "flow_id": run.flow_id, "run_id": run.id},
                )
            ],
        )
    customer.updated_at = now
