"""The message copy of a flow, checked when the flow is saved: every Liquid text of every message
action (subject, body, HTML, push title and link, Slack text, MMS media URL) must parse and name
only variables the message context provides, so a typo is reported with its node, field, line
and column — not discovered when the first customer's message fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from winback.flows import definition as d
from winback.messaging import templating

COPY_FIELDS = ("subject", "title", "body", "text", "html", "url", "media")


def texts(definition: d.FlowDefinition) -> Iterator[tuple[str, str, str]]:
    """(node id, field, Liquid source) for every message text in the flow."""
    for node in definition.nodes:
        if not isinstance(node, d.ActionNode):
            continue
        for field in COPY_FIELDS:
            value = getattr(node.action, field, None)
            if isinstance(value, str) and value and not (field == "media" and value == "cart_grid"):
                yield node.id, field, value


def problems(definition: d.FlowDefinition) -> list[dict[str, Any]]:
    """Every copy problem, in the shape flow validation reports (`node_id`, `path`, `message`):
    Liquid that fails, and discount code patterns that cannot make good codes."""
    from winback.messaging import discounts

    found: list[dict[str, Any]] = []
    for node in definition.nodes:
        if isinstance(node, d.ActionNode) and isinstance(node.action, d.CreateDiscount):
            try:
                if node.action.static_code:
                    discounts.validate_static_code(node.action.static_code)
                else:
                    discounts.validate_pattern(node.action.pattern)
            except ValueError as exc:
                field = "static_code" if node.action.static_code else "pattern"
                found.append({"node_id": node.id, "path": f"{node.id}.action.{field}", "message": str(exc)})
    for node_id, field, source in texts(definition):
        for problem in templating.check(source):
            found.append(
                {
                    "node_id": node_id,
                    "path": f"{node_id}.action.{field}",
                    "line": problem.line,
                    "column": problem.column,
                    "message": f"{field}, line {problem.line}, column {problem.column}: {problem.message}",
                }
            )
    return found
