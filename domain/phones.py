"""Phone normalisation to E.164 with a reason for every number that is refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult


class RejectReason(StrEnum):
    EMPTY = "empty"
    NOT_A_NUMBER = "not a number"
    TOO_SHORT = "too short"
    TOO_LONG = "too long"
    INVALID = "invalid number"
    NOT_MOBILE = "not a mobile number"
    PRECISION_LOST = "precision lost"
    MISSING_VARIABLE = "missing variable value"


@dataclass(frozen=True)
class PhoneResult:
    e164: str | None
    reason: RejectReason | None = None


_MOBILE_TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
_POSSIBLE_REASONS = {
    ValidationResult.TOO_SHORT: RejectReason.TOO_SHORT,
    ValidationResult.INVALID_LENGTH: RejectReason.INVALID,
    ValidationResult.TOO_LONG: RejectReason.TOO_LONG,
    ValidationResult.INVALID_COUNTRY_CODE: RejectReason.INVALID,
}
_PARSE_REASONS = {
    NumberParseException.TOO_SHORT_AFTER_IDD: RejectReason.TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: RejectReason.TOO_SHORT,
    NumberParseException.TOO_LONG: RejectReason.TOO_LONG,
}


# Excel turned the number into "7,99912E+10": its last digits are gone for good.
_SCIENTIFIC = re.compile(r"^\d+(?:[.,]\d+)?[eE]\+?\d+$")


def clean_phone_text(raw: str) -> str:
    """Undo what spreadsheets and CRMs do to numbers: spaces (also non-breaking), `tel:`, a leading '."""
    text = raw.replace("\u00a0", " ").replace("\u202f", " ").strip().lstrip("'").strip()
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    return text


def normalize_phone(raw: str, region: str = "RU", *, allow_landline: bool = False) -> PhoneResult:
    """E.164 for a number in any common notation, or the reason it cannot be messaged."""
    text = clean_phone_text(raw)
    if not text:
        return PhoneResult(None, RejectReason.EMPTY)
    if _SCIENTIFIC.match(text):
        return PhoneResult(None, RejectReason.PRECISION_LOST)
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return PhoneResult(None, _PARSE_REASONS.get(exc.error_type, RejectReason.NOT_A_NUMBER))
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        return PhoneResult(None, _POSSIBLE_REASONS.get(possible, RejectReason.INVALID))
    if not phonenumbers.is_valid_number(number):
        return PhoneResult(None, RejectReason.INVALID)
    if not allow_landline and phonenumbers.number_type(number) not in _MOBILE_TYPES:
        return PhoneResult(None, RejectReason.NOT_MOBILE)
    return PhoneResult(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
