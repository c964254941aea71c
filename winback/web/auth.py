"""Who is calling: write keys for ingestion, admin keys (Bearer) for the admin API."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from winback.kernel.errors import Forbidden, Unauthorized
from winback.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


def basic_username(request: Request) -> str | None:
    """The username of an HTTP Basic header (Segment sends the write key there, password empty)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Authorization header is not valid HTTP Basic") from None
    username, _, _password = decoded.partition(":")
    return username or None


def require_write_key(runtime: Runtime, key: str | None) -> None:
    if not key:
        raise Unauthorized(
            "no write key: send it as the HTTP Basic username or as 'writeKey' in the body",
            field="writeKey",
        )
    if runtime.keys.scope_of(key) != "write":
        raise Unauthorized("unknown or revoked write key", field="writeKey")


def require_admin(request: Request) -> Runtime:
    runtime = runtime_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "admin API calls need 'Authorization: Bearer <admin key>' (create one with "
            "`winback keys create --name NAME --scope admin`)"
        )
    scope = runtime.keys.scope_of(token.strip())
    if scope is None:
        raise Unauthorized("unknown or revoked admin key")
    if scope != "admin":
        raise Forbidden("this key may only send events; the admin API needs an admin key")
    return runtime


AdminDep = Annotated[Runtime, Depends(require_admin)]
