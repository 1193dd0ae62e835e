"""The fast phone classifier must answer exactly what plain phonenumbers answers (`normalize_phone`)."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from domain.phones import PhoneClassifier, PhoneResult, RejectReason, normalize_phone
from recipients.samples import phone_cells

TRICKY = [
    "+7 999 123-45-67",
    "8 (999) 123-45-67",
    "79991234567",
    "9991234567",
    "79991234567.0",
    "'+79991234567",
    "\u00a08 999 123 45 67\u00a0",
    "tel:+79991234567",
    "+7 701 123 4567",  # Kazakhstan shares +7
    "+7 336 123 4567",
    "810 49 151 12345678",  # Russian international prefix, then Germany
    "8 10 49 151 12345678",
    "+800 1234 5678",  # non-geographic
    "+1 212 555 0123",
    "+1 684 733 1234",  # one of +1's 25 regions
    "8 800 555 35 35",
    "+7 495 123-45-67",
    "(999) 123-45-67",
    "+7 999 123 45 67 ext 5",
    "8-800-555-35-35 доб. 12",
    "7,99912E+10",
    "",
    "+",
    "++79991234567",
    "7+9991234567",
    "()",
    "12",
    "+44 7911 123456",
    "07911 123456",
    "+49 30 123456",
    "0049 151 12345678",
]


@pytest.mark.parametrize("region", ["RU", "DE", "US", "GB", "KZ"])
@pytest.mark.parametrize("keep_landlines", [False, True])
def test_identical_to_phonenumbers_on_tricky_and_generated_numbers(region: str, keep_landlines: bool) -> None:
    rng = random.Random(region)
    cells = phone_cells(rng)
    values = TRICKY + [str(next(cells)) for _ in range(1500)]
    values += ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 17))) for _ in range(300)]
    classifier = PhoneClassifier(region, allow_landline=keep_landlines)
    for _ in range(2):  # the second pass answers from the learned routes
        mismatches = [
            (value, got, want)
            for value in values
            if (got := classifier.classify(value))
            != (want := normalize_phone(value, region, allow_landline=keep_landlines))
        ]
        assert mismatches == []


def test_learned_routes_answer_without_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first number of a (sign, length, first 4 digits) shape is asked of phonenumbers; the rest are not."""
    classifier = PhoneClassifier("RU")
    for learned in ("+7 999 000-00-01", "+7 495 000-00-01", "+7 000 000-00-01"):
        classifier.classify(learned)

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("phonenumbers.parse called on the fast path")

    monkeypatch.setattr(phonenumbers, "parse", fail)
    assert classifier.classify("+7 (999) 345 67 89") == PhoneResult("+79993456789")
    assert classifier.classify("+7 495 123 45 67") == PhoneResult(None, RejectReason.NOT_MOBILE)
    assert classifier.classify("+7 000 111 22 33") == PhoneResult(None, RejectReason.INVALID)


def test_keep_landlines_accepts_fixed_lines_only() -> None:
    classifier = PhoneClassifier("RU", allow_landline=True)
    assert classifier.classify("8 (495) 123-45-67") == PhoneResult("+74951234567")
    assert classifier.classify("8 (000) 123-45-67") == PhoneResult(None, RejectReason.INVALID)
