"""The segment SQL compiler against real data: exact member sets on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from winback.db.engine import reading, transaction
from winback.db.models import (
    Checkout,
    Customer,
    CustomerList,
    Event,
    ListMembership,
    Order,
    OrderLine,
    Product,
    Segment,
    SegmentMembership,
)
from winback.kernel.clock import VirtualClock
from winback.segments import compiler, rules

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the clock fixture's start: Monday 09:00 UTC
ANN, BOB, CLEO, DAN, EVE, FAY = 1, 2, 3, 4, 5, 6  # DAN is merged into ANN, EVE is erased


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _customer(customer_id: int, created_days_ago: float, **fields: Any) -> Customer:
    created = days_ago(created_days_ago)
    return Customer(
        id=customer_id,
        first_seen_at=created,
        last_seen_at=NOW,
        created_at=created,
        updated_at=NOW,
        **fields,
    )


def _order(pk: int, customer_id: int, placed_days_ago: float, total: str, **fields: Any) -> Order:
    fields.setdefault("status", "paid")
    fields.setdefault("coupons", [])
    return Order(
        id=pk,
        order_id=f"o{pk}",
        customer_id=customer_id,
        total=Decimal(total),
        placed_at=days_ago(placed_days_ago),
        updated_at=NOW,
        **fields,
    )


def _line(order_pk: int, customer_id: int, product_id: str, **fields: Any) -> OrderLine:
    return OrderLine(order_pk=order_pk, customer_id=customer_id, product_id=product_id, **fields)


def _event(customer_id: int, name: str, at: datetime, **properties: Any) -> Event:
    _event.counter += 1  # type: ignore[attr-defined]
    return Event(
        message_id=f"m{_event.counter}",  # type: ignore[attr-defined]
        source="segment",
        type="track",
        event=name,
        properties=properties,
        timestamp=at,
        received_at=at,
        customer_id=customer_id,
        processed_at=at,
    )


_event.counter = 0  # type: ignore[attr-defined]


def _checkout(external_id: str, customer_id: int, kind: str, value: str, abandoned: datetime | None) -> Checkout:
    return Checkout(
        kind=kind,
        external_id=external_id,
        customer_id=customer_id,
        status="abandoned" if abandoned else "open",
        value=Decimal(value),
        created_at=days_ago(30),
        updated_at=NOW,
        last_activity_at=days_ago(30),
        abandoned_at=abandoned,
    )


def build_store(session: Session) -> None:
    """A small store whose every row is chosen so each rule kind has an exact answer."""
    session.add_all(
        [
            _customer(
                ANN, 400, email="ann@example.com", city="Paris", country="FR", zip="75001",
                tags=["vip", "newsletter"], email_consent="subscribed", birthday=date(1990, 3, 5),
                properties={"plan": "gold", "score": 42, "signup": "2026-02-20"},
                total_spent=Decimal("600.00"), orders_count=6, last_order_at=days_ago(100),
            ),
            _customer(
                BOB, 20, email="bob@example.com", phone="+4930123456", city="Berlin", country="DE",
                zip="10115", tags=["wholesale"], sms_consent="unsubscribed", birthday=date(1985, 2, 28),
                properties={"plan": "silver", "score": "42", "signup": "not a date"},
                total_spent=Decimal("120.00"), orders_count=2, last_order_at=days_ago(10),
            ),
            _customer(CLEO, 5),
            _customer(
                DAN, 300, merged_into_id=ANN, tags=["vip"], total_spent=Decimal("900.00"), orders_count=9,
                city="Paris", last_order_at=days_ago(200),
            ),
            _customer(EVE, 300, erased_at=days_ago(1), total_spent=Decimal("700.00"), orders_count=7),
            _customer(
                FAY, 200, email="fay@shop.test", city="paris", country="FR", zip="75015",
                birthday=date(2000, 2, 29), properties={"plan": "Gold", "signup": "2025-01-01T10:00:00Z"},
                total_spent=Decimal("550.00"), orders_count=5, last_order_at=days_ago(40),
            ),
        ]
    )  # fmt: skip
    session.add_all(
        [
            Product(product_id="p1", collections=["shoes"], created_at=NOW, updated_at=NOW),
            Product(product_id="p2", collections=["dog-food", "pets"], created_at=NOW, updated_at=NOW),
            Product(product_id="p5", collections=[], created_at=NOW, updated_at=NOW),
        ]
    )
    session.add_all(
        [
            _order(1, ANN, 100, "300.00", coupons=["WELCOME10"], shipping_country="FR"),
            _order(2, ANN, 120, "300.00", shipping_country="FR"),
            _order(3, ANN, 5, "1000.00", status="cancelled"),
            _order(4, BOB, 10, "80.10", coupons=["SPRING"], shipping_country="DE"),
            # 70.20 - 30.30 added to 80.10 is not exactly 120 in floating point
            _order(5, BOB, 40, "70.20", refunded_total=Decimal("30.30"), coupons=["spring-2"]),
            _order(6, FAY, 40, "550.00", shipping_country="FR"),
            _order(7, DAN, 200, "900.00"),
        ]
    )
    session.flush()
    session.add_all(
        [
            _line(1, ANN, "p1", variant_id="v1", category="Shoes"),
            _line(2, ANN, "p2"),
            _line(3, ANN, "p3"),
            _line(4, BOB, "p1", variant_id="v2"),
            _line(5, BOB, "p4"),
            _line(6, FAY, "p5", category="dog-food"),
            _line(7, DAN, "p2"),
        ]
    )
    session.add_all(
        [
            _event(ANN, "Product Viewed", days_ago(2), product_id="p1", price=40),
            _event(ANN, "Product Viewed", days_ago(3), product_id="p1", price=40),
            _event(ANN, "Product List Viewed", days_ago(20), category="shoes"),
            # 23:30 on Sunday 1 March in New York, already Monday in UTC
            _event(ANN, "Products Searched", datetime(2026, 3, 2, 4, 30, tzinfo=UTC), query="Boots"),
            _event(ANN, "Message Opened", days_ago(10), flow_id="f1", channel="email"),
            _event(BOB, "Product Viewed", days_ago(1), product_id="p1", price="40"),
            # 22:00 on Saturday 28 February in New York, Sunday 1 March in UTC
            _event(BOB, "Products Searched", datetime(2026, 3, 1, 3, 0, tzinfo=UTC), query="boots"),
            _event(BOB, "Message Delivered", days_ago(1), flow_id="f1", channel="sms"),
            _event(BOB, "Message Opened", days_ago(100), flow_id="f2", channel="email"),
            _event(FAY, "Product List Viewed", days_ago(5), category="dog-food"),
            _event(DAN, "Product List Viewed", days_ago(5), category="dog-food"),
        ]
    )
    session.add_all(
        [
            _checkout("c1", ANN, "checkout", "80.00", days_ago(1)),
            _checkout("c2", BOB, "cart", "500.00", days_ago(1)),
            _checkout("c3", FAY, "checkout", "200.00", days_ago(20)),
            _checkout("c4", CLEO, "checkout", "300.00", None),
        ]
    )
    session.add(Segment(id=1, name="VIP", definition={}, created_at=NOW, updated_at=NOW))
    session.add(CustomerList(id=1, name="Press", created_at=NOW, updated_at=NOW))
    session.flush()
    session.add(SegmentMembership(segment_id=1, customer_id=ANN, entered_at=NOW))
    session.add_all(
        [
            ListMembership(list_id=1, customer_id=BOB, added_at=NOW, source="api"),
            ListMembership(list_id=1, customer_id=CLEO, added_at=NOW, source="api"),
            ListMembership(list_id=1, customer_id=EVE, added_at=NOW, source="api"),
        ]
    )


@pytest.fixture
def store(engine: Engine) -> Engine:
    with transaction(engine) as session:
        build_store(session)
    return engine


def members(engine: Engine, rule: dict[str, Any], now: datetime = NOW, timezone: str = "UTC") -> set[int]:
    """Run the compiled query; also check that the count query agrees with it."""
    parsed = rules.parse_definition(rule).rule
    ctx = compiler.CompileContext(now=now, timezone=timezone, dialect=engine.dialect.name)
    with reading(engine) as session:
        found = set(session.scalars(compiler.members_query(parsed, ctx)))
        assert session.scalar(compiler.count_query(parsed, ctx)) == len(found)
    return found


def last(days: int) -> dict[str, Any]:
    return {"type": "last", "amount": days, "unit": "days"}


def viewed(**extra: Any) -> dict[str, Any]:
    return {"type": "event", "event": "Product Viewed", **extra}


def where(prop: str, op: str, value: Any = None) -> dict[str, Any]:
    found = {"property": prop, "op": op}
    return found if value is None else {**found, "value": value}


def attribute(op: str, value: Any = None, **target: str) -> dict[str, Any]:
    found = {"type": "attribute", "op": op, **target}
    return found if value is None else {**found, "value": value}


def orders_with(*filters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "orders_matching", "where": list(filters), **extra}


CASES: list[tuple[str, dict[str, Any], set[int]]] = [
    # money spent: all time from the aggregates, in a period from orders net of refunds
    ("spent at least 500", {"type": "money_spent", "compare": {"op": "gte", "value": 500}}, {ANN, FAY}),
    ("spent between 100 and 550", {"type": "money_spent", "compare": {"op": "between", "value": 100, "to": 550}}, {BOB, FAY}),
    ("spent 50+ in 30 days (cancelled order ignored)", {"type": "money_spent", "compare": {"op": "gte", "value": 50}, "period": last(30)}, {BOB}),
    ("spent under 50 in 30 days (nothing counts as 0)", {"type": "money_spent", "compare": {"op": "lt", "value": 50}, "period": last(30)}, {ANN, CLEO, FAY}),
    ("spent exactly 120 in 60 days, net of refunds", {"type": "money_spent", "compare": {"op": "eq", "value": "120"}, "period": last(60)}, {BOB}),
    # order counts
    ("5 orders or more", {"type": "order_count", "compare": {"op": "gte", "value": 5}}, {ANN, FAY}),
    ("exactly 2 orders in 60 days", {"type": "order_count", "compare": {"op": "eq", "value": 2}, "period": last(60)}, {BOB}),
    ("no orders in 30 days", {"type": "order_count", "compare": {"op": "eq", "value": 0}, "period": last(30)}, {ANN, CLEO, FAY}),
    ("placed an order in 30 days", {"type": "placed_order", "period": last(30)}, {BOB}),
    ("placed no order in 30 days", {"type": "placed_order", "period": last(30), "placed": False}, {ANN, CLEO, FAY}),
    ("placed an order between two dates", {"type": "placed_order", "period": {"type": "between", "start": "2025-11-01", "end": "2025-11-30"}}, {ANN}),
    ("not ordered for 90 days", {"type": "not_ordered_for", "days": 90}, {ANN}),
    ("not ordered for 90 days or never", {"type": "not_ordered_for", "days": 90, "include_never_ordered": True}, {ANN, CLEO}),
    # products and collections
    ("ordered p1", {"type": "ordered_product", "product_id": "p1"}, {ANN, BOB}),
    ("ordered p1 variant v1", {"type": "ordered_product", "product_id": "p1", "variant_id": "v1"}, {ANN}),
    ("ordered p3 (only in a cancelled order)", {"type": "ordered_product", "product_id": "p3"}, set()),
    ("ordered p1 in 30 days", {"type": "ordered_product", "product_id": "p1", "period": last(30)}, {BOB}),
    ("ordered from dog-food (catalog or line category)", {"type": "ordered_from_collection", "collection": "dog-food"}, {ANN, FAY}),
    ("ordered from pets", {"type": "ordered_from_collection", "collection": "pets"}, {ANN}),
    ("ordered from dog-food in 60 days", {"type": "ordered_from_collection", "collection": "dog-food", "period": last(60)}, {FAY}),
    # checkouts
    ("abandoned a checkout", {"type": "abandoned_checkout"}, {ANN, FAY}),
    ("abandoned a checkout this week", {"type": "abandoned_checkout", "period": {"type": "last", "amount": 7}}, {ANN}),
    ("abandoned a checkout worth 100+", {"type": "abandoned_checkout", "min_value": 100}, {FAY}),
    # events with property filters
    ("viewed p1 twice in 7 days", viewed(where=[where("product_id", "eq", "p1")], count={"op": "gte", "value": 2}, period=last(7)), {ANN}),
    ("viewed something priced over 30 (a number)", viewed(where=[where("price", "gt", 30)]), {ANN}),
    ("viewed something priced \"40\" (a string)", viewed(where=[where("price", "eq", "40")]), {BOB}),
    ("viewed something priced 40 (a number)", viewed(where=[where("price", "in", [40, "x"])]), {ANN}),
    ("never viewed a product", viewed(count={"op": "eq", "value": 0}), {CLEO, FAY}),
    ("viewed fewer than 2 times", viewed(count={"op": "lt", "value": 2}), {BOB, CLEO, FAY}),
    ("searched for something containing BOOT", {"type": "event", "event": "Products Searched", "where": [where("query", "contains", "BOOT")]}, {ANN, BOB}),
    ("searched for a query starting with B (case-insensitive)", {"type": "event", "event": "Products Searched", "where": [where("query", "starts_with", "b"), where("query", "neq", "boots")]}, {ANN}),
    ("viewed without a category property", viewed(where=[where("category", "not_exists")]), {ANN, BOB}),
    # orders matching
    ("used coupon WELCOME10", orders_with({"field": "coupon", "op": "eq", "value": "WELCOME10"}), {ANN}),
    ("coupon starting with spr, twice", orders_with({"field": "coupon", "op": "starts_with", "value": "SPR"}, count={"op": "gte", "value": 2}), {BOB}),
    ("an order without a coupon", orders_with({"field": "coupon", "op": "not_exists"}), {ANN, FAY}),
    ("two orders over 100", orders_with({"field": "total", "op": "gt", "value": 100}, count={"op": "gte", "value": 2}), {ANN}),
    ("shipped to FR", orders_with({"field": "shipping_country", "op": "eq", "value": "FR"}), {ANN, FAY}),
    # attributes
    ("email contains EXAMPLE", attribute("contains", "EXAMPLE", field="email"), {ANN, BOB}),
    ("country is DE", attribute("eq", "DE", field="country"), {BOB}),
    ("plan gold or silver (case-sensitive)", attribute("in", ["gold", "silver"], property="plan"), {ANN, BOB}),
    ("plan is not gold (missing counts as not)", attribute("neq", "gold", property="plan"), {BOB, CLEO, FAY}),
    ("score over 10 (numbers only)", attribute("gt", 10, property="score"), {ANN}),
    ("score is the string 42", attribute("eq", "42", property="score"), {BOB}),
    ("has a plan", attribute("exists", property="plan"), {ANN, BOB, FAY}),
    ("created in the last 30 days", attribute("within_last_days", 30, field="created_at"), {BOB, CLEO}),
    ("created more than 100 days ago", attribute("more_than_days_ago", 100, field="created_at"), {ANN, FAY}),
    ("created after 1 February", attribute("gt", "2026-02-01", field="created_at"), {BOB, CLEO}),
    ("created on 10 February", attribute("eq", "2026-02-10", field="created_at"), {BOB}),
    ("total spent at least 550 (field)", attribute("gte", 550, field="total_spent"), {ANN, FAY}),
    ("signed up in the last 30 days (ISO text property)", attribute("within_last_days", 30, property="signup"), {ANN}),
    ("signed up more than 30 days ago", attribute("more_than_days_ago", 30, property="signup"), {FAY}),
    ("tagged vip", {"type": "tag", "tag": "vip"}, {ANN}),
    ("not tagged vip", {"type": "tag", "tag": "vip", "present": False}, {BOB, CLEO, FAY}),
    ("has a phone", {"type": "has_contact", "channel": "phone"}, {BOB}),
    ("has no email", {"type": "has_contact", "channel": "email", "present": False}, {CLEO}),
    ("email subscribed", {"type": "consent", "channel": "email", "status": "subscribed"}, {ANN}),
    ("sms never asked", {"type": "consent", "channel": "sms", "status": "none"}, {ANN, CLEO, FAY}),
    ("birthday in March", {"type": "birthday", "month": 3}, {ANN}),
    ("birthday on 28 February", {"type": "birthday", "month": 2, "day": 28}, {BOB}),
    ("birthday within 3 days (2 to 5 March)", {"type": "birthday", "within_next_days": 3}, {ANN}),
    # location
    ("country fr (any case)", {"type": "location", "field": "country", "value": "fr"}, {ANN, FAY}),
    ("city Paris (exact)", {"type": "location", "field": "city", "value": "Paris"}, {ANN}),
    ("zip starting 750", {"type": "location", "field": "zip_prefix", "value": "750"}, {ANN, FAY}),
    ("zip starting 101 or 999", {"type": "location", "field": "zip_prefix", "op": "in", "value": ["101", "999"]}, {BOB}),
    ("country not FR", {"type": "location", "field": "country", "op": "not_in", "value": ["FR"]}, {BOB, CLEO}),
    # engagement
    ("opened a message", {"type": "engagement", "action": "opened"}, {ANN, BOB}),
    ("opened a message in 30 days", {"type": "engagement", "action": "opened", "period": last(30)}, {ANN}),
    ("received from flow f1", {"type": "engagement", "action": "received", "flow_id": "f1"}, {BOB}),
    ("opened an sms", {"type": "engagement", "action": "opened", "channel": "sms"}, set()),
    ("not engaged for 30 days", {"type": "not_engaged_for", "days": 30}, {BOB, CLEO, FAY}),
    ("unsubscribed anywhere", {"type": "unsubscribed"}, {BOB}),
    ("unsubscribed from email", {"type": "unsubscribed", "channel": "email"}, set()),
    # references
    ("in segment 1", {"type": "segment", "segment_id": 1}, {ANN}),
    ("not in segment 1", {"type": "segment", "segment_id": 1, "member": False}, {BOB, CLEO, FAY}),
    ("on list 1 (erased people never)", {"type": "list", "list_id": 1}, {BOB, CLEO}),
    # groups
    (
        "the benchmark segment: big spender, browsing, no order in 90 days (cancelled ignored)",
        {"type": "all", "rules": [
            {"type": "money_spent", "compare": {"op": "gte", "value": 500}},
            {"type": "order_count", "compare": {"op": "gte", "value": 5}},
            {"type": "event", "event": "Product List Viewed", "period": last(30)},
            {"type": "not", "rule": {"type": "placed_order", "period": last(90)}},
        ]},
        {ANN},
    ),
    ("vip or Berlin", {"type": "any", "rules": [{"type": "tag", "tag": "vip"}, {"type": "location", "field": "city", "value": "Berlin"}]}, {ANN, BOB}),
    ("neither vip nor Berlin", {"type": "not", "rule": {"type": "any", "rules": [{"type": "tag", "tag": "vip"}, {"type": "location", "field": "city", "value": "Berlin"}]}}, {CLEO, FAY}),
    ("not not vip", {"type": "all", "rules": [{"type": "not", "rule": {"type": "not", "rule": {"type": "tag", "tag": "vip"}}}]}, {ANN}),
    # NOT over missing data: a missing city or score is "not Paris" and "not over 10"
    ("not in the city Paris", {"type": "not", "rule": attribute("eq", "Paris", field="city")}, {BOB, CLEO, FAY}),
    ("not a score over 10", {"type": "not", "rule": attribute("gt", 10, property="score")}, {BOB, CLEO, FAY}),
    ("not a birthday in March", {"type": "not", "rule": {"type": "birthday", "month": 3}}, {BOB, CLEO, FAY}),
    ("not viewed with a price over 30", {"type": "not", "rule": viewed(where=[where("price", "gt", 30)])}, {BOB, CLEO, FAY}),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_rule_kind_selects_exactly_its_members(store: Engine, rule: dict[str, Any], expected: set[int]) -> None:
    # given the store built above, evaluated at Monday 2 March 2026 09:00 UTC
    # when the rule is compiled and run
    # then exactly the expected live customers are members
    assert members(store, rule) == expected


def test_yesterday_is_the_stores_yesterday(store: Engine) -> None:
    # given a search by Ann at 23:30 Sunday New York time (Monday 04:30 UTC) and one by Bob at
    # 22:00 Saturday New York time (Sunday 03:00 UTC)
    searched_yesterday = {"type": "event", "event": "Products Searched", "period": {"type": "yesterday"}}
    # when the store is in New York, then yesterday (Sunday) holds Ann's search only
    assert members(store, searched_yesterday, timezone="America/New_York") == {ANN}
    # and when the store is in UTC, yesterday (Sunday) holds Bob's search only
    assert members(store, searched_yesterday, timezone="UTC") == {BOB}


def test_birthdays_within_the_next_days_cross_the_month_end(store: Engine, clock: VirtualClock) -> None:
    # given the clock on Thursday 26 February 2026 (not a leap year)
    clock.set(datetime(2026, 2, 26, 12, 0, tzinfo=UTC))
    # when asking for birthdays in the next 4 days (26 Feb – 2 Mar)
    soon = members(store, {"type": "birthday", "within_next_days": 4}, now=clock.now())
    # then Bob (28 Feb) and Fay (29 Feb, celebrated on the 28th) are in, Ann (5 Mar) is not
    assert soon == {BOB, FAY}
    # and a week ahead reaches Ann's 5 March
    assert members(store, {"type": "birthday", "within_next_days": 7}, now=clock.now()) == {ANN, BOB, FAY}


def test_time_moves_people_in_and_out(store: Engine, clock: VirtualClock) -> None:
    # given "not ordered for 30 days": Bob's last order was 10 days ago
    lapsed = {"type": "not_ordered_for", "days": 30}
    assert members(store, lapsed, now=clock.now()) == {ANN, FAY}
    # when 21 days pass
    clock.advance(timedelta(days=21))
    # then Bob has lapsed too
    assert members(store, lapsed, now=clock.now()) == {ANN, BOB, FAY}


def test_incremental_check_only_looks_at_the_given_customers(store: Engine) -> None:
    # given a rule that Ann, Fay and the merged/erased profiles would otherwise pass
    big_spender = rules.parse_definition({"type": "money_spent", "compare": {"op": "gte", "value": 500}}).rule
    ctx = compiler.CompileContext(now=NOW, timezone="UTC", dialect=store.dialect.name)
    with reading(store) as session:
        # when only Ann, Bob, Dan and Eve are checked
        found = set(session.scalars(compiler.for_customers(big_spender, ctx, [ANN, BOB, DAN, EVE])))
        # then only Ann is a member among them (Dan is merged, Eve erased)
        assert found == {ANN}
        # and an empty list of customers matches nobody
        assert set(session.scalars(compiler.members_query(big_spender, ctx, customer_ids=[]))) == set()
