"""The Segment HTTP Tracking API: /v1/identify, /v1/track, … /v1/batch and their short forms."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from winback.ingest import segment, store
from winback.kernel.errors import InvalidInput, NotFound, PayloadTooLarge
from winback.web.auth import RuntimeDep, basic_username, require_write_key

router = APIRouter(tags=["tracking"])

SUCCESS = {"success": True}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped when sent with Content-Encoding: gzip, at most `limit` bytes."""
    declared = request.headers.get("content-length")
    encoding = request.headers.get("content-encoding", "").lower().strip()
    if declared and declared.isdigit() and int(declared) > limit and encoding != "gzip":
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes", limit_bytes=limit)
    raw = await request.body()
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise InvalidInput(f"body is marked gzip but could not be decompressed: {exc}", field="body") from exc
    elif encoding not in ("", "identity"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; send gzip or nothing", field="body")
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", limit_bytes=limit)
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON object", field="body")
    return raw


def _write_key(request: Request, body: Any) -> str | None:
    return basic_username(request) or segment.write_key_from_body(body)


@router.post("/v1/{call}")
async def track_call(call: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    kind = segment.SHORT_PATHS.get(call, call)
    if kind != "batch" and kind not in segment.MESSAGE_TYPES:
        raise NotFound(f"no tracking call /v1/{call}; use one of identify, track, page, screen, group, alias, batch")
    settings = runtime.settings
    limit = settings.max_batch_bytes if kind == "batch" else settings.max_event_bytes
    body = segment.decode_json(await read_body(request, limit))
    require_write_key(runtime, _write_key(request, body))
    received_at = runtime.clock.now()
    if kind == "batch":
        rows = segment.parse_batch(body, received_at=received_at, max_event_bytes=settings.max_event_bytes)
    else:
        rows = [segment.parse_message(body, received_at=received_at, message_type=kind)]
    await run_in_threadpool(store.store_events, runtime.engine, rows)
    return JSONResponse(SUCCESS)


@router.get("/v1/projects/{write_key}/settings")
async def project_settings(write_key: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    """What analytics.js / analytics-next fetch at boot; points their Segment.io destination here."""
    require_write_key(runtime, write_key)
    host = request.headers.get("host", request.url.netloc)
    return JSONResponse(
        {
            "integrations": {
                "Segment.io": {
                    "apiKey": write_key,
                    "apiHost": f"{host}/v1",
                    "protocol": request.url.scheme,
                    "unbundledIntegrations": [],
                    "addBundledMetadata": True,
                    "maybeBundledConfigIds": {},
                    "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
                }
            },
            "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}, "identify": {"__default": {"enabled": True}}, "group": {"__default": {"enabled": True}}},
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }
    )
