"""`winback import`: bring a store's history in from files — Segment NDJSON, customers, orders, products.

Nothing is half-written because of bad input. The file is read twice:
1. check: every line is read and validated, streaming (nothing is kept in memory). The first bad
   line stops the import with an `ImportFailed` naming the file, the line and the field; the
   database has not been touched.
2. write: the file is read again and written in chunks of `CHUNK_SIZE` rows, one transaction per
   chunk. If the database itself fails part-way, every committed chunk is whole, the error says how
   many rows were committed, and running the same import again is safe: events carry deterministic
   message ids (already-stored ones are skipped) and product upserts only add information.

Customers, orders and Segment messages become events (source `import`), which the processor applies
to profiles like any tracked call; products go straight into the catalog.

Message ids, so that re-importing a file changes nothing:
- NDJSON: the message's own `messageId`, else `import-` + a hash of the line's content;
- customers: `import-` + a hash of the row's cells (an edited row is a new event, an unchanged one
  is skipped, wherever it sits in the file);
- orders: `import-order-` + the order id (an order is recorded once per order id anyway).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine, func, select

from winback.commerce import catalog
from winback.db.engine import reading, transaction
from winback.db.models import Event, Product, ProductVariant
from winback.ingest import segment, store
from winback.kernel.errors import InvalidInput, PayloadTooLarge
from winback.kernel.money import CENT
from winback.profiles import contact
from winback.profiles import traits as traits_module
from winback.runtime import Runtime

Kind = Literal["segment", "customers", "orders", "products"]
KINDS: tuple[Kind, ...] = ("segment", "customers", "orders", "products")

CHUNK_SIZE = 1000  # rows per write transaction
PROGRESS_EVERY = 200  # rows between progress callbacks
SOURCE = "import"
MAX_MESSAGE_ID = 200  # longer natural ids are hashed
PROCESS_BATCH = 500  # events per processor transaction after an import

NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".json")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")

Phase = Literal["check", "write"]
ProgressCallback = Callable[[Phase, int, int | None], None]
"""Called as (phase, done, total): bytes read while checking, rows written while writing."""


class ImportFailed(InvalidInput):
    """The file cannot be imported as it is; the message names the file, line and field."""

    code = "import_failed"


# --- reports ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportReport:
    """What an import did, for the summary line."""

    file: str
    kind: Kind
    records: int = 0  # messages, customers, orders or product rows read
    events: int = 0  # events offered to the event store
    events_accepted: int = 0
    duplicates: int = 0  # events whose message id was already stored (or repeated in the file)
    products_new: int = 0
    products_updated: int = 0
    products_unchanged: int = 0
    ignored_columns: tuple[str, ...] = ()

    def summary(self) -> str:
        noun = {
            "segment": "messages",
            "customers": "customers",
            "orders": "orders",
            "products": "product rows",
        }
        text = f"{self.file}: {self.records} {noun[self.kind]}, "
        if self.kind == "products":
            upserted = self.products_new + self.products_updated
            text += (
                f"{upserted} products upserted ({self.products_new} new, {self.products_updated} updated), "
                f"{self.products_unchanged} unchanged"
            )
        else:
            text += f"{self.events_accepted} events accepted, {self.duplicates} duplicates skipped"
        if self.ignored_columns:
            text += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return text


@dataclass(frozen=True, slots=True)
class Located:
    """A record read from the file with the line it starts on."""

    line: int
    item: Any  # EventRow | catalog.ProductInfo


def _fail(file_name: str, line: int | None, field_name: str | None, reason: str) -> ImportFailed:
    where = file_name if line is None else f"{file_name}, line {line}"
    if field_name:
        where += f", field '{field_name}'"
    details: dict[str, Any] = {"file": file_name}
    if line is not None:
        details["line"] = line
    if field_name:
        details["field"] = field_name
    return ImportFailed(f"{where}: {reason}", **details)


# --- reading files: lines and CSV rows with their line numbers ---------------------------------


class _Source:
    """A file opened for text reading whose progress is measured in bytes of the underlying file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._binary: BinaryIO = path.open("rb")
        self.text = io.TextIOWrapper(self._binary, encoding="utf-8-sig", newline="")

    def position(self) -> int:
        return self._binary.tell()

    def close(self) -> None:
        self.text.close()


def _decode_error(file_name: str, line: int, exc: UnicodeDecodeError) -> ImportFailed:
    return _fail(file_name, line, None, f"is not UTF-8 text ({exc.reason}); save the file as UTF-8")


def normalise_header(name: str) -> str:
    """'Accepts Email Marketing' → 'accepts_email_marketing'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    cells: dict[str, str]  # normalised header → stripped value ('' when empty)


def _csv_rows(source: _Source, file_name: str) -> tuple[list[str], Iterator[CsvRow]]:
    """The normalised header and an iterator over the data rows (multi-line quoted cells allowed)."""
    try:
        header_line = source.text.readline()
    except UnicodeDecodeError as exc:
        raise _decode_error(file_name, 1, exc) from None
    if not header_line.strip():
        raise _fail(file_name, 1, None, "the first line must be a header row naming the columns")
    delimiter = _delimiter(header_line)
    [raw_header] = list(csv.reader([header_line], delimiter=delimiter))
    header = [normalise_header(name) for name in raw_header]
    seen: dict[str, str] = {}
    for raw, name in zip(raw_header, header, strict=True):
        if not name:
            continue
        if name in seen:
            raise _fail(file_name, 1, raw, f"column '{raw}' appears twice (as '{seen[name]}' too)")
        seen[name] = raw

    def rows() -> Iterator[CsvRow]:
        reader = csv.reader(source.text, delimiter=delimiter)
        last_line = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise _decode_error(file_name, last_line + 1, exc) from None
            except csv.Error as exc:
                raise _fail(file_name, last_line + 1, None, f"is not valid CSV: {exc}") from None
            line = last_line + 1
            last_line = reader.line_num + 1  # +1: the header was read before the reader started
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
                raise _fail(
                    file_name,
                    line,
                    None,
                    f"has {len(cells)} cells but the header names {len(header)} columns",
                )
            values = {
                name: (cells[index].strip() if index < len(cells) else "")
                for index, name in enumerate(header)
                if name
            }
            yield CsvRow(line=line, cells=values)

    return header, rows()


def _ndjson_lines(source: _Source, file_name: str) -> Iterator[tuple[int, bytes]]:
    line_number = 0
    while True:
        try:
            text = source.text.readline()
        except UnicodeDecodeError as exc:
            raise _decode_error(file_name, line_number + 1, exc) from None
        if not text:
            return
        line_number += 1
        stripped = text.strip()
        if stripped:
            yield line_number, stripped.encode()


# --- kind detection -----------------------------------------------------------------------------

CUSTOMER_SIGNS = frozenset({"email", "email_address", "phone", "phone_number", "user_id", "customer_id"})
PRODUCT_SIGNS = frozenset({"product_id", "variant_id", "sku", "variant_sku"})
ORDER_SIGNS = frozenset({"order_id", "order_number"})


def kind_from_header(header: Sequence[str]) -> Kind | None:
    """Which CSV this is from its (normalised) header; None when it cannot be told."""
    columns = set(header)
    if columns & ORDER_SIGNS:
        return "orders"
    if columns & PRODUCT_SIGNS and not columns & CUSTOMER_SIGNS:
        return "products"
    if columns & CUSTOMER_SIGNS:
        return "customers"
    return None


def detect_kind(path: Path) -> Kind:
    """Segment NDJSON or one of the CSV kinds, from the file's extension and first line."""
    suffix = path.suffix.lower()
    source = _Source(path)
    try:
        try:
            first = source.text.readline()
        except UnicodeDecodeError as exc:
            raise _decode_error(path.name, 1, exc) from None
    finally:
        source.close()
    stripped = first.lstrip()
    if suffix in NDJSON_SUFFIXES or stripped.startswith(("{", "[")):
        if stripped.startswith("["):
            raise _fail(
                path.name, 1, None,
                "is a JSON array; write one Segment message per line (NDJSON) instead",
            )  # fmt: skip
        if not stripped.startswith("{"):
            raise _fail(path.name, 1, None, "a Segment NDJSON file has one JSON object per line")
        return "segment"
    if suffix not in CSV_SUFFIXES:
        raise _fail(
            path.name, None, None,
            f"cannot tell what this file holds from its extension '{suffix or '(none)'}': use .ndjson/.jsonl "
            "for Segment messages or .csv for customers, orders and products, or pass --kind",
        )  # fmt: skip
    header = [normalise_header(name) for name in next(csv.reader([first], delimiter=_delimiter(first)), [])]
    kind = kind_from_header(header)
    if kind is None:
        raise _fail(
            path.name, 1, None,
            f"cannot tell what this CSV holds from its columns ({', '.join(h for h in header if h) or 'none'}): "
            "orders need an order_id column, products a product_id or sku column (and no email), customers "
            "a user_id/customer_id, email or phone column; or pass --kind customers|orders|products",
        )  # fmt: skip
    return kind


# --- cell parsing (pure) ------------------------------------------------------------------------

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "subscribed", "opted_in", "opt_in"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "unsubscribed", "opted_out", "opt_out", "not_subscribed"})


class CellError(ValueError):
    """A cell that does not parse; the caller adds file, line and field."""


def parse_flag(value: str) -> bool | None:
    """'true'/'yes'/'1'/'subscribed' → True, the negatives → False, '' → None (not said)."""
    if not value:
        return None
    word = normalise_header(value)
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CellError(f"expected true or false (yes/no, 1/0), got {value!r}")


def parse_consent(value: str) -> str | None:
    """'true'/'yes'/'1'/'subscribed' → subscribed, the negatives → unsubscribed, '' → None (not asked)."""
    flag = parse_flag(value)
    return None if flag is None else "subscribed" if flag else "unsubscribed"


def parse_amount(value: str) -> Decimal | None:
    """'1,234.50', '$19.99', '19.99' → Decimal('19.99'); '' → None."""
    if not value:
        return None
    text = re.sub(r"^[^\d\-.]+", "", value.replace(",", "").replace(" ", ""))
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise CellError(f"expected an amount such as 19.99, got {value!r}") from None
    if not amount.is_finite():
        raise CellError(f"expected an amount such as 19.99, got {value!r}")
    return amount.quantize(CENT)


def parse_quantity(value: str) -> int:
    if not value:
        return 1
    try:
        quantity = int(Decimal(value))
    except (InvalidOperation, ValueError):
        raise CellError(f"expected a whole number, got {value!r}") from None
    if quantity < 1 or Decimal(value) != quantity:
        raise CellError(f"expected a whole number of at least 1, got {value!r}")
    return quantity


def parse_moment(value: str) -> datetime:
    """An ISO-8601 date-time or date (naive means UTC)."""
    text = re.sub(r"\s*(UTC|GMT)$", "Z", value.strip())
    text = re.sub(r"\s+([+-]\d{2}:?\d{2})$", r"\1", text)  # '2025-11-28 14:05:00 -0500'
    if len(text) == 10:
        text += "T00:00:00"
    try:
        parsed = segment.parse_timestamp(text.replace(" ", "T", 1) if "T" not in text else text, "date")
    except InvalidInput:
        parsed = None
    if parsed is None:
        raise CellError(f"expected an ISO-8601 date or date-time such as 2025-11-28T14:05:00Z, got {value!r}")
    return parsed


def parse_currency(value: str) -> str | None:
    if not value:
        return None
    if len(value) != 3 or not value.isalpha():
        raise CellError(f"expected a 3-letter ISO 4217 code such as USD, got {value!r}")
    return value.upper()


def split_list(value: str, separators: str) -> list[str]:
    return [part.strip() for part in re.split(f"[{re.escape(separators)}]", value) if part.strip()]


def _money(amount: Decimal) -> float:
    """JSON numbers as Segment clients send them (two decimals survive the float round trip)."""
    return float(amount)


def _content_id(kind: str, content: Mapping[str, Any] | bytes) -> str:
    raw = content if isinstance(content, bytes) else orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return "import-" + hashlib.sha256(kind.encode() + b"\0" + raw).hexdigest()[:40]


def _cell(row: CsvRow, columns: Mapping[str, str], canonical: str) -> tuple[str, str]:
    """The value of a canonical field ('' when absent) and the file's own column name for it."""
    column = columns.get(canonical)
    if column is None:
        return "", canonical
    return row.cells.get(column, ""), column


def _columns(header: Sequence[str], aliases: Mapping[str, str]) -> dict[str, str]:
    """Canonical field → the file column read for it: of several aliases present, the one listed
    first in `aliases` (so 'placed_at' wins over 'created_at'); the others count as ignored."""
    present = set(header)
    chosen: dict[str, str] = {}
    for alias, canonical in aliases.items():
        if alias in present and canonical not in chosen:
            chosen[canonical] = alias
    return chosen


# --- customers ----------------------------------------------------------------------------------

CUSTOMER_ALIASES = {
    **dict.fromkeys(("user_id", "userid", "customer_id", "external_id"), "user_id"),
    **dict.fromkeys(("email", "email_address", "e_mail"), "email"),
    **dict.fromkeys(("phone", "phone_number", "mobile", "mobile_phone"), "phone"),
    **dict.fromkeys(("first_name", "firstname", "given_name"), "first_name"),
    **dict.fromkeys(("last_name", "lastname", "surname", "family_name"), "last_name"),
    "name": "name",
    **dict.fromkeys(("birthday", "birth_date", "date_of_birth", "dob"), "birthday"),
    "gender": "gender",
    "locale": "locale",
    **dict.fromkeys(("timezone", "time_zone"), "timezone"),
    **dict.fromkeys(("street", "address", "address1", "address_1", "default_address_address1"), "street"),
    **dict.fromkeys(("address2", "address_2", "default_address_address2"), "address2"),
    **dict.fromkeys(("city", "default_address_city"), "city"),
    **dict.fromkeys(
        ("state", "region", "province", "province_code", "default_address_province_code"), "state"
    ),
    **dict.fromkeys(("zip", "zip_code", "postal_code", "postcode", "default_address_zip"), "postal_code"),
    **dict.fromkeys(("country", "country_code", "default_address_country_code"), "country"),
    "tags": "tags",
    **dict.fromkeys(
        ("accepts_email_marketing", "email_consent", "email_marketing", "accepts_marketing"), "email_consent"
    ),
    **dict.fromkeys(("accepts_sms_marketing", "sms_consent", "sms_marketing"), "sms_consent"),
    **dict.fromkeys(("accepts_push", "push_consent"), "push_consent"),
    **dict.fromkeys(("created_at", "signed_up_at", "signup_date"), "created_at"),
}


def customer_event(
    row: CsvRow,
    columns: Mapping[str, str],
    *,
    file_name: str,
    received_at: datetime,
    phone_region: str | None,
) -> segment.EventRow:
    """One customers-CSV row → an `identify` event (traits per docs/events.md)."""

    def value(canonical: str) -> tuple[str, str]:
        return _cell(row, columns, canonical)

    def bad(column: str, reason: str) -> ImportFailed:
        return _fail(file_name, row.line, column, reason)

    traits: dict[str, Any] = {}
    user_id, _ = value("user_id")
    country_text, country_column = value("country")
    country = contact.normalise_country(country_text) if country_text else None
    if country_text and country is None:
        raise bad(country_column, f"expected an ISO country code such as US or DE, got {country_text!r}")

    email_text, email_column = value("email")
    if email_text:
        email = contact.normalise_email(email_text)
        if email is None:
            raise bad(email_column, f"{email_text!r} is not a valid email address")
        traits["email"] = email
    phone_text, phone_column = value("phone")
    if phone_text:
        phone = contact.normalise_phone(phone_text, country or phone_region)
        if phone is None:
            raise bad(phone_column, f"{phone_text!r} is not a phone number (use E.164, e.g. +14155550123)")
        traits["phone"] = phone
    if not (user_id or email_text or phone_text):
        raise _fail(file_name, row.line, None, "a customer needs a user_id (or customer_id), email or phone")

    for canonical in ("first_name", "last_name", "name", "gender", "locale"):
        text, _ = value(canonical)
        if text:
            traits[canonical] = text
    timezone_text, timezone_column = value("timezone")
    if timezone_text:
        if traits_module.valid_timezone(timezone_text) is None:
            raise bad(
                timezone_column, f"expected an IANA timezone such as Europe/Berlin, got {timezone_text!r}"
            )
        traits["timezone"] = timezone_text
    birthday_text, birthday_column = value("birthday")
    if birthday_text:
        birthday = contact.parse_birthday(birthday_text)
        if birthday is None:
            raise bad(birthday_column, f"expected a date such as 1990-05-17, got {birthday_text!r}")
        traits["birthday"] = birthday.isoformat()
    created_text, created_column = value("created_at")
    if created_text:
        try:
            traits["created_at"] = parse_moment(created_text).isoformat()
        except CellError as exc:
            raise bad(created_column, str(exc)) from None

    address = {
        key: text
        for key, text in (
            ("street", value("street")[0]),
            ("address2", value("address2")[0]),
            ("city", value("city")[0]),
            ("state", value("state")[0]),
            ("postal_code", value("postal_code")[0]),
            ("country", country or ""),
        )
        if text
    }
    if address:
        traits["address"] = address
    tags_text, _ = value("tags")
    if tags_text:
        traits["tags"] = split_list(tags_text, ",;|")

    consented = False
    for channel in ("email", "sms", "push"):
        text, column = value(f"{channel}_consent")
        try:
            status = parse_consent(text)
        except CellError as exc:
            raise bad(column, str(exc)) from None
        if status is not None:
            traits[f"{channel}_consent"] = status
            consented = True
    if consented:
        traits["consent_source"] = f"import:csv:{file_name}"
        traits["consent_evidence"] = {"file": file_name, "row": row.line}

    known = set(columns.values())
    for column, text in row.cells.items():
        if column not in known and text:
            traits[column] = text

    message_id = _content_id("customers", {k: v for k, v in row.cells.items() if v})
    return segment.EventRow(
        message_id=message_id,
        source=SOURCE,
        type="identify",
        timestamp=received_at,
        received_at=received_at,
        user_id=user_id or None,
        traits=traits,
        context={"library": {"name": "winback-import"}},
    )


# --- orders -------------------------------------------------------------------------------------

ORDER_LEVEL_ALIASES = {
    **dict.fromkeys(("order_id", "order_number"), "order_id"),
    **dict.fromkeys(("user_id", "userid", "customer_id"), "user_id"),
    "anonymous_id": "anonymous_id",
    **dict.fromkeys(("email", "email_address"), "email"),
    **dict.fromkeys(("phone", "phone_number"), "phone"),
    **dict.fromkeys(("placed_at", "created_at", "order_date", "date", "processed_at"), "placed_at"),
    **dict.fromkeys(("total", "order_total"), "total"),
    "subtotal": "subtotal",
    "revenue": "revenue",
    "shipping": "shipping",
    **dict.fromkeys(("tax", "taxes"), "tax"),
    **dict.fromkeys(("discount", "discount_amount"), "discount"),
    **dict.fromkeys(("coupon", "discount_code"), "coupon"),
    "currency": "currency",
    "checkout_id": "checkout_id",
    "cart_id": "cart_id",
    "shipping_country": "shipping_country",
    **dict.fromkeys(("shipping_region", "shipping_state", "shipping_province"), "shipping_state"),
    "shipping_city": "shipping_city",
}
LINE_ALIASES = {
    "product_id": "product_id",
    "variant_id": "variant_id",
    **dict.fromkeys(("sku", "lineitem_sku"), "sku"),
    **dict.fromkeys(("name", "product_name", "lineitem_name", "title"), "name"),
    **dict.fromkeys(("brand", "vendor", "lineitem_vendor"), "brand"),
    **dict.fromkeys(("category", "product_type"), "category"),
    **dict.fromkeys(("price", "unit_price", "lineitem_price"), "price"),
    **dict.fromkeys(("quantity", "qty", "lineitem_quantity"), "quantity"),
    "image_url": "image_url",
    "url": "url",
}
ORDER_ALIASES = {**ORDER_LEVEL_ALIASES, **LINE_ALIASES}
ORDER_LEVEL_FIELDS = frozenset(ORDER_LEVEL_ALIASES.values())
ORDER_AMOUNTS = ("total", "subtotal", "revenue", "shipping", "tax", "discount")


@dataclass(slots=True)
class OrderDraft:
    """The rows of one order, gathered while reading; `event()` checks and builds it."""

    order_id: str
    line: int
    fields: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # canonical → (value, column, line)
    products: list[dict[str, Any]] = field(default_factory=list)


def add_order_row(draft: OrderDraft, row: CsvRow, columns: Mapping[str, str], file_name: str) -> None:
    """Fold one line-item row into its order: order-level cells must agree across the order's rows."""
    for canonical, column in columns.items():
        text = row.cells.get(column, "")
        if canonical not in ORDER_LEVEL_FIELDS or not text:
            continue
        known = draft.fields.get(canonical)
        if known is None:
            draft.fields[canonical] = (text, column, row.line)
        elif known[0] != text:
            raise _fail(
                file_name, row.line, column,
                f"order {draft.order_id} has {known[0]!r} here on line {known[2]} but {text!r} on this line",
            )  # fmt: skip
    line_values = {canonical: _cell(row, columns, canonical) for canonical in set(LINE_ALIASES.values())}
    if not any(text for text, _ in line_values.values()):
        return  # an order-level row (e.g. Shopify's shipping-only lines)
    product: dict[str, Any] = {}
    for canonical in ("product_id", "variant_id", "sku", "name", "brand", "category", "image_url", "url"):
        text = line_values[canonical][0]
        if text:
            product[canonical] = text
    if not (product.get("product_id") or product.get("sku") or product.get("name")):
        raise _fail(file_name, row.line, None, "a line item needs a product_id, sku or name")
    try:
        price = parse_amount(line_values["price"][0])
    except CellError as exc:
        raise _fail(file_name, row.line, line_values["price"][1], str(exc)) from None
    try:
        quantity = parse_quantity(line_values["quantity"][0])
    except CellError as exc:
        raise _fail(file_name, row.line, line_values["quantity"][1], str(exc)) from None
    if price is not None:
        product["price"] = _money(price)
    product["quantity"] = quantity
    draft.products.append(product)


def order_event(
    draft: OrderDraft, *, file_name: str, received_at: datetime, phone_region: str | None
) -> segment.EventRow:
    """A finished order → an `Order Completed` event with products[]."""

    def get(canonical: str) -> str:
        return draft.fields.get(canonical, ("", canonical, draft.line))[0]

    def where(canonical: str) -> tuple[int, str]:
        _, column, line = draft.fields.get(canonical, ("", canonical, draft.line))
        return line, column

    def bad(canonical: str, reason: str) -> ImportFailed:
        line, column = where(canonical)
        return _fail(file_name, line, column, reason)

    properties: dict[str, Any] = {"order_id": draft.order_id}
    user_id, anonymous_id = get("user_id") or None, get("anonymous_id") or None
    email_text, phone_text = get("email"), get("phone")
    if email_text:
        email = contact.normalise_email(email_text)
        if email is None:
            raise bad("email", f"{email_text!r} is not a valid email address")
        properties["email"] = email
    if phone_text:
        phone = contact.normalise_phone(phone_text, phone_region)
        if phone is None:
            raise bad("phone", f"{phone_text!r} is not a phone number (use E.164, e.g. +14155550123)")
        properties["phone"] = phone
    if not (user_id or anonymous_id or email_text or phone_text):
        raise _fail(
            file_name, draft.line, None,
            f"order {draft.order_id} needs a user_id (or customer_id), email or phone to belong to a customer",
        )  # fmt: skip

    placed_text = get("placed_at")
    if not placed_text:
        raise _fail(
            file_name,
            draft.line,
            "placed_at",
            f"order {draft.order_id} needs a placed_at (or created_at) date",
        )
    try:
        placed_at = parse_moment(placed_text)
    except CellError as exc:
        raise bad("placed_at", str(exc)) from None

    amounts: dict[str, Decimal] = {}
    for canonical in ORDER_AMOUNTS:
        try:
            amount = parse_amount(get(canonical))
        except CellError as exc:
            raise bad(canonical, str(exc)) from None
        if amount is not None:
            amounts[canonical] = amount
    if "total" not in amounts:
        priced = [p for p in draft.products if "price" in p]
        if not priced:
            raise _fail(
                file_name, draft.line, "total", f"order {draft.order_id} has no total and no line-item prices"
            )
        lines_total = sum((Decimal(str(p["price"])) * p["quantity"] for p in priced), Decimal("0"))
        amounts["total"] = (
            lines_total + amounts.get("shipping", Decimal("0")) + amounts.get("tax", Decimal("0"))
            - amounts.get("discount", Decimal("0"))
        ).quantize(CENT)  # fmt: skip
    for canonical, amount in amounts.items():
        properties[canonical] = _money(amount)
    try:
        currency = parse_currency(get("currency"))
    except CellError as exc:
        raise bad("currency", str(exc)) from None
    if currency:
        properties["currency"] = currency
        for product in draft.products:
            product.setdefault("currency", currency)
    for canonical in ("coupon", "checkout_id", "cart_id"):
        if get(canonical):
            properties[canonical] = get(canonical)
    address = {
        key: get(canonical)
        for key, canonical in (
            ("country", "shipping_country"),
            ("state", "shipping_state"),
            ("city", "shipping_city"),
        )
        if get(canonical)
    }
    if address:
        properties["shipping_address"] = address
    properties["products"] = draft.products
    contact_traits = {key: properties[key] for key in ("email", "phone") if key in properties}

    natural = f"import-order-{draft.order_id}"
    message_id = natural if len(natural) <= MAX_MESSAGE_ID else _content_id("order", draft.order_id.encode())
    return segment.EventRow(
        message_id=message_id,
        source=SOURCE,
        type="track",
        event="Order Completed",
        timestamp=placed_at,
        original_timestamp=placed_at,
        received_at=received_at,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=properties,
        # context.traits: the buyer's email/phone reach the profile, not only its identities
        context={
            "library": {"name": "winback-import"},
            **({"traits": contact_traits} if contact_traits else {}),
        },
    )


def _order_events(
    rows: Iterator[CsvRow],
    columns: Mapping[str, str],
    *,
    file_name: str,
    received_at: datetime,
    phone_region: str | None,
) -> Iterator[Located]:
    """Group consecutive rows by order id; an order id that comes back after another order is an error."""
    options: dict[str, Any] = {"received_at": received_at, "phone_region": phone_region}
    finished: dict[str, int] = {}
    draft: OrderDraft | None = None
    for row in rows:
        order_id, order_column = _cell(row, columns, "order_id")
        if not order_id:
            raise _fail(file_name, row.line, order_column, "every row needs an order_id")
        if draft is None or draft.order_id != order_id:
            if draft is not None:
                yield Located(draft.line, order_event(draft, file_name=file_name, **options))
                finished[draft.order_id] = draft.line
            if order_id in finished:
                raise _fail(
                    file_name, row.line, order_column,
                    f"order {order_id} already appeared on line {finished[order_id]} and other orders came "
                    "between; keep the rows of one order together (sort the file by order_id)",
                )  # fmt: skip
            draft = OrderDraft(order_id=order_id, line=row.line)
        add_order_row(draft, row, columns, file_name)
    if draft is not None:
        yield Located(draft.line, order_event(draft, file_name=file_name, **options))


# --- products -----------------------------------------------------------------------------------

PRODUCT_ALIASES = {
    **dict.fromkeys(("product_id", "id", "handle"), "product_id"),
    "variant_id": "variant_id",
    **dict.fromkeys(("sku", "variant_sku"), "sku"),
    **dict.fromkeys(("name", "title", "product_name"), "name"),
    **dict.fromkeys(("variant", "variant_name", "variant_title"), "variant"),
    **dict.fromkeys(("brand", "vendor"), "brand"),
    **dict.fromkeys(("category", "product_type", "type"), "category"),
    **dict.fromkeys(("collections", "collection"), "collections"),
    **dict.fromkeys(("price", "variant_price"), "price"),
    "currency": "currency",
    **dict.fromkeys(("image_url", "image", "image_src", "variant_image"), "image_url"),
    **dict.fromkeys(("url", "product_url", "link"), "url"),
    "status": "status",  # Shopify's export: active, draft or archived
    **dict.fromkeys(("published", "published_on_online_store"), "published"),
}


def product_info(row: CsvRow, columns: Mapping[str, str], file_name: str) -> catalog.ProductInfo:
    """One products-CSV row → what the catalog should learn (collections split on ';' or '|')."""
    props: dict[str, Any] = {}
    for canonical in (
        "product_id",
        "variant_id",
        "sku",
        "name",
        "variant",
        "brand",
        "category",
        "image_url",
        "url",
    ):
        text, _ = _cell(row, columns, canonical)
        if text:
            props[canonical] = text
    if not (props.get("product_id") or props.get("sku")):
        raise _fail(file_name, row.line, "product_id", "a product needs a product_id (or sku)")
    price_text, price_column = _cell(row, columns, "price")
    try:
        price = parse_amount(price_text)
    except CellError as exc:
        raise _fail(file_name, row.line, price_column, str(exc)) from None
    if price is not None:
        props["price"] = str(price)
    currency_text, currency_column = _cell(row, columns, "currency")
    try:
        currency = parse_currency(currency_text)
    except CellError as exc:
        raise _fail(file_name, row.line, currency_column, str(exc)) from None
    if currency:
        props["currency"] = currency
    collections_text, _ = _cell(row, columns, "collections")
    if collections_text:
        props["collections"] = split_list(collections_text, ";|")
    info = catalog.product_from_properties(props)
    assert info is not None  # a product_id or sku is present
    status_text, _ = _cell(row, columns, "status")
    published_text, published_column = _cell(row, columns, "published")
    try:
        published = parse_flag(published_text)
    except CellError as exc:
        raise _fail(file_name, row.line, published_column, str(exc)) from None
    available = catalog.for_sale(status_text, published)
    return replace(info, available=available) if available is not None else info


def product_adds_information(
    product: Product | None, variant: ProductVariant | None, info: catalog.ProductInfo
) -> bool:
    """Would upserting `info` change anything? (Lets a re-import leave the catalog untouched.)"""
    if product is None or catalog.product_changes(product, info):
        return True
    if info.variant_id:
        return variant is None or bool(catalog.variant_changes(variant, info))
    return False


# --- reading a whole file -----------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """How to read one file: its kind and, for CSVs, the columns understood and ignored."""

    kind: Kind
    ignored_columns: tuple[str, ...] = ()


def _records(
    source: _Source,
    kind: Kind,
    *,
    file_name: str,
    received_at: datetime,
    max_event_bytes: int,
    phone_region: str | None,
) -> tuple[Plan, Iterator[Located]]:
    """Everything in the file as validated records; raises ImportFailed at the first bad line."""
    if kind == "segment":
        return Plan(kind), _segment_records(source, file_name, received_at, max_event_bytes)
    header, rows = _csv_rows(source, file_name)
    aliases = {"customers": CUSTOMER_ALIASES, "orders": ORDER_ALIASES, "products": PRODUCT_ALIASES}[kind]
    columns = _columns(header, aliases)
    read = set(columns.values())
    ignored = () if kind == "customers" else tuple(h for h in header if h and h not in read)
    required = {
        "customers": (("user_id", "email", "phone"), "a user_id (or customer_id), email or phone column"),
        "orders": (("order_id",), "an order_id column"),
        "products": (("product_id", "sku"), "a product_id (or sku) column"),
    }[kind]
    if not set(columns) & set(required[0]):
        raise _fail(
            file_name, 1, None, f"a {kind} CSV needs {required[1]}; the header has: {', '.join(header)}"
        )
    plan = Plan(kind, ignored)
    if kind == "customers":
        return plan, (
            Located(
                row.line,
                customer_event(
                    row, columns, file_name=file_name, received_at=received_at, phone_region=phone_region
                ),
            )
            for row in rows
        )
    if kind == "orders":
        return plan, _order_events(
            rows, columns, file_name=file_name, received_at=received_at, phone_region=phone_region
        )
    return plan, (Located(row.line, product_info(row, columns, file_name)) for row in rows)


def _segment_records(
    source: _Source, file_name: str, received_at: datetime, max_event_bytes: int
) -> Iterator[Located]:
    for line, raw_bytes in _ndjson_lines(source, file_name):
        try:
            raw = orjson.loads(raw_bytes)
        except orjson.JSONDecodeError as exc:
            raise _fail(file_name, line, None, f"is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise _fail(file_name, line, None, "each line must be one JSON object (a Segment message)")
        if "type" not in raw:
            raise _fail(file_name, line, "type", "each message needs a 'type' (identify, track, page, …)")
        try:
            segment.check_message_size(raw, max_event_bytes)
            if not raw.get("messageId"):
                raw = {**raw, "messageId": _content_id("segment", raw_bytes)}
            row = segment.parse_message(raw, received_at=received_at, source=SOURCE)
        except (InvalidInput, PayloadTooLarge) as exc:
            raise _fail(file_name, line, exc.details.get("field"), exc.message) from None
        yield Located(line, row)


# --- the import ---------------------------------------------------------------------------------


def resolve_kind(path: Path, kind: str) -> Kind:
    if kind == "auto":
        return detect_kind(path)
    if kind not in KINDS:
        raise ImportFailed(f"--kind must be auto or one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    return kind  # type: ignore[return-value]


def check_file(
    path: Path,
    kind: Kind,
    *,
    received_at: datetime,
    max_event_bytes: int,
    phone_region: str | None,
    progress: ProgressCallback | None = None,
) -> tuple[Plan, int]:
    """Pass 1: validate every record; returns the plan and the number of records. Writes nothing."""
    source = _Source(path)
    try:
        plan, records = _records(
            source, kind, file_name=path.name, received_at=received_at,
            max_event_bytes=max_event_bytes, phone_region=phone_region,
        )  # fmt: skip
        count = 0
        for count, _record in enumerate(records, start=1):
            if progress and count % PROGRESS_EVERY == 0:
                progress("check", source.position(), source.size)
        if progress:
            progress("check", source.size, source.size)
    finally:
        source.close()
    if count == 0:
        raise _fail(path.name, None, None, "has no rows to import")
    return plan, count


def _chunks(records: Iterator[Located], size: int) -> Iterator[list[Located]]:
    chunk: list[Located] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_events(engine: Engine, rows: Sequence[segment.EventRow]) -> int:
    """Append one chunk in one transaction; returns how many were already stored (or repeated)."""
    ids = [row.message_id for row in rows]
    with engine.begin() as connection:
        stored = set(connection.scalars(select(Event.message_id).where(Event.message_id.in_(set(ids)))))
        store.append_events(connection, rows)
    return len(ids) - len(set(ids) - stored)


def write_products(
    engine: Engine, infos: Sequence[catalog.ProductInfo], now: datetime
) -> tuple[int, int, int]:
    """Upsert one chunk in one transaction; returns (new, updated, unchanged) product counts."""
    product_ids = list(dict.fromkeys(info.product_id for info in infos))
    variant_ids = [info.variant_id for info in infos if info.variant_id]
    with transaction(engine) as session:
        products = {
            row.product_id: row
            for row in session.scalars(select(Product).where(Product.product_id.in_(product_ids)))
        }
        variants = (
            {
                row.variant_id: row
                for row in session.scalars(
                    select(ProductVariant).where(ProductVariant.variant_id.in_(variant_ids))
                )
            }
            if variant_ids
            else {}
        )
        changing = [
            info
            for info in infos
            if product_adds_information(
                products.get(info.product_id),
                variants.get(info.variant_id) if info.variant_id else None,
                info,
            )
        ]
        catalog.upsert_products(session, changing, now)
    changed_ids = {info.product_id for info in changing}
    new = sum(1 for pid in product_ids if pid not in products)
    updated = sum(1 for pid in product_ids if pid in products and pid in changed_ids)
    return new, updated, len(product_ids) - new - updated


class ImportInterrupted(Exception):
    """The database failed after some chunks were committed; says how far the import got."""

    def __init__(self, message: str, committed_rows: int) -> None:
        super().__init__(message)
        self.message = message
        self.committed_rows = committed_rows


def import_file(
    engine: Engine,
    path: Path,
    *,
    kind: str = "auto",
    now: datetime,
    max_event_bytes: int = 32 * 1024,
    phone_region: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Check the whole file, then write it in chunks (see the module docstring for the guarantees)."""
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file", file=str(path))
    resolved = resolve_kind(path, kind)
    options = {"received_at": now, "max_event_bytes": max_event_bytes, "phone_region": phone_region}
    plan, total = check_file(path, resolved, progress=progress, **options)  # type: ignore[arg-type]
    report = ImportReport(file=path.name, kind=resolved, ignored_columns=plan.ignored_columns)

    source = _Source(path)
    written = 0
    try:
        _, records = _records(source, resolved, file_name=path.name, **options)  # type: ignore[arg-type]
        for chunk in _chunks(records, chunk_size):
            items = [record.item for record in chunk]
            try:
                if resolved == "products":
                    new, updated, unchanged = write_products(engine, items, now)
                    report.products_new += new
                    report.products_updated += updated
                    report.products_unchanged += unchanged
                else:
                    duplicates = write_events(engine, items)
                    report.events += len(items)
                    report.duplicates += duplicates
                    report.events_accepted += len(items) - duplicates
            except Exception as exc:
                raise ImportInterrupted(
                    f"{path.name}: the database failed while writing lines {chunk[0].line}–{chunk[-1].line} "
                    f"({exc}); {written} of {total} rows were committed before it, whole chunks only. "
                    "Running the same import again is safe: what is already stored is skipped.",
                    committed_rows=written,
                ) from exc
            written += len(chunk)
            if progress:
                progress("write", written, total)
    finally:
        source.close()
    report.records = total
    return report


# --- command-line front end: progress bars and the follow-up processing ------------------------


def run_with_progress(
    runtime: Runtime, path: Path, *, kind: str, process: bool, console: Console
) -> tuple[ImportReport, int | None]:
    """`winback import`: the import with progress bars on `console`, then (with `process`) the
    processor until nothing is pending, so profiles show the imported data right away.
    Returns the report and how many events were applied (None when not processed)."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(phase: Phase, done: int, total: int | None) -> None:
            if phase not in tasks:
                label = f"checking {path.name}" if phase == "check" else f"writing {path.name}"
                tasks[phase] = bar.add_task(label, total=total, detail="")
            detail = f"{done:,}/{total:,} rows" if phase == "write" else f"{_size(done)}/{_size(total or 0)}"
            bar.update(tasks[phase], completed=done, total=total, detail=detail)

        report = import_file(
            runtime.engine,
            path,
            kind=kind,
            now=runtime.clock.now(),
            max_event_bytes=runtime.settings.max_event_bytes,
            phone_region=contact.region_of_locale(runtime.settings.store_locale),
            progress=on_progress,
        )
        if not process or report.kind == "products":
            return report, None
        applied = process_all(runtime, bar)
    return report, applied


def _size(count: int) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 100_000 else f"{count / 1e3:,.1f} kB"


def process_all(runtime: Runtime, bar: Progress | None = None) -> int:
    """Run the event processor until nothing is pending; returns how many events it applied."""
    from winback.processing import processor  # written alongside; imported only when needed

    with reading(runtime.engine) as session:
        pending = (
            session.scalar(select(func.count()).select_from(Event).where(Event.processed_at.is_(None))) or 0
        )
    task = bar.add_task("applying events to profiles", total=pending, detail="") if bar and pending else None
    applied = 0
    while True:
        count = processor.process_pending(runtime, limit=PROCESS_BATCH)
        if count == 0:
            break
        applied += count
        if bar is not None and task is not None:
            bar.update(task, completed=min(applied, pending), detail=f"{applied:,} events")
    if bar is not None and task is not None:
        bar.update(task, completed=pending, total=pending, detail=f"{applied:,} events")
    return applied
