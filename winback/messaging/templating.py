"""Message copy in Liquid: one sandboxed environment, the `money` and `date` filters, a checker for
save time and a renderer for send time.

Pure: no database, no network. The copy's contract (the names a template may use) is the table in
docs/flows.md, "Message copy (Liquid)"; `CONTEXT_ROOTS` lists its root names.

- **Strict.** A variable or attribute the context does not have is an error when rendering (the
  message fails with the reason) rather than an empty string in a customer's SMS. The one way to
  make a value optional is explicit: `{{ customer.first_name | default: "there" }}`.
- **Sandboxed.** No template loading (`include` and `render` are not tags here), and resource
  limits on loop iterations, output size, the size of assigned values and context depth.
- **Cached.** Parsed templates are kept in an LRU cache keyed on the source, so the sender parses
  each piece of copy once, however many customers it goes to.
- **Where.** Problems and render errors carry a 1-based line and column in the source.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import babel
import babel.dates
import babel.numbers
from liquid import BoundTemplate, Environment, StrictDefaultUndefined
from liquid.exceptions import FilterArgumentError, LiquidError

from winback.kernel.errors import InvalidInput

CONTEXT_ROOTS: frozenset[str] = frozenset(
    {
        "customer",
        "event",
        "cart",
        "checkout",
        "order",
        "product",
        "discount",
        "discounts",
        "recommendations",
        "shop",
        "unsubscribe_url",
        "message",
    }
)
"""The root names the message renderer provides (docs/flows.md, "Message copy (Liquid)")."""

LOOP_ITERATION_LIMIT = 10_000
OUTPUT_LIMIT_BYTES = 1_000_000  # far above any email; stops a runaway loop early
LOCAL_NAMESPACE_LIMIT_BYTES = 200_000  # what `assign`/`capture` may hold
CONTEXT_DEPTH_LIMIT = 10
TEMPLATE_CACHE_SIZE = 2048

_REMOVED_TAGS = ("include", "render")  # they load other templates


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """Something wrong with a piece of copy, at a 1-based line and column."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class RenderError(InvalidInput):
    """The copy could not be rendered for this message (a missing value, a bad filter argument, a
    limit reached). `line` and `column` (1-based) say where, when known."""

    code = "template_error"

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None and column is not None else ""
        super().__init__(f"{message}{where}", line=line, column=column)
        self.reason = message
        self.line = line
        self.column = column


# --- the environment ----------------------------------------------------------------------------


class _SandboxedEnvironment(Environment):
    loop_iteration_limit: ClassVar[int | None] = LOOP_ITERATION_LIMIT
    output_stream_limit: ClassVar[int | None] = OUTPUT_LIMIT_BYTES
    local_namespace_limit: ClassVar[int | None] = LOCAL_NAMESPACE_LIMIT_BYTES
    context_depth_limit: ClassVar[int] = CONTEXT_DEPTH_LIMIT


@dataclass(frozen=True, slots=True)
class _Audience:
    """Who a render is for: the currency, locale and timezone the filters format in."""

    currency: str
    locale: babel.Locale
    timezone: ZoneInfo
    now: dt.datetime | None = None  # what "now" and "today" mean to `date`


_AUDIENCE: contextvars.ContextVar[_Audience] = contextvars.ContextVar("winback_liquid_audience")


def _environment(*, autoescape: bool) -> Environment:
    env = _SandboxedEnvironment(undefined=StrictDefaultUndefined, autoescape=autoescape, strict_filters=True)
    for name in _REMOVED_TAGS:
        env.tags.pop(name, None)
    env.add_filter("money", money_filter)
    env.add_filter("date", date_filter)
    return env


# --- filters ------------------------------------------------------------------------------------


def _audience() -> _Audience:
    try:
        return _AUDIENCE.get()
    except LookupError:
        raise FilterArgumentError("money and date need a currency, locale and timezone", token=None) from None


def money_filter(value: object) -> str:
    """`{{ product.price | money }}`: the amount in the render's currency, formatted for its locale
    (plain spaces instead of CLDR's no-break spaces)."""
    if value is None:
        return ""
    audience = _audience()
    amount = _to_decimal(value)
    text = babel.numbers.format_currency(amount, audience.currency, locale=audience.locale)
    # CLDR puts no-break spaces in many locales ("5,00\u00a0€"); they are not GSM-7 characters, so one
    # would turn a whole SMS into UCS-2 (70 characters a part instead of 160).
    return text.translate(_PLAIN_SPACES)


_PLAIN_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " "})


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise FilterArgumentError(f"money expected an amount, found {value!r}", token=None)
    try:
        if isinstance(value, Decimal):
            amount = value
        elif isinstance(value, int | float | str):
            amount = Decimal(str(value).strip())
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise FilterArgumentError(f"money expected an amount, found {value!r}", token=None) from None
    if not amount.is_finite():
        raise FilterArgumentError(f"money expected an amount, found {value!r}", token=None)
    return amount


def date_filter(value: object, fmt: object = "%B %-d, %Y") -> str:
    """`{{ discount.expires_at | date: "%B %-d" }}`: the moment in the recipient's timezone.

    Takes a datetime (naive: UTC), an ISO-8601 string (with or without offset; naive: UTC) or a date
    (a calendar day, not converted), or "now"/"today" (the render's `now`). The format is strftime's, with `%-d`-style unpadded numbers and
    month and day names in the render's locale."""
    if value is None:
        return ""
    if not isinstance(fmt, str):
        raise FilterArgumentError(f"date expected a format string, found {fmt!r}", token=None)
    audience = _audience()
    moment = _to_moment(value, audience.now)
    if isinstance(moment, dt.datetime):
        moment = moment.astimezone(audience.timezone)
    return format_date(moment, fmt, audience.locale)


def _to_moment(value: object, now: dt.datetime | None) -> dt.date:
    if value in ("now", "today"):
        if now is None:
            raise FilterArgumentError(f"date: {value!r} needs the time of the render", token=None)
        value = now
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:  # YYYY-MM-DD: a calendar day
                return dt.date.fromisoformat(text)
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise FilterArgumentError(
                f"date expected an ISO-8601 date or time, found {value!r}", token=None
            ) from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    raise FilterArgumentError(f"date expected a date or time, found {value!r}", token=None)


_DIRECTIVE = re.compile(r"%(-?)(.)", re.DOTALL)


def format_date(moment: dt.date, fmt: str, locale: babel.Locale | str = "en_US") -> str:
    """strftime, the same on every platform: `%-d`, `%-m`, `%-H`, `%-I`, `%-M`, `%-S`, `%-j`, `%-y`
    drop the leading zero; `%a %A %b %B %p` come from the locale (CLDR, via Babel); other directives
    are strftime's own. A date (no time) formats its time fields as midnight."""
    loc = locale if isinstance(locale, babel.Locale) else _locale(locale)
    full = moment if isinstance(moment, dt.datetime) else dt.datetime.combine(moment, dt.time())

    def one(match: re.Match[str]) -> str:
        unpadded, code = match.group(1) == "-", match.group(2)
        number = _NUMBERS.get(code)
        if number is not None:
            value, width = number(full)
            return str(value) if unpadded else str(value).zfill(width)
        if unpadded:
            raise FilterArgumentError(f"date: %-{code} is not a format directive", token=None)
        if code == "%":
            return "%"
        named = _NAMES.get(code)
        if named is not None:
            return named(full, loc)
        if code == "Y":
            return str(full.year)
        if code == "e":
            return str(full.day).rjust(2)
        try:
            return full.strftime("%" + code)
        except ValueError:
            raise FilterArgumentError(f"date: %{code} is not a format directive", token=None) from None

    return _DIRECTIVE.sub(one, fmt)


_NUMBERS: dict[str, Callable[[dt.datetime], tuple[int, int]]] = {
    "d": lambda m: (m.day, 2),
    "m": lambda m: (m.month, 2),
    "y": lambda m: (m.year % 100, 2),
    "H": lambda m: (m.hour, 2),
    "I": lambda m: ((m.hour % 12) or 12, 2),
    "M": lambda m: (m.minute, 2),
    "S": lambda m: (m.second, 2),
    "j": lambda m: (m.timetuple().tm_yday, 3),
}

_NAMES: dict[str, Callable[[dt.datetime, babel.Locale], str]] = {
    "a": lambda m, loc: babel.dates.get_day_names("abbreviated", locale=loc)[m.weekday()],
    "A": lambda m, loc: babel.dates.get_day_names("wide", locale=loc)[m.weekday()],
    "b": lambda m, loc: babel.dates.get_month_names("abbreviated", locale=loc)[m.month],
    "h": lambda m, loc: babel.dates.get_month_names("abbreviated", locale=loc)[m.month],
    "B": lambda m, loc: babel.dates.get_month_names("wide", locale=loc)[m.month],
    "p": lambda m, loc: babel.dates.get_period_names("abbreviated", locale=loc)[
        "am" if m.hour < 12 else "pm"
    ],
}


@functools.lru_cache(maxsize=256)
def _locale(name: str) -> babel.Locale:
    try:
        return babel.Locale.parse(name.replace("-", "_"))
    except (ValueError, TypeError, babel.UnknownLocaleError):
        raise RenderError(f"unknown locale {name!r}") from None


@functools.lru_cache(maxsize=1024)
def _timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RenderError(f"unknown timezone {name!r}") from None


def _currency(code: str) -> str:
    upper = code.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", upper) or upper not in _known_currencies():
        raise RenderError(f"unknown currency {code!r}")
    return upper


@functools.cache
def _known_currencies() -> frozenset[str]:
    return frozenset(babel.Locale("en").currencies)


# --- parsed templates ----------------------------------------------------------------------------


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _parsed(source: str, html: bool) -> BoundTemplate:
    return (_HTML if html else _TEXT).from_string(source)


# --- checking -----------------------------------------------------------------------------------


def check(source: str, *, known_roots: Collection[str] = CONTEXT_ROOTS) -> list[TemplateProblem]:
    """The problems in a piece of copy, for save time: syntax errors (then nothing else is checked),
    unknown filters, and references to root variables that are neither in `known_roots` nor made by
    the template itself (`assign`, `capture`, `for`, `forloop`). An empty list: it is fine."""
    try:
        template = _parsed(source, False)
    except LiquidError as exc:
        line, column = _locate_syntax_error(source, exc)
        return [TemplateProblem(line, column, _first_line(exc.message))]
    analysis = template.analyze(include_partials=False)
    problems: list[TemplateProblem] = []
    roots = set(known_roots)
    for root, references in analysis.globals.items():
        if root in roots:
            continue
        for reference in references:
            line, column = _line_column(source, reference.span.index)
            problems.append(TemplateProblem(line, column, f"unknown variable '{reference}'"))
    for name, spans in analysis.filters.items():
        if name in _TEXT.filters:
            continue
        for span in spans:
            line, column = _line_column(source, span.index)
            problems.append(TemplateProblem(line, column, f"unknown filter '{name}'"))
    problems.sort(key=lambda problem: (problem.line, problem.column, problem.message))
    return problems


def _first_line(message: object) -> str:
    return str(message).strip().splitlines()[0] if str(message).strip() else "invalid template"


def _line_column(source: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index (the end of the source when out of range)."""
    index = max(0, min(index, len(source)))
    before = source[:index]
    line = before.count("\n") + 1
    return line, index - (before.rfind("\n") + 1) + 1


_OUTPUT = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_TAG = re.compile(r"\{%-?\s*([a-z_#]+)(.*?)-?%\}", re.DOTALL)


def _locate_syntax_error(source: str, exc: LiquidError) -> tuple[int, int]:
    """Where a syntax error is. Liquid gives most errors a position; for the few it does not, parse
    each output statement and tag on its own (blocks closed artificially) and take the first that
    fails, then any unclosed block; failing that, the end of the source."""
    if exc.token is not None and exc.token.start_index >= 0 and exc.token.source == source:
        return _line_column(source, exc.token.start_index)
    for start, piece in _pieces(source):
        try:
            _TEXT.from_string(piece)
        except LiquidError:
            return _line_column(source, start)
    try:
        unclosed = _TEXT.analyze_tags_from_string(source).unclosed_tags
    except LiquidError:
        unclosed = {}
    spans = [span for spans in unclosed.values() for span in spans]
    if spans:
        return _line_column(source, min(span.index for span in spans))
    return _line_column(source, len(source))


def _pieces(source: str) -> Iterator[tuple[int, str]]:
    for match in _OUTPUT.finditer(source):
        yield match.start(), match.group(0)
    for match in _TAG.finditer(source):
        name = match.group(1)
        if name.startswith("end") or name in {
            "else",
            "elsif",
            "when",
            "break",
            "continue",
            "liquid",
            "comment",
        }:
            continue
        block = name in {"if", "unless", "for", "case", "capture", "tablerow", "ifchanged"}
        yield match.start(), match.group(0) + ("{% end" + name + " %}" if block else "")


# --- rendering ----------------------------------------------------------------------------------


def render(
    source: str,
    context: Mapping[str, Any],
    *,
    currency: str,
    locale: str,
    timezone: str,
    html: bool = False,
    now: dt.datetime | None = None,
) -> str:
    """The copy rendered for one recipient. `currency` (ISO 4217) and `locale` (`en-US`, `de_DE`)
    drive `money`, `timezone` (IANA) drives `date`; `html` escapes every output value (an email's
    HTML part; `| safe` opts out); `now` is what `"now" | date` shows (without it, an error). Raises RenderError naming what went wrong and where."""
    audience = _Audience(_currency(currency), _locale(locale), _timezone(timezone), now)
    try:
        template = _parsed(source, html)
    except LiquidError as exc:
        line, column = _locate_syntax_error(source, exc)
        raise RenderError(_first_line(exc.message), line, column) from None
    token = _AUDIENCE.set(audience)
    try:
        return template.render(dict(context))
    except LiquidError as exc:
        if exc.token is not None and exc.token.start_index >= 0 and exc.token.source == source:
            line, column = _line_column(source, exc.token.start_index)
            raise RenderError(_first_line(exc.message), line, column) from None
        raise RenderError(_first_line(exc.message)) from None
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from None
    finally:
        _AUDIENCE.reset(token)
