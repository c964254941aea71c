"""Shopify webhook payloads mapped onto the event contract, the catalog and privacy actions (pure).

The payloads follow the shapes of Shopify's documented REST webhook examples, trimmed to the
fields winback reads plus a few it must ignore.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from winback.commerce.catalog import ProductInfo
from winback.ingest import shopify
from winback.kernel.errors import InvalidInput

RECEIVED_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STORE_URL = "https://shop.example.com/"

CUSTOMER = {
    "id": 706405506930370084,
    "email": "bob.norman@example.com",
    "phone": "+16135550142",
    "first_name": "Bob",
    "last_name": "Norman",
    "created_at": "2026-02-01T10:00:00-05:00",
    "updated_at": "2026-02-01T10:00:00-05:00",
    "tags": "VIP, newsletter",
    "email_marketing_consent": {
        "state": "subscribed",
        "opt_in_level": "confirmed_opt_in",
        "consent_updated_at": "2026-02-01T10:00:00-05:00",
    },
    "sms_marketing_consent": {
        "state": "not_subscribed",
        "opt_in_level": "single_opt_in",
        "consent_updated_at": None,
        "consent_collected_from": "OTHER",
    },
    "default_address": {
        "id": 1,
        "first_name": "Bob",
        "last_name": "Norman",
        "address1": "Chestnut Street 92",
        "address2": "Apt 4",
        "city": "Louisville",
        "province": "Kentucky",
        "province_code": "KY",
        "zip": "40202",
        "country": "United States",
        "country_code": "US",
        "phone": "555-625-1199",
        "default": True,
    },
}

LINE_ITEMS = [
    {
        "id": 866550311766439020,
        "key": "866550311766439020",
        "product_id": 788032119674292922,
        "variant_id": 49148385,
        "sku": "IPOD2008RED",
        "title": "IPod Nano - 8GB",
        "variant_title": "Red",
        "vendor": "Apple",
        "quantity": 2,
        "price": "199.00",
        "line_price": "398.00",
        "requires_shipping": True,
        "image_url": "https://cdn.shopify.com/s/files/ipod-red.jpg",
    },
    {
        "id": 141249953214522974,
        "product_id": 632910392,
        "variant_id": 808950810,
        "sku": "CASE",
        "title": "Case",
        "variant_title": "Default Title",
        "vendor": "Apple",
        "quantity": 1,
        "price": "20.5",
        "line_price": "20.50",
    },
]

BILLING_ADDRESS = {
    "first_name": "Bob",
    "last_name": "Norman",
    "address1": "Chestnut Street 92",
    "address2": "",
    "city": "Louisville",
    "province": "Kentucky",
    "province_code": "KY",
    "zip": "40202",
    "country": "United States",
    "country_code": "US",
    "phone": "+1 555-625-1199",
}

SHIPPING_ADDRESS = {
    "first_name": "Alice",
    "last_name": "Norman",
    "address1": "1 Main St",
    "city": "Toronto",
    "province": "Ontario",
    "province_code": "ON",
    "zip": "M5V 2T6",
    "country": "Canada",
    "country_code": "CA",
}

CHECKOUT = {
    "id": 901414060,
    "token": "2a1ace52255252df566af0faaedfbfa7",
    "cart_token": "68778783ad298f1c80c3bafcddeea02f",
    "email": "bob.norman@example.com",
    "phone": None,
    "gateway": None,
    "buyer_accepts_marketing": True,
    "buyer_accepts_sms_marketing": False,
    "sms_marketing_phone": None,
    "created_at": "2026-03-02T03:55:00-05:00",
    "updated_at": "2026-03-02T03:58:00-05:00",
    "completed_at": None,
    "currency": "USD",
    "presentment_currency": "USD",
    "subtotal_price": "418.50",
    "total_tax": "0.00",
    "total_discounts": "20.00",
    "total_price": "398.50",
    "discount_codes": [{"code": "SPRING20", "amount": "20.00", "type": "fixed_amount"}],
    "abandoned_checkout_url": "https://shop.example.com/12345/checkouts/2a1ace5/recover?key=abc",
    "line_items": LINE_ITEMS,
    "billing_address": BILLING_ADDRESS,
    "shipping_address": SHIPPING_ADDRESS,
    "customer": {
        "id": 706405506930370084,
        "email": "bob.norman@example.com",
        "first_name": "Bob",
        "last_name": "Norman",
    },
}

EXPECTED_PRODUCTS = [
    {
        "product_id": "788032119674292922",
        "variant_id": "49148385",
        "sku": "IPOD2008RED",
        "name": "IPod Nano - 8GB",
        "variant": "Red",
        "brand": "Apple",
        "price": "199.00",
        "quantity": 2,
        "image_url": "https://cdn.shopify.com/s/files/ipod-red.jpg",
    },
    {
        "product_id": "632910392",
        "variant_id": "808950810",
        "sku": "CASE",
        "name": "Case",
        "brand": "Apple",
        "price": "20.50",
        "quantity": 1,
    },
]

EXPECTED_ADDRESS = {
    "street": "Chestnut Street 92",
    "city": "Louisville",
    "state": "KY",
    "postal_code": "40202",
    "country": "US",
}

ORDER = {
    "id": 450789469,
    "name": "#1001",
    "email": "bob.norman@example.com",
    "phone": None,
    "checkout_token": "2a1ace52255252df566af0faaedfbfa7",
    "cart_token": "68778783ad298f1c80c3bafcddeea02f",
    "created_at": "2026-03-02T04:10:00-05:00",
    "processed_at": "2026-03-02T04:10:00-05:00",
    "updated_at": "2026-03-02T04:10:05-05:00",
    "cancelled_at": None,
    "cancel_reason": None,
    "currency": "USD",
    "financial_status": "pending",
    "subtotal_price": "398.50",
    "total_tax": "11.94",
    "total_discounts": "20.00",
    "total_price": "420.44",
    "total_shipping_price_set": {
        "shop_money": {"amount": "10.00", "currency_code": "USD"},
        "presentment_money": {"amount": "13.70", "currency_code": "CAD"},
    },
    "shipping_lines": [{"id": 1, "price": "4.00"}, {"id": 2, "price": "6.00"}],
    "discount_codes": [{"code": "SPRING20", "amount": "20.00", "type": "fixed_amount"}],
    "line_items": LINE_ITEMS,
    "billing_address": BILLING_ADDRESS,
    "shipping_address": SHIPPING_ADDRESS,
    "customer": CUSTOMER,
    "buyer_accepts_marketing": True,
}

REFUND = {
    "id": 509562969,
    "order_id": 450789469,
    "created_at": "2026-03-05T10:00:00-05:00",
    "processed_at": "2026-03-05T10:00:01-05:00",
    "note": "it broke during shipping",
    "user_id": 548380009,
    "refund_line_items": [
        {"id": 104689539, "quantity": 1, "line_item_id": 703073504, "subtotal": 195.67, "total_tax": 3.98},
    ],
    "transactions": [
        {"id": 1, "kind": "refund", "status": "success", "amount": "190.00", "currency": "USD"},
        {"id": 2, "kind": "refund", "status": "failure", "amount": "50.00", "currency": "USD"},
        {"id": 3, "kind": "sale", "status": "success", "amount": "420.44", "currency": "USD"},
        {"id": 4, "kind": "refund", "status": "success", "amount": "5.67", "currency": "USD"},
    ],
}

PRODUCT = {
    "id": 788032119674292922,
    "title": "IPod Nano - 8GB",
    "body_html": "<p>It's the small iPod.</p>",
    "vendor": "Apple",
    "product_type": "Cult Products",
    "handle": "ipod-nano",
    "status": "active",
    "tags": "Emotive, Flash Memory, MP3",
    "created_at": "2026-01-01T10:00:00-05:00",
    "updated_at": "2026-03-01T10:00:00-05:00",
    "variants": [
        {
            "id": 49148385,
            "product_id": 788032119674292922,
            "title": "Pink",
            "price": "199.00",
            "sku": "IPOD2008PINK",
            "image_id": 562641783,
        },
        {
            "id": 39072856,
            "product_id": 788032119674292922,
            "title": "Green",
            "price": "189.00",
            "sku": "IPOD2008GREEN",
            "image_id": None,
        },
    ],
    "image": {"id": 850703190, "src": "https://cdn.shopify.com/s/files/ipod-nano.png"},
    "images": [
        {"id": 850703190, "src": "https://cdn.shopify.com/s/files/ipod-nano.png"},
        {"id": 562641783, "src": "https://cdn.shopify.com/s/files/ipod-nano-pink.png"},
    ],
}


def _delivery(topic: str, webhook_id: str = "wh-1") -> shopify.Delivery:
    return shopify.Delivery(webhook_id=webhook_id, topic=topic, triggered_at=None, received_at=RECEIVED_AT)


def _plan(topic: str, payload: Any) -> shopify.Plan:
    return shopify.plan_delivery(_delivery(topic), payload, store_url=STORE_URL, store_currency="USD")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- signatures ----------------------------------------------------------------------------------


def test_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"id": 1}'
    expected = base64.b64encode(hmac.new(b"shpss_secret", body, hashlib.sha256).digest()).decode()
    assert shopify.signature_of("shpss_secret", body) == expected
    assert shopify.is_signature_valid("shpss_secret", body, expected)


@pytest.mark.parametrize("signature", [None, "", "bm9wZQ==", "ünïcode"])
def test_wrong_or_missing_signatures_are_invalid(signature: str | None) -> None:
    assert not shopify.is_signature_valid("shpss_secret", b"{}", signature)


def test_a_changed_body_breaks_the_signature() -> None:
    # given a signature of one body, when one byte of it changes, then it no longer verifies
    signature = shopify.signature_of("shpss_secret", b'{"total_price":"10.00"}')
    assert not shopify.is_signature_valid("shpss_secret", b'{"total_price":"99.00"}', signature)


def test_triggered_at_keeps_microseconds_of_a_nanosecond_header() -> None:
    assert shopify.parse_triggered_at("2026-03-02T08:55:27.877041743Z") == datetime(
        2026, 3, 2, 8, 55, 27, 877041, tzinfo=UTC
    )
    assert shopify.parse_triggered_at("yesterday") is None
    assert shopify.parse_triggered_at(None) is None


# --- checkouts -----------------------------------------------------------------------------------


def test_checkout_create_is_identify_plus_checkout_started() -> None:
    # given a checkout by a logged-in customer who ticked the email marketing box
    plan = _plan("checkouts/create", CHECKOUT)

    # then it is about the checkout token, and maps onto two events
    assert (plan.outcome, plan.resource_key, plan.is_stale_checked) == (
        "accepted",
        "checkout:2a1ace52255252df566af0faaedfbfa7",
        False,
    )
    identify, track = plan.events
    assert (identify.message_id, track.message_id) == ("shopify:wh-1:0", "shopify:wh-1:1")
    assert (identify.type, identify.user_id, identify.anonymous_id) == (
        "identify",
        "706405506930370084",
        "shopify-cart:68778783ad298f1c80c3bafcddeea02f",
    )
    assert identify.traits == {
        "email": "bob.norman@example.com",
        "first_name": "Bob",
        "last_name": "Norman",
        "address": EXPECTED_ADDRESS,
        "email_consent": "subscribed",
        "consent_source": "shopify:checkout",
        "consent_evidence": {
            "buyer_accepts_marketing": True,
            "checkout_token": "2a1ace52255252df566af0faaedfbfa7",
            "checkout_updated_at": "2026-03-02T03:58:00-05:00",
        },
    }
    assert (track.type, track.event, track.source) == ("track", "Checkout Started", "shopify")
    assert track.properties == {
        "checkout_id": "2a1ace52255252df566af0faaedfbfa7",
        "cart_id": "68778783ad298f1c80c3bafcddeea02f",
        "value": "398.50",
        "subtotal": "418.50",
        "tax": "0.00",
        "discount": "20.00",
        "currency": "USD",
        "coupon": "SPRING20",
        "recovery_url": "https://shop.example.com/12345/checkouts/2a1ace5/recover?key=abc",
        "email": "bob.norman@example.com",
        "products": EXPECTED_PRODUCTS,
    }
    assert track.context == {
        "traits": {"email": "bob.norman@example.com"},
        "shopify": {"topic": "checkouts/create", "webhook_id": "wh-1"},
    }
    # and the event time is the checkout's updated_at, in UTC
    assert track.timestamp == datetime(2026, 3, 2, 8, 58, tzinfo=UTC)
    assert track.received_at == RECEIVED_AT


def test_guest_checkout_is_anonymous_by_cart_and_unticked_boxes_say_nothing() -> None:
    # given a guest checkout with a phone, no marketing box ticked and no cart token
    guest = {
        **CHECKOUT,
        "customer": None,
        "cart_token": None,
        "email": None,
        "phone": "+16135550199",
        "buyer_accepts_marketing": False,
        "buyer_accepts_sms_marketing": False,
    }
    identify, track = _plan("checkouts/update", guest).events

    # then the person is anonymous by checkout, and no consent is inferred from the phone
    assert (identify.user_id, identify.anonymous_id) == (
        None,
        "shopify-checkout:2a1ace52255252df566af0faaedfbfa7",
    )
    assert "email_consent" not in identify.traits and "sms_consent" not in identify.traits
    assert identify.traits["phone"] == "+16135550199"
    assert track.event == "Checkout Updated"
    assert track.context["traits"] == {"phone": "+16135550199"}
    assert "cart_id" not in track.properties


def test_sms_box_with_a_marketing_phone_subscribes_sms() -> None:
    checkout = {
        **CHECKOUT,
        "buyer_accepts_marketing": False,
        "buyer_accepts_sms_marketing": True,
        "sms_marketing_phone": "+16135550111",
    }
    identify, _track = _plan("checkouts/update", checkout).events
    assert identify.traits["phone"] == "+16135550111"
    assert identify.traits["sms_consent"] == "subscribed"
    assert "email_consent" not in identify.traits
    assert identify.traits["consent_evidence"] == {
        "buyer_accepts_sms_marketing": True,
        "sms_marketing_phone": "+16135550111",
        "checkout_token": "2a1ace52255252df566af0faaedfbfa7",
        "checkout_updated_at": "2026-03-02T03:58:00-05:00",
    }


def test_sms_box_without_any_phone_subscribes_nothing() -> None:
    checkout = {**CHECKOUT, "buyer_accepts_marketing": False, "buyer_accepts_sms_marketing": True}
    identify, _track = _plan("checkouts/update", checkout).events
    assert "sms_consent" not in identify.traits


def test_completed_checkout_update_maps_to_nothing_but_is_still_a_checkout_delivery() -> None:
    # given the update Shopify sends as the checkout completes, then no Checkout Updated follows
    plan = _plan("checkouts/update", {**CHECKOUT, "completed_at": "2026-03-02T04:10:00-05:00"})
    assert (plan.outcome, plan.events, plan.is_stale_checked) == ("accepted", [], True)


def test_checkout_without_a_person_has_no_identify() -> None:
    anonymous = {**CHECKOUT, "customer": None, "email": None, "phone": None, "billing_address": None}
    [track] = _plan("checkouts/create", anonymous).events
    assert track.event == "Checkout Started"
    assert track.context == {"shopify": {"topic": "checkouts/create", "webhook_id": "wh-1"}}


def test_checkout_without_token_or_id_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        _plan("checkouts/create", {**CHECKOUT, "token": None, "id": None})
    assert caught.value.details == {"field": "token"}


# --- carts ---------------------------------------------------------------------------------------


def test_cart_update_is_cart_viewed_with_the_whole_cart() -> None:
    cart = {
        "id": "68778783ad298f1c80c3bafcddeea02f",
        "token": "68778783ad298f1c80c3bafcddeea02f",
        "line_items": LINE_ITEMS,
        "note": None,
        "updated_at": "2026-03-02T03:50:00.000Z",
        "created_at": "2026-03-02T03:45:00.000Z",
    }
    plan = _plan("carts/update", cart)
    assert (plan.resource_key, plan.is_stale_checked) == ("cart:68778783ad298f1c80c3bafcddeea02f", True)
    [track] = plan.events
    assert (track.event, track.user_id, track.anonymous_id) == (
        "Cart Viewed",
        None,
        "shopify-cart:68778783ad298f1c80c3bafcddeea02f",
    )
    assert track.properties == {
        "cart_id": "68778783ad298f1c80c3bafcddeea02f",
        "products": EXPECTED_PRODUCTS,
        "value": "418.50",
    }
    assert track.timestamp == datetime(2026, 3, 2, 3, 50, tzinfo=UTC)


def test_emptied_cart_says_so_with_an_empty_product_list() -> None:
    [track] = _plan("carts/update", {"token": "c1", "line_items": []}).events
    assert track.properties == {"cart_id": "c1", "products": []}
    # and without a timestamp the receive time stands in
    assert track.timestamp == RECEIVED_AT


# --- orders --------------------------------------------------------------------------------------


def test_order_create_is_identify_plus_order_completed() -> None:
    plan = _plan("orders/create", ORDER)
    assert (plan.resource_key, plan.is_stale_checked) == ("order:450789469", False)
    identify, track = plan.events
    assert (identify.user_id, identify.anonymous_id) == ("706405506930370084", "shopify-order:450789469")
    # then the buyer's traits come from the order, with no consent read from an order snapshot
    assert identify.traits == {
        "email": "bob.norman@example.com",
        "phone": "+16135550142",
        "first_name": "Bob",
        "last_name": "Norman",
        "address": EXPECTED_ADDRESS,
    }
    assert track.event == "Order Completed"
    assert track.properties == {
        "order_id": "450789469",
        "checkout_id": "2a1ace52255252df566af0faaedfbfa7",
        "cart_id": "68778783ad298f1c80c3bafcddeea02f",
        "total": "420.44",
        "subtotal": "398.50",
        "tax": "11.94",
        "shipping": "10.00",
        "discount": "20.00",
        "coupon": "SPRING20",
        "coupons": ["SPRING20"],
        "currency": "USD",
        "financial_status": "pending",
        "order_number": "#1001",
        "email": "bob.norman@example.com",
        "phone": "+16135550142",
        "products": EXPECTED_PRODUCTS,
        "shipping_address": {"country": "CA", "state": "ON", "city": "Toronto"},
    }
    assert track.timestamp == datetime(2026, 3, 2, 9, 10, tzinfo=UTC)


def test_order_shipping_falls_back_to_the_sum_of_shipping_lines() -> None:
    order = {key: value for key, value in ORDER.items() if key != "total_shipping_price_set"}
    assert shopify.order_shipping(order) == "10.00"
    assert shopify.order_shipping({"shipping_lines": []}) is None


def test_guest_order_is_anonymous_by_order_with_the_email_in_context() -> None:
    guest = {**ORDER, "customer": None, "email": "Guest@Example.com"}
    identify, track = _plan("orders/create", guest).events
    assert (identify.user_id, identify.anonymous_id) == (None, "shopify-order:450789469")
    assert identify.traits["first_name"] == "Bob"  # from the billing address
    assert track.context["traits"] == {"email": "Guest@Example.com"}


def test_orders_updated_carries_the_edited_total_status_and_address() -> None:
    edited = {**ORDER, "total_price": "380.00", "financial_status": "partially_refunded",
              "updated_at": "2026-03-04T09:00:00-05:00"}  # fmt: skip
    plan = _plan("orders/updated", edited)
    assert (plan.resource_key, plan.is_stale_checked) == ("order:450789469", True)
    [event] = plan.events
    assert event.event == "Order Updated"
    assert {k: event.properties[k] for k in ("order_id", "financial_status", "total", "currency")} == {
        "order_id": "450789469", "financial_status": "partially_refunded", "total": "380.00", "currency": "USD",
    }  # fmt: skip
    assert (
        event.properties["shipping_address"]
        == _plan("orders/create", ORDER).events[1].properties["shipping_address"]
    )
    assert event.timestamp == _at("2026-03-04T09:00:00-05:00")


def test_orders_paid_and_cancelled_share_the_order_resource() -> None:
    paid = _plan("orders/paid", {**ORDER, "financial_status": "paid"})
    cancelled = _plan(
        "orders/cancelled",
        {**ORDER, "cancelled_at": "2026-03-03T08:00:00-05:00", "cancel_reason": "customer"},
    )
    assert paid.resource_key == cancelled.resource_key == "order:450789469"
    assert paid.is_stale_checked and cancelled.is_stale_checked
    [paid_event] = paid.events
    assert (paid_event.event, paid_event.user_id, paid_event.anonymous_id) == (
        "Order Updated",
        "706405506930370084",
        "shopify-order:450789469",
    )
    assert paid_event.properties == {
        "order_id": "450789469",
        "financial_status": "paid",
        "total": "420.44",
        "currency": "USD",
        "shipping_address": {"city": "Toronto", "country": "CA", "state": "ON"},
    }
    assert paid_event.timestamp == _at("2026-03-02T04:10:05-05:00")
    [cancelled_event] = cancelled.events
    assert cancelled_event.event == "Order Cancelled"
    assert cancelled_event.properties == {
        "order_id": "450789469",
        "reason": "customer",
        "total": "420.44",
        "currency": "USD",
    }
    assert cancelled_event.timestamp == datetime(2026, 3, 3, 13, 0, tzinfo=UTC)


# --- refunds -------------------------------------------------------------------------------------


def test_refund_total_is_the_successful_refund_transactions() -> None:
    plan = _plan("refunds/create", REFUND)
    assert (plan.resource_key, plan.is_stale_checked) == ("refund:509562969", False)
    [track] = plan.events
    assert (track.event, track.user_id, track.anonymous_id) == (
        "Order Refunded",
        None,
        "shopify-order:450789469",
    )
    assert track.properties == {
        "order_id": "450789469",
        "refund_id": "509562969",
        "total": "195.67",
        "currency": "USD",
    }
    assert track.timestamp == datetime(2026, 3, 5, 15, 0, 1, tzinfo=UTC)


def test_refund_without_transactions_sums_the_refunded_lines() -> None:
    refund = {
        **REFUND,
        "transactions": [],
        "refund_line_items": [
            {
                "subtotal": "30.10",
                "subtotal_set": {"shop_money": {"amount": "30.10", "currency_code": "EUR"}},
            },
            {"subtotal": 9.9},
        ],
    }
    assert shopify.refund_total(refund) == (Decimal("40.00"), "EUR")


def test_refund_whose_transactions_all_failed_refunds_nothing_rather_than_everything() -> None:
    refund = {**REFUND, "transactions": [{"kind": "refund", "status": "failure", "amount": "50.00"}]}
    [track] = _plan("refunds/create", refund).events
    assert track.properties["total"] == "0.00"


# --- customers -----------------------------------------------------------------------------------


def test_customer_update_is_identify_with_tags_address_and_explicit_consent() -> None:
    plan = _plan("customers/update", CUSTOMER)
    assert (plan.resource_key, plan.is_stale_checked) == ("customer:706405506930370084", True)
    [identify] = plan.events
    assert (identify.type, identify.user_id, identify.anonymous_id) == (
        "identify",
        "706405506930370084",
        None,
    )
    assert identify.traits == {
        "email": "bob.norman@example.com",
        "phone": "+16135550142",
        "first_name": "Bob",
        "last_name": "Norman",
        "address": {**EXPECTED_ADDRESS, "street": "Chestnut Street 92, Apt 4"},
        "tags": ["VIP", "newsletter"],
        "email_consent": "subscribed",
        "consent_source": "shopify:customer",
        # then only the consent that decided something is kept, as Shopify sent it
        "consent_evidence": {"email_marketing_consent": CUSTOMER["email_marketing_consent"]},
    }
    assert identify.timestamp == datetime(2026, 2, 1, 15, 0, tzinfo=UTC)


def test_customer_unsubscribed_from_sms_is_recorded() -> None:
    customer = copy.deepcopy(CUSTOMER)
    customer["email_marketing_consent"]["state"] = "pending"
    customer["sms_marketing_consent"]["state"] = "unsubscribed"
    [identify] = _plan("customers/create", customer).events
    assert identify.traits["sms_consent"] == "unsubscribed"
    assert "email_consent" not in identify.traits
    assert identify.traits["consent_evidence"] == {"sms_marketing_consent": customer["sms_marketing_consent"]}


@pytest.mark.parametrize("state", ["not_subscribed", "pending", "redacted", "invalid", None])
def test_customer_consent_states_that_decide_nothing(state: str | None) -> None:
    assert shopify.customer_consent({"email_marketing_consent": {"state": state}}) == {}


def test_tags_are_split_trimmed_and_unique() -> None:
    assert shopify.split_tags(" a, b ,a,, c") == ["a", "b", "c"]
    assert shopify.split_tags("") == []
    assert shopify.split_tags(None) == []


# --- products ------------------------------------------------------------------------------------


def test_product_update_is_one_catalog_snapshot_per_variant() -> None:
    plan = _plan("products/update", PRODUCT)
    assert (plan.resource_key, plan.is_stale_checked, plan.events) == ("product:788032119674292922", True, [])
    common = {
        "product_id": "788032119674292922",
        "name": "IPod Nano - 8GB",
        "brand": "Apple",
        "category": "Cult Products",
        "price": Decimal("189.00"),
        "currency": "USD",
        "image_url": "https://cdn.shopify.com/s/files/ipod-nano.png",
        "url": "https://shop.example.com/products/ipod-nano",
        "collections": ("Cult Products",),
        "properties": {"handle": "ipod-nano", "status": "active", "tags": ["Emotive", "Flash Memory", "MP3"]},
        "available": True,
    }
    assert plan.products == [
        ProductInfo(
            **common,
            variant_id="49148385",
            variant_name="Pink",
            variant_sku="IPOD2008PINK",
            variant_price=Decimal("199.00"),
            variant_image_url="https://cdn.shopify.com/s/files/ipod-nano-pink.png",
        ),
        ProductInfo(
            **common,
            variant_id="39072856",
            variant_name="Green",
            variant_sku="IPOD2008GREEN",
            variant_price=Decimal("189.00"),
        ),
    ]


def test_product_without_image_type_or_variants() -> None:
    [info] = shopify.products_from_product(
        {"id": 5, "title": "Gift card", "handle": None, "product_type": "", "images": []},
        store_url=STORE_URL,
        currency="eur",
    )
    assert info == ProductInfo(product_id="5", name="Gift card", currency="EUR")


@pytest.mark.parametrize(
    ("fields", "available"),
    [
        ({"status": "active"}, True),
        ({"status": "draft"}, False),
        ({"status": "archived"}, False),
        ({"status": "active", "published_at": None}, False),  # hidden from the online store
        ({"status": "active", "published_at": "2026-01-01T00:00:00-05:00"}, True),
        ({}, None),  # the payload does not say
    ],
)
def test_a_product_is_for_sale_when_active_and_published(
    fields: dict[str, Any], available: bool | None
) -> None:
    [info] = shopify.products_from_product(
        {"id": 5, "title": "Tea", **fields}, store_url=STORE_URL, currency="usd"
    )
    assert info.available is available


def test_products_delete_withdraws_the_product() -> None:
    plan = _plan("products/delete", {"id": 788032119674292922})
    assert (plan.outcome, plan.resource_key, plan.is_stale_checked) == (
        "accepted",
        "product:788032119674292922",
        True,
    )
    assert (plan.withdrawn, plan.products, plan.events) == (["788032119674292922"], [], [])


# --- privacy and unknown topics ------------------------------------------------------------------


def test_customers_redact_is_an_erasure_of_the_named_customer() -> None:
    payload = {
        "shop_id": 954889,
        "shop_domain": "shop.myshopify.com",
        "customer": {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"},
        "orders_to_redact": [299938, 280263],
    }
    plan = _plan("customers/redact", payload)
    assert (plan.outcome, plan.resource_key, plan.events) == ("redacted", "customer:191167", [])
    assert plan.privacy == shopify.PrivacyAction(
        kind="erase_customer", shopify_customer_id="191167", email="john@example.com", phone="555-625-1199"
    )


def test_customers_redact_naming_nobody_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        _plan("customers/redact", {"shop_id": 1, "customer": {}})
    assert caught.value.details == {"field": "customer"}


def test_customers_redact_is_never_stale_but_shares_the_customer_resource() -> None:
    # given a redaction for customer 191167, then it is filed under the same resource as that
    # customer's updates (so an older update delivered later is dropped) and is never dropped itself
    plan = _plan("customers/redact", {"customer": {"id": 191167}})
    assert (plan.resource_key, plan.is_stale_checked) == (
        _plan("customers/update", {"id": 191167}).resource_key,
        False,
    )


def test_an_overlong_id_is_refused_rather_than_cut() -> None:
    with pytest.raises(InvalidInput) as caught:
        _plan("carts/update", {"token": "t" * 201})
    assert caught.value.details == {"field": "id"}


def test_data_request_and_shop_redact() -> None:
    request = _plan("customers/data_request", {"shop_id": 1, "customer": {"id": 7, "email": "a@b.c"}})
    assert (request.outcome, request.privacy) == (
        "data_request",
        shopify.PrivacyAction(kind="export", shopify_customer_id="7", email="a@b.c"),
    )
    shop = _plan("shop/redact", {"shop_id": 954889, "shop_domain": "shop.myshopify.com"})
    assert (shop.outcome, shop.privacy, shop.resource_key) == (
        "redacted",
        shopify.PrivacyAction(kind="erase_shop"),
        None,
    )


def test_unsupported_topic_is_ignored_whatever_its_body() -> None:
    assert _plan("inventory_levels/update", ["not", "an", "object"]) == shopify.Plan(outcome="ignored")


def test_supported_topic_with_a_non_object_body_is_refused() -> None:
    with pytest.raises(InvalidInput):
        _plan("orders/create", [1, 2])


def test_order_without_id_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput) as caught:
        _plan("orders/paid", {**ORDER, "id": None})
    assert caught.value.details == {"field": "id"}


def test_orders_fulfilled_becomes_order_fulfilled_with_the_products_shipped() -> None:
    fulfilled = {
        **ORDER,
        "fulfillment_status": "fulfilled",
        "fulfillments": [
            {"id": 1, "created_at": "2026-03-04T09:00:00-05:00", "updated_at": "2026-03-04T10:00:00-05:00",
             "tracking_numbers": ["1Z999"]},
        ],
    }  # fmt: skip
    plan = _plan("orders/fulfilled", fulfilled)
    assert (plan.resource_key, plan.is_stale_checked) == ("order:450789469", True)
    [event] = plan.events
    assert event.event == "Order Fulfilled"
    assert event.timestamp == _at("2026-03-04T10:00:00-05:00")
    assert event.properties["order_id"] == "450789469"
    assert event.properties["fulfillment_status"] == "fulfilled"
    assert event.properties["tracking_numbers"] == ["1Z999"]
    assert [p["product_id"] for p in event.properties["products"]] == [
        p["product_id"] for p in _plan("orders/create", ORDER).events[-1].properties["products"]
    ]
