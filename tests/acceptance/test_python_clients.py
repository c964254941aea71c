"""segment-analytics-python and rudder-sdk-python, unchanged, pointed at a real winback server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import rudderstack.analytics as rudder_analytics
import rudderstack.analytics.version
import segment.analytics.version
from segment.analytics.client import Client as SegmentClient

from tests.acceptance.support import LiveServer, ServedRequest, assert_stamped_in_real_time, event_facts
from winback.kernel.clock import SystemClock

pytestmark = pytest.mark.acceptance

SHOPPER_TRAITS = {"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "plan": "gold"}
PRODUCT = {"product_id": "sku-1", "name": "Linen shirt", "price": 49.5, "currency": "EUR", "quantity": 1}
PAGE_PROPERTIES = {"url": "https://shop.example/p/sku-1", "title": "Linen shirt"}
COMPANY_TRAITS = {"name": "Acme", "employees": 12}
SCREEN_PROPERTIES = {"items": 2}


def send_the_journey(client: Any) -> list[Any]:
    """One shopper's calls, the same for every Python client: identify, track, page, group, alias, screen."""
    return [
        client.identify("user-42", traits=SHOPPER_TRAITS, anonymous_id="anon-7"),
        client.track("user-42", "Product Viewed", properties=PRODUCT),
        client.page("user-42", category="Shop", name="Product", properties=PAGE_PROPERTIES),
        client.group("user-42", "acme", traits=COMPANY_TRAITS),
        client.alias("anon-7", "user-42"),
        client.screen("user-42", name="Cart", properties=SCREEN_PROPERTIES),
    ]


def row(type_: str, **columns: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "source": "segment",
        "type": type_,
        "event": None,
        "name": None,
        "category": None,
        "user_id": "user-42",
        "anonymous_id": None,
        "group_id": None,
        "previous_id": None,
        "properties": {},
        "traits": {},
    }
    return facts | columns


THE_JOURNEY_STORED = [
    row("identify", anonymous_id="anon-7", traits=SHOPPER_TRAITS),
    row("track", event="Product Viewed", properties=PRODUCT),
    row("page", name="Product", category="Shop", properties=PAGE_PROPERTIES),
    row("group", group_id="acme", traits=COMPANY_TRAITS),
    row("alias", previous_id="anon-7"),
    row("screen", name="Cart", properties=SCREEN_PROPERTIES),
]


def test_segment_python_client_calls_are_stored_exactly(live_server: LiveServer) -> None:
    # Given the official Segment Python client aimed at winback, collecting delivery errors
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    client = SegmentClient(
        live_server.write_key,
        host=live_server.url,
        on_error=lambda error, batch: errors.append((error, batch)),
        max_retries=1,
    )
    since = SystemClock().now()

    # When a shopper's journey is sent through its background queue and flushed
    sent = send_the_journey(client)
    client.shutdown()
    until = SystemClock().now()

    # Then the client saw no error, and every call went out as an accepted plain-JSON /v1/batch
    assert errors == []
    assert [queued for queued, _message in sent] == [True] * 6
    assert live_server.requests
    assert set(live_server.requests) == {
        ServedRequest("POST", "/v1/batch", None, "application/json", None, 200)
    }
    # And each call is one stored row, in order, with what the client sent
    stored = live_server.events()
    assert [event_facts(event) for event in stored] == THE_JOURNEY_STORED
    library = {"name": "analytics-python", "version": segment.analytics.version.VERSION}
    assert [event["context"] for event in stored] == [{"library": library}] * 6
    # And the client's message ids were kept, so a retry would be deduplicated
    assert [event["message_id"] for event in stored] == [message["messageId"] for _queued, message in sent]
    assert len({event["message_id"] for event in stored}) == 6
    assert_stamped_in_real_time(stored, since=since, until=until)


@pytest.fixture
def rudder(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The rudder-sdk-python module, configured as its docs say, and restored afterwards."""
    monkeypatch.setattr(rudder_analytics, "write_key", live_server.write_key)
    monkeypatch.setattr(rudder_analytics, "dataPlaneUrl", live_server.url)
    monkeypatch.setattr(rudder_analytics, "max_retries", 1)
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    yield rudder_analytics
    if rudder_analytics.default_client is not None:
        rudder_analytics.default_client.shutdown()


def test_rudderstack_python_client_sends_gzip_and_calls_are_stored_exactly(
    live_server: LiveServer, rudder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the RudderStack Python SDK with its data plane set to winback and gzip left at its default
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    monkeypatch.setattr(rudder, "on_error", lambda error, batch: errors.append((error, batch)))
    since = SystemClock().now()

    # When the same journey goes through the module-level API and is flushed
    send_the_journey(rudder)
    rudder.flush()
    until = SystemClock().now()

    # Then the client compressed its batches and winback accepted every one
    assert rudder.default_client.gzip is True
    assert errors == []
    assert live_server.requests
    assert set(live_server.requests) == {
        ServedRequest("POST", "/v1/batch", "gzip", "application/json", None, 200)
    }
    # And the stored rows are exactly the calls (identify traits travel in context.traits)
    stored = live_server.events()
    assert [event_facts(event) for event in stored] == THE_JOURNEY_STORED
    library = {"name": "analytics-python", "version": rudderstack.analytics.version.VERSION}
    assert stored[0]["context"] == {"traits": SHOPPER_TRAITS, "library": library}
    assert [event["context"] for event in stored[1:]] == [{"library": library}] * 5
    # And every message id is the client's own UUID, each one distinct
    assert [uuid.UUID(event["message_id"]).version for event in stored] == [4] * 6
    assert len({event["message_id"] for event in stored}) == 6
    assert_stamped_in_real_time(stored, since=since, until=until)
