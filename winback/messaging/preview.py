"""Message copy rendered for a real customer before anything is sent (`POST
/api/v1/messages/preview`): the text and HTML they would get, and for SMS the encoding (GSM-7 or
UCS-2), the length, the number of parts and the cost estimate at the configured price.

The copy is given inline or taken from a flow's message node; the trigger is the one the
customer's latest run of that flow kept (so its discount codes show), or properties passed in.
Links are shown as written (a preview makes no tracked links); the unsubscribe link is the
customer's real one for the channel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from winback import store
from winback.db.models import Customer, FlowRun, FlowVersion
from winback.flows import definition as d
from winback.kernel.errors import InvalidInput, NotFound
from winback.messaging import context, engagement, secrets, sms_text, templating
from winback.settings import Settings

CHANNEL_OF_ACTION = {"send_sms": "sms", "send_mms": "mms", "send_email": "email", "send_push": "push"}


def preview(
    session: Session,
    settings: Settings,
    *,
    customer_id: int,
    channel: str | None,
    subject: str | None,
    body: str | None,
    html: str | None,
    flow_id: int | None,
    node_id: str | None,
    trigger: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.erased_at is not None:
        raise NotFound(f"no customer with id {customer_id}", field="customer_id")
    run: FlowRun | None = None
    if flow_id is not None:
        run = session.scalars(
            select(FlowRun)
            .where(FlowRun.flow_id == flow_id, FlowRun.customer_id == customer_id)
            .order_by(FlowRun.id.desc())
            .limit(1)
        ).first()
    if node_id is not None:
        if flow_id is None:
            raise InvalidInput("node_id needs flow_id", field="node_id")
        channel, subject, body, html = _copy_of_node(session, flow_id, node_id)
    if channel is None:
        raise InvalidInput(
            "say which channel (sms, mms, email, push, slack) or give flow_id and node_id", field="channel"
        )
    if not (body or subject or html):
        raise InvalidInput("nothing to preview: give body, subject or html, or a flow's node", field="body")
    shop = store.profile_in(session, settings)
    snapshot = {"properties": trigger} if trigger is not None else (run.trigger if run is not None else None)
    # Through the engine, not this read-only session: a key made here must be stored, or the
    # unsubscribe link shown would not work.
    key = secrets.link_signing_key(session.get_bind())  # type: ignore[arg-type]
    unsubscribe = engagement.unsubscribe_url(
        settings.public_url, key, customer_id=customer_id, channel=channel
    )
    ctx = context.build(
        session,
        customer=customer,
        trigger=snapshot,
        run_id=run.id if run is not None and trigger is None else None,
        shop=shop,
        sources=[s for s in (subject, body, html) if s],
        unsubscribe_url=unsubscribe,
        message_id=0,
        now=now,
    )

    def render(source: str | None, *, as_html: bool = False) -> str | None:
        if not source:
            return None
        return templating.render(
            source, ctx.values, currency=ctx.currency, locale=ctx.locale, timezone=ctx.timezone, html=as_html
        )

    result: dict[str, Any] = {
        "customer_id": customer_id,
        "channel": channel,
        "subject": render(subject),
        "body": render(body),
        "html": render(html, as_html=True),
        "trigger": snapshot,
    }
    if channel in ("sms", "mms"):
        analysis = sms_text.analyse(result["body"] or "")
        price = settings.sms_price_per_part
        result["sms"] = {
            "encoding": analysis.encoding,
            "length": analysis.length,
            "parts": analysis.parts,
            "per_part": analysis.per_part,
            "remaining": analysis.remaining,
            "non_gsm_characters": list(analysis.non_gsm),
            "cost_estimate": str(
                sms_text.estimate_cost(
                    analysis, price_per_part=price, mms=channel == "mms", mms_price=settings.mms_price
                )
            ),
            "currency": shop.currency,
        }
    return result


def _copy_of_node(
    session: Session, flow_id: int, node_id: str
) -> tuple[str, str | None, str | None, str | None]:
    from winback.db.models import Flow

    flow = session.get(Flow, flow_id)
    if flow is None or flow.current_version_id is None:
        raise NotFound(f"no flow with id {flow_id}", field="flow_id")
    version = session.get(FlowVersion, flow.current_version_id)
    assert version is not None
    definition = d.parse_flow(version.definition)
    node = next((n for n in definition.nodes if n.id == node_id), None)
    if node is None:
        raise NotFound(f"flow {flow_id} has no node {node_id!r}", field="node_id")
    action = node.action if isinstance(node, d.ActionNode) else None
    if isinstance(action, d.SendEmail):
        return "email", action.subject, action.text, action.html
    if isinstance(action, d.SendPush):
        return "push", action.title, action.body, None
    if isinstance(action, d.NotifySlack):
        return "slack", None, action.text, None
    if isinstance(action, d.SendSms | d.SendMms):
        return CHANNEL_OF_ACTION[action.type], None, action.body, None
    raise InvalidInput(f"node {node_id!r} does not send a message", field="node_id")
