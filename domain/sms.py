"""SMS encoding and segment count: what a message will cost before it is sent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The GSM 03.38 default alphabet, and its extension table (each of those costs two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class SmsSize:
    encoding: Encoding
    length: int  # septets for GSM-7, UTF-16 code units for UCS-2
    parts: int


# (single-part limit, per-part limit once split)
_LIMITS = {Encoding.GSM7: (160, 153), Encoding.UCS2: (70, 67)}


def sms_size(text: str) -> SmsSize:
    """Encoding, length and number of parts: one non-GSM character (Cyrillic, emoji) switches to UCS-2."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        encoding, length = Encoding.GSM7, sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    else:
        encoding, length = Encoding.UCS2, len(text.encode("utf-16-le")) // 2
    single, per_part = _LIMITS[encoding]
    parts = 1 if length <= single else -(-length // per_part)
    return SmsSize(encoding, length, parts)
