"""Inbound SMS keywords: the whole reply must be the keyword, whatever its case, spacing and
trailing punctuation."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging import keywords
from winback.messaging.keywords import HELP_WORDS, START_WORDS, STOP_WORDS, classify

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)
EXPECTED = {
    **{word: "stop" for word in STOP_WORDS},
    **{word: "start" for word in START_WORDS},
    **{word: "help" for word in HELP_WORDS},
}
SPACES = st.text(alphabet=st.sampled_from([" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2003", "\u200b"]))
PUNCTUATION = st.text(alphabet=st.sampled_from([".", "!", "?", "…", "。", "！", "？", "'", '"', ")"]))


def test_the_standard_words() -> None:
    assert {"stop", "stopall", "unsubscribe", "cancel", "end", "quit"} == STOP_WORDS
    assert {"start", "unstop", "yes"} == START_WORDS
    assert {"help", "info"} == HELP_WORDS


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", "stop"),
        ("Stop", "stop"),
        ("stop.", "stop"),
        ("  STOP!! ", "stop"),
        ("Unsubscribe", "stop"),
        ("STOPALL", "stop"),
        ("cancel\n", "stop"),
        ("End", "stop"),
        ("quit", "stop"),
        ("ＳＴＯＰ", "stop"),  # full-width letters
        ("\u3000stop\u3000", "stop"),  # ideographic spaces
        ("\u200bSTOP\ufeff", "stop"),  # zero-width characters pasted around it
        ("START", "start"),
        ("Yes!", "start"),
        ("unstop", "start"),
        ("HELP", "help"),
        ("help?", "help"),
        ("Info", "help"),
        ("stop it please", None),
        ("please stop", None),
        ("don't stop", None),
        ("STOP ALL", None),
        ("S.T.O.P", None),
        ("stopp", None),
        ("no", None),
        ("yes please", None),
        ("", None),
        ("   ", None),
        ("!!!", None),
        ("Where is my order?", None),
    ],
)
def test_classify(body: str, expected: str | None) -> None:
    assert classify(body) == expected


@PROPERTY
@given(st.sampled_from(sorted(EXPECTED)), st.data(), SPACES, SPACES, PUNCTUATION)
def test_any_case_surrounding_space_and_trailing_punctuation(
    word: str, data: st.DataObject, before: str, after: str, punctuation: str
) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    cased = "".join(char.upper() if flip else char for char, flip in zip(word, flips, strict=True))
    assert classify(before + cased + punctuation + after) == EXPECTED[word]


@PROPERTY
@given(st.sampled_from(sorted(EXPECTED)), st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1))
def test_a_keyword_with_more_words_is_not_a_keyword(word: str, more: str) -> None:
    assert classify(f"{word} {more}") is None
    assert classify(f"{more} {word}") is None


@PROPERTY
@given(st.text(max_size=50))
def test_classify_never_fails_and_only_answers_for_a_keyword(body: str) -> None:
    result = classify(body)
    assert result in {None, "stop", "start", "help"}
    if result is not None:
        letters = "".join(char for char in unicodedata.normalize("NFKC", body).casefold() if char.isalnum())
        assert EXPECTED[letters] == result


@pytest.mark.parametrize(
    ("setting", "to_number", "replies"),
    [
        ("auto", "48737", True),  # a short code: Twilio leaves the answer to us
        ("auto", "+14155550100", False),  # a long code: Twilio answers itself
        ("auto", "+18005550100", False),  # toll-free likewise
        ("auto", "", False),
        ("always", "+14155550100", True),
        ("never", "48737", False),
    ],
)
def test_who_answers_a_keyword(setting: str, to_number: str, replies: bool) -> None:
    assert keywords.winback_replies(setting, to_number) is replies


def test_short_codes_are_three_to_eight_digits_without_a_plus() -> None:
    assert [keywords.is_short_code(n) for n in ("48737", "123", "12345678", "12", "123456789", "+48737", "4873a")] == [
        True, True, True, False, False, False, False,
    ]  # fmt: skip
