"""Tracked links: every http(s) link in a message becomes `{public_url}/l/{code}`.

The pure half finds links in plain text (`find_links`, `rewrite_text`) and in the `href` of HTML
`<a>` tags (`rewrite_html`); it leaves alone what must stay as written — the URLs the caller
lists in `keep` (the unsubscribe link), links already pointing at the tracking base, and other
schemes (`mailto:`, `tel:`, `#anchors`, relative links). Within one call the same URL is shortened
once; `shorten_for_message` also returns the existing link for a URL the message already has, so
an email's text and HTML parts share one code per URL.

The database half records each link in `tracked_links` and counts clicks; the redirect endpoint
and the `Message Clicked` event are built on `resolve` and `record_click`.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from winback.db.models import TrackedLink

# Lower-case letters and digits without 0/o, 1/l/i: safe in a URL path, readable in an SMS.
LINK_ALPHABET: Final = "23456789abcdefghjkmnpqrstuvwxyz"
CODE_LENGTH: Final = 8
MAX_ATTEMPTS: Final = 5

_URL = re.compile(r"\bhttps?://[^\s<>\"`]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\"*"
_PAIRS = {")": "(", "]": "[", "}": "{"}
_CODE = re.compile(rf"^[{LINK_ALPHABET}]{{{CODE_LENGTH}}}$")
_TAG_NAME = re.compile(r"<[^\s/>]+")
_SEPARATOR = re.compile(r"[\s/]*")
_ATTRIBUTE = re.compile(r"""([^\s/>"'=]+)(?:(\s*=\s*)("[^"]*"|'[^']*'|[^\s>]+))?""")

Shorten = Callable[[str], str]


class LinkCodeCollisionError(RuntimeError):
    """Every generated link code was taken (the random source is broken)."""


# --- finding and rewriting (pure) ---------------------------------------------------------------


def new_code(rng: random.Random) -> str:
    """An 8-character link code from LINK_ALPHABET (31^8 ≈ 8.5e11 codes)."""
    return "".join(rng.choice(LINK_ALPHABET) for _ in range(CODE_LENGTH))


def tracking_base(public_url: str) -> str:
    """The prefix every tracked link starts with."""
    return f"{public_url.rstrip('/')}/l/"


def _trim(url: str) -> str:
    """Drop what ends a sentence rather than the URL: trailing punctuation, and closing brackets
    that have no opening partner inside the URL ("(see https://x.example/a)")."""
    while url:
        last = url[-1]
        unbalanced = last in _PAIRS and url.count(_PAIRS[last]) < url.count(last)
        if last in _TRAILING or unbalanced:
            url = url[:-1]
        else:
            break
    return url


def find_links(text: str) -> list[tuple[int, int, str]]:
    """The http(s) URLs in plain text as (start, end, url), in order."""
    found: list[tuple[int, int, str]] = []
    for match in _URL.finditer(text):
        url = _trim(match.group(0))
        if "://" in url and url.split("://", 1)[1]:
            found.append((match.start(), match.start() + len(url), url))
    return found


def should_track(url: str, keep: Collection[str] = (), base: str | None = None) -> bool:
    """Whether a link is rewritten: http(s) only, not listed in `keep`, not already tracked."""
    if url in keep:
        return False
    if base is not None and url.startswith(base):
        return False
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return scheme in ("http", "https") and "://" in url


def _memoised(shorten: Shorten) -> Shorten:
    seen: dict[str, str] = {}

    def once(url: str) -> str:
        if url not in seen:
            seen[url] = shorten(url)
        return seen[url]

    return once


def rewrite_text(text: str, shorten: Shorten, keep: Collection[str] = (), *, base: str | None = None) -> str:
    """Plain text with each trackable URL replaced by `shorten(url)` (once per distinct URL)."""
    once = _memoised(shorten)
    out: list[str] = []
    position = 0
    for start, end, url in find_links(text):
        if not should_track(url, keep, base):
            continue
        out.append(text[position:start])
        out.append(once(url))
        position = end
    out.append(text[position:])
    return "".join(out)


class _AnchorFinder(HTMLParser):
    """Records where each `<a …>` start tag is, as (line, column, raw text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[int, int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            raw = self.get_starttag_text()
            if raw is not None:
                line, column = self.getpos()
                self.anchors.append((line, column, raw))


def _rewrite_tag(raw: str, replace: Callable[[str], str | None]) -> str:
    """The start tag with its first `href` value replaced by `replace(unescaped value)` (None:
    left as it is). Other attributes, their order and quoting are kept."""
    name = _TAG_NAME.match(raw)
    if name is None:
        return raw
    position = name.end()
    while position < len(raw):
        separator = _SEPARATOR.match(raw, position)
        position = separator.end() if separator else position
        attribute = _ATTRIBUTE.match(raw, position)
        if attribute is None:
            break
        if attribute.group(1).lower() == "href":
            quoted = attribute.group(3)
            if quoted is None:
                return raw
            value = quoted[1:-1] if quoted[0] in "\"'" else quoted
            new = replace(html.unescape(value))
            if new is None:
                return raw
            quote = quoted[0] if quoted[0] in "\"'" else '"'
            escaped = html.escape(new, quote=True)
            return raw[: attribute.start(3)] + f"{quote}{escaped}{quote}" + raw[attribute.end(3) :]
        position = attribute.end()
    return raw


def rewrite_html(
    html_text: str, shorten: Shorten, keep: Collection[str] = (), *, base: str | None = None
) -> str:
    """HTML with the `href` of each `<a>` tag shortened when trackable; nothing else changes."""
    finder = _AnchorFinder()
    finder.feed(html_text)
    finder.close()
    if not finder.anchors:
        return html_text
    line_starts = [0]
    for index, char in enumerate(html_text):
        if char == "\n":
            line_starts.append(index + 1)
    once = _memoised(shorten)

    def replace(url: str) -> str | None:
        url = url.strip()
        return once(url) if should_track(url, keep, base) else None

    out: list[str] = []
    position = 0
    for line, column, raw in finder.anchors:
        start = line_starts[line - 1] + column
        if html_text[start : start + len(raw)] != raw or start < position:
            continue  # not where the parser said: leave it rather than corrupt the message
        out.append(html_text[position:start])
        out.append(_rewrite_tag(raw, replace))
        position = start + len(raw)
    out.append(html_text[position:])
    return "".join(out)


# --- database -----------------------------------------------------------------------------------


def shorten_for_message(
    session: Session,
    message_id: int | None,
    url: str,
    *,
    public_url: str,
    rng: random.Random,
    now: datetime | None = None,
) -> str:
    """The tracked URL for `url` in this message: the message's existing link for it, or a new
    `tracked_links` row (a taken code is replaced, each insert in its own savepoint). A URL that
    is already a tracked link, or not an http(s) URL (`mailto:`, a relative path), is returned as
    it is."""
    if not should_track(url, base=tracking_base(public_url)):
        return url
    if message_id is not None:
        existing = session.scalars(
            select(TrackedLink.code)
            .where(TrackedLink.message_id == message_id, TrackedLink.url == url)
            .order_by(TrackedLink.id)
            .limit(1)
        ).first()
        if existing is not None:
            return tracking_base(public_url) + existing
    created_at = now if now is not None else datetime.now(UTC)
    for _ in range(MAX_ATTEMPTS):
        code = new_code(rng)
        try:
            with session.begin_nested():
                session.add(
                    TrackedLink(code=code, message_id=message_id, url=url, clicks=0, created_at=created_at)
                )
                session.flush()
        except IntegrityError:
            continue
        return tracking_base(public_url) + code
    raise LinkCodeCollisionError(f"{MAX_ATTEMPTS} generated link codes were all taken")


def shortener(
    session: Session,
    message_id: int | None,
    *,
    public_url: str,
    rng: random.Random,
    now: datetime | None = None,
    fresh: bool = False,
) -> Shorten:
    """A `shorten` callable for `rewrite_text`/`rewrite_html` that records links for a message.

    `fresh=True` is for a message being rendered for the first time, inside a savepoint of the
    caller's: it has no links yet, so none is looked up, and new links are only added to the
    session (written with its next flush, in one statement for many messages). A code that is
    taken — about one chance in 10¹¹ per link — then fails the caller's savepoint, and the
    message is rendered again with new codes."""
    if fresh:
        base = tracking_base(public_url)
        created_at = now if now is not None else datetime.now(UTC)

        def add(url: str) -> str:
            if not should_track(url, base=base):
                return url
            code = new_code(rng)
            session.add(
                TrackedLink(code=code, message_id=message_id, url=url, clicks=0, created_at=created_at)
            )
            return base + code

        return _memoised(add)
    return _memoised(
        lambda url: shorten_for_message(session, message_id, url, public_url=public_url, rng=rng, now=now)
    )


def resolve(session: Session, code: str) -> TrackedLink | None:
    """The link a code stands for (None for an unknown or malformed code)."""
    code = code.strip().lower()
    if not _CODE.match(code):
        return None
    return session.scalars(select(TrackedLink).where(TrackedLink.code == code)).one_or_none()


def record_click(session: Session, link: TrackedLink, now: datetime) -> int:
    """Count a click (atomically in SQL, so concurrent clicks all count); the new total.

    `now` is accepted for the caller's symmetry; the first-click time lives on the message
    (`messages.clicked_at`), which the redirect endpoint sets."""
    clicks = session.execute(
        update(TrackedLink)
        .where(TrackedLink.id == link.id)
        .values(clicks=TrackedLink.clicks + 1)
        .returning(TrackedLink.clicks)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(link, "clicks", clicks)
    return int(clicks)
