"""Finding links in text and HTML and rewriting them to tracked links (pure)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winback.messaging.links import (
    LINK_ALPHABET,
    find_links,
    new_code,
    rewrite_html,
    rewrite_text,
    should_track,
    tracking_base,
)

BASE = "https://t.example/l/"


def _counter() -> tuple[Callable[[str], str], list[str]]:
    """A shorten that numbers the URLs it is asked for, and the list of them."""
    asked: list[str] = []

    def shorten(url: str) -> str:
        asked.append(url)
        return f"{BASE}c{len(asked)}"

    return shorten, asked


def _urls(text: str) -> list[str]:
    return [url for _, _, url in find_links(text)]


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("Shop now: https://shop.example/sale.", ["https://shop.example/sale"]),
        (
            "a https://a.example, b http://b.example; c https://c.example!",
            ["https://a.example", "http://b.example", "https://c.example"],
        ),
        ("(see https://shop.example/a)", ["https://shop.example/a"]),
        ("https://en.wikipedia.org/wiki/Foo_(bar) is balanced", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
        ("(https://en.wikipedia.org/wiki/Foo_(bar))", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
        ("[cart](https://shop.example/cart?x=1&y=2)", ["https://shop.example/cart?x=1&y=2"]),
        ("'https://q.example/p' and \"https://q.example/d\"", ["https://q.example/p", "https://q.example/d"]),
        ("HTTPS://UP.example/X?", ["HTTPS://UP.example/X"]),
        ("<https://angle.example/x>", ["https://angle.example/x"]),
        ("line\nhttps://x.example/a\nnext", ["https://x.example/a"]),
        ("no links: mailto:a@b.example tel:+15550100 ftp://f.example https:// www.shop.example", []),
        ("https://x.example/path#frag...", ["https://x.example/path#frag"]),
    ],
)
def test_find_links(text: str, urls: list[str]) -> None:
    assert _urls(text) == urls
    for start, end, url in find_links(text):
        assert text[start:end] == url


def test_rewrite_text_shortens_each_url_once_and_keeps_the_rest() -> None:
    shorten, asked = _counter()
    text = "Cart: https://s.example/cart. Again: https://s.example/cart! Stop: https://s.example/unsub"
    out = rewrite_text(text, shorten, keep={"https://s.example/unsub"})
    assert out == f"Cart: {BASE}c1. Again: {BASE}c1! Stop: https://s.example/unsub"
    assert asked == ["https://s.example/cart"]


def test_rewrite_text_leaves_tracked_links_alone() -> None:
    shorten, asked = _counter()
    assert rewrite_text(f"go {BASE}abc", shorten, base=BASE) == f"go {BASE}abc"
    assert asked == []


def test_rewrite_text_without_links_is_unchanged() -> None:
    shorten, asked = _counter()
    assert rewrite_text("nothing to see here.", shorten) == "nothing to see here."
    assert asked == []


def test_rewrite_html_rewrites_anchor_hrefs_only() -> None:
    shorten, asked = _counter()
    html = (
        '<html><head><link href="https://s.example/style.css" rel="stylesheet"></head><body>\n'
        '<img src="https://s.example/logo.png">\n'
        "<p>Visit https://s.example/plain in text (not an href).</p>\n"
        '<a class="btn" HREF = \'https://s.example/?a=1&amp;b=2\' data-x="href=no">Shop</a>\n'
        "<a href=https://s.example/?a=1&b=2>Again</a>\n"
        '<A title="t" target=_blank\n   href="https://s.example/new">New</A>\n'
        '<a href="mailto:help@s.example">mail</a> <a href="tel:+15550100">call</a> '
        '<a href="#top">top</a> <a href="/relative">rel</a> <a name="no-href">x</a>\n'
        '<a href="https://s.example/unsub">unsubscribe</a> <a href="https://t.example/l/abcdefgh">done</a>\n'
        "<script>var s = \"<a href='https://s.example/script'>\";</script>\n"
        '<!-- <a href="https://s.example/comment"> -->\n'
        "</body></html>"
    )
    out = rewrite_html(html, shorten, keep={"https://s.example/unsub"}, base=BASE)
    assert asked == ["https://s.example/?a=1&b=2", "https://s.example/new"]
    expected = (
        html.replace("'https://s.example/?a=1&amp;b=2'", f"'{BASE}c1'")
        .replace("href=https://s.example/?a=1&b=2>", f'href="{BASE}c1">')
        .replace('href="https://s.example/new"', f'href="{BASE}c2"')
    )
    assert out == expected


def test_rewrite_html_escapes_what_it_writes() -> None:
    out = rewrite_html('<a href="https://s.example/x">x</a>', lambda url: 'https://t.example/l/a?b=1&c="2"')
    assert out == '<a href="https://t.example/l/a?b=1&amp;c=&quot;2&quot;">x</a>'


def test_rewrite_html_without_anchors_is_unchanged() -> None:
    html = "<p>Hello &amp; welcome, <b>friend</b> https://s.example</p>"
    assert rewrite_html(html, lambda url: "X") == html


def test_should_track() -> None:
    assert should_track("https://s.example/a")
    assert should_track("HTTP://s.example/a")
    assert not should_track("https://s.example/a", keep={"https://s.example/a"})
    assert not should_track(f"{BASE}x", base=BASE)
    for url in (
        "mailto:a@b.example",
        "tel:+1555",
        "#top",
        "/relative",
        "javascript:alert(1)",
        "https:nohost",
    ):
        assert not should_track(url)


def test_tracking_base() -> None:
    assert tracking_base("https://t.example/") == tracking_base("https://t.example") == "https://t.example/l/"


@given(st.integers(min_value=0, max_value=2**64))
def test_new_codes_are_eight_url_safe_unambiguous_characters(seed: int) -> None:
    code = new_code(random.Random(seed))
    assert re.fullmatch(rf"[{LINK_ALPHABET}]{{8}}", code)
    assert not set(code) & set("0o1li")


_LINK = st.sampled_from(["https://a.example/x", "http://b.example/y?z=1", "https://a.example/x(1)"])
_BEFORE = st.sampled_from(["", "(", "see ", "\n", "'"])
_AFTER = st.sampled_from(["", ")", ".", ",", "!", "?", "'", ")."])


@given(st.lists(st.tuples(_BEFORE, _LINK, _AFTER), max_size=6))
def test_rewriting_text_replaces_exactly_the_links(pieces: list[tuple[str, str, str]]) -> None:
    text = " ".join(before + link + after for before, link, after in pieces)
    shorten, asked = _counter()
    out = rewrite_text(text, shorten)
    assert asked == list(dict.fromkeys(link for _, link, _ in pieces))
    codes = {link: f"{BASE}c{index + 1}" for index, link in enumerate(asked)}
    assert out == " ".join(before + codes[link] + after for before, link, after in pieces)
