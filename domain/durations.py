"""Human durations such as "5m", "90s" or "1h30m"."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse "1h30m"-style text; raise ValueError with the accepted format otherwise."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(f"{text!r} is not a duration; use e.g. '30s', '5m', '1h30m'")
    try:
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # beyond timedelta's 999,999,999 days, or int()'s 4,300 digits
        raise ValueError(f"{text[:40]!r}{'…' if len(text) > 40 else ''} is too long a duration") from None


def format_duration(value: timedelta) -> str:
    """The shortest "1h30m"-style text for a duration (whole seconds)."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
