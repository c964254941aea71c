"""Ready-made segments for the common cases, each a valid definition in the rule language.

`winback segments templates` lists them; `winback segments create --template KEY` saves one.
The thresholds are module constants so that the numbers quoted in the descriptions and in
docs/segments.md are the numbers the rules use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from winback.kernel.errors import NotFound
from winback.segments import rules

HIGH_VALUE_MIN_SPENT = 500  # store currency, net of refunds
HIGH_VALUE_MIN_ORDERS = 5
CASUAL_MAX_ORDERS = 2
CASUAL_MAX_SPENT = 500  # strictly below
LAPSED_DAYS = 90
NEW_CUSTOMER_DAYS = 30
ENGAGED_DAYS = 30
UNENGAGED_DAYS = 90
BIRTHDAY_WITHIN_DAYS = 7
VIP_TAG = "vip"
REPEAT_MIN_ORDERS = 2


@dataclass(frozen=True, slots=True)
class Template:
    """A ready-made segment: `key` names it on the command line, `name` is what gets saved."""

    key: str
    name: str
    description: str
    definition: dict[str, Any]

    def parsed(self) -> rules.SegmentDefinition:
        return rules.parse_definition(self.definition)


def _definition(rule: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": rules.SCHEMA_VERSION, "rule": rule}


def _last_days(days: int) -> dict[str, Any]:
    return {"type": "last", "amount": days, "unit": "days"}


TEMPLATES: tuple[Template, ...] = (
    Template(
        key="high-value",
        name="High-value customers",
        description=(
            f"Spent at least {HIGH_VALUE_MIN_SPENT} (net of refunds) over at least "
            f"{HIGH_VALUE_MIN_ORDERS} orders, all time."
        ),
        definition=_definition(
            {
                "type": "all",
                "rules": [
                    {"type": "money_spent", "compare": {"op": "gte", "value": HIGH_VALUE_MIN_SPENT}},
                    {"type": "order_count", "compare": {"op": "gte", "value": HIGH_VALUE_MIN_ORDERS}},
                ],
            }
        ),
    ),
    Template(
        key="casual-shoppers",
        name="Casual shoppers",
        description=f"1 to {CASUAL_MAX_ORDERS} orders and spent less than {CASUAL_MAX_SPENT}, all time.",
        definition=_definition(
            {
                "type": "all",
                "rules": [
                    {
                        "type": "order_count",
                        "compare": {"op": "between", "value": 1, "to": CASUAL_MAX_ORDERS},
                    },
                    {"type": "money_spent", "compare": {"op": "lt", "value": CASUAL_MAX_SPENT}},
                ],
            }
        ),
    ),
    Template(
        key="repeat-customers",
        name="Repeat customers",
        description=f"Placed at least {REPEAT_MIN_ORDERS} orders, all time.",
        definition=_definition({"type": "order_count", "compare": {"op": "gte", "value": REPEAT_MIN_ORDERS}}),
    ),
    Template(
        key="lapsed-90-days",
        name="Lapsed 90 days",
        description=(
            f"Ordered before, but not in the last {LAPSED_DAYS} days (people who never ordered are "
            "not included)."
        ),
        definition=_definition({"type": "not_ordered_for", "days": LAPSED_DAYS}),
    ),
    Template(
        key="new-customers",
        name="New customers",
        description=f"Placed their first order in the last {NEW_CUSTOMER_DAYS} days.",
        definition=_definition(
            {
                "type": "attribute",
                "field": "first_order_at",
                "op": "within_last_days",
                "value": NEW_CUSTOMER_DAYS,
            }
        ),
    ),
    Template(
        key="new-signups",
        name="New sign-ups",
        description=(
            f"Profile created in the last {NEW_CUSTOMER_DAYS} days, with an email address or a phone "
            "number, and no order yet."
        ),
        definition=_definition(
            {
                "type": "all",
                "rules": [
                    {
                        "type": "attribute",
                        "field": "created_at",
                        "op": "within_last_days",
                        "value": NEW_CUSTOMER_DAYS,
                    },
                    {
                        "type": "any",
                        "rules": [
                            {"type": "has_contact", "channel": "email"},
                            {"type": "has_contact", "channel": "phone"},
                        ],
                    },
                    {"type": "order_count", "compare": {"op": "eq", "value": 0}},
                ],
            }
        ),
    ),
    Template(
        key="abandoned-checkout-this-week",
        name="Abandoned checkout this week",
        description="Abandoned a checkout since Monday 00:00 in the store's timezone.",
        definition=_definition({"type": "abandoned_checkout", "period": {"type": "this_week"}}),
    ),
    Template(
        key="engaged",
        name="Engaged",
        description=f"Opened or clicked a message in the last {ENGAGED_DAYS} days.",
        definition=_definition(
            {
                "type": "any",
                "rules": [
                    {"type": "engagement", "action": "opened", "period": _last_days(ENGAGED_DAYS)},
                    {"type": "engagement", "action": "clicked", "period": _last_days(ENGAGED_DAYS)},
                ],
            }
        ),
    ),
    Template(
        key="unengaged",
        name="Unengaged",
        description=(
            f"Received at least one message in the last {UNENGAGED_DAYS} days but opened or clicked "
            f"nothing for more than {UNENGAGED_DAYS} days."
        ),
        definition=_definition(
            {
                "type": "all",
                "rules": [
                    {"type": "engagement", "action": "received", "period": _last_days(UNENGAGED_DAYS)},
                    {"type": "not_engaged_for", "days": UNENGAGED_DAYS},
                ],
            }
        ),
    ),
    Template(
        key="birthday-next-7-days",
        name="Birthday in the next 7 days",
        description=f"Birthday today or in the next {BIRTHDAY_WITHIN_DAYS} days (store timezone).",
        definition=_definition({"type": "birthday", "within_next_days": BIRTHDAY_WITHIN_DAYS}),
    ),
    Template(
        key="vip",
        name="VIP",
        description=f"Tagged '{VIP_TAG}'.",
        definition=_definition({"type": "tag", "tag": VIP_TAG}),
    ),
    Template(
        key="sms-subscribers",
        name="SMS subscribers",
        description="Subscribed to SMS and has a phone number.",
        definition=_definition(
            {
                "type": "all",
                "rules": [
                    {"type": "consent", "channel": "sms", "status": "subscribed"},
                    {"type": "has_contact", "channel": "phone"},
                ],
            }
        ),
    ),
    Template(
        key="email-subscribers",
        name="Email subscribers",
        description="Subscribed to email and has an email address.",
        definition=_definition(
            {
                "type": "all",
                "rules": [
                    {"type": "consent", "channel": "email", "status": "subscribed"},
                    {"type": "has_contact", "channel": "email"},
                ],
            }
        ),
    ),
)

BY_KEY: dict[str, Template] = {template.key: template for template in TEMPLATES}


def get(key: str) -> Template:
    """The template called `key`; NotFound naming the known keys otherwise."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise NotFound(
            f"no ready-made segment {key!r}; known: {', '.join(BY_KEY)}", field="template", template=key
        ) from None
