"""`winback import` on SQLite and PostgreSQL: each kind of file, bad lines, re-imports, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from winback import importing
from winback.cli import app
from winback.db.models import (
    ConsentRecord,
    Customer,
    Event,
    Order,
    OrderLine,
    Product,
    ProductCollection,
    ProductVariant,
)
from winback.kernel.clock import VirtualClock
from winback.runtime import Runtime

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the conftest clock's start


def _rows(engine: sa.Engine, model: type, *order_by: sa.ColumnElement) -> list:  # type: ignore[type-arg]
    with sa.orm.Session(engine) as session:
        return list(session.scalars(sa.select(model).order_by(*order_by)))


def _count(engine: sa.Engine, model: type) -> int:
    with sa.orm.Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def _import(runtime: Runtime, path: Path, **options: object) -> importing.ImportReport:
    return importing.import_file(runtime.engine, path, now=runtime.clock.now(), phone_region="US", **options)  # type: ignore[arg-type]


def _ndjson(path: Path, *messages: dict[str, object]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(m) for m in messages) + b"\n")
    return path


# --- Segment NDJSON -----------------------------------------------------------------------------


def test_ndjson_messages_become_import_events_and_a_reimport_changes_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    # given an export of three Segment messages, one of them without a messageId, and a blank line
    path = tmp_path / "history.ndjson"
    path.write_bytes(
        orjson.dumps({"type": "identify", "messageId": "m-1", "userId": "u1", "traits": {"email": "a@example.com"},
                      "timestamp": "2025-10-01T08:00:00Z"}) + b"\n\n"
        + orjson.dumps({"type": "track", "userId": "u1", "event": "Product Viewed",
                        "properties": {"product_id": "p1"}, "timestamp": "2025-10-01T08:01:00Z"}) + b"\n"
        + orjson.dumps({"type": "page", "messageId": "m-3", "anonymousId": "anon-9", "name": "Home"}) + b"\n"
    )  # fmt: skip

    # when it is imported
    report = _import(runtime, path)

    # then every message is an event with source "import", in file order
    assert (report.kind, report.records, report.events_accepted, report.duplicates) == ("segment", 3, 3, 0)
    events = _rows(runtime.engine, Event, Event.id)
    assert [(e.source, e.type, e.event, e.name, e.user_id, e.anonymous_id) for e in events] == [
        ("import", "identify", None, None, "u1", None),
        ("import", "track", "Product Viewed", None, "u1", None),
        ("import", "page", None, "Home", None, "anon-9"),
    ]
    assert [e.timestamp for e in events] == [
        datetime(2025, 10, 1, 8, 0, tzinfo=UTC),
        datetime(2025, 10, 1, 8, 1, tzinfo=UTC),
        NOW,  # no timestamp: the time it was received
    ]
    assert events[0].message_id == "m-1" and events[2].message_id == "m-3"
    derived_id = events[1].message_id
    assert derived_id.startswith("import-") and len(derived_id) == len("import-") + 40

    # when the same file is imported again
    again = _import(runtime, path)

    # then nothing new is stored: even the message without an id has the same derived id
    assert (again.events_accepted, again.duplicates) == (0, 3)
    assert [e.message_id for e in _rows(runtime.engine, Event, Event.id)] == ["m-1", derived_id, "m-3"]


def test_ndjson_is_written_in_chunks_with_progress(runtime: Runtime, tmp_path: Path) -> None:
    # given five messages and a chunk size of two
    path = _ndjson(
        tmp_path / "events.jsonl",
        *({"type": "track", "messageId": f"c-{i}", "userId": "u", "event": f"E{i}"} for i in range(5)),
    )
    seen: list[tuple[str, int, int | None]] = []

    # when it is imported
    report = _import(runtime, path, chunk_size=2, progress=lambda *call: seen.append(call))

    # then all five are stored, and progress reports the whole check and each chunk written
    assert report.events_accepted == 5
    assert [e.event for e in _rows(runtime.engine, Event, Event.id)] == ["E0", "E1", "E2", "E3", "E4"]
    size = path.stat().st_size
    assert seen == [("check", size, size), ("write", 2, 5), ("write", 4, 5), ("write", 5, 5)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"type": "track", "userId": "u"}', "events.ndjson, line 3, field 'event': track needs 'event'"),
        (b'{"type": "track", "event": "E"}', "events.ndjson, line 3, field 'userId': either 'userId' or"),
        (b'{"userId": "u", "event": "E"}', "events.ndjson, line 3, field 'type': each message needs a 'type'"),
        (b'{"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"}',
         "events.ndjson, line 3, field 'timestamp': 'timestamp' must be an ISO-8601 date-time"),
        (b'{"type": "track", "userId": "u", "event": ', "events.ndjson, line 3: is not valid JSON"),
        (b'["track"]', "events.ndjson, line 3: each line must be one JSON object"),
    ],
)  # fmt: skip
def test_a_bad_ndjson_line_is_named_and_nothing_is_written(
    runtime: Runtime, tmp_path: Path, line: bytes, expected: str
) -> None:
    # given a file whose third line is bad, after two good ones
    path = tmp_path / "events.ndjson"
    good = b'{"type": "track", "userId": "u", "event": "Fine", "messageId": "ok-%d"}\n'
    path.write_bytes(good % 1 + good % 2 + line + b"\n" + good % 4)

    # when it is imported
    with pytest.raises(importing.ImportFailed) as failure:
        _import(runtime, path)

    # then the error names the file, the line and the field, and not even the good lines are stored
    assert failure.value.message.startswith(expected)
    assert failure.value.details["line"] == 3
    assert _count(runtime.engine, Event) == 0


# --- customers CSV ------------------------------------------------------------------------------

CUSTOMERS_CSV = (
    "Customer ID,First Name,Last Name,Email,Phone,Birthday,City,Province Code,Country Code,Zip,Tags,"
    "Accepts Email Marketing,Accepts SMS Marketing,Loyalty Tier\n"
    'c-1,Ada,Lovelace,ADA@Example.com,+44 20 7946 0958,1990-05-17,London,,GB,N1 9GU,"vip, newsletter",yes,no,gold\n'
    "c-2,Grace,Hopper,grace@example.com,(415) 555-0123,,Arlington,VA,US,22201,,,,\n"
    ",,,,+1 415 555 0199,,,,,,,,true,\n"
)


def test_customers_csv_becomes_profiles_with_consent_only_where_the_file_says_so(
    runtime: Runtime, tmp_path: Path
) -> None:
    # given a Shopify-style customers export
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)

    # when it is imported and the processor has run
    report = _import(runtime, path)
    applied = importing.process_all(runtime)

    # then there is one identify event per row and one profile per customer
    assert (report.kind, report.records, report.events_accepted, report.duplicates) == ("customers", 3, 3, 0)
    assert applied == 3
    events = _rows(runtime.engine, Event, Event.id)
    assert [(e.type, e.source, e.user_id) for e in events] == [
        ("identify", "import", "c-1"), ("identify", "import", "c-2"), ("identify", "import", None),
    ]  # fmt: skip
    assert events[0].traits == {
        "email": "ada@example.com",
        "phone": "+442079460958",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "birthday": "1990-05-17",
        "address": {"city": "London", "postal_code": "N1 9GU", "country": "GB"},
        "tags": ["vip", "newsletter"],
        "email_consent": "subscribed",
        "sms_consent": "unsubscribed",
        "consent_source": "import:csv:customers.csv",
        "consent_evidence": {"file": "customers.csv", "row": 2},
        "loyalty_tier": "gold",
    }
    customers = _rows(runtime.engine, Customer, Customer.id)
    assert [
        (c.user_id, c.email, c.phone, c.first_name, c.last_name, c.city, c.region, c.zip, c.country)
        for c in customers
    ] == [
        ("c-1", "ada@example.com", "+442079460958", "Ada", "Lovelace", "London", None, "N1 9GU", "GB"),
        ("c-2", "grace@example.com", "+14155550123", "Grace", "Hopper", "Arlington", "VA", "22201", "US"),
        (None, None, "+14155550199", None, None, None, None, None, None),
    ]
    assert [(c.tags, c.properties, c.email_consent, c.sms_consent) for c in customers] == [
        (["vip", "newsletter"], {"loyalty_tier": "gold"}, "subscribed", "unsubscribed"),
        ([], {}, None, None),  # no consent columns filled: never asked, not unsubscribed
        ([], {}, None, "subscribed"),
    ]
    assert str(customers[0].birthday) == "1990-05-17"
    records = _rows(runtime.engine, ConsentRecord, ConsentRecord.id)
    by_id = {c.id: c.user_id or c.phone for c in customers}
    assert [(by_id[r.customer_id], r.channel, r.status, r.source) for r in records] == [
        ("c-1", "email", "subscribed", "import:csv:customers.csv"),
        ("c-1", "sms", "unsubscribed", "import:csv:customers.csv"),
        ("+14155550199", "sms", "subscribed", "import:csv:customers.csv"),
    ]
    assert [(r.evidence["file"], r.evidence["row"]) for r in records] == [
        ("customers.csv", 2), ("customers.csv", 2), ("customers.csv", 4),
    ]  # fmt: skip


def test_reimporting_customers_changes_nothing_but_an_edited_row_is_applied(
    runtime: Runtime, tmp_path: Path
) -> None:
    # given the customers file has been imported and processed
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)
    _import(runtime, path)
    importing.process_all(runtime)

    # when exactly the same file is imported again
    again = _import(runtime, path)

    # then every row is a duplicate and there is nothing to process
    assert (again.events_accepted, again.duplicates) == (0, 3)
    assert importing.process_all(runtime) == 0
    assert _count(runtime.engine, Event) == 3
    assert _count(runtime.engine, ConsentRecord) == 3

    # when Grace's row is edited (she opted in to email) and the file is imported once more
    path.write_text(CUSTOMERS_CSV.replace("22201,,,,", "22201,,yes,,"))
    edited = _import(runtime, path)
    importing.process_all(runtime)

    # then only her row is new, and her consent is recorded with its line
    assert (edited.events_accepted, edited.duplicates) == (1, 2)
    grace = _rows(runtime.engine, Customer, Customer.id)[1]
    assert (grace.email, grace.email_consent) == ("grace@example.com", "subscribed")
    latest = _rows(runtime.engine, ConsentRecord, ConsentRecord.id)[-1]
    assert (latest.customer_id, latest.channel, latest.status) == (grace.id, "email", "subscribed")
    assert (latest.evidence["file"], latest.evidence["row"]) == ("customers.csv", 3)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("c-9,Bob,,bob@,,,,,,,,,,", "customers.csv, line 3, field 'email': 'bob@' is not a valid email address"),
        ("c-9,Bob,,,,,,,,,,maybe,,", "customers.csv, line 3, field 'accepts_email_marketing': expected true or false"),
        ("c-9,Bob,,,,17/05/1990,,,,,,,,", "customers.csv, line 3, field 'birthday': expected a date"),
        ("c-9,Bob,,,,,,,Narnia,,,,,", "customers.csv, line 3, field 'country_code': expected an ISO country code"),
        ("c-9,Bob,,,12,,,,,,,,,", "customers.csv, line 3, field 'phone': '12' is not a phone number"),
        (",Bob,Nobody,,,,,,,,,,,", "customers.csv, line 3: a customer needs a user_id (or customer_id), email or phone"),
        ("c-9,Bob,,,,,,,,,,,,,extra", "customers.csv, line 3: has 15 cells but the header names 14 columns"),
    ],
)  # fmt: skip
def test_a_bad_customer_row_is_named_and_nothing_is_written(
    runtime: Runtime, tmp_path: Path, row: str, expected: str
) -> None:
    # given a customers file whose second data row (line 3) is bad
    header, first = CUSTOMERS_CSV.splitlines()[:2]
    path = tmp_path / "customers.csv"
    path.write_text(f"{header}\n{first}\n{row}\n")

    # when it is imported
    with pytest.raises(importing.ImportFailed) as failure:
        _import(runtime, path)

    # then the message names the line and column, and the good first row was not written either
    assert failure.value.message.startswith(expected)
    assert _count(runtime.engine, Event) == 0


# --- orders CSV ---------------------------------------------------------------------------------

ORDERS_CSV = (
    "order_id,email,placed_at,currency,shipping,total,product_id,sku,name,category,price,quantity\n"
    "1001,ada@example.com,2025-11-28T14:05:00Z,EUR,4.90,54.90,p-beans,BEAN-1,House Blend,Coffee,12.50,2\n"
    "1001,,,,,,p-mug,MUG-1,Stoneware Mug,Mugs,25.00,1\n"
    "1002,grace@example.com,2025-11-29 09:30:00,EUR,,,p-tea,TEA-1,Sencha,Tea,9.50,2\n"
)


def test_orders_csv_rows_are_grouped_into_order_completed_events(runtime: Runtime, tmp_path: Path) -> None:
    # given two orders, the first with two line items on two rows, the second without a total
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS_CSV)

    # when it is imported and processed
    report = _import(runtime, path)
    importing.process_all(runtime)

    # then each order is one "Order Completed" event at the time it was placed
    assert (report.kind, report.records, report.events_accepted) == ("orders", 2, 2)
    events = _rows(runtime.engine, Event, Event.id)
    assert [(e.event, e.message_id, e.timestamp) for e in events] == [
        ("Order Completed", "import-order-1001", datetime(2025, 11, 28, 14, 5, tzinfo=UTC)),
        ("Order Completed", "import-order-1002", datetime(2025, 11, 29, 9, 30, tzinfo=UTC)),
    ]
    assert events[0].properties == {
        "order_id": "1001",
        "email": "ada@example.com",
        "total": 54.9,
        "shipping": 4.9,
        "currency": "EUR",
        "products": [
            {"product_id": "p-beans", "sku": "BEAN-1", "name": "House Blend", "category": "Coffee",
             "price": 12.5, "quantity": 2, "currency": "EUR"},
            {"product_id": "p-mug", "sku": "MUG-1", "name": "Stoneware Mug", "category": "Mugs",
             "price": 25.0, "quantity": 1, "currency": "EUR"},
        ],
    }  # fmt: skip
    assert events[1].properties["total"] == 19.0  # 2 × 9.50: the line items, as no total was given

    # and the processor recorded the orders, their lines and the customers' aggregates
    orders = _rows(runtime.engine, Order, Order.id)
    assert [(o.order_id, o.total, o.shipping, o.currency, o.placed_at) for o in orders] == [
        ("1001", Decimal("54.90"), Decimal("4.90"), "EUR", datetime(2025, 11, 28, 14, 5, tzinfo=UTC)),
        ("1002", Decimal("19.00"), None, "EUR", datetime(2025, 11, 29, 9, 30, tzinfo=UTC)),
    ]
    lines = _rows(runtime.engine, OrderLine, OrderLine.id)
    assert [(line.product_id, line.sku, line.price, line.quantity) for line in lines] == [
        ("p-beans", "BEAN-1", Decimal("12.50"), 2),
        ("p-mug", "MUG-1", Decimal("25.00"), 1),
        ("p-tea", "TEA-1", Decimal("9.50"), 2),
    ]
    customers = _rows(runtime.engine, Customer, Customer.id)
    assert [(c.email, c.orders_count, c.total_spent) for c in customers] == [
        ("ada@example.com", 1, Decimal("54.90")),
        ("grace@example.com", 1, Decimal("19.00")),
    ]

    # when the file is imported again, then nothing changes
    assert _import(runtime, path).duplicates == 2
    assert importing.process_all(runtime) == 0


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("1001,,,,,,p-mug,MUG-1,Mug,Mugs,abc,1\n", "orders.csv, line 3, field 'price': expected an amount"),
        ("1001,,,,,,p-mug,MUG-1,Mug,Mugs,25.00,0\n", "orders.csv, line 3, field 'quantity': expected a whole number of at least 1"),
        ("1001,bob@example.com,,,,,p-mug,MUG-1,Mug,Mugs,25.00,1\n",
         "orders.csv, line 3, field 'email': order 1001 has 'ada@example.com' here on line 2 but 'bob@example.com'"),
        ("1002,bob@example.com,2025-11-30,EUR,,,p-tea,TEA-1,Tea,Tea,9.50,1\n1001,,,,,,p-mug,MUG-1,Mug,Mugs,25.00,1\n",
         "orders.csv, line 4, field 'order_id': order 1001 already appeared on line 2"),
        ("1002,bob@example.com,,EUR,,,p-tea,TEA-1,Tea,Tea,9.50,1\n",
         "orders.csv, line 3, field 'placed_at': order 1002 needs a placed_at"),
        ("1002,,2025-11-30,EUR,,,p-tea,TEA-1,Tea,Tea,9.50,1\n",
         "orders.csv, line 3: order 1002 needs a user_id (or customer_id), email or phone"),
    ],
)  # fmt: skip
def test_a_bad_order_row_is_named_and_nothing_is_written(
    runtime: Runtime, tmp_path: Path, rows: str, expected: str
) -> None:
    # given an orders file whose first order is fine and a later row is not
    header, first = ORDERS_CSV.splitlines()[:2]
    path = tmp_path / "orders.csv"
    path.write_text(f"{header}\n{first}\n{rows}")

    # when it is imported
    with pytest.raises(importing.ImportFailed) as failure:
        _import(runtime, path)

    # then the error names the line and field; nothing is stored
    assert failure.value.message.startswith(expected)
    assert _count(runtime.engine, Event) == 0


# --- products CSV -------------------------------------------------------------------------------

PRODUCTS_CSV = (
    "product_id,variant_id,sku,name,brand,category,collections,price,currency,image_url,url\n"
    "p-beans,,BEAN-1,House Blend,Northwind,Coffee,Bestsellers;Gifts,12.50,EUR,http://shop.test/i/beans.png,"
    "http://shop.test/p/beans\n"
    "p-mug,v-mug-blue,MUG-BLUE,Stoneware Mug,Northwind,Mugs,Gifts|Kitchen,25.00,EUR,,\n"
)


def test_products_csv_is_upserted_into_the_catalog_and_a_reimport_touches_nothing(
    runtime: Runtime, clock: VirtualClock, tmp_path: Path
) -> None:
    # given a products file with a plain product and a variant
    path = tmp_path / "products.csv"
    path.write_text(PRODUCTS_CSV)

    # when it is imported
    report = _import(runtime, path)

    # then the catalog has both products, the variant and the collections (';' and '|' separated)
    assert (report.kind, report.records, report.products_new, report.products_updated) == (
        "products",
        2,
        2,
        0,
    )
    products = _rows(runtime.engine, Product, Product.id)
    assert [
        (p.product_id, p.sku, p.name, p.brand, p.category, p.price, p.currency, p.image_url, p.url, p.collections)
        for p in products
    ] == [
        ("p-beans", "BEAN-1", "House Blend", "Northwind", "Coffee", Decimal("12.50"), "EUR",
         "http://shop.test/i/beans.png", "http://shop.test/p/beans", ["Bestsellers", "Gifts", "Coffee"]),
        ("p-mug", None, "Stoneware Mug", "Northwind", "Mugs", None, "EUR", None, None, ["Gifts", "Kitchen", "Mugs"]),
    ]  # fmt: skip
    variants = _rows(runtime.engine, ProductVariant, ProductVariant.id)
    assert [(v.variant_id, v.product_id, v.sku, v.price) for v in variants] == [
        ("v-mug-blue", "p-mug", "MUG-BLUE", Decimal("25.00"))
    ]
    links = _rows(
        runtime.engine, ProductCollection, ProductCollection.product_id, ProductCollection.collection
    )
    assert [(link.product_id, link.collection) for link in links] == [
        ("p-beans", "Bestsellers"), ("p-beans", "Coffee"), ("p-beans", "Gifts"),
        ("p-mug", "Gifts"), ("p-mug", "Kitchen"), ("p-mug", "Mugs"),
    ]  # fmt: skip
    assert _count(runtime.engine, Event) == 0

    # when the same file is imported an hour later
    clock.advance(3600)
    again = _import(runtime, path)

    # then nothing is rewritten, not even the update time
    assert (again.products_new, again.products_updated, again.products_unchanged) == (0, 0, 2)
    assert {p.updated_at for p in _rows(runtime.engine, Product, Product.id)} == {NOW}

    # when a price changes, then only that product is updated
    path.write_text(PRODUCTS_CSV.replace("12.50", "13.00"))
    changed = _import(runtime, path)
    assert (changed.products_new, changed.products_updated, changed.products_unchanged) == (0, 1, 1)
    assert _rows(runtime.engine, Product, Product.id)[0].price == Decimal("13.00")


def test_a_shopify_product_export_says_which_products_are_for_sale(runtime: Runtime, tmp_path: Path) -> None:
    # given Shopify's product export columns: Handle, Title, Variant SKU, Status, Published
    path = tmp_path / "products_export.csv"
    path.write_text(
        "Handle,Title,Variant SKU,Status,Published\n"
        "beans,House Blend,B-1,active,TRUE\n"
        "old-mug,Old Mug,M-1,archived,FALSE\n"
        "teaser,Coming Soon,T-1,active,FALSE\n"
        "plain,No Status,P-1,,\n"
    )
    # when it is imported
    _import(runtime, path)
    # then only the active, published one is for sale; one that does not say stays for sale
    products = _rows(runtime.engine, Product, Product.id)
    assert [(p.product_id, p.available) for p in products] == [
        ("beans", True), ("old-mug", False), ("teaser", False), ("plain", True),
    ]  # fmt: skip
    # and a re-import that archives the beans updates just that
    path.write_text(path.read_text().replace("B-1,active,TRUE", "B-1,archived,TRUE"))
    again = _import(runtime, path)
    assert (again.products_updated, again.products_unchanged) == (1, 3)
    assert _rows(runtime.engine, Product, Product.id)[0].available is False


def test_a_bad_product_row_is_named_and_nothing_is_written(runtime: Runtime, tmp_path: Path) -> None:
    # given a products file whose second row has a price that is not a number
    path = tmp_path / "products.csv"
    path.write_text(PRODUCTS_CSV.replace("25.00", "twenty"))

    # when it is imported
    with pytest.raises(importing.ImportFailed) as failure:
        _import(runtime, path)

    # then the row and column are named and the first product was not written
    assert failure.value.message == (
        "products.csv, line 3, field 'price': expected an amount such as 19.99, got 'twenty'"
    )
    assert _count(runtime.engine, Product) == 0


# --- kind detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("events.ndjson", '{"type": "track"}\n', "segment"),
        ("export.json", '{"type": "track"}\n', "segment"),
        ("export.txt", '{"type": "track"}\n', "segment"),
        ("people.csv", "Customer ID,Email\n", "customers"),
        ("people.csv", "email;first_name\n", "customers"),
        ("sales.csv", "Order ID,Email,Total\n", "orders"),
        ("catalog.csv", "product_id,name,price\n", "products"),
        ("catalog.tsv", "sku\tname\tprice\n", "products"),
    ],
)
def test_kind_is_detected_from_extension_and_header(
    tmp_path: Path, name: str, content: str, kind: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert importing.detect_kind(path) == kind


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.csv", "colour,size\n", "notes.csv, line 1: cannot tell what this CSV holds from its columns (colour, size)"),
        ("data.xlsx", "PK\x03\x04", "data.xlsx: cannot tell what this file holds from its extension '.xlsx'"),
        ("events.json", '[{"type": "track"}]\n', "events.json, line 1: is a JSON array"),
    ],
)  # fmt: skip
def test_undetectable_files_are_explained(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(importing.ImportFailed) as failure:
        importing.detect_kind(path)
    assert failure.value.message.startswith(expected)


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner on the test database."""
    monkeypatch.setenv("WINBACK_DATABASE_URL", database_url)
    yield CliRunner()


def test_cli_imports_processes_and_summarises(cli: CliRunner, runtime: Runtime, tmp_path: Path) -> None:
    # given a customers file
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)

    # when `winback import customers.csv` runs
    result = cli.invoke(app, ["import", str(path)])

    # then it succeeds, the profiles exist right away, and the summary says what happened
    assert result.exit_code == 0, result.output
    assert (
        "customers.csv: 3 customers, 3 events accepted, 0 duplicates skipped; 3 events applied to profiles"
        in (" ".join(result.output.split()))
    )
    assert [c.user_id for c in _rows(runtime.engine, Customer, Customer.id)] == ["c-1", "c-2", None]

    # when it runs again, then everything is a duplicate
    result = cli.invoke(app, ["import", str(path)])
    assert result.exit_code == 0, result.output
    assert "3 customers, 0 events accepted, 3 duplicates skipped" in " ".join(result.output.split())


def test_cli_without_processing_leaves_events_pending(
    cli: CliRunner, runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)

    result = cli.invoke(app, ["import", str(path), "--no-process"])

    assert result.exit_code == 0, result.output
    assert [e.processed_at for e in _rows(runtime.engine, Event, Event.id)] == [None, None, None]
    assert _count(runtime.engine, Customer) == 0


def test_cli_bad_line_exits_non_zero_naming_it(cli: CliRunner, runtime: Runtime, tmp_path: Path) -> None:
    # given an NDJSON file whose second line lacks the event name
    path = _ndjson(
        tmp_path / "events.ndjson",
        {"type": "track", "userId": "u", "event": "Fine"},
        {"type": "track", "userId": "u"},
    )

    # when it is imported
    result = cli.invoke(app, ["import", str(path)])

    # then the command fails, naming the file, line and field, and says that nothing was imported
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "error: events.ndjson, line 2, field 'event': track needs 'event' (the event name)" in output
    assert "nothing was imported" in output
    assert _count(runtime.engine, Event) == 0


def test_cli_explains_kind_it_cannot_detect_and_accepts_an_explicit_one(
    cli: CliRunner, runtime: Runtime, tmp_path: Path
) -> None:
    # given a CSV whose columns say nothing about what it holds
    path = tmp_path / "list.csv"
    path.write_text("handle,title\nbeans,House Blend\n")

    # when it is imported without --kind, then the user is told how to say what it is
    result = cli.invoke(app, ["import", str(path)])
    assert result.exit_code == 1
    assert "--kind customers|orders|products" in " ".join(result.output.split())

    # when it is imported as products, then 'handle' and 'title' are read as id and name
    result = cli.invoke(app, ["import", str(path), "--kind", "products"])
    assert result.exit_code == 0, result.output
    assert [(p.product_id, p.name) for p in _rows(runtime.engine, Product, Product.id)] == [
        ("beans", "House Blend")
    ]


def test_cli_missing_file(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["import", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1
    assert "nope.csv: no such file" in " ".join(result.output.split())
