"""Case-insensitive matching folds every letter on both databases, as the evaluator does."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback.db.engine import transaction
from winback.db.models import Customer
from winback.kernel.clock import VirtualClock
from winback.runtime import Runtime
from winback.segments import compiler, evaluator, rules


def test_contains_folds_non_ascii_letters(runtime: Runtime, clock: VirtualClock) -> None:
    now = clock.now()
    with transaction(runtime.engine) as session:
        for city in ("München", "Berlin"):
            session.add(Customer(city=city, tags=[], properties={}, orders_count=0, total_spent=Decimal(0),
                                 total_refunded=Decimal(0), first_seen_at=now, last_seen_at=now, created_at=now,
                                 updated_at=now))  # fmt: skip
    rule = rules.parse_definition(
        {"type": "attribute", "field": "city", "op": "contains", "value": "MÜNCH"}
    ).rule
    context = compiler.CompileContext(now, "UTC", runtime.engine.dialect.name)
    with Session(runtime.engine) as session:
        cities = session.scalars(
            sa.select(Customer.city).where(Customer.id.in_(compiler.members_query(rule, context)))
        )
        assert list(cities) == ["München"]
    facts = evaluator.CustomerFacts(profile={"city": "München"})
    assert evaluator.evaluate(rule, facts, evaluator.EvalContext(now)) is True
