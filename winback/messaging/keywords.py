"""Inbound SMS keywords: is a reply an opt-out, an opt-in again, or a request for help?

Pure. The words are the carrier/Twilio standard ones. A reply is a keyword only when the whole
message is the keyword: surrounding whitespace (any Unicode space, zero-width characters, line
breaks) and trailing punctuation (`STOP.`, `Stop!!`, `help?`) are tolerated, letter case is not
significant and full-width or other compatibility forms (`ＳＴＯＰ`) read as their plain letters;
"stop it please" or "don't stop" is a message for a person, not a keyword.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Keyword = Literal["stop", "start", "help"]

STOP_WORDS: frozenset[str] = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
START_WORDS: frozenset[str] = frozenset({"start", "unstop", "yes"})
HELP_WORDS: frozenset[str] = frozenset({"help", "info"})

_KEYWORDS: dict[str, Keyword] = {
    **{word: "stop" for word in STOP_WORDS},
    **{word: "start" for word in START_WORDS},
    **{word: "help" for word in HELP_WORDS},
}
# Characters that are not whitespace to `str.strip` but show up around what people type or paste.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)


def normalise(body: str) -> str:
    """The reply reduced to what decides whether it is a keyword: compatibility forms folded (NFKC),
    invisible characters removed, case folded, surrounding whitespace and trailing punctuation
    removed."""
    text = unicodedata.normalize("NFKC", body).translate(_INVISIBLE).casefold().strip()
    end = len(text)
    while end and (unicodedata.category(text[end - 1]).startswith("P") or text[end - 1].isspace()):
        end -= 1
    return text[:end]


def classify(body: str) -> Keyword | None:
    """ "stop", "start" or "help" when the whole reply is one of their keywords; None otherwise."""
    return _KEYWORDS.get(normalise(body))


def is_short_code(number: str) -> bool:
    """A short code (`48737`), not a phone number: digits only, no country code, 3 to 8 long."""
    digits = number.strip()
    return digits.isdigit() and 3 <= len(digits) <= 8


def winback_replies(setting: str, to_number: str) -> bool:
    """Whether winback itself answers a keyword texted to `to_number` (our number) through Twilio.

    Twilio answers STOP, START and HELP on its own on long codes and toll-free numbers (and blocks
    a reply from us to STOP), but not on short codes: `auto` answers only there, so the shopper
    gets exactly one reply. `always` and `never` are for setups `auto` cannot see (a short code in
    a Messaging Service with Advanced Opt-Out answers by itself)."""
    if setting == "auto":
        return is_short_code(to_number)
    return setting == "always"
