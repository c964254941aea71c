"""@segment/analytics-node, run by node as a store backend would, pointed at a real winback server."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.acceptance.support import (
    NODE_DIR,
    LiveServer,
    ServedRequest,
    assert_stamped_in_real_time,
    event_facts,
)
from winback.kernel.clock import SystemClock

pytestmark = pytest.mark.acceptance

NODE_TIMEOUT = 30  # seconds


def test_analytics_node_calls_are_stored_exactly(live_server: LiveServer, node: str) -> None:
    # Given a node script using the official Segment Node client with host = winback
    environment = {**os.environ, "WINBACK_URL": live_server.url, "WINBACK_WRITE_KEY": live_server.write_key}
    since = SystemClock().now()

    # When it sends identify, track and page, then closeAndFlush()
    finished = subprocess.run(
        [node, "send_events.mjs"],
        cwd=NODE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    until = SystemClock().now()

    # Then the client reported every call delivered, in one batch winback accepted
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert live_server.requests == [ServedRequest("POST", "/v1/batch", None, "application/json", None, 200)]
    # And the rows are the calls, exactly
    stored = live_server.events()
    assert [event_facts(event) for event in stored] == [
        {
            "source": "segment",
            "type": "identify",
            "event": None,
            "name": None,
            "category": None,
            "user_id": "user-42",
            "anonymous_id": "anon-7",
            "group_id": None,
            "previous_id": None,
            "properties": {},
            "traits": {"email": "ada@example.com", "firstName": "Ada"},
        },
        {
            "source": "segment",
            "type": "track",
            "event": "Product Viewed",
            "name": None,
            "category": None,
            "user_id": "user-42",
            "anonymous_id": None,
            "group_id": None,
            "previous_id": None,
            "properties": {"product_id": "sku-1", "name": "Linen shirt", "price": 49.5, "currency": "EUR"},
            "traits": {},
        },
        {
            "source": "segment",
            "type": "page",
            "event": None,
            "name": "Product",
            "category": "Shop",
            "user_id": "user-42",
            "anonymous_id": None,
            "group_id": None,
            "previous_id": None,
            # analytics-node copies a page's category into its properties, as the spec describes
            "properties": {"url": "https://shop.example/p/sku-1", "category": "Shop"},
            "traits": {},
        },
    ]
    library = {"name": "@segment/analytics-node", "version": report["version"]}
    assert [event["context"] for event in stored] == [{"library": library}] * 3
    # And the message ids are the client's, one per call
    assert sorted(event["message_id"] for event in stored) == sorted(report["messageIds"])
    assert len(set(report["messageIds"])) == 3
    assert_stamped_in_real_time(stored, since=since, until=until)
