"""Discount codes and tracked links in the database (SQLite and PostgreSQL), and pushing codes to a
fake Shopify Admin API on loopback."""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from winback.db.engine import transaction
from winback.db.models import DiscountCode, Message, OutboxEntry, TrackedLink
from winback.flows.definition import CreateDiscount, Duration
from winback.messaging import discounts, links
from winback.messaging.shopify_discounts import PushResult, ShopifyDiscounts, apply_result
from winback.runtime import Runtime
from winback.settings import Settings

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKEN = "shpat_test_token"
PREFIX = "/admin/api/2024-10"


class StuckRandom(random.Random):
    """A random source that always gives the same numbers: every code it makes is the same."""

    def random(self) -> float:
        return 0.0

    def getrandbits(self, k: int) -> int:
        return 0


def _action(**fields: Any) -> CreateDiscount:
    return CreateDiscount(type="create_discount", **{"kind": "percent", "value": Decimal("10"), **fields})


def _issue(
    session: Any, action: CreateDiscount, outbox_id: int | None, rng: random.Random, **ids: Any
) -> DiscountCode:
    return discounts.issue_code(
        session, action=action, customer_id=ids.get("customer_id", 1), outbox_id=outbox_id,
        run_id=ids.get("run_id", 10), node_id=ids.get("node_id", "discount"), currency="USD", now=NOW, rng=rng,
    )  # fmt: skip


def _outbox(session: Any, run_id: int, node_id: str, action: CreateDiscount, at: datetime = NOW) -> int:
    row = OutboxEntry(
        idempotency_key=f"{run_id}:{node_id}", run_id=run_id, flow_id=1, node_id=node_id, customer_id=1,
        kind="create_discount", payload={"action": action.model_dump(mode="json"), "run_id": run_id},
        status="pending", created_at=at, updated_at=at,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row.id


# --- issuing codes ------------------------------------------------------------------------------


def test_a_code_is_issued_once_per_outbox_row(runtime: Runtime) -> None:
    action = _action(expires_after=Duration(amount=2, unit="days"))
    with transaction(runtime.engine) as session:
        outbox_id = _outbox(session, 10, "discount", action)
        first = _issue(session, action, outbox_id, random.Random(1))
    with transaction(runtime.engine) as session:
        again = _issue(session, action, outbox_id, random.Random(2))  # a retry draws other numbers
    assert again.id == first.id and again.code == first.code
    assert re.fullmatch(rf"WB-[{discounts.ALPHABET}]{{8}}", first.code)
    with transaction(runtime.engine) as session:
        row = session.scalars(sa.select(DiscountCode)).one()
    assert (row.customer_id, row.outbox_id, row.run_id, row.node_id) == (1, outbox_id, 10, "discount")
    assert (row.kind, row.value, row.currency, row.single_use) == ("percent", Decimal("10.00"), "USD", True)
    assert row.expires_at == NOW + timedelta(days=2) and row.created_at == NOW and row.used_at is None


def test_a_taken_code_is_replaced_by_another(runtime: Runtime) -> None:
    with transaction(runtime.engine) as session:
        first = _issue(session, _action(), 1, random.Random(5), run_id=1)
        second = _issue(session, _action(), 2, random.Random(5), run_id=2)  # draws first's code first
    assert second.code != first.code
    with transaction(runtime.engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DiscountCode)) == 2


def test_codes_that_are_always_taken_end_in_a_clear_error_and_the_transaction_goes_on(
    runtime: Runtime,
) -> None:
    with transaction(runtime.engine) as session:
        taken = _issue(session, _action(), 1, StuckRandom())
        with pytest.raises(
            discounts.CodeCollisionError, match="5 codes generated from pattern 'WB-\\{random:8\\}'"
        ):
            _issue(session, _action(), 2, StuckRandom(), run_id=11)
        _issue(session, _action(), 3, random.Random(9), run_id=12)  # the failed savepoints left no harm
    with transaction(runtime.engine) as session:
        codes = session.scalars(sa.select(DiscountCode.code).order_by(DiscountCode.id)).all()
    assert len(codes) == 2 and codes[0] == taken.code


def test_a_static_code_is_one_shared_row_found_by_each_run_and_never_a_unique_one(runtime: Runtime) -> None:
    welcome = _action(static_code="welcome10", expires_after=Duration(amount=1, unit="days"))
    with transaction(runtime.engine) as session:
        a = _issue(session, welcome, _outbox(session, 21, "welcome", welcome), random.Random(1), run_id=21)
        b = _issue(session, welcome, _outbox(session, 22, "welcome", welcome), random.Random(2), run_id=22)
        assert a.id == b.id
    with transaction(runtime.engine) as session:
        row = session.scalars(sa.select(DiscountCode)).one()
        assert (row.code, row.customer_id, row.outbox_id, row.run_id, row.single_use, row.expires_at) == (
            "WELCOME10", None, None, None, False, None,
        )  # fmt: skip
        for run_id in (21, 22):
            assert {node: code.code for node, code in discounts.codes_for_run(session, run_id).items()} == {
                "welcome": "WELCOME10"
            }
        unique = _issue(session, _action(), 1, random.Random(3))
        with pytest.raises(ValueError, match="already a unique code"):  # never hand out someone's code
            _issue(session, _action(static_code=unique.code), None, random.Random(3))


def test_codes_for_a_run_in_the_order_they_were_made(runtime: Runtime) -> None:
    first = _action(kind="amount", value=Decimal("5"))
    static = _action(static_code="SPRING")
    last = _action(kind="free_shipping")
    with transaction(runtime.engine) as session:
        for node_id, action in (("five_off", first), ("spring", static), ("free_ship", last)):
            _issue(
                session,
                action,
                _outbox(session, 30, node_id, action),
                random.Random(node_id),
                run_id=30,
                node_id=node_id,
            )
        _issue(
            session,
            first,
            _outbox(session, 31, "five_off", first),
            random.Random(0),
            run_id=31,
            node_id="five_off",
        )
        _outbox(session, 30, "unissued", _action(static_code="NOT-YET"))  # not recorded: not shown
    with transaction(runtime.engine) as session:
        codes = discounts.codes_for_run(session, 30)
        values = discounts.template_values(session, 30)
    assert list(codes) == ["five_off", "spring", "free_ship"]
    assert codes["spring"].code == "SPRING"
    assert values["discounts"]["five_off"]["label"] == "5 USD off"
    assert values["discount"] == discounts.as_template_value(codes["free_ship"])
    assert values["discount"]["kind"] == "free_shipping"
    with transaction(runtime.engine) as session:
        assert discounts.template_values(session, 999) == {"discounts": {}, "discount": None}


def test_marking_a_code_used(runtime: Runtime) -> None:
    with transaction(runtime.engine) as session:
        code = _issue(session, _action(), 1, random.Random(4)).code
    with transaction(runtime.engine) as session:
        used = discounts.mark_used(session, f"  {code.lower()} ", "order-1", NOW + timedelta(hours=1))
        assert used is not None and used.code == code
        assert discounts.mark_used(session, "NOT-OURS", "order-1", NOW) is None
    with transaction(runtime.engine) as session:
        discounts.mark_used(session, code, "order-2", NOW + timedelta(hours=5))  # a later use changes nothing
    with transaction(runtime.engine) as session:
        assert session.scalars(sa.select(DiscountCode.used_at)).one() == NOW + timedelta(hours=1)


# --- tracked links ------------------------------------------------------------------------------


def _message(session: Any) -> int:
    message = Message(channel="email", status="queued", created_at=NOW, updated_at=NOW)
    session.add(message)
    session.flush()
    return message.id


def test_links_are_shortened_once_per_message_resolved_and_counted(runtime: Runtime) -> None:
    public = "https://winback.example/"
    with transaction(runtime.engine) as session:
        first, second = _message(session), _message(session)
        shorten = links.shortener(session, first, public_url=public, rng=random.Random(1), now=NOW)
        html = links.rewrite_html('<a href="https://s.example/cart">cart</a>', shorten)
        text = links.rewrite_text(
            "Cart: https://s.example/cart Shop: https://s.example/ Stop: https://s.example/unsub",
            links.shortener(session, first, public_url=public, rng=random.Random(2), now=NOW),
            keep={"https://s.example/unsub"},
        )
        other = links.shorten_for_message(
            session, second, "https://s.example/cart", public_url=public, rng=random.Random(3), now=NOW
        )
        assert (
            links.shorten_for_message(
                session, first, "mailto:help@s.example", public_url=public, rng=random.Random(4)
            )
            == "mailto:help@s.example"
        )
    tracked = re.findall(r"https://winback\.example/l/([a-z0-9]{8})", html + " " + text)
    assert len(tracked) == 3 and tracked[0] == tracked[1] != tracked[2]  # text and HTML share the cart's code
    assert text.endswith("Stop: https://s.example/unsub")
    assert other.rsplit("/", 1)[1] not in tracked  # another message, another code
    with transaction(runtime.engine) as session:
        link = links.resolve(session, tracked[0].upper())
        assert link is not None and (link.url, link.message_id, link.clicks) == (
            "https://s.example/cart",
            first,
            0,
        )
        assert links.record_click(session, link, NOW) == 1
        assert links.record_click(session, link, NOW) == 2
        assert link.clicks == 2
        assert links.resolve(session, "zzzzzzzz") is None
        assert links.resolve(session, "../etc") is None
    with transaction(runtime.engine) as session:
        assert session.scalar(sa.select(TrackedLink.clicks).where(TrackedLink.code == tracked[0])) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(TrackedLink)) == 3
    with transaction(runtime.engine) as session:  # a taken code is replaced; a stuck source fails clearly
        a = links.shorten_for_message(
            session, second, "https://s.example/a", public_url=public, rng=random.Random(7), now=NOW
        )
        b = links.shorten_for_message(
            session, second, "https://s.example/b", public_url=public, rng=random.Random(7), now=NOW
        )
        assert a != b  # b drew a's code first
        links.shorten_for_message(
            session, second, "https://s.example/c", public_url=public, rng=StuckRandom(), now=NOW
        )
        with pytest.raises(links.LinkCodeCollisionError, match="5 generated link codes"):
            links.shorten_for_message(
                session, second, "https://s.example/d", public_url=public, rng=StuckRandom(), now=NOW
            )
    with transaction(runtime.engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(TrackedLink)) == 6


# --- a fake Shopify Admin API -------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    token: str | None
    body: Any


@dataclass
class FakeShopify:
    """Price rules and discount codes in memory, answering like the REST Admin API. `fail` holds
    scripted answers (path regex, status, body, headers, apply the request anyway) used before the
    normal behaviour."""

    requests: list[Seen] = field(default_factory=list)
    rules: dict[int, dict[str, Any]] = field(default_factory=dict)
    codes: dict[str, tuple[int, int]] = field(default_factory=dict)
    fail: list[tuple[str, int, Any, dict[str, str], bool]] = field(default_factory=list)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self, suffix: str) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    def answer(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests.append(seen)
            scripted = next((f for f in self.fail if re.search(f[0], seen.path)), None)
            if scripted is not None:
                self.fail.remove(scripted)
                if not scripted[4]:
                    return scripted[1], scripted[2], scripted[3]
            if seen.token != TOKEN:
                return (
                    401,
                    {
                        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
                    },
                    {},
                )
            status, body, headers = self._normal(seen)
            return (
                (scripted[1], scripted[2], scripted[3]) if scripted is not None else (status, body, headers)
            )

    def _normal(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        if seen.method == "GET" and seen.path == f"{PREFIX}/discount_codes/lookup.json":
            found = self.codes.get(seen.query["code"][0].upper())
            if found is None:
                return 404, {"errors": "Not Found"}, {}
            return (
                303,
                b"",
                {
                    "Location": f"http://shop.example{PREFIX}/price_rules/{found[0]}/discount_codes/{found[1]}.json"
                },
            )
        if seen.method == "POST" and seen.path == f"{PREFIX}/price_rules.json":
            rule = seen.body["price_rule"]
            if not rule.get("title"):
                return 422, {"errors": {"title": ["can't be blank"]}}, {}
            self.next_id += 1
            self.rules[self.next_id] = rule
            return 201, {"price_rule": {**rule, "id": self.next_id}}, {}
        match = re.fullmatch(rf"{PREFIX}/price_rules/(\d+)/discount_codes\.json", seen.path)
        if seen.method == "POST" and match:
            rule_id = int(match.group(1))
            if rule_id not in self.rules:
                return 404, {"errors": "Not Found"}, {}
            code = seen.body["discount_code"]["code"]
            if code.upper() in self.codes:
                return 422, {"errors": {"code": ["must be unique. Please try a different code."]}}, {}
            self.next_id += 1
            self.codes[code.upper()] = (rule_id, self.next_id)
            return 201, {"discount_code": {"id": self.next_id, "price_rule_id": rule_id, "code": code}}, {}
        return 404, {"errors": "Not Found"}, {}


@pytest.fixture
def shopify() -> Iterator[tuple[FakeShopify, str]]:
    fake = FakeShopify()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            seen = Seen(self.command, parts.path, parse_qs(parts.query), self.headers.get("X-Shopify-Access-Token"),
                        json.loads(raw) if raw else None)  # fmt: skip
            status, body, headers = fake.answer(seen)
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _code(**fields: Any) -> DiscountCode:
    defaults: dict[str, Any] = dict(
        code="WB-ABCDEFGH", kind="percent", value=Decimal("10"), currency="USD", single_use=True,
        expires_at=NOW + timedelta(days=3), created_at=NOW, shopify_price_rule_id=None,
    )  # fmt: skip
    return DiscountCode(**{**defaults, **fields})


def _client(base_url: str, token: str = TOKEN) -> ShopifyDiscounts:
    return ShopifyDiscounts(base_url, token, timeout_s=5)


def test_from_settings() -> None:
    assert ShopifyDiscounts.from_settings(Settings(shopify_shop_domain="my-shop.myshopify.com")) is None
    assert ShopifyDiscounts.from_settings(Settings(shopify_admin_token="t")) is None
    client = ShopifyDiscounts.from_settings(
        Settings(shopify_shop_domain="my-shop.myshopify.com", shopify_admin_token="t")
    )
    assert client is not None and client.base_url == "https://my-shop.myshopify.com/admin/api/2024-10"
    client.close()
    client = ShopifyDiscounts.from_settings(
        Settings(
            shopify_shop_domain="x",
            shopify_admin_token="t",
            shopify_admin_base_url="http://127.0.0.1:9/admin/api/2025-01/",
        )
    )
    assert client is not None and client.base_url == "http://127.0.0.1:9/admin/api/2025-01"
    client.close()


def test_a_percent_code_becomes_a_price_rule_and_its_code(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    with _client(base) as client:
        result = client.push(_code())
    assert result == PushResult("pushed", "1001")
    rule_post, code_post = fake.requests
    assert (rule_post.method, rule_post.path, rule_post.token) == (
        "POST",
        f"{PREFIX}/price_rules.json",
        TOKEN,
    )
    assert rule_post.body == {
        "price_rule": {
            "title": "WB-ABCDEFGH",
            "target_type": "line_item",
            "target_selection": "all",
            "allocation_method": "across",
            "value_type": "percentage",
            "value": "-10.0",
            "customer_selection": "all",
            "once_per_customer": True,
            "usage_limit": 1,
            "starts_at": "2026-03-02T09:00:00+00:00",
            "ends_at": "2026-03-05T09:00:00+00:00",
        }
    }
    assert (code_post.path, code_post.token) == (f"{PREFIX}/price_rules/1001/discount_codes.json", TOKEN)
    assert code_post.body == {"discount_code": {"code": "WB-ABCDEFGH"}}


def test_amount_and_free_shipping_rules(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    with _client(base) as client:
        assert (
            client.push(
                _code(code="WB-AMOUNT01", kind="amount", value=Decimal("7.5"), expires_at=None)
            ).status
            == "pushed"
        )
        assert (
            client.push(_code(code="WB-FREESHIP", kind="free_shipping", value=Decimal("0"))).status
            == "pushed"
        )
    amount, free = (r.body["price_rule"] for r in fake.posts("/price_rules.json"))
    assert {k: amount[k] for k in ("target_type", "allocation_method", "value_type", "value", "ends_at", "usage_limit")} == {
        "target_type": "line_item", "allocation_method": "across", "value_type": "fixed_amount", "value": "-7.50",
        "ends_at": None, "usage_limit": 1,
    }  # fmt: skip
    assert {k: free[k] for k in ("target_type", "allocation_method", "value_type", "value", "target_selection")} == {
        "target_type": "shipping_line", "allocation_method": "each", "value_type": "percentage", "value": "-100.0",
        "target_selection": "all",
    }  # fmt: skip


def test_a_retry_reuses_the_price_rule(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    code = _code()
    fake.fail.append((r"/discount_codes\.json$", 503, {"errors": "Service Unavailable"}, {}, False))
    with _client(base) as client:
        first = client.push(code)
        assert first.status == "retry" and first.price_rule_id == "1001" and "503" in (first.error or "")
        apply_result(code, first)
        assert (code.shopify_price_rule_id, code.shopify_status) == ("1001", None)
        second = client.push(code)
    assert second == PushResult("pushed", "1001")
    apply_result(code, second)
    assert (code.shopify_price_rule_id, code.shopify_status) == ("1001", "pushed")
    assert len(fake.posts("/price_rules.json")) == 1
    assert [r.path for r in fake.posts("/discount_codes.json")] == [
        f"{PREFIX}/price_rules/1001/discount_codes.json"
    ] * 2
    assert fake.codes == {"WB-ABCDEFGH": (1001, 1002)}


def test_a_retry_after_a_lost_answer_finds_the_code_already_there(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    code = _code()
    # Shopify makes the code, but its answer is a 502 from a proxy on the way back.
    fake.fail.append((r"/discount_codes\.json$", 502, {"errors": "Bad Gateway"}, {}, True))
    with _client(base) as client:
        first = client.push(code)
        apply_result(code, first)
        second = client.push(code)
    assert first.status == "retry" and second == PushResult("pushed", "1001")
    assert len(fake.posts("/discount_codes.json")) == 1  # looked up, not posted again
    assert fake.requests[-1].method == "GET" and fake.requests[-1].query == {"code": ["WB-ABCDEFGH"]}


def test_a_price_rule_deleted_in_shopify_is_made_again(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    with _client(base) as client:
        result = client.push(_code(shopify_price_rule_id="424242"))
    assert result.status == "retry" and result.price_rule_id is None


def test_refusals_fail_with_shopifys_words(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    fake.fail.append(
        (r"/price_rules\.json$", 422, {"errors": {"value": ["must be less than or equal to 0"]}}, {}, False)
    )
    with _client(base) as client:
        refused = client.push(_code())
        taken = client.push(_code())  # now pushed …
        again = client.push(_code(code="wb-abcdefgh"))  # … and the same code (case-insensitive) again
    assert refused == PushResult("failed", None, "Shopify 422: value: must be less than or equal to 0")
    assert taken.status == "pushed"
    assert again.status == "failed" and again.price_rule_id == "1003"
    assert again.error == "Shopify 422: code: must be unique. Please try a different code."


def test_bad_token_fails_and_throttling_is_retried(shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    with _client(base, token="wrong") as client:
        denied = client.push(_code())
    assert denied.status == "failed" and denied.error is not None and "401" in denied.error
    assert "Invalid API key" in denied.error
    fake.fail.append(
        (
            r"/price_rules\.json$",
            429,
            {"errors": "Exceeded 2 calls per second"},
            {"Retry-After": "2.0"},
            False,
        )
    )
    with _client(base) as client:
        throttled = client.push(_code())
    assert throttled == PushResult("retry", None, "Shopify 429: Exceeded 2 calls per second", 2.0)


def test_an_unreachable_shop_is_retried() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _client(f"http://127.0.0.1:{port}{PREFIX}") as client:
        result = client.push(_code())
    assert result.status == "retry" and result.price_rule_id is None and "unreachable" in (result.error or "")


def test_a_static_code_the_merchant_already_has_is_left_to_their_rule(
    shopify: tuple[FakeShopify, str],
) -> None:
    fake, base = shopify
    fake.rules[77] = {"title": "WELCOME10"}
    fake.codes["WELCOME10"] = (77, 78)
    with _client(base) as client:
        mine = client.push(_code(code="WELCOME10", single_use=False, expires_at=None))
        new_static = client.push(_code(code="SPRING", single_use=False, expires_at=None))
    assert mine == PushResult("pushed", "77")
    assert new_static.status == "pushed"
    rule = fake.posts("/price_rules.json")[0].body["price_rule"]
    assert rule["title"] == "SPRING" and rule["usage_limit"] is None and rule["once_per_customer"] is True


def test_issue_push_and_record_on_each_backend(runtime: Runtime, shopify: tuple[FakeShopify, str]) -> None:
    fake, base = shopify
    with transaction(runtime.engine) as session:
        code = _issue(session, _action(expires_after=Duration(amount=1, unit="weeks")), 1, random.Random(8))
        with _client(base) as client:
            apply_result(code, client.push(code))
    with transaction(runtime.engine) as session:
        row = session.scalars(sa.select(DiscountCode)).one()
    assert (row.shopify_status, row.shopify_price_rule_id) == ("pushed", "1001")
    assert fake.posts("/price_rules.json")[0].body["price_rule"]["ends_at"] == "2026-03-09T09:00:00+00:00"
    assert fake.codes == {row.code: (1001, 1002)}
