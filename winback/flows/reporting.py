"""What flows did: per-node counts and each run's path, computed from `flow_runs`.

A run's `history` lists its visits in order (`{"node_id", "at", "outcome"}`, written by
`engine._store_states`, which appends each step's visits): `entered` when it reaches a node, then what happened there (`passed`,
`yes`/`no`, `event`/`timeout`, `branch:<n>`, `held out`, `exited`, …). Its `status`, `node_id` and
`exit_reason` say where it is now or where it ended. Steps form a tree, so a run enters a node at
most once, and for every node: entered = waiting + passed + ended there (`exited`, by reason).

Visits are counted in the database (`json_each` on SQLite, `jsonb_array_elements` on PostgreSQL)
so a flow with a million runs is summed without loading them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from winback.db.models import FlowRun, FlowVersion
from winback.flows import definition as d

IN_PROGRESS = ("active", "waiting")
ENTERED = "entered"

_VISITS_SQL = {
    "sqlite": (
        "SELECT json_extract(visit.value, '$.node_id') AS node_id, "
        "json_extract(visit.value, '$.outcome') AS outcome, count(*) AS visits "
        "FROM flow_runs, json_each(flow_runs.history) AS visit WHERE flow_runs.flow_id = :flow_id"
    ),
    "postgresql": (
        "SELECT visit ->> 'node_id' AS node_id, visit ->> 'outcome' AS outcome, count(*) AS visits "
        "FROM flow_runs CROSS JOIN LATERAL jsonb_array_elements(flow_runs.history) AS visit "
        "WHERE flow_runs.flow_id = :flow_id"
    ),
}


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """One node: runs that reached it, are at it now, moved on from it, and ended at it."""

    node_id: str
    type: str | None  # None: the node is not in the definition counted against
    name: str | None
    action: str | None = None  # an action node's action type (send_sms, add_tag, …)
    entered: int = 0
    waiting: int = 0  # runs at the node now (waiting for a timer or event, or about to be stepped)
    passed: int = 0  # runs that moved on to a following node
    exited: Mapping[str, int] = field(default_factory=dict)  # reason ("completed", …) → runs ended here
    outcomes: Mapping[str, int] = field(default_factory=dict)  # yes/no, event/timeout, branch:<n>, …


@dataclass(frozen=True, slots=True)
class RunTotals:
    started: int  # runs enrolled
    in_progress: int  # active or waiting (including runs not yet stepped)
    completed: int
    exited: int


@dataclass(frozen=True, slots=True)
class FlowCounts:
    runs: RunTotals
    nodes: tuple[NodeCounts, ...]


@dataclass(frozen=True, slots=True)
class PathStep:
    node_id: str
    type: str | None
    name: str | None
    action: str | None
    at: str  # ISO-8601, as recorded
    outcome: str


def describe(node: Any) -> tuple[str | None, str | None, str | None]:
    """(type, name, action type) of a definition node; all None for a node not in it."""
    if node is None:
        return None, None, None
    action = node.action.type if isinstance(node, d.ActionNode) else None
    return node.type, node.name, action


# --- pure ---------------------------------------------------------------------------------------


def tally(
    visits: Iterable[tuple[str, str, int]],
    positions: Iterable[tuple[str | None, str, str | None, int]],
    flow: d.FlowDefinition | None,
) -> FlowCounts:
    """Counts from (node_id, outcome, visits) and (node_id, status, exit_reason, runs) rows.

    Nodes come in the definition's order; nodes only older versions had follow, by id."""
    entered: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    for node_id, outcome, count in visits:
        if outcome == ENTERED:
            entered[node_id] += count
        else:
            outcomes[node_id][outcome] += count
    waiting: Counter[str] = Counter()
    ended: dict[str, Counter[str]] = defaultdict(Counter)
    started = in_progress = completed = exited = 0
    for at_node, status, reason, count in positions:
        started += count
        if status in IN_PROGRESS:
            in_progress += count
            if at_node is not None:
                waiting[at_node] += count
            continue
        if status == "completed":
            completed += count
        else:
            exited += count
        if at_node is not None:
            ended[at_node][reason or status] += count
    known = {node.id: node for node in flow.nodes} if flow is not None else {}
    seen = set(entered) | set(outcomes) | set(waiting) | set(ended)
    order = list(known) + sorted(seen - set(known))
    nodes = []
    for node_id in order:
        kind, name, action = describe(known.get(node_id))
        ended_here = sum(ended[node_id].values())
        nodes.append(
            NodeCounts(
                node_id=node_id,
                type=kind,
                name=name,
                action=action,
                entered=entered[node_id],
                waiting=waiting[node_id],
                passed=max(entered[node_id] - waiting[node_id] - ended_here, 0),
                exited=dict(sorted(ended[node_id].items())),
                outcomes=dict(sorted(outcomes[node_id].items())),
            )
        )
    return FlowCounts(RunTotals(started, in_progress, completed, exited), tuple(nodes))


def run_path(history: Sequence[Mapping[str, Any]], flow: d.FlowDefinition | None) -> list[PathStep]:
    """A run's history with each node's type and name from the version it ran on."""
    known = {node.id: node for node in flow.nodes} if flow is not None else {}
    steps = []
    for visit in history:
        kind, name, action = describe(known.get(visit["node_id"]))
        steps.append(
            PathStep(
                node_id=visit["node_id"],
                type=kind,
                name=name,
                action=action,
                at=visit["at"],
                outcome=visit["outcome"],
            )
        )
    return steps


# --- over the database --------------------------------------------------------------------------


def flow_counts(
    session: Session, flow_id: int, version_id: int | None = None, flow: d.FlowDefinition | None = None
) -> FlowCounts:
    """Per-node counts of one flow: of one version's runs, or (version_id None) of all its runs.

    `flow` orders and names the nodes (usually the version counted, or the current one)."""
    dialect = session.get_bind().dialect.name
    sql = _VISITS_SQL.get(dialect)
    if sql is None:
        raise NotImplementedError(f"no visit counting for the {dialect} dialect")
    parameters: dict[str, Any] = {"flow_id": flow_id}
    if version_id is not None:
        sql += " AND flow_runs.flow_version_id = :version_id"
        parameters["version_id"] = version_id
    sql += " GROUP BY 1, 2"
    visits = [(row[0], row[1], int(row[2])) for row in session.execute(text(sql), parameters)]
    positions_query = (
        select(FlowRun.node_id, FlowRun.status, FlowRun.exit_reason, func.count())
        .where(FlowRun.flow_id == flow_id)
        .group_by(FlowRun.node_id, FlowRun.status, FlowRun.exit_reason)
    )
    if version_id is not None:
        positions_query = positions_query.where(FlowRun.flow_version_id == version_id)
    positions = [(row[0], row[1], row[2], int(row[3])) for row in session.execute(positions_query)]
    return tally(visits, positions, flow)


def runs_by_version(session: Session, flow_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Version id → {"runs": all, "in_progress": active or waiting}, for these flows."""
    found: dict[int, dict[str, int]] = defaultdict(lambda: {"runs": 0, "in_progress": 0})
    if not flow_ids:
        return {}
    query = (
        select(FlowRun.flow_version_id, FlowRun.status, func.count())
        .where(FlowRun.flow_id.in_(flow_ids))
        .group_by(FlowRun.flow_version_id, FlowRun.status)
    )
    for version_id, status, count in session.execute(query):
        found[version_id]["runs"] += count
        if status in IN_PROGRESS:
            found[version_id]["in_progress"] += count
    return dict(found)


def version_numbers(session: Session, version_ids: Iterable[int]) -> dict[int, int]:
    """Version id → its number within its flow."""
    ids = set(version_ids)
    if not ids:
        return {}
    query = select(FlowVersion.id, FlowVersion.version).where(FlowVersion.id.in_(ids))
    return {version_id: number for version_id, number in session.execute(query)}


def version_owners(session: Session, version_ids: Iterable[int]) -> dict[int, int]:
    """Version id → the id of its flow."""
    ids = set(version_ids)
    if not ids:
        return {}
    query = select(FlowVersion.id, FlowVersion.flow_id).where(FlowVersion.id.in_(ids))
    return {version_id: flow_id for version_id, flow_id in session.execute(query)}
