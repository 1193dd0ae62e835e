"""SMS segment counting on known strings (SPEC §1.4)."""

from __future__ import annotations

import pytest

from domain.sms import Encoding, sms_size


@pytest.mark.parametrize(
    ("text", "encoding", "length", "parts"),
    [
        ("", Encoding.GSM7, 0, 1),
        ("a" * 160, Encoding.GSM7, 160, 1),
        ("a" * 161, Encoding.GSM7, 161, 2),
        ("a" * 306, Encoding.GSM7, 306, 2),
        ("a" * 307, Encoding.GSM7, 307, 3),
        ("€" * 80, Encoding.GSM7, 160, 1),  # extension characters count twice
        ("a" * 159 + "[", Encoding.GSM7, 161, 2),
        ("Price: {10} ~ [x] | ^ \\ €", Encoding.GSM7, 34, 1),  # 20 basic + 7 extension chars
        ("Привет", Encoding.UCS2, 6, 1),
        ("я" * 70, Encoding.UCS2, 70, 1),
        ("я" * 71, Encoding.UCS2, 71, 2),
        ("я" * 134, Encoding.UCS2, 134, 2),
        ("я" * 135, Encoding.UCS2, 135, 3),
        ("a" * 69 + "😀", Encoding.UCS2, 71, 2),  # an emoji is two UTF-16 units
        ("Hello ç", Encoding.UCS2, 7, 1),  # ç is not in GSM-7 (only Ç is)
    ],
)
def test_sms_size(text: str, encoding: Encoding, length: int, parts: int) -> None:
    size = sms_size(text)
    assert (size.encoding, size.length, size.parts) == (encoding, length, parts)
