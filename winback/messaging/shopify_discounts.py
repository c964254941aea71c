"""Pushing winback's discount codes to Shopify (REST Admin API: a price rule, then its code).

A code becomes a Shopify price rule titled with the code (percentage, fixed amount or free
shipping; usage limit 1 for a single-use code, once per customer, from its creation to its expiry)
and a discount code under that rule. Two calls, so a push can stop half-way: the caller stores the
price rule id the first call returned (`apply_result`) and the next `push` reuses it — it first
asks Shopify whether the code already exists (its answer to the second call may have been lost),
then adds the code to the stored rule. Static codes are looked up first too: a merchant who made
WELCOME10 in Shopify keeps their own rule.

`push` never raises for what Shopify (or the network) says: 201 → pushed; 429, 5xx, network
errors → retry (with Retry-After when given); 401, 403, 422 and other refusals → failed, with
Shopify's error text.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import httpx

from winback.db.models import DiscountCode
from winback.settings import Settings

log = logging.getLogger(__name__)

API_VERSION: Final = "2024-10"
TIMEOUT_S: Final = 15.0
_RULE_IN_PATH = re.compile(r"/price_rules/(\d+)(?:/|\.json|$)")

PushStatus = Literal["pushed", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push came to. `price_rule_id` is the Shopify price rule the code belongs to (or was
    being added to): store it on the row, whatever the status, so a retry reuses it."""

    status: PushStatus
    price_rule_id: str | None = None
    error: str | None = None
    retry_after_s: float | None = None


def apply_result(code: DiscountCode, result: PushResult) -> None:
    """Record a push on the row: the price rule id, and `shopify_status` pushed | failed (left
    empty while a retry is due)."""
    code.shopify_price_rule_id = result.price_rule_id
    code.shopify_status = None if result.status == "retry" else result.status


def price_rule_body(code: DiscountCode) -> dict[str, Any]:
    """The `price_rule` object for a code (pure)."""
    value = Decimal(code.value)
    rule: dict[str, Any] = {
        "title": code.code,
        "target_selection": "all",
        "customer_selection": "all",
        "once_per_customer": True,
        "starts_at": code.created_at.isoformat(),
        "ends_at": code.expires_at.isoformat() if code.expires_at is not None else None,
        "usage_limit": 1 if code.single_use else None,
    }
    if code.kind == "free_shipping":
        rule.update(
            target_type="shipping_line", allocation_method="each", value_type="percentage", value="-100.0"
        )
    elif code.kind == "percent":
        rule.update(
            target_type="line_item",
            allocation_method="across",
            value_type="percentage",
            value=f"-{_decimal_text(value, 1)}",
        )
    elif code.kind == "amount":
        rule.update(
            target_type="line_item",
            allocation_method="across",
            value_type="fixed_amount",
            value=f"-{_decimal_text(value, 2)}",
        )
    else:
        raise ValueError(f"unknown discount kind {code.kind!r}")
    return {"price_rule": rule}


def _decimal_text(value: Decimal, places: int) -> str:
    """10 → "10.0" (places=1), 12.5 → "12.50" (places=2); more places are kept."""
    exponent = value.normalize().as_tuple().exponent
    shown = max(places, -exponent if isinstance(exponent, int) else 0)
    return f"{value:.{shown}f}"


def error_text(response: httpx.Response) -> str:
    """Shopify's error message: `{"errors": "…"}`, `{"errors": {"field": ["…"]}}` or a list."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, dict):
        parts = []
        for field, messages in errors.items():
            listed = messages if isinstance(messages, list) else [messages]
            parts.append(f"{field}: {', '.join(str(m) for m in listed)}")
        text = "; ".join(parts)
    elif isinstance(errors, list):
        text = "; ".join(str(m) for m in errors)
    elif errors is not None:
        text = str(errors)
    else:
        text = response.text.strip()[:500] or response.reason_phrase
    return f"Shopify {response.status_code}: {text}"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _classify(response: httpx.Response, price_rule_id: str | None) -> PushResult:
    """A response that is not the success the call wanted."""
    status = response.status_code
    if status == 429 or status >= 500:
        return PushResult("retry", price_rule_id, error_text(response), _retry_after(response))
    return PushResult("failed", price_rule_id, error_text(response))


class ShopifyDiscounts:
    """The client; one per worker (it keeps an HTTP connection pool). Close it when done."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,  # the code lookup answers with a redirect naming the rule
            headers={"X-Shopify-Access-Token": token, "Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopifyDiscounts | None:
        """None unless both the shop domain and the Admin API token are set."""
        if not settings.shopify_shop_domain or not settings.shopify_admin_token:
            return None
        base = settings.shopify_admin_base_url or (
            f"https://{settings.shopify_shop_domain.strip().strip('/')}/admin/api/{API_VERSION}"
        )
        return cls(base, settings.shopify_admin_token)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ShopifyDiscounts:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def push(self, code: DiscountCode) -> PushResult:
        """Create the code in Shopify, reusing `code.shopify_price_rule_id` from an earlier try."""
        rule_id = code.shopify_price_rule_id
        try:
            if rule_id is not None or not code.single_use:
                found = self._lookup(code.code, rule_id)
                if found is not None:
                    return found
            if rule_id is None:
                response = self._client.post(f"{self.base_url}/price_rules.json", json=price_rule_body(code))
                if response.status_code not in (200, 201):
                    return _classify(response, None)
                rule_id = str(response.json()["price_rule"]["id"])
            response = self._client.post(
                f"{self.base_url}/price_rules/{rule_id}/discount_codes.json",
                json={"discount_code": {"code": code.code}},
            )
        except httpx.TransportError as exc:
            return PushResult("retry", rule_id, f"Shopify unreachable: {exc.__class__.__name__}: {exc}")
        except (ValueError, KeyError, TypeError) as exc:  # a 2xx without the JSON we expect
            return PushResult("retry", rule_id, f"unexpected answer from Shopify: {exc!r}")
        if response.status_code in (200, 201):
            return PushResult("pushed", rule_id)
        if response.status_code == 404:  # the stored rule is gone (deleted in Shopify): make a new one
            return PushResult("retry", None, error_text(response))
        return _classify(response, rule_id)

    def _lookup(self, text: str, rule_id: str | None) -> PushResult | None:
        """`pushed` when Shopify already has the code, a retry/failure when the lookup itself
        failed, None when the code is not there."""
        response = self._client.get(f"{self.base_url}/discount_codes/lookup.json", params={"code": text})
        if response.status_code in (301, 302, 303, 307, 308):
            match = _RULE_IN_PATH.search(response.headers.get("Location", ""))
            return PushResult("pushed", match.group(1) if match else rule_id)
        if response.status_code == 404:
            return None
        if response.status_code == 200:  # a client that followed the redirect: the code's JSON
            owner = response.json().get("discount_code", {}).get("price_rule_id")
            return PushResult("pushed", str(owner) if owner is not None else rule_id)
        return _classify(response, rule_id)
