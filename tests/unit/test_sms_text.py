"""SMS encoding, length, parts and cost: the GSM 03.38 tables, the part boundaries, and packing that
never splits an escape pair or a surrogate pair."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging import sms_text
from winback.messaging.sms_text import SmsAnalysis, analyse, estimate_cost

BASIC = sorted(sms_text.GSM_BASIC)
EXTENSION = sorted(sms_text.GSM_EXTENSION)
gsm_text = st.text(alphabet=st.sampled_from(BASIC + EXTENSION), max_size=600)
basic_text = st.text(alphabet=st.sampled_from(BASIC), max_size=600)
non_gsm_char = st.characters(codec="utf-8", exclude_categories=["Cs"]).filter(
    lambda c: c not in sms_text.GSM_ALPHABET
)
any_text = st.text(max_size=400)

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)


# --- the tables ---------------------------------------------------------------------------------


def test_the_tables_are_gsm_03_38() -> None:
    assert len(sms_text.GSM_BASIC) == 127  # 128 codes, one of them the escape
    assert set("\f^{}\\[~]|€") == sms_text.GSM_EXTENSION
    assert not sms_text.GSM_BASIC & sms_text.GSM_EXTENSION
    for char in "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r":
        assert char in sms_text.GSM_BASIC
    for char in "`ç’“”…\u00a0ÁíóúÈ\t":  # common look-alikes that are not in it
        assert char not in sms_text.GSM_ALPHABET


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello", SmsAnalysis("GSM-7", 5, 1, 160, 155)),
        ("5€ off {code}", SmsAnalysis("GSM-7", 16, 1, 160, 144)),
        ("Café ’", SmsAnalysis("UCS-2", 6, 1, 70, 64, ("’",))),
        ("Hi 😀", SmsAnalysis("UCS-2", 5, 1, 70, 65, ("😀",))),
        ("a" * 160, SmsAnalysis("GSM-7", 160, 1, 160, 0)),
        ("a" * 161, SmsAnalysis("GSM-7", 161, 2, 153, 145)),
        ("a" * 306, SmsAnalysis("GSM-7", 306, 2, 153, 0)),
        ("a" * 307, SmsAnalysis("GSM-7", 307, 3, 153, 152)),
        ("ł" * 70, SmsAnalysis("UCS-2", 70, 1, 70, 0, ("ł",))),
        ("ł" * 71, SmsAnalysis("UCS-2", 71, 2, 67, 63, ("ł",))),
        ("€" * 80, SmsAnalysis("GSM-7", 160, 1, 160, 0)),
        ("€" * 81, SmsAnalysis("GSM-7", 162, 2, 153, 143)),
        # 306 septets would fill 2 parts, but the 2-septet '€' after 152 does not fit in the first
        ("a" * 152 + "€" + "a" * 152, SmsAnalysis("GSM-7", 306, 3, 153, 152)),
        # 134 units would fill 2 parts, but the emoji after 66 does not fit in the first
        ("ł" * 66 + "😀" + "ł" * 66, SmsAnalysis("UCS-2", 134, 3, 67, 66, ("ł", "😀"))),
    ],
)
def test_analyse_examples(text: str, expected: SmsAnalysis) -> None:
    assert analyse(text) == expected


def test_empty_text_has_no_parts_and_costs_nothing() -> None:
    assert analyse("") == SmsAnalysis("GSM-7", 0, 0, 160, 160)
    assert estimate_cost(analyse(""), price_per_part=Decimal("0.0079")) == 0


def test_cost_is_per_part_for_sms_and_one_price_for_mms() -> None:
    long = analyse("a" * 400)
    assert long.parts == 3
    assert estimate_cost(long, price_per_part=Decimal("0.0079")) == Decimal("0.0237")
    assert estimate_cost(long, price_per_part=Decimal("0.0079"), mms=True, mms_price=Decimal("0.02")) == (
        Decimal("0.02")
    )
    assert estimate_cost(long, price_per_part=Decimal("0.0079"), mms=True) == sms_text.DEFAULT_MMS_PRICE


# --- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(basic_text)
def test_basic_only_text_is_gsm7_one_septet_a_character(text: str) -> None:
    result = analyse(text)
    assert result.encoding == "GSM-7" and result.non_gsm == ()
    assert result.length == len(text)


@PROPERTY
@given(gsm_text)
def test_extension_characters_count_two_septets(text: str) -> None:
    result = analyse(text)
    assert result.encoding == "GSM-7"
    assert result.length == len(text) + sum(char in sms_text.GSM_EXTENSION for char in text)


@PROPERTY
@given(gsm_text, non_gsm_char, st.integers(min_value=0))
def test_one_non_gsm_character_makes_it_ucs2(text: str, char: str, where: int) -> None:
    at = where % (len(text) + 1)
    result = analyse(text[:at] + char + text[at:])
    assert result.encoding == "UCS-2"
    assert result.non_gsm == (char,)
    assert result.length == len((text[:at] + char + text[at:]).encode("utf-16-le")) // 2


@PROPERTY
@given(any_text)
def test_the_invariants_of_an_analysis(text: str) -> None:
    result = analyse(text)
    single, multi = (160, 153) if result.encoding == "GSM-7" else (70, 67)
    assert 0 <= result.remaining <= result.per_part
    assert result.parts == 0 or result.remaining < result.per_part
    if result.length == 0:
        assert result.parts == 0
    elif result.length <= single:
        assert (result.parts, result.per_part) == (1, single)
    else:
        assert result.per_part == multi
        # packing can only waste one unit a part, never gain
        assert math.ceil(result.length / multi) <= result.parts <= math.ceil(result.length / (multi - 1))


@PROPERTY
@given(st.sampled_from(BASIC + EXTENSION + ["ł", "😀", "’"]), st.integers(min_value=1, max_value=400))
def test_single_part_boundary(char: str, count: int) -> None:
    result = analyse(char * count)
    limit = 160 if result.encoding == "GSM-7" else 70
    assert (result.parts == 1) == (result.length <= limit)


@pytest.mark.parametrize(("char", "limit"), [("a", 160), ("ł", 70)])
def test_the_exact_single_part_limits(char: str, limit: int) -> None:
    assert analyse(char * limit).parts == 1
    assert analyse(char * (limit + 1)).parts == 2


@PROPERTY
@given(st.lists(st.sampled_from(["a", "€", "ł", "😀", "{", "é"]), max_size=500))
def test_parts_never_decrease_as_text_grows(chars: list[str]) -> None:
    previous = 0
    text = ""
    for char in chars:
        text += char
        parts = analyse(text).parts
        # appending can switch GSM-7 to UCS-2 (more parts) but never needs fewer parts
        assert parts >= previous
        previous = parts


@PROPERTY
@given(st.text(alphabet=st.sampled_from(["a", "€", "ł", "😀", "]"]), max_size=600))
def test_packing_never_splits_an_escape_pair_or_a_surrogate_pair(text: str) -> None:
    encoding, sizes = sms_text.units(text)
    result = analyse(text)
    if result.parts <= 1:
        return
    parts = sms_text.pack(sizes, result.per_part)
    assert len(parts) == result.parts
    assert all(units <= result.per_part for units in parts)
    # rebuild the parts as text: each part holds whole characters and its units add up
    position = 0
    for units in parts:
        taken = 0
        while position < len(text) and taken + sizes[position] <= units:
            taken += sizes[position]
            position += 1
        assert taken == units
    assert position == len(text)
    # and a part ends early only when the next character would not fit
    position = 0
    for units in parts[:-1]:
        taken = 0
        while taken < units:
            taken += sizes[position]
            position += 1
        assert units + sizes[position] > result.per_part
    assert result.remaining == result.per_part - parts[-1]
