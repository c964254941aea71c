"""Message copy in Liquid: the money and date filters, strictness, the sandbox's limits, the save-time
checker with positions, and every piece of copy in the ready-flow library."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from winback.flows import library
from winback.kernel.errors import InvalidInput
from winback.messaging import templating as t
from winback.messaging.templating import RenderError, TemplateProblem

US = {"currency": "USD", "locale": "en-US", "timezone": "America/New_York"}
DE = {"currency": "EUR", "locale": "de-DE", "timezone": "Europe/Berlin"}


def _render(source: str, context: dict[str, Any] | None = None, **audience: Any) -> str:
    return t.render(source, context or {}, **{**US, **audience})


# --- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "audience", "expected"),
    [
        (5, US, "$5.00"),
        (Decimal("5"), DE, "5,00 €"),  # a plain space, not CLDR's no-break space
        ("1234.5", US, "$1,234.50"),
        ("1234.5", DE, "1.234,50 €"),
        (19.99, US, "$19.99"),
        (Decimal("-3.5"), US, "-$3.50"),
        ("1500", {"currency": "JPY", "locale": "ja-JP", "timezone": "Asia/Tokyo"}, "￥1,500"),
        (" 7 ", {"currency": "gbp", "locale": "en_GB", "timezone": "Europe/London"}, "£7.00"),
    ],
)
def test_money_formats_in_the_renders_currency_and_locale(
    amount: object, audience: dict[str, str], expected: str
) -> None:
    assert _render("{{ amount | money }}", {"amount": amount}, **audience) == expected


def test_money_of_nil_is_empty() -> None:
    assert _render("[{{ amount | money }}]", {"amount": None}) == "[]"


@pytest.mark.parametrize("amount", ["five", True, [], {"a": 1}, "NaN", "Infinity"])
def test_money_refuses_what_is_not_an_amount(amount: object) -> None:
    with pytest.raises(RenderError, match="money expected an amount") as caught:
        _render("Only {{ amount | money }}", {"amount": amount})
    assert (caught.value.line, caught.value.column) == (1, 18)


# --- date ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-05T02:30:00Z", "March 4 21:30"),  # UTC → New York (EST)
        ("2026-03-05T02:30:00", "March 4 21:30"),  # naive: UTC
        ("2026-07-05T02:30:00+02:00", "July 4 20:30"),  # an offset, to New York (EDT)
        (dt.datetime(2026, 7, 5, 4, 0, tzinfo=dt.UTC), "July 5 00:00"),
        (dt.datetime(2026, 7, 5, 3, 59), "July 4 23:59"),  # naive: UTC
        (dt.date(2026, 12, 25), "December 25 00:00"),  # a calendar day is not converted
        ("2026-12-25", "December 25 00:00"),
    ],
)
def test_date_converts_to_the_recipients_timezone(value: object, expected: str) -> None:
    assert _render('{{ d | date: "%B %-d %H:%M" }}', {"d": value}) == expected


def test_date_uses_the_copys_forms_and_the_locales_names() -> None:
    when = {"d": "2026-05-01T08:00:00Z"}
    assert _render('{{ d | date: "%B %-d" }}', when) == "May 1"
    assert _render('{{ d | date: "%b %-d" }}', when) == "May 1"
    assert _render('{{ d | date: "%A %-d. %B" }}', when, **DE) == "Freitag 1. Mai"
    assert _render('{{ d | date: "%a %b %-d" }}', {"d": "2026-03-09T12:00:00Z"}, **DE) == "Mo. März 9"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%-d/%-m %-H:%-M:%-S", "5/3 7:4:9"),
        ("%d/%m %H:%M:%S", "05/03 07:04:09"),
        ("%-I %p / %I", "7 AM / 07"),
        ("%-j %j %y %-y %Y", "64 064 06 6 2006"),
        ("%e|%%|%-d%%", " 5|%|5%"),
        ("no directives", "no directives"),
    ],
)
def test_format_date_handles_unpadded_directives_on_every_platform(fmt: str, expected: str) -> None:
    assert t.format_date(dt.datetime(2006, 3, 5, 7, 4, 9), fmt, "en_US") == expected


def test_format_date_twelve_hour_clock_around_midnight_and_noon() -> None:
    assert t.format_date(dt.datetime(2026, 1, 1, 0, 5), "%-I:%M %p", "en") == "12:05 AM"
    assert t.format_date(dt.datetime(2026, 1, 1, 12, 5), "%-I:%M %p", "en") == "12:05 PM"
    assert t.format_date(dt.datetime(2026, 1, 1, 23, 5), "%-I:%M %p", "en") == "11:05 PM"


def test_date_of_now_is_the_renders_time() -> None:
    now = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)
    assert _render('© {{ "now" | date: "%Y" }}', now=now) == "© 2025"  # still New Year's Eve in New York
    assert _render('{{ "today" | date: "%-d %b" }}', now=now, timezone="Asia/Tokyo") == "1 Jan"
    with pytest.raises(RenderError, match="needs the time of the render"):
        _render('{{ "now" | date: "%Y" }}')


def test_date_of_nil_is_empty_and_a_bad_date_is_an_error() -> None:
    assert _render('[{{ d | date: "%B" }}]', {"d": None}) == "[]"
    with pytest.raises(RenderError, match="ISO-8601"):
        _render('{{ d | date: "%B" }}', {"d": "next tuesday"})
    with pytest.raises(RenderError, match="date expected a date"):
        _render('{{ d | date: "%B" }}', {"d": 12})
    with pytest.raises(RenderError, match="not a format directive"):
        _render('{{ d | date: "%-Q" }}', {"d": "2026-01-01T00:00:00Z"})


def test_the_other_standard_filters_are_kept() -> None:
    source = '{{ name | upcase }} {{ items | size }} {{ "a,b" | split: "," | join: "+" }} {{ 3 | plus: 4 }}'
    assert _render(source, {"name": "ana", "items": [1, 2]}) == "ANA 2 a+b 7"


# --- strictness, escaping, limits ---------------------------------------------------------------


def test_an_unknown_variable_or_attribute_fails_the_render_naming_it_and_where() -> None:
    with pytest.raises(RenderError, match="nickname") as caught:
        _render("Hi\n  {{ customer.nickname }}!", {"customer": {"first_name": "Ana"}})
    assert (caught.value.line, caught.value.column) == (2, 6)
    with pytest.raises(RenderError, match="shop"):
        _render("{{ shop.name }}", {})


def test_render_error_is_an_invalid_input_with_its_position() -> None:
    with pytest.raises(InvalidInput) as caught:
        _render("{{ nope }}")
    assert isinstance(caught.value, RenderError)
    assert caught.value.to_dict()["error"] | {"message": ""} == {
        "code": "template_error",
        "message": "",
        "line": 1,
        "column": 4,
    }


def test_default_is_the_explicit_way_to_make_a_value_optional() -> None:
    source = 'Hi {{ customer.first_name | default: "there" }}'
    assert _render(source, {"customer": {}}) == "Hi there"
    assert _render(source, {"customer": {"first_name": "Ana"}}) == "Hi Ana"


def test_html_renders_escape_values_and_text_renders_do_not() -> None:
    context = {"product": {"name": 'Tom & Jerry <"mug">'}}
    assert _render("<p>{{ product.name }}</p>", context, html=True) == (
        "<p>Tom &amp; Jerry &lt;&#34;mug&#34;&gt;</p>"
    )
    assert _render("{{ product.name }}", context) == 'Tom & Jerry <"mug">'
    assert _render("{{ product.name | safe }}", context, html=True) == 'Tom & Jerry <"mug">'


def test_loops_and_output_are_limited() -> None:
    with pytest.raises(RenderError, match="loop iteration limit"):
        _render("{% for i in (1..20000) %}{% endfor %}")
    with pytest.raises(RenderError, match="limit"):
        _render("{% for i in (1..5000) %}{{ big }}{% endfor %}", {"big": "x" * 1000})
    with pytest.raises(RenderError, match="limit"):
        _render('{% capture s %}{% for i in (1..5000) %}{{ "x" | append: big }}{% endfor %}{% endcapture %}',
                {"big": "y" * 100})  # fmt: skip


def test_templates_cannot_load_other_templates() -> None:
    for source in ["{% include 'secrets' %}", "{% render 'secrets' %}"]:
        assert [p.message for p in t.check(source)] == [f"unexpected tag '{source.split()[1]}'"]
        with pytest.raises(RenderError):
            _render(source)


@pytest.mark.parametrize(
    ("audience", "message"),
    [
        ({"currency": "XYZ"}, "unknown currency"),
        ({"currency": "dollars"}, "unknown currency"),
        ({"locale": "xx-QQ"}, "unknown locale"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ],
)
def test_an_unknown_currency_locale_or_timezone_is_refused(audience: dict[str, str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        _render("hello", **audience)


def test_parsed_templates_are_cached() -> None:
    source = "Cache {{ customer.first_name }} 7b1f"
    _render(source, {"customer": {"first_name": "A"}})
    before = t._parsed.cache_info()
    for name in ["B", "C", "D"]:
        assert _render(source, {"customer": {"first_name": name}}) == f"Cache {name} 7b1f"
    after = t._parsed.cache_info()
    assert after.hits - before.hits == 3 and after.misses == before.misses


def test_concurrent_renders_keep_their_own_audience() -> None:
    source = '{{ a | money }} {{ d | date: "%B" }}'
    context = {"a": 5, "d": "2026-05-01T12:00:00Z"}

    def one(i: int) -> str:
        return _render(source, context, **(DE if i % 2 else US))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(200)))
    assert set(results[0::2]) == {"$5.00 May"} and set(results[1::2]) == {"5,00 € Mai"}


# --- check --------------------------------------------------------------------------------------


def test_check_accepts_good_copy_with_locals() -> None:
    source = (
        "{% assign greeting = 'Hi' %}{% capture who %}{{ customer.first_name }}{% endcapture %}"
        "{{ greeting }} {{ who }}\n"
        "{% for product in recommendations.similar limit: 4 %}{{ forloop.index }}. {{ product.name }} "
        "{{ product.price | money }}{% endfor %}\n"
        '{{ discount.expires_at | date: "%B %-d" }} {{ unsubscribe_url }}'
    )
    assert t.check(source) == []


def test_check_names_unknown_variables_with_positions() -> None:
    source = "Hi {{ customer.first_name }},\n  {{ costumer.first_name }} {{ coupon }}"
    assert t.check(source) == [
        TemplateProblem(2, 6, "unknown variable 'costumer.first_name'"),
        TemplateProblem(2, 32, "unknown variable 'coupon'"),
    ]


def test_check_takes_the_roots_the_caller_knows() -> None:
    assert t.check("{{ order.id }} {{ extra }}", known_roots={"order", "extra"}) == []
    assert [p.message for p in t.check("{{ order.id }}", known_roots={"customer"})] == [
        "unknown variable 'order.id'"
    ]


def test_check_knows_a_loop_variable_ends_with_its_loop() -> None:
    source = "{% for item in checkout.items %}{{ item.name }}{% endfor %}{{ item.name }}"
    assert t.check(source) == [TemplateProblem(1, 63, "unknown variable 'item.name'")]


def test_check_names_unknown_filters() -> None:
    assert t.check("{{ product.price | monee }}") == [TemplateProblem(1, 20, "unknown filter 'monee'")]


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("Hi {{ customer.first_name ", 1, 4),
        ("Hi\n{% if customer.first_name %}yes", 2, 4),
        ("Hi\n  {% for %}{% endfor %}", 2, 6),
        ("{% endfor %}", 1, 4),
        ("ok\nok {{ customer.first_name | }}", 2, 4),
        ("ok\n{% assign x = %}", 2, 1),
        ("{{ shop.name }} {{ a.b[ }}", 1, 17),
        ("{% frobnicate %}", 1, 4),
    ],
)
def test_check_reports_a_syntax_error_with_its_line_and_column(source: str, line: int, column: int) -> None:
    problems = t.check(source)
    assert len(problems) == 1
    assert (problems[0].line, problems[0].column) == (line, column), problems[0]
    assert problems[0].message
    with pytest.raises(RenderError) as caught:
        _render(source)
    assert (caught.value.line, caught.value.column) == (line, column)


# --- the ready flows' copy ----------------------------------------------------------------------

MESSAGE_ACTIONS = {"send_sms", "send_mms", "send_email", "send_push", "notify_slack"}
TEXT_FIELDS = ("body", "text", "html", "subject", "title")
REQUIRED = {"integer": 3, "number": 3, "string": "capsules-100"}


def _library_copy() -> list[tuple[str, str, str, str]]:
    found = []
    for info in library.templates():
        required = {p.name: REQUIRED[p.type] for p in info.parameters if p.required}
        flow = library.render(info.name, **required)
        for node in flow.nodes:
            if node.type != "action" or node.action.type not in MESSAGE_ACTIONS:
                continue
            for field in TEXT_FIELDS:
                value = getattr(node.action, field, None)
                if isinstance(value, str):
                    found.append((info.name, node.id, field, value))
    return found


LIBRARY_COPY = _library_copy()


def test_the_library_has_copy_for_every_template() -> None:
    assert {name for name, *_ in LIBRARY_COPY} == {info.name for info in library.templates()}


@pytest.mark.parametrize(("template", "node", "field", "source"), LIBRARY_COPY, ids=lambda v: str(v)[:30])
def test_every_message_in_the_ready_flows_passes_the_checker(
    template: str, node: str, field: str, source: str
) -> None:
    assert t.check(source) == [], f"{template}/{node}/{field}"


def test_the_abandoned_cart_sms_renders_for_a_customer() -> None:
    flow = library.render("abandoned-cart")
    sms = next(node for node in flow.nodes if node.id == "sms")
    assert sms.type == "action" and sms.action.type == "send_sms"
    context = {
        "customer": {"first_name": "Ana", "last_name": "Silva", "email": "ana@example.com"},
        "event": {"checkout_id": "c-981", "value": "84.00"},
        "checkout": {"recovery_url": "https://shop.example/r/c981", "items": []},
        "discount": {"code": "WB-7KQ2M9XD", "value": Decimal("5"), "expires_at": "2026-05-04T09:00:00Z"},
        "discounts": {"amount_off": {"code": "WB-7KQ2M9XD"}},
        "shop": {"name": "Northwind Coffee", "url": "https://shop.example"},
        "unsubscribe_url": "https://shop.example/u/abc",
    }
    assert t.render(sms.action.body, context, currency="USD", locale="en-US", timezone="America/Chicago") == (
        "Ana, still thinking it over? Here's $5.00 off your cart at Northwind Coffee with code WB-7KQ2M9XD: "
        "https://shop.example/r/c981 Reply STOP to opt out"
    )
    german = t.render(sms.action.body, context, currency="EUR", locale="de-DE", timezone="Europe/Berlin")
    assert "Here's 5,00 € off" in german
