"""Channels and message reports over the admin API (Bearer admin key).

- `GET /api/v1/channels`: each channel's provider and whether its settings and credentials work.
- `POST /api/v1/channels/{channel}/test`: one real test message through the configured provider.
- `POST /api/v1/messages/preview`: message copy rendered for a real customer, with SMS encoding,
  length, parts and cost estimate.
- `GET /api/v1/reports/messages`: per flow and node, messages by status, opens, clicks,
  conversions and revenue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from winback.db.engine import reading
from winback.messaging import admin, preview, reporting
from winback.web import schemas
from winback.web.admin import MAX_ID, PREFIX
from winback.web.auth import AdminDep, require_admin

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorResponse, "description": "missing, unknown or revoked admin key"},
    403: {"model": schemas.ErrorResponse, "description": "a write key was used on the admin API"},
    422: {"model": schemas.ErrorResponse, "description": "a parameter or body field is invalid"},
}

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_admin)], responses=_ERRORS)


class TestSendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(default="", max_length=2000, description="phone (E.164), email, push endpoint or URL")
    text: str | None = Field(default=None, max_length=1600)
    subject: str | None = Field(default=None, max_length=300)


class PreviewRequest(BaseModel):
    """Copy to render for one customer: given inline, or a flow's message node."""

    model_config = ConfigDict(extra="forbid")

    customer_id: int = Field(ge=1, le=MAX_ID)
    channel: Literal["sms", "mms", "email", "push", "slack"] | None = None
    subject: str | None = Field(default=None, max_length=300)
    body: str | None = Field(default=None, max_length=20_000)
    html: str | None = Field(default=None, max_length=200_000)
    flow_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    node_id: str | None = Field(default=None, max_length=64)
    trigger: dict[str, Any] | None = Field(
        default=None, description="trigger event properties to render with"
    )


@router.get("/channels", tags=["messaging"], summary="Each channel's provider and whether it works")
def list_channels(runtime: AdminDep) -> dict[str, Any]:
    statuses = admin.channel_statuses(runtime)
    return {"channels": {name: admin.describe(status) for name, status in statuses.items()}}


@router.post(
    "/channels/{channel}/test",
    tags=["messaging"],
    summary="Send one real test message through the channel's provider",
    responses={400: {"model": schemas.ErrorResponse, "description": "bad channel or address"}},
)
def test_channel(
    channel: Annotated[str, Path(max_length=16)], body: TestSendRequest, runtime: AdminDep
) -> dict[str, Any]:
    result = admin.test_send(runtime, channel, body.to, text=body.text, subject=body.subject)
    return {
        "message_id": result.message_id,
        "status": result.status,
        "reason": result.reason,
        "provider": result.provider,
        "provider_message_id": result.provider_message_id,
    }


@router.post(
    "/messages/preview",
    tags=["messaging"],
    summary="Render message copy for a real customer (SMS: encoding, parts, cost)",
    responses={
        400: {"model": schemas.ErrorResponse, "description": "template error (with line and column)"},
        404: {"model": schemas.ErrorResponse, "description": "no such customer, flow or node"},
    },
)
def preview_message(body: PreviewRequest, runtime: AdminDep) -> dict[str, Any]:
    with reading(runtime.engine) as session:
        return preview.preview(
            session,
            runtime.settings,
            customer_id=body.customer_id,
            channel=body.channel,
            subject=body.subject,
            body=body.body,
            html=body.html,
            flow_id=body.flow_id,
            node_id=body.node_id,
            trigger=body.trigger,
            now=runtime.clock.now(),
        )


@router.get(
    "/reports/messages", tags=["messaging"], summary="Messages, engagement and revenue per flow and node"
)
def messages_report(
    runtime: AdminDep,
    flow_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    with reading(runtime.engine) as session:
        return reporting.flow_report(session, flow_id, since=since, until=until)
