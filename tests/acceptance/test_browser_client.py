"""@segment/analytics-next in headless Chromium: a store page that loads its settings from winback
(/v1/projects/{writeKey}/settings) and sends identify/track/page to it across origins (CORS, text/plain).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.acceptance.support import (
    NODE_MODULES,
    LiveServer,
    ServedRequest,
    assert_stamped_in_real_time,
    event_facts,
    require_tool,
)
from winback.kernel.clock import SystemClock

pytestmark = pytest.mark.acceptance

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ANALYTICS_NEXT_UMD = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
SHOPPER_LOCALE = "fr-FR"
SHOPPER_TIMEZONE = "Europe/Paris"
BROWSER_TIMEOUT = 15_000  # milliseconds, for each page action

STORE_PAGE = """<!doctype html>
<html>
  <head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Linen shirt – Example Shop</title></head>
  <body>
    <h1>Linen shirt</h1>
    <script src="/analytics-next/index.js"></script>
    <script>
      const config = JSON.parse(document.currentScript.dataset.config);
      // The npm package's UMD build: what a store bundles instead of Segment's CDN snippet.
      window.shop = window.AnalyticsNext.AnalyticsBrowser.load({
        writeKey: config.writeKey,
        cdnURL: config.winbackUrl,
      });
    </script>
  </body>
</html>
"""


class StorePageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the store page at / and the analytics-next UMD files under /analytics-next/."""

    page = b""

    def do_GET(self) -> None:
        if self.path in ("/", "/product"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.page)))
            self.end_headers()
            self.wfile.write(self.page)
            return
        if self.path.startswith("/analytics-next/"):
            self.path = self.path.removeprefix("/analytics-next")
            super().do_GET()
            return
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def store_site(live_server: LiveServer) -> Iterator[str]:
    """A shop's own site on another loopback port, its page wired to winback."""
    config = json.dumps({"writeKey": live_server.write_key, "winbackUrl": live_server.url})
    page = STORE_PAGE.replace(
        "<script>\n      const config", f"<script data-config='{config}'>\n      const config", 1
    )
    handler = type("Handler", (StorePageHandler,), {"page": page.encode()})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(ANALYTICS_NEXT_UMD))
    )
    thread = threading.Thread(target=server.serve_forever, name="store-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium with a fresh profile; requests leaving loopback are refused and listed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require_tool(
        sync_playwright is not None, "the playwright package is not installed (pip install -e '.[test]')"
    )
    require_tool(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    require_tool(
        ANALYTICS_NEXT_UMD.is_dir(), "npm packages missing: run `npm ci --prefix tests/acceptance/node`"
    )
    assert sync_playwright is not None
    outside_requests: list[str] = []

    def keep_on_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside_requests.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            locale=SHOPPER_LOCALE,
            timezone_id=SHOPPER_TIMEZONE,
        )
        try:
            context.set_default_timeout(BROWSER_TIMEOUT)
            context.route("**/*", keep_on_loopback)
            page = context.pages[0] if context.pages else context.new_page()
            yield page, outside_requests
        finally:
            context.close()


def test_analytics_next_in_chromium_loads_settings_from_winback_and_its_calls_are_stored(
    live_server: LiveServer, store_site: str, browser_page: tuple[Any, list[str]]
) -> None:
    page, outside_requests = browser_page
    console_errors: list[str] = []
    page.on(
        "console", lambda message: console_errors.append(message.text) if message.type == "error" else None
    )
    since = SystemClock().now()

    # Given a store page that loads analytics-next with winback as its CDN
    page.goto(f"{store_site}/product")

    # When the page identifies the shopper, tracks a product view and a page view
    sent = page.evaluate(
        """async () => {
            const identify = await window.shop.identify('user-42', {email: 'ada@example.com', firstName: 'Ada'});
            const track = await window.shop.track('Product Viewed', {
                product_id: 'sku-1', name: 'Linen shirt', price: 49.5, currency: 'EUR',
            });
            const page = await window.shop.page('Shop', 'Product');
            const [analytics] = await window.shop;
            return {
                messageIds: [identify, track, page].map((ctx) => ctx.event.messageId),
                failed: [identify, track, page].map((ctx) => ctx.failedDelivery() ?? null),
                anonymousId: analytics.user().anonymousId(),
                userAgent: navigator.userAgent,
                userAgentData: navigator.userAgentData.toJSON(),
            };
        }"""
    )
    stored = live_server.wait_for_events(3)
    until = SystemClock().now()

    # Then the browser fetched its settings from winback, not from Segment's CDN, and nothing left loopback
    assert outside_requests == []
    assert console_errors == []
    assert sent["failed"] == [None, None, None]
    origin = store_site
    # And each call crossed origins to winback's short paths as a simple text/plain request (no preflight)
    assert live_server.requests == [
        ServedRequest("GET", f"/v1/projects/{live_server.write_key}/settings", None, None, origin, 200),
        ServedRequest("POST", "/v1/i", None, "text/plain", origin, 200),
        ServedRequest("POST", "/v1/t", None, "text/plain", origin, 200),
        ServedRequest("POST", "/v1/p", None, "text/plain", origin, 200),
    ]
    # And the rows are the calls, exactly, under the browser's anonymous id
    anonymous_id = sent["anonymousId"]
    assert uuid.UUID(anonymous_id).version == 4
    page_context = {
        "path": "/product",
        "referrer": "",
        "search": "",
        "title": "Linen shirt – Example Shop",
        "url": f"{store_site}/product",
    }
    assert [event_facts(event) for event in stored] == [
        {
            "source": "segment",
            "type": "identify",
            "event": None,
            "name": None,
            "category": None,
            "user_id": "user-42",
            "anonymous_id": anonymous_id,
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
            "anonymous_id": anonymous_id,
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
            "anonymous_id": anonymous_id,
            "group_id": None,
            "previous_id": None,
            # analytics-next fills a page call's properties from the page, as the spec describes
            "properties": page_context | {"category": "Shop", "name": "Product"},
            "traits": {},
        },
    ]
    # And the browser's context came along whole: library, page, user agent, locale and time zone
    library_version = json.loads((ANALYTICS_NEXT_UMD.parent.parent / "package.json").read_text())["version"]
    assert [event["context"] for event in stored] == [
        {
            "library": {"name": "analytics.js", "version": f"next-{library_version}"},
            "page": page_context,
            "userAgent": sent["userAgent"],
            "userAgentData": sent["userAgentData"],
            "locale": SHOPPER_LOCALE,
            "timezone": SHOPPER_TIMEZONE,
        }
    ] * 3
    # And the message ids are the ones the client made, one per call
    assert [event["message_id"] for event in stored] == sent["messageIds"]
    assert len(set(sent["messageIds"])) == 3
    assert_stamped_in_real_time(stored, since=since, until=until)
