"""The admin API over HTTP on both databases: store profile, customers, erasure/export, commerce.

Data is set up by inserting rows directly, as the event processor would have left them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import START
from winback import store
from winback.db.engine import transaction
from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerCollection,
    CustomerIdentity,
    CustomerProduct,
    Event,
    IntentSession,
    Order,
    OrderLine,
    Refund,
    StoreSettingsRow,
)
from winback.kernel.clock import VirtualClock
from winback.kernel.errors import InvalidInput
from winback.processing import processor
from winback.profiles import erasure
from winback.runtime import Runtime
from winback.settings import StoreProfile
from winback.web import admin

T0 = START - timedelta(days=30)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def customer_row(**fields: Any) -> Customer:
    defaults: dict[str, Any] = {
        "first_seen_at": at(0),
        "last_seen_at": at(0),
        "created_at": at(0),
        "updated_at": at(0),
    }
    return Customer(**{**defaults, **fields})


def event_row(message_id: str, customer_id: int | None, minute: int, **fields: Any) -> Event:
    defaults: dict[str, Any] = {
        "source": "segment",
        "type": "track",
        "timestamp": at(minute),
        "received_at": at(minute),
        "processed_at": at(minute) if customer_id is not None else None,
    }
    return Event(message_id=message_id, customer_id=customer_id, **{**defaults, **fields})


def seed_ann(engine: sa.Engine) -> dict[str, int]:
    """Ann: a known customer with an anonymous visit merged into her, one order, an abandoned
    checkout, consent history, a browse session — and Bob, a bystander who must stay untouched."""
    with transaction(engine) as session:
        ann = customer_row(
            user_id="u-ann",
            email="ann@example.com",
            phone="+14155550123",
            first_name="Ann",
            last_name="Lee",
            birthday=date(1990, 5, 17),
            gender="female",
            locale="en-US",
            timezone="America/Los_Angeles",
            address_line1="1 Market St",
            city="San Francisco",
            region="CA",
            zip="94105",
            country="US",
            tags=["vip"],
            properties={"plan": "gold"},
            email_consent="subscribed",
            sms_consent="unsubscribed",
            orders_count=1,
            total_spent=Decimal("42.50"),
            total_refunded=Decimal("5.00"),
            average_order_value=Decimal("42.50"),
            first_order_at=at(20),
            last_order_at=at(20),
            last_product_viewed_id="p-mug",
            last_product_viewed_at=at(5),
            last_seen_at=at(40),
        )
        bob = customer_row(user_id="u-bob", email="bob@example.com", first_name="Bob")
        session.add_all([ann, bob])
        session.flush()
        visitor = customer_row(merged_into_id=ann.id, properties={"utm": "spring"})
        session.add(visitor)
        session.flush()
        session.add_all(
            [
                CustomerIdentity(customer_id=ann.id, kind="user_id", value="u-ann", created_at=at(0)),
                CustomerIdentity(customer_id=ann.id, kind="anonymous_id", value="anon-1", created_at=at(0)),
                CustomerIdentity(customer_id=ann.id, kind="email", value="ann@example.com", created_at=at(1)),
                CustomerIdentity(
                    customer_id=ann.id, kind="email", value="ann.old@example.com", created_at=at(1)
                ),
                CustomerIdentity(customer_id=bob.id, kind="user_id", value="u-bob", created_at=at(0)),
                ConsentRecord(
                    customer_id=ann.id,
                    channel="email",
                    status="subscribed",
                    source="segment:identify",
                    evidence={"ip": "203.0.113.9", "userAgent": "Firefox"},
                    recorded_at=at(1),
                ),
                ConsentRecord(
                    customer_id=ann.id,
                    channel="sms",
                    status="unsubscribed",
                    source="shopify:checkout",
                    evidence={"message_id": "m-2"},
                    recorded_at=at(2),
                ),
                event_row(
                    "e-view",
                    ann.id,
                    5,
                    event="Product Viewed",
                    user_id="u-ann",
                    anonymous_id="anon-1",
                    properties={"product_id": "p-mug", "name": "Mug", "price": 12.5},
                    context={"ip": "203.0.113.9", "userAgent": "Firefox", "page": {"url": "https://s/mug"}},
                ),
                event_row(
                    "e-identify",
                    ann.id,
                    1,
                    type="identify",
                    user_id="u-ann",
                    traits={"email": "ann@example.com", "firstName": "Ann"},
                ),
                event_row(
                    "e-order",
                    ann.id,
                    20,
                    event="Order Completed",
                    user_id="u-ann",
                    properties={
                        "order_id": "o-1",
                        "total": 42.5,
                        "currency": "USD",
                        "email": "ann@example.com",
                        "shipping_address": {"city": "San Francisco", "country": "US"},
                        "products": [{"product_id": "p-mug", "name": "Mug", "price": 12.5, "quantity": 2}],
                    },
                ),
                event_row(
                    "e-bob", bob.id, 3, event="Product Viewed", user_id="u-bob", properties={"email": "b@x"}
                ),
                # Ann's call the processor has not applied yet.
                event_row(
                    "e-pending", None, 41, event="Cart Viewed", user_id="u-ann", traits={"phone": "+1"}
                ),
                Checkout(
                    kind="checkout",
                    external_id="co-1",
                    customer_id=ann.id,
                    status="abandoned",
                    value=Decimal("30.00"),
                    currency="USD",
                    items=[{"product_id": "p-hat", "price": "30.00", "quantity": 1}],
                    recovery_url="https://s/recover/secret",
                    email="ann@example.com",
                    phone="+14155550123",
                    created_at=at(30),
                    updated_at=at(31),
                    last_activity_at=at(31),
                    abandoned_at=at(91),
                ),
                Checkout(
                    kind="cart",
                    external_id="cart-1",
                    customer_id=ann.id,
                    status="open",
                    value=Decimal("12.50"),
                    currency="USD",
                    items=[],
                    created_at=at(35),
                    updated_at=at(35),
                    last_activity_at=at(35),
                ),
                Checkout(
                    kind="checkout",
                    external_id="co-bob",
                    customer_id=bob.id,
                    status="abandoned",
                    value=Decimal("9.99"),
                    currency="USD",
                    items=[],
                    email="bob@example.com",
                    created_at=at(10),
                    updated_at=at(10),
                    last_activity_at=at(10),
                    abandoned_at=at(70),
                ),
                CustomerProduct(
                    customer_id=ann.id,
                    product_id="p-mug",
                    quantity=2,
                    first_bought_at=at(20),
                    last_bought_at=at(20),
                ),
                CustomerCollection(
                    customer_id=ann.id, collection="kitchen", first_bought_at=at(20), last_bought_at=at(20)
                ),
                IntentSession(
                    customer_id=ann.id,
                    kind="browse",
                    status="open",
                    items=[{"product_id": "p-mug", "views": 2}],
                    started_at=at(5),
                    last_activity_at=at(6),
                ),
            ]
        )
        order = Order(
            order_id="o-1",
            customer_id=ann.id,
            checkout_id="co-0",
            status="partially_refunded",
            total=Decimal("42.50"),
            subtotal=Decimal("25.00"),
            shipping=Decimal("17.50"),
            refunded_total=Decimal("5.00"),
            currency="USD",
            coupons=["SPRING"],
            shipping_country="US",
            shipping_region="CA",
            shipping_city="San Francisco",
            properties={"email": "ann@example.com", "gift": True},
            placed_at=at(20),
            updated_at=at(25),
        )
        bob_order = Order(
            order_id="o-bob",
            customer_id=bob.id,
            status="paid",
            total=Decimal("9.99"),
            currency="EUR",
            shipping_city="Berlin",
            placed_at=at(50),
            updated_at=at(50),
        )
        session.add_all([order, bob_order])
        session.flush()
        session.add_all(
            [
                OrderLine(
                    order_pk=order.id,
                    customer_id=ann.id,
                    product_id="p-mug",
                    sku="MUG-1",
                    name="Mug",
                    category="kitchen",
                    price=Decimal("12.50"),
                    quantity=2,
                ),
                OrderLine(
                    order_pk=bob_order.id, customer_id=bob.id, product_id="p-pen", price=Decimal("9.99")
                ),
                Refund(
                    refund_id="r-1",
                    order_pk=order.id,
                    customer_id=ann.id,
                    amount=Decimal("5.00"),
                    currency="USD",
                    refunded_at=at(25),
                ),
            ]
        )
        return {
            "ann": ann.id,
            "bob": bob.id,
            "visitor": visitor.id,
            "order": order.id,
            "bob_order": bob_order.id,
        }


def read(engine: sa.Engine, statement: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.scalars(statement))


# --- access and documentation -------------------------------------------------------------------


def test_openapi_is_served_and_every_admin_route_has_a_tag_and_summary(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    admin_operations = [
        (path, method, operation)
        for path, methods in paths.items()
        if path.startswith("/api/v1/")
        for method, operation in methods.items()
    ]
    # the admin module's routes are all there (segments, lists and flows add their own)
    assert {(path, method) for path, method, _ in admin_operations} >= {
        ("/api/v1/store", "get"),
        ("/api/v1/store", "put"),
        ("/api/v1/store", "patch"),
        ("/api/v1/customers", "get"),
        ("/api/v1/customers/{customer_id}", "get"),
        ("/api/v1/customers/{customer_id}", "delete"),
        ("/api/v1/customers/{customer_id}/events", "get"),
        ("/api/v1/customers/{customer_id}/export", "get"),
        ("/api/v1/checkouts", "get"),
        ("/api/v1/orders", "get"),
    }
    for path, method, operation in admin_operations:
        assert operation["tags"], (path, method)
        assert operation["summary"], (path, method)
        assert {"401", "403"} <= set(operation["responses"]), (path, method)
    money = response.json()["components"]["schemas"]["OrderPublic"]["properties"]["total"]
    assert money["type"] == "string"


def test_admin_api_refuses_missing_unknown_and_write_keys(client: TestClient, write_key: str) -> None:
    # Given no key, an unknown admin key, and a valid write key
    # When each calls the admin API
    missing = client.get("/api/v1/store")
    unknown = client.get("/api/v1/store", headers={"Authorization": "Bearer ak_nope"})
    write = client.get("/api/v1/customers", headers={"Authorization": f"Bearer {write_key}"})
    # Then 401, 401 and 403, as JSON errors
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "unauthorized")
    assert (write.status_code, write.json()["error"]["code"]) == (403, "forbidden")


# --- store profile ------------------------------------------------------------------------------


DEFAULT_PROFILE = {
    "name": "My Store",
    "url": "http://localhost:8000",
    "timezone": "UTC",
    "currency": "USD",
    "locale": "en-US",
    "support_email": None,
    "support_phone": None,
}


def test_store_profile_defaults_then_put_then_patch(
    admin_client: TestClient, engine: sa.Engine, clock: VirtualClock
) -> None:
    # Given a fresh install: the profile comes from settings
    assert admin_client.get("/api/v1/store").json() == DEFAULT_PROFILE
    # When the merchant replaces it
    body = {**DEFAULT_PROFILE, "name": "Kiln & Co", "timezone": "Europe/Berlin", "currency": "eur"}
    put = admin_client.put("/api/v1/store", json=body)
    # Then it is stored with the currency upper-cased
    expected = {**body, "currency": "EUR"}
    assert (put.status_code, put.json()) == (200, expected)
    assert admin_client.get("/api/v1/store").json() == expected
    # When a later partial change touches one field
    clock.advance(60)
    patch = admin_client.patch("/api/v1/store", json={"support_email": "help@kiln.example"})
    # Then only that field changes, and the row records when
    assert patch.json() == {**expected, "support_email": "help@kiln.example"}
    [row] = read(engine, sa.select(StoreSettingsRow))
    assert (row.id, row.profile["support_email"], row.updated_at) == (1, "help@kiln.example", clock.now())


def test_store_profile_rejects_bad_timezone_currency_and_unknown_fields(admin_client: TestClient) -> None:
    put = admin_client.put("/api/v1/store", json={**DEFAULT_PROFILE, "timezone": "Mars/Olympus"})
    assert put.status_code == 422
    assert put.json()["error"]["field"] == "timezone"
    assert "IANA" in put.json()["error"]["message"]

    patch = admin_client.patch("/api/v1/store", json={"currency": "EURO"})
    assert patch.status_code == 400
    assert (patch.json()["error"]["code"], patch.json()["error"]["field"]) == ("invalid_input", "currency")

    unknown = admin_client.patch("/api/v1/store", json={"colour": "red"})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (422, "colour")

    partial_put = admin_client.put("/api/v1/store", json={"name": "Kiln"})
    assert (partial_put.status_code, partial_put.json()["error"]["field"]) == (400, "url")
    assert partial_put.json()["error"]["missing"] == ["url", "timezone", "currency", "locale"]

    null_name = admin_client.patch("/api/v1/store", json={"name": None})
    assert (null_name.status_code, null_name.json()["error"]["field"]) == (400, "name")
    # Nothing was written by the refused calls.
    assert admin_client.get("/api/v1/store").json() == DEFAULT_PROFILE


# --- customers ----------------------------------------------------------------------------------


def test_customer_lookup_by_email_phone_and_user_id(admin_client: TestClient, engine: sa.Engine) -> None:
    ids = seed_ann(engine)

    def found(**params: str) -> list[int]:
        response = admin_client.get("/api/v1/customers", params=params)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["items"]]

    # Email is matched case-insensitively, on the profile or on an older email identity.
    assert found(email=" Ann@Example.COM ") == [ids["ann"]]
    assert found(email="ANN.old@example.com") == [ids["ann"]]
    # A national number is read in the store's country (en-US) and compared as E.164.
    assert found(phone="(415) 555-0123") == [ids["ann"]]
    assert found(phone="+1 415-555-0123") == [ids["ann"]]
    assert found(user_id="u-bob") == [ids["bob"]]
    assert found(email="nobody@example.com") == []


def test_customer_list_excludes_tombstones_and_erased_unless_asked(
    admin_client: TestClient, engine: sa.Engine, clock: VirtualClock
) -> None:
    ids = seed_ann(engine)
    with transaction(engine) as session:
        erasure.erase_customer(session, ids["bob"], clock.now())

    listed = admin_client.get("/api/v1/customers").json()
    [ann] = listed["items"]
    assert ann == {
        "id": ids["ann"],
        "user_id": "u-ann",
        "email": "ann@example.com",
        "phone": "+14155550123",
        "first_name": "Ann",
        "last_name": "Lee",
        "orders_count": 1,
        "total_spent": "42.50",
        "currency": "USD",
        "first_seen_at": at(0).isoformat().replace("+00:00", "Z"),
        "last_seen_at": at(40).isoformat().replace("+00:00", "Z"),
        "created_at": at(0).isoformat().replace("+00:00", "Z"),
        "merged_into_id": None,
        "erased_at": None,
    }
    assert listed["next_cursor"] is None
    everyone = admin_client.get("/api/v1/customers", params={"include_merged": True, "include_erased": True})
    assert [item["id"] for item in everyone.json()["items"]] == [ids["visitor"], ids["bob"], ids["ann"]]


def test_customer_list_pages_with_a_cursor_in_both_orders(
    admin_client: TestClient, engine: sa.Engine
) -> None:
    with transaction(engine) as session:
        session.add_all([customer_row(user_id=f"u{i}") for i in range(5)])
    newest = admin_client.get("/api/v1/customers", params={"limit": 2})
    assert [c["user_id"] for c in newest.json()["items"]] == ["u4", "u3"]
    second = admin_client.get(
        "/api/v1/customers", params={"limit": 2, "cursor": newest.json()["next_cursor"]}
    )
    assert [c["user_id"] for c in second.json()["items"]] == ["u2", "u1"]
    third = admin_client.get("/api/v1/customers", params={"limit": 2, "cursor": second.json()["next_cursor"]})
    assert ([c["user_id"] for c in third.json()["items"]], third.json()["next_cursor"]) == (["u0"], None)

    oldest = admin_client.get("/api/v1/customers", params={"limit": 3, "order": "oldest"})
    assert [c["user_id"] for c in oldest.json()["items"]] == ["u0", "u1", "u2"]
    rest = admin_client.get(
        "/api/v1/customers", params={"limit": 3, "order": "oldest", "cursor": oldest.json()["next_cursor"]}
    )
    assert ([c["user_id"] for c in rest.json()["items"]], rest.json()["next_cursor"]) == (["u3", "u4"], None)


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"email": "not-an-email"}, 400, "email"),
        ({"phone": "12"}, 400, "phone"),
        ({"cursor": "garbage!"}, 400, "cursor"),
        ({"limit": "0"}, 422, "query.limit"),
        ({"limit": "501"}, 422, "query.limit"),
        ({"order": "sideways"}, 422, "query.order"),
    ],
)
def test_bad_customer_query_params_are_named(
    admin_client: TestClient, params: dict[str, str], status: int, field: str
) -> None:
    response = admin_client.get("/api/v1/customers", params=params)
    assert (response.status_code, response.json()["error"]["field"]) == (status, field)


def test_customer_detail_has_profile_identities_consent_and_aggregates(
    admin_client: TestClient, engine: sa.Engine
) -> None:
    ids = seed_ann(engine)
    response = admin_client.get(f"/api/v1/customers/{ids['ann']}")
    assert response.status_code == 200
    detail = response.json()
    assert detail["profile"]["email"] == "ann@example.com"
    assert detail["profile"]["birthday"] == "1990-05-17"
    assert (detail["profile"]["tags"], detail["profile"]["properties"]) == (["vip"], {"plan": "gold"})
    assert [(i["kind"], i["value"]) for i in detail["identities"]] == [
        ("user_id", "u-ann"),
        ("anonymous_id", "anon-1"),
        ("email", "ann@example.com"),
        ("email", "ann.old@example.com"),
    ]
    assert detail["consent"] == {"email": "subscribed", "sms": "unsubscribed", "push": None}
    assert [(r["channel"], r["status"], r["source"]) for r in detail["consent_history"]] == [
        ("email", "subscribed", "segment:identify"),
        ("sms", "unsubscribed", "shopify:checkout"),
    ]
    aggregates = detail["aggregates"]
    assert {
        key: aggregates[key]
        for key in ("orders_count", "total_spent", "total_refunded", "average_order_value")
    } == {
        "orders_count": 1,
        "total_spent": "42.50",
        "total_refunded": "5.00",
        "average_order_value": "42.50",
    }
    assert aggregates["currency"] == "USD"
    assert [(p["product_id"], p["quantity"]) for p in aggregates["products_bought"]] == [("p-mug", 2)]
    assert [c["collection"] for c in aggregates["collections_bought"]] == ["kitchen"]
    assert (aggregates["open_checkouts"], aggregates["abandoned_checkouts"]) == (1, 1)
    assert detail["merged_from"] == [ids["visitor"]]


def test_merged_id_answers_308_towards_the_survivor(admin_client: TestClient, engine: sa.Engine) -> None:
    ids = seed_ann(engine)
    # Given the id of the anonymous profile merged into Ann
    response = admin_client.get(f"/api/v1/customers/{ids['visitor']}", follow_redirects=False)
    # Then it points at Ann's profile
    assert response.status_code == 308
    assert response.headers["location"] == f"/api/v1/customers/{ids['ann']}"
    assert response.json() == {"merged_into_id": ids["ann"], "location": f"/api/v1/customers/{ids['ann']}"}
    # And sub-resources keep their path and query
    events = admin_client.get(f"/api/v1/customers/{ids['visitor']}/events?limit=1", follow_redirects=False)
    assert events.headers["location"] == f"/api/v1/customers/{ids['ann']}/events?limit=1"
    # And a client that follows redirects lands on Ann
    assert admin_client.get(f"/api/v1/customers/{ids['visitor']}").json()["profile"]["id"] == ids["ann"]


def test_unknown_and_malformed_customer_ids(admin_client: TestClient) -> None:
    for path in ("/api/v1/customers/999", "/api/v1/customers/999/events", "/api/v1/customers/999/export"):
        response = admin_client.get(path)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), path
    assert admin_client.delete("/api/v1/customers/999").status_code == 404
    malformed = admin_client.get("/api/v1/customers/abc")
    assert (malformed.status_code, malformed.json()["error"]["field"]) == (422, "path.customer_id")


def test_customer_events_newest_first_paged_and_before(admin_client: TestClient, engine: sa.Engine) -> None:
    ids = seed_ann(engine)
    url = f"/api/v1/customers/{ids['ann']}/events"
    first = admin_client.get(url, params={"limit": 2}).json()
    assert [e["message_id"] for e in first["items"]] == ["e-order", "e-view"]
    assert first["items"][1]["context"]["ip"] == "203.0.113.9"
    second = admin_client.get(url, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert ([e["message_id"] for e in second["items"]], second["next_cursor"]) == (["e-identify"], None)
    before = admin_client.get(url, params={"before": at(5).isoformat()}).json()
    assert [e["message_id"] for e in before["items"]] == ["e-identify"]
    bad = admin_client.get(url, params={"before": "yesterday"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "query.before")


def test_export_holds_everything_about_the_person(
    admin_client: TestClient, engine: sa.Engine, clock: VirtualClock
) -> None:
    ids = seed_ann(engine)
    response = admin_client.get(f"/api/v1/customers/{ids['ann']}/export")
    assert response.status_code == 200
    assert (
        response.headers["content-disposition"]
        == f'attachment; filename="winback-customer-{ids["ann"]}.json"'
    )
    document = response.json()
    assert document["exported_at"] == clock.now().isoformat()
    assert document["customer_id"] == ids["ann"]
    assert document["profile"]["address_line1"] == "1 Market St"
    assert document["profile"]["total_spent"] == "42.50"
    assert [p["id"] for p in document["merged_profiles"]] == [ids["visitor"]]
    assert document["merged_profiles"][0]["properties"] == {"utm": "spring"}
    assert len(document["identities"]) == 4
    assert [r["evidence"] for r in document["consent_records"]] == [
        {"ip": "203.0.113.9", "userAgent": "Firefox"},
        {"message_id": "m-2"},
    ]
    assert [e["message_id"] for e in document["events"]] == ["e-identify", "e-view", "e-order"]
    [order] = document["orders"]
    assert (order["order_id"], order["total"], order["currency"], order["shipping_city"]) == (
        "o-1",
        "42.50",
        "USD",
        "San Francisco",
    )
    assert [(line["sku"], line["price"], line["quantity"]) for line in order["lines"]] == [
        ("MUG-1", "12.50", 2)
    ]
    assert [(r["refund_id"], r["amount"]) for r in document["refunds"]] == [("r-1", "5.00")]
    assert [c["external_id"] for c in document["checkouts"]] == ["co-1", "cart-1"]
    assert [s["kind"] for s in document["intent_sessions"]] == ["browse"]
    assert [p["product_id"] for p in document["products_bought"]] == ["p-mug"]
    assert [c["collection"] for c in document["collections_bought"]] == ["kitchen"]
    assert "bob" not in response.text


# --- erasure ------------------------------------------------------------------------------------


def test_delete_erases_personal_data_keeps_aggregates_and_is_idempotent(
    admin_client: TestClient, engine: sa.Engine, clock: VirtualClock
) -> None:
    ids = seed_ann(engine)
    clock.advance(3600)
    # When Ann asks to be forgotten
    response = admin_client.delete(f"/api/v1/customers/{ids['ann']}")
    # Then the summary says what changed
    assert response.status_code == 200
    assert response.json() == {
        "customer_id": ids["ann"],
        "customer_ids": [ids["ann"], ids["visitor"]],
        "erased_at": clock.now().isoformat().replace("+00:00", "Z"),
        "already_erased": False,
        "profiles_erased": 2,
        "identities_deleted": 4,
        "events_scrubbed": 4,
        "checkouts_scrubbed": 1,
        "orders_scrubbed": 1,
        "consent_records_scrubbed": 2,
        "intent_sessions_deleted": 1,
        "list_memberships_deleted": 0,
        "flow_runs_scrubbed": 0,
        "outbox_entries_scrubbed": 0,
    }

    # And her profile keeps only anonymous facts
    [ann] = read(engine, sa.select(Customer).where(Customer.id == ids["ann"]))
    assert (ann.user_id, ann.email, ann.phone, ann.first_name, ann.last_name, ann.birthday) == (None,) * 6
    assert (ann.address_line1, ann.city, ann.zip, ann.country, ann.locale, ann.timezone) == (None,) * 6
    assert (ann.tags, ann.properties, ann.erased_at) == ([], {}, clock.now())
    assert (ann.orders_count, ann.total_spent, ann.total_refunded, ann.first_order_at) == (
        1,
        Decimal("42.50"),
        Decimal("5.00"),
        at(20),
    )
    [visitor] = read(engine, sa.select(Customer).where(Customer.id == ids["visitor"]))
    assert (visitor.properties, visitor.erased_at, visitor.merged_into_id) == ({}, clock.now(), ids["ann"])
    assert read(engine, sa.select(CustomerIdentity.value)) == ["u-bob"]
    assert read(engine, sa.select(IntentSession)) == []

    # And events keep what reports need, nothing that points at her
    events = {e.message_id: e for e in read(engine, sa.select(Event))}
    order_event = events["e-order"]
    assert (order_event.event, order_event.timestamp, order_event.user_id, order_event.context) == (
        "Order Completed",
        at(20),
        None,
        {},
    )
    assert order_event.properties == {
        "order_id": "o-1",
        "total": 42.5,
        "currency": "USD",
        "products": [{"product_id": "p-mug", "name": "Mug", "price": 12.5, "quantity": 2}],
    }
    assert (events["e-identify"].traits, events["e-view"].anonymous_id) == ({}, None)
    # The call not yet applied is scrubbed and claimed, so it cannot rebuild her profile.
    pending = events["e-pending"]
    assert (pending.user_id, pending.traits, pending.customer_id, pending.processed_at) == (
        None,
        {},
        ids["ann"],
        clock.now(),
    )

    [checkout, cart, bob_checkout] = read(engine, sa.select(Checkout).order_by(Checkout.id))
    assert (checkout.email, checkout.phone, checkout.recovery_url, checkout.value) == (
        None,
        None,
        None,
        Decimal("30.00"),
    )
    [order, bob_order] = read(engine, sa.select(Order).order_by(Order.id))
    assert (order.shipping_city, order.shipping_country, order.total, order.properties) == (
        None,
        "US",
        Decimal("42.50"),
        {"gift": True},
    )
    records = read(engine, sa.select(ConsentRecord).order_by(ConsentRecord.id))
    assert [(r.channel, r.status, r.recorded_at) for r in records] == [
        ("email", "subscribed", at(1)),
        ("sms", "unsubscribed", at(2)),
    ]
    assert [r.evidence for r in records] == [{"erased": True, "erased_at": clock.now().isoformat()}] * 2
    assert read(engine, sa.select(CustomerProduct.product_id)) == ["p-mug"]

    # And Bob is untouched
    [bob] = read(engine, sa.select(Customer).where(Customer.id == ids["bob"]))
    assert (bob.email, bob.erased_at) == ("bob@example.com", None)
    assert events["e-bob"].properties == {"email": "b@x"}
    assert (bob_checkout.email, bob_order.shipping_city) == ("bob@example.com", "Berlin")

    # When the erasure is repeated (e.g. a retried webhook), nothing more changes
    clock.advance(60)
    again = admin_client.delete(f"/api/v1/customers/{ids['visitor']}").json()
    assert again["customer_id"] == ids["ann"]
    assert again["already_erased"] is True
    assert again["erased_at"] == (clock.now() - timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    counts = ("profiles_erased", "identities_deleted", "events_scrubbed", "checkouts_scrubbed")
    counts += (
        "orders_scrubbed",
        "consent_records_scrubbed",
        "intent_sessions_deleted",
        "list_memberships_deleted",
    )
    counts += ("flow_runs_scrubbed", "outbox_entries_scrubbed")
    assert [again[key] for key in counts] == [0] * 10
    # And the erased profile still answers, without personal data
    assert admin_client.get(f"/api/v1/customers/{ids['ann']}").json()["profile"]["email"] is None


def test_erase_all_customers_for_shop_redact(
    runtime: Runtime, engine: sa.Engine, clock: VirtualClock
) -> None:
    ids = seed_ann(engine)
    with transaction(engine) as session:
        session.add(
            Checkout(
                kind="checkout",
                external_id="guest",
                status="open",
                value=Decimal("1.00"),
                items=[],
                email="guest@example.com",
                created_at=at(0),
                updated_at=at(0),
                last_activity_at=at(0),
            )
        )
    # When the shop asks for everything to be redacted
    with transaction(engine) as session:
        erased = erasure.erase_all_customers(session, clock.now())
    # Then every profile is erased, and guest data tied to no profile is gone too
    assert erased == 3
    assert read(engine, sa.select(Customer.email).where(Customer.email.is_not(None))) == []
    assert read(engine, sa.select(Checkout.email).where(Checkout.email.is_not(None))) == []
    assert read(engine, sa.select(Event.user_id).where(Event.user_id.is_not(None))) == []
    assert read(engine, sa.select(Order.shipping_city).where(Order.shipping_city.is_not(None))) == []
    assert read(engine, sa.select(CustomerIdentity)) == []
    # And running it again erases nobody new
    with transaction(engine) as session:
        assert erasure.erase_all_customers(session, clock.now()) == 0
    assert ids["ann"] in read(engine, sa.select(Customer.id).where(Customer.erased_at == clock.now()))


# --- commerce -----------------------------------------------------------------------------------


def test_checkouts_filtered_by_status_and_customer(admin_client: TestClient, engine: sa.Engine) -> None:
    ids = seed_ann(engine)
    abandoned = admin_client.get("/api/v1/checkouts", params={"status": "abandoned"}).json()
    assert [(c["external_id"], c["value"], c["currency"]) for c in abandoned["items"]] == [
        ("co-bob", "9.99", "USD"),
        ("co-1", "30.00", "USD"),
    ]
    mine = admin_client.get("/api/v1/checkouts", params={"customer_id": ids["ann"], "limit": 1}).json()
    assert [c["external_id"] for c in mine["items"]] == ["cart-1"]
    rest = admin_client.get(
        "/api/v1/checkouts", params={"customer_id": ids["ann"], "limit": 1, "cursor": mine["next_cursor"]}
    ).json()
    assert ([c["external_id"] for c in rest["items"]], rest["next_cursor"]) == (["co-1"], None)
    assert rest["items"][0]["recovery_url"] == "https://s/recover/secret"
    bad = admin_client.get("/api/v1/checkouts", params={"status": "lost"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "query.status")


def test_orders_with_lines_money_as_strings_and_filters(admin_client: TestClient, engine: sa.Engine) -> None:
    ids = seed_ann(engine)
    everything = admin_client.get("/api/v1/orders").json()
    assert [o["order_id"] for o in everything["items"]] == ["o-bob", "o-1"]
    [order] = admin_client.get("/api/v1/orders", params={"customer_id": ids["ann"]}).json()["items"]
    assert {
        key: order[key] for key in ("total", "subtotal", "shipping", "tax", "refunded_total", "currency")
    } == {
        "total": "42.50",
        "subtotal": "25.00",
        "shipping": "17.50",
        "tax": None,
        "refunded_total": "5.00",
        "currency": "USD",
    }
    assert order["lines"] == [
        {
            "product_id": "p-mug",
            "variant_id": None,
            "sku": "MUG-1",
            "name": "Mug",
            "category": "kitchen",
            "price": "12.50",
            "quantity": 2,
        }
    ]
    since = admin_client.get("/api/v1/orders", params={"since": at(30).isoformat()}).json()
    assert [o["order_id"] for o in since["items"]] == ["o-bob"]
    paid = admin_client.get("/api/v1/orders", params={"status": "paid"}).json()
    assert [(o["order_id"], o["total"], o["currency"]) for o in paid["items"]] == [("o-bob", "9.99", "EUR")]
    bad = admin_client.get("/api/v1/orders", params={"customer_id": "-1"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "query.customer_id")


# --- pure helpers -------------------------------------------------------------------------------


def test_cursor_round_trips_and_refuses_tampering() -> None:
    moment = START.isoformat()
    assert admin.decode_cursor(admin.encode_cursor(moment, 42), datetime, int) == [START, 42]
    assert admin.decode_cursor(admin.encode_cursor(7), int) == [7]
    for bad in ("", "!!!", admin.encode_cursor("7"), admin.encode_cursor(7, 8), admin.encode_cursor(True)):
        with pytest.raises(InvalidInput) as caught:
            admin.decode_cursor(bad, int)
        assert caught.value.details["field"] == "cursor"


def test_apply_changes_validates_the_merged_profile() -> None:
    base = StoreProfile()
    assert store.apply_changes(base, {"currency": "gbp", "timezone": "Europe/London"}) == StoreProfile(
        currency="GBP", timezone="Europe/London"
    )
    with pytest.raises(InvalidInput) as caught:
        store.apply_changes(base, {"timezone": "Nowhere/Else"})
    assert caught.value.details["field"] == "timezone"


# --- with the real event processor --------------------------------------------------------------


def test_tracked_customer_is_found_exported_and_erased_end_to_end(
    admin_client: TestClient, write_key: str, runtime: Runtime, engine: sa.Engine
) -> None:
    # Given a visitor who browsed anonymously, then signed up and ordered, as tracked by a store
    calls = [
        (
            "page",
            {"messageId": "m1", "anonymousId": "anon-9", "name": "Home", "context": {"ip": "198.51.100.7"}},
        ),
        (
            "identify",
            {
                "messageId": "m2",
                "anonymousId": "anon-9",
                "userId": "u-9",
                "traits": {"email": "Zoe@Example.com", "firstName": "Zoe", "phone": "+14155550199"},
            },
        ),
        (
            "track",
            {
                "messageId": "m3",
                "userId": "u-9",
                "event": "Order Completed",
                "properties": {
                    "order_id": "o-9",
                    "total": "20.00",
                    "currency": "USD",
                    "email": "zoe@example.com",
                    "products": [{"product_id": "p-1", "name": "Tea", "price": "10.00", "quantity": 2}],
                },
            },
        ),
    ]
    for kind, message in calls:
        assert admin_client.post(f"/v1/{kind}", json=message, auth=(write_key, "")).status_code == 200
    processor.process_pending(runtime)

    # When the merchant looks her up by email in another case
    [found] = admin_client.get("/api/v1/customers", params={"email": "ZOE@example.com"}).json()["items"]
    # Then the profile and its order are there
    assert (found["user_id"], found["first_name"], found["orders_count"], found["total_spent"]) == (
        "u-9",
        "Zoe",
        1,
        "20.00",
    )
    export_document = admin_client.get(f"/api/v1/customers/{found['id']}/export").json()
    assert [e["message_id"] for e in export_document["events"]] == ["m1", "m2", "m3"]
    assert [o["order_id"] for o in export_document["orders"]] == ["o-9"]

    # When she is erased
    summary = admin_client.delete(f"/api/v1/customers/{found['id']}").json()
    # (the anonymous visit was the same profile: identify gave it the user id, nothing merged)
    assert (summary["customer_ids"], summary["events_scrubbed"], summary["identities_deleted"]) == (
        [found["id"]],
        3,
        4,
    )
    # Then no lookup finds her any more, and the order total still counts for reports
    for params in ({"email": "zoe@example.com"}, {"user_id": "u-9"}, {"phone": "+14155550199"}):
        assert admin_client.get("/api/v1/customers", params=params).json()["items"] == []
    [order] = admin_client.get("/api/v1/orders").json()["items"]
    assert (order["order_id"], order["total"], order["customer_id"]) == ("o-9", "20.00", found["id"])
    with Session(engine) as session:
        remaining = session.scalars(sa.select(Event).order_by(Event.id)).all()
        assert [(e.user_id, e.anonymous_id, e.context, e.traits) for e in remaining] == [
            (None, None, {}, {})
        ] * 3
        assert "email" not in remaining[2].properties

    # And when she comes back later, she starts as a new, separate profile
    again = {"messageId": "m4", "userId": "u-9", "traits": {"email": "zoe@example.com"}}
    assert admin_client.post("/v1/identify", json=again, auth=(write_key, "")).status_code == 200
    processor.process_pending(runtime)
    [fresh] = admin_client.get("/api/v1/customers", params={"user_id": "u-9"}).json()["items"]
    assert fresh["id"] != found["id"]
    assert (fresh["orders_count"], fresh["email"]) == (0, "zoe@example.com")
