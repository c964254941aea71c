"""Reading traits into profile fields and consent; running aggregates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

from winback.processing import aggregates
from winback.profiles import contact, traits


def test_traits_are_normalised_into_columns_and_the_rest_kept() -> None:
    update = traits.read_traits(
        {
            "email": " Ann.Lee@Example.COM ",
            "phone": "(415) 555-0123",
            "name": "Ann Lee",
            "birthday": "1990-05-17T00:00:00Z",
            "address": {"city": "Oakland", "state": "CA", "postal_code": "94612", "country": "United States"},
            "tags": "vip, wholesale",
            "favourite_colour": "green",
        },
        context={"timezone": "America/Los_Angeles", "locale": "en-US"},
    )
    assert update.email == "ann.lee@example.com"
    assert update.phone == "+14155550123"
    assert (update.first_name, update.last_name) == ("Ann", "Lee")
    assert update.birthday == date(1990, 5, 17)
    assert (update.city, update.region, update.zip, update.country) == ("Oakland", "CA", "94612", "US")
    assert update.timezone == "America/Los_Angeles"
    assert update.tags == ["vip", "wholesale"]
    assert update.properties == {"favourite_colour": "green"}
    assert update.consent == []


def test_consent_only_from_explicit_traits_never_from_a_phone_number() -> None:
    assert traits.read_traits({"phone": "+447911123456"}).consent == []
    update = traits.read_traits(
        {"sms_consent": True, "email_consent": "unsubscribed", "consent_source": "popup", "consent_evidence": {"form": "spring"}}
    )
    assert [(c.channel, c.status, c.source) for c in update.consent] == [
        ("email", "unsubscribed", "popup"),
        ("sms", "subscribed", "popup"),
    ]
    assert update.consent[1].evidence == {"form": "spring"}


def test_invalid_contact_data_is_ignored() -> None:
    update = traits.read_traits({"email": "not-an-email", "phone": "123", "timezone": "Mars/Olympus"})
    assert (update.email, update.phone, update.timezone) == (None, None, None)


def test_national_phone_numbers_are_read_in_the_address_country() -> None:
    assert contact.normalise_phone("030 901820", "DE") == "+4930901820"
    assert traits.read_traits({"phone": "07911 123456", "address": {"country": "GB"}}).phone == "+447911123456"


def _customer() -> SimpleNamespace:
    return SimpleNamespace(
        orders_count=0, total_spent=Decimal("0.00"), total_refunded=Decimal("0.00"), average_order_value=None,
        first_order_at=None, last_order_at=None,
    )  # fmt: skip


def test_orders_refunds_and_cancellations_keep_aggregates_net() -> None:
    customer = _customer()
    march, april = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    aggregates.add_order(customer, Decimal("100.00"), april)
    aggregates.add_order(customer, Decimal("50.00"), march)
    aggregates.add_refund(customer, Decimal("20.00"))
    assert (customer.orders_count, customer.total_spent, customer.average_order_value) == (2, Decimal("130.00"), Decimal("65.00"))
    assert (customer.first_order_at, customer.last_order_at) == (march, april)
    aggregates.remove_order(customer, Decimal("30.00"))  # the 50 order, refunded 20, cancelled
    assert (customer.orders_count, customer.total_spent, customer.total_refunded) == (1, Decimal("100.00"), Decimal("20.00"))
