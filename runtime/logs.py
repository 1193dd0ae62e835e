"""Logging for kaskad's processes: one format, and phone numbers masked on every line.

Phone numbers are personal data, and they are everywhere a log line can reach: the Temporal SDK appends the
workflow id (`mailing-<id>/+E164`) to every workflow and activity line, client references carry them, and
validation errors echo the input. Masking them in one handler filter covers all of it, whoever logged.
"""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# `+` (or its URL encoding) and 7 to 15 digits, not glued to other digits: an E.164 number, also inside a
# workflow id or a client reference. Ports, timestamps and counts have no `+` and are left alone.
_E164 = re.compile(r"(?<!\d)(\+|%2B)(\d{7,15})(?!\d)", re.IGNORECASE)
# Any other plausible number: 10 to 15 digits, with or without `+`, grouped by spaces, `-`, `.` or brackets
# (`79991234567`, `8 999 123-45-67`, `+7 (999) 123 45 67`). Not glued to a word, a `-`, `:` or `.` digit on
# either side, so UUIDs (`…-446655440000`), timestamps (`2024-05-01 12:00:00`), versions, addresses and
# decimals (`1234567.890`, see _mask_grouped) stay readable.
_GROUPED = re.compile(r"(?<![\w+%:-])(?<![0-9]\.)(\+|%2B)?([0-9](?:[ .()-]{0,2}[0-9]){9,14})(?![\w:-]|\.[0-9])", re.I)

# Attributes every LogRecord has; anything else on a record came from `extra` (e.g. the SDK's
# `temporal_workflow` / `temporal_activity` dicts, which hold the workflow id).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators: any of them can end a log
# line or rewrite a terminal, so text a request supplied shows them escaped.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ECHO_MAX = 200  # characters of a request's text a log line may echo


def log_safe(value: object, limit: int = ECHO_MAX) -> str:
    """Text a request supplied, fit for one log line: at most `limit` characters (then `…`), control characters
    escaped (`\\r`, `\\n`, `\\x1b`), so one request can neither forge extra lines nor flood the log."""
    text = str(value)
    cut = text[:limit]
    escaped = _CONTROL.sub(lambda match: repr(match.group())[1:-1], cut)
    return escaped + ("…" if len(text) > limit else "")


def mask_phone(digits: str) -> str:
    """Keep the country code (up to 4 leading digits) and the last 2; at least half the digits are hidden."""
    shown = max(1, min(4, len(digits) - 2 - len(digits) // 2))
    return digits[:shown] + "*" * (len(digits) - shown - 2) + digits[-2:]


def mask_phones(text: str) -> str:
    """`text` with every phone-looking number masked: `+79991234588` → `+7999*****88`, `8 999 123-45-67` →
    `8 999 ***-**-67` (the grouping kept)."""
    text = _E164.sub(lambda match: match.group(1) + mask_phone(match.group(2)), text)
    return _GROUPED.sub(_mask_grouped, text)


def _mask_grouped(match: re.Match[str]) -> str:
    prefix, body = match.group(1) or "", match.group(2)
    if body.count(".") == 1 and not any(char in body for char in " ()-"):
        return match.group()  # a decimal number, not a phone
    masked = iter(mask_phone("".join(char for char in body if char.isdigit())))
    return prefix + "".join(next(masked) if char.isdigit() else char for char in body)


def _masked(value: Any) -> Any:
    """`value` with numbers masked in its strings; only plain str/list/tuple/dict are rebuilt (a namedtuple or a
    subclass cannot be rebuilt from one iterable): anything else that prints a number becomes its masked text."""
    if isinstance(value, str):
        return mask_phones(value)
    if type(value) is dict:
        return {key: _masked(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_masked(item) for item in value)
    if isinstance(value, int | float | bool | type(None)):
        return value
    text = str(value)
    masked = mask_phones(text)
    return value if masked == text else masked


class MaskPhones(logging.Filter):
    """Rewrites a record so that no handler can print an unmasked phone number: the message with its
    args, the traceback, and the context added through `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never raises: logging must not break the caller, whatever it passed."""
        try:
            self._mask(record)
        except Exception:  # a last resort: the record becomes plain masked text
            record.msg, record.args = mask_phones(_safe_text(record)), None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            for key in vars(record).keys() - _STANDARD:
                setattr(record, key, _safe_masked(getattr(record, key)))
        return True

    def _mask(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = mask_phones(record.getMessage()), None
        except (TypeError, ValueError, KeyError):  # args that do not fit the message: logged beside it, masked
            record.msg, record.args = (
                f"{_masked(record.msg)} (log arguments that do not fit: {_masked(record.args)!r})",
                None,
            )
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text instead of formatting again
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phones(record.stack_info)
        for key in vars(record).keys() - _STANDARD:
            setattr(record, key, _masked(getattr(record, key)))
        entry = getattr(record, "temporal_log", None)
        if entry is not None and hasattr(entry, "fields"):  # a core line the SDK forwarded, with the core's entry
            record.temporal_log = SimpleNamespace(
                target=getattr(entry, "target", None),
                message=mask_phones(str(getattr(entry, "message", ""))),
                fields=_masked(dict(entry.fields)),
                time=getattr(entry, "time", None),
                level=getattr(entry, "level", None),
            )


def _safe_text(record: logging.LogRecord) -> str:
    try:
        return f"{record.msg} {record.args!r}" if record.args else str(record.msg)
    except Exception:  # an object whose str() raises
        return f"<unprintable log message from {record.name}>"


def _safe_masked(value: Any) -> str:
    try:
        return mask_phones(str(value))
    except Exception:  # an object whose str() raises
        return "<unprintable>"


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with phone numbers masked; every entry point that logs calls this, nothing else
    configures handlers. The filter sits on the root's handlers, not on a logger, because a logger's filters
    do not see records propagated from its children (the SDK's, uvicorn's, ours)."""
    logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider call is noise, not news
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskPhones) for f in handler.filters):
            handler.addFilter(MaskPhones())
