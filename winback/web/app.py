"""The FastAPI application: routers, CORS, JSON errors, and (optionally) the embedded worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import winback
from winback.runtime import Runtime
from winback.web import admin, channels, flows, messages, segments, shopify, tracking
from winback.web.errors import install_error_handlers


def create_app(runtime: Runtime, *, embedded_worker: bool = False) -> FastAPI:
    """Build the app. With `embedded_worker`, a worker thread runs for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = None
        if embedded_worker:
            from winback.worker.runner import BackgroundWorker

            worker = BackgroundWorker(runtime)
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(
        title="winback",
        version=winback.__version__,
        description="Self-hosted marketing automation for online stores.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_middleware(
        CORSMiddleware,
        allow_origins=runtime.settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        max_age=86400,
    )
    install_error_handlers(app)
    app.include_router(tracking.router)
    app.include_router(admin.router)
    app.include_router(segments.router)
    app.include_router(flows.router)
    app.include_router(shopify.router)
    app.include_router(channels.router)  # before messages: /messages/preview is not a message id
    app.include_router(messages.router)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
