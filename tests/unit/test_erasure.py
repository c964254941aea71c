"""What erasure removes from free-form event and order properties (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from winback.profiles.erasure import erasure_evidence, is_personal_key, normalise_key, scrub_properties


@pytest.mark.parametrize(
    ("key", "normalised"),
    [("firstName", "first_name"), ("first-name", "first_name"), ("First_Name", "first_name"), ("ip", "ip")],
)
def test_keys_are_compared_in_snake_case(key: str, normalised: str) -> None:
    assert normalise_key(key) == normalised


@pytest.mark.parametrize(
    "key", ["email", "Email", "phoneNumber", "lastName", "shipping_address", "userAgent", "IP"]
)
def test_personal_keys(key: str) -> None:
    assert is_personal_key(key)


@pytest.mark.parametrize(
    "key", ["name", "price", "product_id", "currency", "total", "category", "shipping_country"]
)
def test_commerce_keys_are_not_personal(key: str) -> None:
    assert not is_personal_key(key)


def test_scrub_removes_personal_keys_at_any_depth_and_keeps_commerce_facts() -> None:
    # Given an Order Completed payload as a Shopify mapping or a storefront might send it
    properties = {
        "order_id": "o-1",
        "total": 42.5,
        "currency": "USD",
        "email": "ann@example.com",
        "shipping_country": "US",
        "billingAddress": {"city": "Paris"},
        "customer": {"id": 7, "first_name": "Ann"},
        "products": [
            {"product_id": "p1", "name": "Mug", "price": 12.5, "quantity": 2, "recovery_url": "https://x"},
            "plain-string",
        ],
        "metadata": {"gift": True, "Phone": "+33612345678"},
    }
    # When scrubbed
    scrubbed = scrub_properties(properties)
    # Then only what identifies the person is gone
    assert scrubbed == {
        "order_id": "o-1",
        "total": 42.5,
        "currency": "USD",
        "shipping_country": "US",
        "products": [{"product_id": "p1", "name": "Mug", "price": 12.5, "quantity": 2}, "plain-string"],
        "metadata": {"gift": True},
    }
    # And the input is left as it was
    assert properties["email"] == "ann@example.com"
    # And scrubbing twice is the same as once
    assert scrub_properties(scrubbed) == scrubbed


def test_erasure_evidence_records_only_the_fact_and_time() -> None:
    moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert erasure_evidence(moment) == {"erased": True, "erased_at": "2026-03-02T09:00:00+00:00"}
