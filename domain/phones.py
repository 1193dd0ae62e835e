"""Phone normalisation to E.164 with a reason for every number that is refused."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberType, ValidationResult


class RejectReason(StrEnum):
    EMPTY = "empty"
    NOT_A_NUMBER = "not a number"
    TOO_SHORT = "too short"
    TOO_LONG = "too long"
    INVALID = "invalid number"
    NOT_MOBILE = "not a mobile number"
    PRECISION_LOST = "precision lost"
    MISSING_VARIABLE = "missing variable value"
    UNKNOWN_ZONE = "unknown time zone"


class PhoneResult(NamedTuple):
    """The E.164 form of a number, or the reason it is refused."""

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
    number = _parse(text, region)
    return number if isinstance(number, PhoneResult) else _judge(number, allow_landline)


def _parse(text: str, region: str) -> PhoneNumber | PhoneResult:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return PhoneResult(None, _PARSE_REASONS.get(exc.error_type, RejectReason.NOT_A_NUMBER))


def _judge(number: PhoneNumber, allow_landline: bool) -> PhoneResult:
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        return PhoneResult(None, _POSSIBLE_REASONS.get(possible, RejectReason.INVALID))
    if not phonenumbers.is_valid_number(number):
        return PhoneResult(None, RejectReason.INVALID)
    if not allow_landline and phonenumbers.number_type(number) not in _MOBILE_TYPES:
        return PhoneResult(None, RejectReason.NOT_MOBILE)
    return PhoneResult(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


# --- The fast exact classifier -------------------------------------------------------------------------------
#
# phonenumbers costs ~60 µs a number, far too slow for a million rows. Lists are made of a few shapes: digits
# with spaces, dashes, dots, brackets and perhaps a leading `+`. For those, what phonenumbers does depends only
# on (plus sign, digit string), and it does two things:
#   1. parse: cut a country code and a national prefix off the front — a *route* that, for real numbering
#      plans, depends on the sign, the length and the first digits. The first number of each
#      (sign, length, first digits) is classified by phonenumbers itself, and the cut it made is remembered —
#      keyed by the first 4 digits, or by the cut plus two national digits when the cut is longer.
#   2. classify the national number with the metadata's regexes, in phonenumbers' order. `_TypeMatcher`
#      compiles the same regexes, in the same order, into one alternation — the same answer in one match.
# Everything else (letters, extensions, non-geographic codes, exotic prefixes) goes to phonenumbers.
# benchmarks/validate.py and tests/test_phones.py check the result is identical to `normalize_phone`.

# What `clean_phone_text` strips (spaces incl. NBSP, a leading apostrophe), then a sign and digits with punctuation.
_SIMPLE_SHAPE = re.compile(r"\s*'*\s*(\+?)([\d \-().]+?)\s*")
_DROP_PUNCTUATION = str.maketrans("", "", "+ -().")
_ROUTE_PREFIX = 4
_OTHERS_REMEMBERED = 10_000
_TYPE_ORDER = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)


def _desc_pattern(desc: Any, length: int) -> str | None:
    """The desc's pattern if a number of this length can match it (phonenumbers' `_is_number_matching_desc`)."""
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return str(desc.national_number_pattern)


class _TypeMatcher:
    """phonenumbers' `_number_type_helper` for one region and one national-number length, as a single regex."""

    def __init__(self, metadata: Any, length: int) -> None:
        branches: list[tuple[str, int]] = []  # (pattern, number type); phonenumbers types are ints
        for attribute, number_type in _TYPE_ORDER:
            pattern = _desc_pattern(getattr(metadata, attribute), length)
            if pattern:
                branches.append((pattern, number_type))
        fixed = _desc_pattern(metadata.fixed_line, length)
        mobile = _desc_pattern(metadata.mobile, length)
        if fixed and metadata.same_mobile_and_fixed_line_pattern:
            branches.append((fixed, PhoneNumberType.FIXED_LINE_OR_MOBILE))
        elif fixed:
            if mobile:
                branches.append((rf"(?=(?:{mobile})\Z)(?:{fixed})", PhoneNumberType.FIXED_LINE_OR_MOBILE))
            branches.append((fixed, PhoneNumberType.FIXED_LINE))
        if mobile and not metadata.same_mobile_and_fixed_line_pattern:
            branches.append((mobile, PhoneNumberType.MOBILE))
        general = _desc_pattern(metadata.general_desc, length)
        self._types = {f"t{i}": number_type for i, (_, number_type) in enumerate(branches)}
        alternatives = "|".join(f"(?P<t{i}>{pattern})" for i, (pattern, _) in enumerate(branches))
        self._regex = re.compile(rf"(?=(?:{general})\Z)(?:{alternatives})") if general and branches else None

    def type_of(self, national_number: str) -> int:
        match = self._regex.fullmatch(national_number) if self._regex else None
        return self._types[match.lastgroup] if match and match.lastgroup else PhoneNumberType.UNKNOWN


@dataclass(frozen=True)
class _Route:
    """How phonenumbers parsed one (sign, length, first digits) shape: the country code and the prefix it cut."""

    prefix: str  # "+" and the country code
    cut: int  # digits before the national number
    regions: tuple[tuple[Any, str], ...]  # (leading-digits regex or None, region), in phonenumbers' order
    refused: PhoneResult | None  # the length alone is refused (is_possible_number)
    allow_landline: bool

    def outcome(self, national: str) -> PhoneResult | None:
        """The refusal for this national number, or None when it can be messaged."""
        if len(self.regions) == 1:
            number_type = _type_matcher(self.regions[0][1], len(national)).type_of(national)
        else:
            number_type = self._type_of(national)
        if number_type == PhoneNumberType.UNKNOWN:
            return _INVALID
        if not self.allow_landline and number_type not in _MOBILE_TYPES:
            return _NOT_MOBILE
        return None

    def _type_of(self, national: str) -> int:
        """phonenumbers' `region_code_for_number` then `number_type`, over the country code's regions in order."""
        for leading, region in self.regions:  # matchers compiled lazily: +1 alone has 25 regions
            if leading is not None:
                if leading.match(national):
                    return _type_matcher(region, len(national)).type_of(national)
                continue
            number_type = _type_matcher(region, len(national)).type_of(national)
            if number_type != PhoneNumberType.UNKNOWN:
                return number_type
        return PhoneNumberType.UNKNOWN


class PhoneClassifier:
    """`normalize_phone` for one mailing (region, landline policy), fast on the shapes lists are made of."""

    def __init__(self, region: str = "RU", *, allow_landline: bool = False) -> None:
        self.region = region
        self.allow_landline = allow_landline
        self._routes: dict[tuple[str, int, str], _Route | None] = {}
        self._depths: dict[tuple[str, int, str], int] = {}
        self._others: dict[str, PhoneResult] = {}

    def classify(self, raw: str) -> PhoneResult:
        shape = _SIMPLE_SHAPE.fullmatch(raw)
        if shape is None:  # text, extensions, `tel:`…: phonenumbers, remembered (lists repeat "n/a", "нет")
            result = self._others.get(raw)
            if result is None:
                result = normalize_phone(raw, self.region, allow_landline=self.allow_landline)
                if len(self._others) < _OTHERS_REMEMBERED:
                    self._others[raw] = result
            return result
        plus, digits = shape[1], shape[2].translate(_DROP_PUNCTUATION)
        length = len(digits)
        depth = self._depths.get((plus, length, digits[:_ROUTE_PREFIX]), _ROUTE_PREFIX)
        key = (plus, length, digits[:depth])
        if key not in self._routes:
            return self._learn(raw, plus, digits, depth)
        route = self._routes[key]
        if route is None:
            return normalize_phone(raw, self.region, allow_landline=self.allow_landline)
        if route.refused is not None:
            return route.refused
        national = digits[route.cut :]
        refused = route.outcome(national)
        return refused if refused is not None else PhoneResult(route.prefix + national)

    def _learn(self, raw: str, plus: str, digits: str, depth: int) -> PhoneResult:
        """Classify with phonenumbers, and remember the route it took for numbers of this shape."""
        number = _parse(plus + digits, self.region)  # for this shape, the same as parsing `raw`
        if isinstance(number, PhoneResult):
            route = None
            result = normalize_phone(raw, self.region, allow_landline=self.allow_landline)
        else:
            route = self._route(number, digits)
            result = _judge(number, self.allow_landline)
        needed = route.cut + 2 if route else 0  # the cut and the national number's first digits
        if needed > depth:  # e.g. `810` + a country code: remember routes by more digits for this prefix
            self._depths[(plus, len(digits), digits[:_ROUTE_PREFIX])] = depth = needed
        self._routes[(plus, len(digits), digits[:depth])] = route
        return result

    def _route(self, number: PhoneNumber, digits: str) -> _Route | None:
        """The route phonenumbers took for this number, or None when it is not a plain cut of the digits."""
        national = phonenumbers.national_significant_number(number)
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(number.country_code or 0, ())
        metadata: list[Any] = [phonenumbers.PhoneMetadata.metadata_for_region(r, None) for r in regions]
        if not digits.endswith(national) or not regions or any(m is None for m in metadata):
            return None  # a transformed prefix, an extension, a non-geographic code: leave it to phonenumbers
        possible = phonenumbers.is_possible_number_with_reason(number)
        refused = None
        if possible != ValidationResult.IS_POSSIBLE:
            refused = PhoneResult(None, _POSSIBLE_REASONS.get(possible, RejectReason.INVALID))
        length = len(national)
        leading = [re.compile(m.leading_digits) if m.leading_digits is not None else None for m in metadata]
        regions_in_order = tuple(zip(leading, regions, strict=True))
        return _Route(f"+{number.country_code}", len(digits) - length, regions_in_order, refused, self.allow_landline)


@functools.cache
def _type_matcher(region: str, length: int) -> _TypeMatcher:
    """Compiled once per process: the alternations are large, and every mailing of a region needs the same."""
    return _TypeMatcher(phonenumbers.PhoneMetadata.metadata_for_region(region, None), length)


_INVALID = PhoneResult(None, RejectReason.INVALID)
_NOT_MOBILE = PhoneResult(None, RejectReason.NOT_MOBILE)
