"""A real winback server on loopback, driven by the official tracking clients.

`live_server` runs the app under uvicorn in a background thread on a free 127.0.0.1 port, against
the test's database (SQLite and PostgreSQL, through the `settings` fixture) and the real clock, with
a fresh write key. It records every request it served (method, path, encoding, status), so a test
can say what went over the wire as well as what was stored.

Clients that live outside Python (node, Chromium) are skipped with the reason when missing locally
and fail in CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from tests.acceptance.support import NODE_MODULES, POLL_INTERVAL, LiveServer, RequestLog, require_tool
from winback import apikeys
from winback.kernel.clock import SystemClock
from winback.runtime import Runtime
from winback.settings import Settings
from winback.web.app import create_app

SERVER_START_TIMEOUT = 10.0  # seconds
SERVER_STOP_TIMEOUT = 10.0  # seconds


@pytest.fixture
def node() -> str:
    """The node binary, with tests/acceptance/node's packages installed."""
    binary = shutil.which("node")
    require_tool(binary is not None, "node is not installed")
    require_tool(NODE_MODULES.is_dir(), "npm packages missing: run `npm ci --prefix tests/acceptance/node`")
    assert binary is not None
    return binary


def _free_loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def live_runtime(settings: Settings) -> Iterator[Runtime]:
    """The test's database with the real clock: a server on loopback lives in real time."""
    runtime = Runtime.from_settings(settings, clock=SystemClock())
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def live_server(live_runtime: Runtime) -> Iterator[LiveServer]:
    """winback under uvicorn on 127.0.0.1:<free port>, in a thread, for the length of one test."""
    key = apikeys.create_key(
        live_runtime.engine, name="acceptance store", scope="write", now=live_runtime.clock.now()
    ).secret
    log = RequestLog(create_app(live_runtime))
    sock = _free_loopback_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(log, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="winback-live-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            pytest.fail(f"winback did not start on 127.0.0.1:{port} within {SERVER_START_TIMEOUT}s")
        time.sleep(POLL_INTERVAL)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", write_key=key, engine=live_runtime.engine, log=log)
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "the uvicorn thread did not stop"
