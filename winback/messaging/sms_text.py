"""How an SMS text is carried: its encoding, length in the units that count, parts, and cost.

Pure. The rules are those of GSM 03.38 / 3GPP TS 23.038 and of concatenated SMS:

- A text made only of characters in the GSM 7-bit default alphabet (the basic table plus its
  extension table) is sent as **GSM-7**; its length is counted in septets, where an extension
  character (`^ { } \\ [ ~ ] | €` and form feed) takes two (an escape, then the character).
- Any other character makes the whole text **UCS-2** (UTF-16 on the wire): its length is counted in
  16-bit code units, so a character outside the Basic Multilingual Plane (most emoji) takes two.
- One part carries 160 septets or 70 units. A longer text is split into parts of 153 septets or 67
  units (the rest of each part holds the concatenation header). A part never ends in the middle of
  an escape pair or a surrogate pair, so parts are counted by packing characters into them, not by
  dividing the length: a part can hold one unit less than the limit.

**Empty text** has 0 parts (and costs nothing): an SMS without a body cannot be sent (Twilio refuses
a message with neither a body nor media), so the caller must not send it rather than pay for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# The GSM 03.38 default alphabet's basic table, in code order 0x00–0x7F (0x1B, the escape to the
# extension table, is not a character of its own and is left out).
GSM_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# Its extension table: each is sent as the escape plus one septet.
GSM_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")
GSM_ALPHABET: frozenset[str] = GSM_BASIC | GSM_EXTENSION

GSM_SINGLE, GSM_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67
DEFAULT_MMS_PRICE = Decimal("0.0200")  # a placeholder; pass the provider's price


@dataclass(frozen=True, slots=True)
class SmsAnalysis:
    """What a text costs to carry.

    - `encoding`: "GSM-7" or "UCS-2".
    - `length`: septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2).
    - `parts`: how many SMS it is sent as (0 for empty text).
    - `per_part`: the limit of each part: 160/70 for a single part, 153/67 once split.
    - `remaining`: how many more units fit in the last part before another part is needed.
    - `non_gsm`: the distinct characters that made the text UCS-2, in order of appearance (a curly
      quote or a no-break space is a common surprise).
    """

    encoding: Encoding
    length: int
    parts: int
    per_part: int
    remaining: int
    non_gsm: tuple[str, ...] = ()


def is_gsm7(text: str) -> bool:
    """Whether the whole text fits the GSM 7-bit default alphabet (basic and extension tables)."""
    return all(char in GSM_ALPHABET for char in text)


def units(text: str) -> tuple[Encoding, list[int]]:
    """The encoding of `text` and the units each of its characters (code points) takes."""
    if is_gsm7(text):
        return "GSM-7", [2 if char in GSM_EXTENSION else 1 for char in text]
    return "UCS-2", [2 if ord(char) > 0xFFFF else 1 for char in text]


def pack(sizes: Iterable[int], capacity: int) -> list[int]:
    """Pack characters of the given sizes, in order, into parts of `capacity` units without splitting
    one; the units used in each part."""
    parts: list[int] = []
    used = 0
    for size in sizes:
        if not parts or used + size > capacity:
            parts.append(0)
            used = 0
        used += size
        parts[-1] = used
    return parts


def analyse(text: str) -> SmsAnalysis:
    """The encoding, length and parts of an SMS text (see the module's notes)."""
    encoding, sizes = units(text)
    single, multi = (GSM_SINGLE, GSM_MULTI) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_MULTI)
    non_gsm = () if encoding == "GSM-7" else _distinct(c for c in text if c not in GSM_ALPHABET)
    length = sum(sizes)
    if length <= single:
        parts = 1 if length else 0
        return SmsAnalysis(encoding, length, parts, single, single - length, non_gsm)
    packed = pack(sizes, multi)
    return SmsAnalysis(encoding, length, len(packed), multi, multi - packed[-1], non_gsm)


def _distinct(chars: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(chars))


def estimate_cost(
    analysis: SmsAnalysis,
    *,
    price_per_part: Decimal,
    mms: bool = False,
    mms_price: Decimal = DEFAULT_MMS_PRICE,
) -> Decimal:
    """What sending the text costs: `price_per_part` per part for an SMS; one `mms_price` for an MMS,
    however long its text (an MMS is one message, up to 1,600 characters)."""
    if mms:
        return mms_price
    return price_per_part * analysis.parts
