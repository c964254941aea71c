"""CSV in and out of segments and lists: member export, and list import by email/user id/phone.

Export streams: members are read in keyset batches of `EXPORT_BATCH` by customer id, each batch in
its own short read, so a million-member export neither holds a transaction open nor builds the
file in memory.

Import reads the file twice. The first pass checks that it is CSV with an identifying column
(`email`, `user_id` or `phone`, common aliases accepted) and touches nothing; a malformed file is
refused whole with the line named. The second pass resolves each row to a customer and adds the
found ones to the list in chunks of `IMPORT_CHUNK` rows, one transaction each, through
`membership.add_to_list`. Rows whose person is unknown or whose value is invalid are reported with
their line numbers, never silently dropped. Re-importing a file changes nothing (already there).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TextIO

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from winback.db.engine import reading, transaction
from winback.db.models import Customer, CustomerIdentity, ListMembership, SegmentMembership
from winback.importing import normalise_header
from winback.kernel.errors import InvalidInput
from winback.profiles import contact

EXPORT_BATCH = 1000  # members per read while exporting
IMPORT_CHUNK = 1000  # rows per write transaction while importing
REPORT_LINES_MAX = 1000  # line numbers listed per outcome in an import report (counts are exact)

SEGMENT_MEMBER_COLUMNS = ("id", "user_id", "email", "phone", "first_name", "last_name", "entered_at")
LIST_MEMBER_COLUMNS = ("id", "user_id", "email", "phone", "first_name", "last_name", "added_at", "source")

Kind = Literal["user_id", "email", "phone"]
KIND_ORDER: tuple[Kind, ...] = ("user_id", "email", "phone")  # which identifier wins on a row
IDENTIFIER_ALIASES: dict[str, Kind] = {
    **dict.fromkeys(("user_id", "userid", "customer_id", "external_id"), "user_id"),
    **dict.fromkeys(("email", "email_address", "e_mail"), "email"),
    **dict.fromkeys(("phone", "phone_number", "mobile", "mobile_phone"), "phone"),
}


class ListImportFailed(InvalidInput):
    """The file cannot be read as a list of people; nothing was written."""

    code = "import_failed"


# --- export -------------------------------------------------------------------------------------


def _live() -> Any:
    return Customer.merged_into_id.is_(None) & Customer.erased_at.is_(None)


def segment_members_statement(segment_id: int, after_id: int | None, limit: int) -> Select[Any]:
    """Live members of a segment in customer id order, after `after_id`, at most `limit`."""
    statement = (
        select(
            Customer.id,
            Customer.user_id,
            Customer.email,
            Customer.phone,
            Customer.first_name,
            Customer.last_name,
            SegmentMembership.entered_at,
        )
        .join(Customer, Customer.id == SegmentMembership.customer_id)
        .where(SegmentMembership.segment_id == segment_id, _live())
    )
    if after_id is not None:
        statement = statement.where(SegmentMembership.customer_id > after_id)
    return statement.order_by(SegmentMembership.customer_id).limit(limit)


def list_members_statement(list_id: int, after_id: int | None, limit: int) -> Select[Any]:
    """Live members of a list in customer id order, after `after_id`, at most `limit`."""
    statement = (
        select(
            Customer.id,
            Customer.user_id,
            Customer.email,
            Customer.phone,
            Customer.first_name,
            Customer.last_name,
            ListMembership.added_at,
            ListMembership.source,
        )
        .join(Customer, Customer.id == ListMembership.customer_id)
        .where(ListMembership.list_id == list_id, _live())
    )
    if after_id is not None:
        statement = statement.where(ListMembership.customer_id > after_id)
    return statement.order_by(ListMembership.customer_id).limit(limit)


def iter_members(
    engine: Engine, statement_for: Callable[[int | None, int], Select[Any]], batch: int = EXPORT_BATCH
) -> Iterator[Sequence[Any]]:
    """Every row `statement_for(after_id, limit)` pages through, one short read per batch."""
    after_id: int | None = None
    while True:
        with reading(engine) as session:
            rows = list(session.execute(statement_for(after_id, batch)))
        yield from rows
        if len(rows) < batch:
            return
        after_id = rows[-1][0]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def csv_chunks(
    header: Sequence[str], rows: Iterable[Sequence[Any]], rows_per_chunk: int = 500
) -> Iterator[str]:
    """The CSV text (header first, RFC 4180 quoting, CRLF line ends) in chunks for streaming."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    pending = 1
    for row in rows:
        writer.writerow([_cell(value) for value in row])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending or buffer.tell():
        yield buffer.getvalue()


# --- import -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One data row of an import: its line and the identifiers it gives (kind → raw value)."""

    line: int
    values: dict[Kind, str]


@dataclass(slots=True)
class Outcome:
    """How many rows ended one way, and (up to REPORT_LINES_MAX of) their line numbers."""

    count: int = 0
    lines: list[int] = field(default_factory=list)

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < REPORT_LINES_MAX:
            self.lines.append(line)


@dataclass(slots=True)
class Problem:
    line: int
    column: str
    value: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What a list import did. `added + already_members + not_found + invalid == rows`."""

    file: str
    rows: int = 0
    added: Outcome = field(default_factory=Outcome)
    already_members: Outcome = field(default_factory=Outcome)
    not_found: Outcome = field(default_factory=Outcome)
    invalid: Outcome = field(default_factory=Outcome)
    problems: list[Problem] = field(default_factory=list)  # not found and invalid rows, first ones

    def problem(self, outcome: Outcome, line: int, column: str, value: str, reason: str) -> None:
        outcome.add(line)
        if len(self.problems) < REPORT_LINES_MAX:
            self.problems.append(Problem(line=line, column=column, value=value, reason=reason))

    def summary(self) -> str:
        return (
            f"{self.file}: {self.rows} rows, {self.added.count} added, {self.already_members.count} already "
            f"members, {self.not_found.count} not found, {self.invalid.count} invalid"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "added": self.added.count,
            "already_members": self.already_members.count,
            "not_found": self.not_found.count,
            "invalid": self.invalid.count,
            "lines": {
                "added": self.added.lines,
                "already_members": self.already_members.lines,
                "not_found": self.not_found.lines,
                "invalid": self.invalid.lines,
            },
            "problems": [
                {"line": p.line, "column": p.column, "value": p.value, "reason": p.reason}
                for p in sorted(self.problems, key=lambda problem: problem.line)
            ],
        }


def _fail(file_name: str, line: int, reason: str) -> ListImportFailed:
    return ListImportFailed(
        f"{file_name}, line {line}: {reason}; nothing was imported", file=file_name, line=line
    )


def read_rows(text: TextIO, file_name: str) -> Iterator[ContactRow]:
    """The rows of a CSV of people; ListImportFailed naming the line for anything unreadable."""
    try:
        header_line = text.readline()
    except UnicodeDecodeError:
        raise _fail(file_name, 1, "is not UTF-8 text; save the file as UTF-8") from None
    if not header_line.strip():
        raise _fail(file_name, 1, "the first line must be a header naming an email, user_id or phone column")
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    [raw_header] = list(csv.reader([header_line], delimiter=delimiter))
    columns: dict[int, Kind] = {}
    for index, raw in enumerate(raw_header):
        kind = IDENTIFIER_ALIASES.get(normalise_header(raw))
        if kind is None:
            continue
        if kind in columns.values():
            raise _fail(file_name, 1, f"two columns give the {kind} ('{raw}' is the second)")
        columns[index] = kind
    if not columns:
        raise _fail(
            file_name, 1, f"no email, user_id or phone column among: {', '.join(raw_header) or '(none)'}"
        )
    reader = csv.reader(text, delimiter=delimiter)
    last_line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise _fail(file_name, last_line + 1, "is not UTF-8 text; save the file as UTF-8") from None
        except csv.Error as exc:
            raise _fail(file_name, last_line + 1, f"is not valid CSV: {exc}") from None
        line = last_line + 1
        last_line = reader.line_num + 1  # the header was read before the reader started
        if not any(cell.strip() for cell in cells):
            continue
        values = {kind: cells[index].strip() for index, kind in columns.items() if index < len(cells)}
        yield ContactRow(line=line, values={kind: value for kind, value in values.items() if value})


def check(open_text: Callable[[], TextIO], file_name: str) -> int:
    """First pass: the number of data rows; ListImportFailed if the file cannot be read whole."""
    with open_text() as text:
        return sum(1 for _row in read_rows(text, file_name))


@dataclass(frozen=True, slots=True)
class _Wanted:
    line: int
    kind: Kind
    value: str  # normalised


def _normalise(
    row: ContactRow, phone_region: str | None
) -> tuple[list[_Wanted], list[tuple[Kind, str, str]]]:
    """The row's usable identifiers in priority order, and (kind, raw, reason) for unusable ones."""
    usable: list[_Wanted] = []
    unusable: list[tuple[Kind, str, str]] = []
    for kind in KIND_ORDER:
        raw = row.values.get(kind)
        if raw is None:
            continue
        if kind == "email":
            value = contact.normalise_email(raw)
            reason = "not a valid email address"
        elif kind == "phone":
            value = contact.normalise_phone(raw, phone_region)
            reason = "not a valid phone number (use E.164, e.g. +14155550123)"
        else:
            value, reason = raw, ""
        if value is None:
            unusable.append((kind, raw, reason))
        else:
            usable.append(_Wanted(line=row.line, kind=kind, value=value))
    return usable, unusable


def resolve_customers(session: Session, kind: Kind, values: Iterable[str]) -> dict[str, int]:
    """value → id of the live customer it identifies (through identities first, then profile fields)."""
    wanted = set(values)
    if not wanted:
        return {}
    found: dict[str, int] = {}
    for value, customer_id in session.execute(
        select(CustomerIdentity.value, CustomerIdentity.customer_id)
        .join(Customer, Customer.id == CustomerIdentity.customer_id)
        .where(CustomerIdentity.kind == kind, CustomerIdentity.value.in_(wanted), _live())
    ):
        found[value] = customer_id
    rest = wanted - found.keys()
    if rest:
        column = getattr(Customer, kind)
        for value, customer_id in session.execute(
            select(column, Customer.id).where(column.in_(rest), _live()).order_by(Customer.id.desc())
        ):
            found[value] = customer_id  # descending: the oldest profile with that value wins
    return found


AddToList = Callable[[Session, int, list[int]], None]
"""Adds customer ids to a list inside the session's transaction (membership.add_to_list, bound)."""


def _apply_chunk(
    session: Session, list_id: int, rows: list[ContactRow], phone_region: str | None, add: AddToList,
    report: ImportReport,
) -> None:  # fmt: skip
    wanted: dict[int, list[_Wanted]] = {}
    for row in rows:
        usable, unusable = _normalise(row, phone_region)
        wanted[row.line] = usable
        if not usable:
            if unusable:
                kind, raw, reason = unusable[0]
                report.problem(report.invalid, row.line, kind, raw, reason)
            else:
                report.problem(report.invalid, row.line, "", "", "no email, user_id or phone on this row")
    by_kind: dict[Kind, dict[str, int]] = {
        kind: resolve_customers(
            session, kind, (item.value for items in wanted.values() for item in items if item.kind == kind)
        )
        for kind in KIND_ORDER
    }
    line_customer: dict[int, int] = {}
    for row in rows:
        usable = wanted[row.line]
        if not usable:
            continue
        customer_id = next(
            (by_kind[item.kind][item.value] for item in usable if item.value in by_kind[item.kind]), None
        )
        if customer_id is None:
            first = usable[0]
            report.problem(
                report.not_found,
                row.line,
                first.kind,
                row.values[first.kind],
                f"no customer with this {first.kind}",
            )
        else:
            line_customer[row.line] = customer_id
    if not line_customer:
        return
    present = set(
        session.scalars(
            select(ListMembership.customer_id).where(
                ListMembership.list_id == list_id, ListMembership.customer_id.in_(set(line_customer.values()))
            )
        )
    )
    new: list[int] = []
    for line, customer_id in sorted(line_customer.items()):
        if customer_id in present:
            report.already_members.add(line)
        else:
            report.added.add(line)
            present.add(customer_id)  # a person named twice in the file is added once
            new.append(customer_id)
    if new:
        add(session, list_id, new)


def import_rows(
    engine: Engine,
    list_id: int,
    open_text: Callable[[], TextIO],
    file_name: str,
    add: AddToList,
    *,
    phone_region: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Check the whole file, then add the people it names to the list, chunk by chunk."""
    check(open_text, file_name)
    report = ImportReport(file=file_name)
    with open_text() as text:
        chunk: list[ContactRow] = []
        for row in read_rows(text, file_name):
            chunk.append(row)
            if len(chunk) >= IMPORT_CHUNK:
                _write_chunk(engine, list_id, chunk, phone_region, add, report, on_progress)
                chunk = []
        if chunk:
            _write_chunk(engine, list_id, chunk, phone_region, add, report, on_progress)
    return report


def _write_chunk(
    engine: Engine, list_id: int, chunk: list[ContactRow], phone_region: str | None, add: AddToList,
    report: ImportReport, on_progress: Callable[[int], None] | None,
) -> None:  # fmt: skip
    with transaction(engine) as session:
        _apply_chunk(session, list_id, chunk, phone_region, add, report)
    report.rows += len(chunk)
    if on_progress is not None:
        on_progress(report.rows)
