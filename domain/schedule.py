"""When a mailing may send: allowed days and hours in a time zone, start and end dates, speed.

Pure arithmetic (no I/O, no clock): callers pass the moment they ask about. Workflows never call the
window functions themselves — `ZoneInfo` misbehaves in the workflow sandbox — they ask an activity.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_ZONE = "Europe/Moscow"
SUBSCRIBER = "subscriber"
KNOWN_ZONES = frozenset(zoneinfo.available_timezones())
# How far ahead a window is searched for: a week, plus room for a DST change and a midnight crossing.
HORIZON = timedelta(days=15)
MINUTES_A_DAY = 24 * 60
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_SPEED = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_UNIT_NAMES = {1: "s", 60: "min", 3600: "hour"}
_ZONED = re.compile(r"^(?P<moment>[^\[\]]+?)\s*\[(?P<zone>[^\]]+)\]$")


@functools.cache
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


class Window(BaseModel):
    """A stretch of time (UTC) in which sending is allowed; `end` is exclusive."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _parse_days(value: Any) -> Any:
    """`"mon-fri"`, `"sat,sun"`, `["mon", "wed"]`, `"fri-mon"` (wrapping) → weekday numbers (Monday = 0)."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value.strip().lower()) if part]
    if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(v, str | int) for v in value):
        return value
    days: set[int] = set()
    for item in value:
        if isinstance(item, int):
            days.add(item)
            continue
        first, _, last = item.strip().lower().partition("-")
        for name in (first, last or first):
            if name not in WEEKDAYS:
                raise ValueError(f"{name!r} is not a day; use {', '.join(WEEKDAYS)}")
        start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    return frozenset(days)


def _parse_hours(value: Any) -> Any:
    """`"10:00-23:00"`; `"22:00-02:00"` crosses midnight; `"00:00-24:00"` is the whole day → minutes."""
    if not isinstance(value, str):
        return value
    match = _HOURS.match(value)
    if not match:
        raise ValueError(f"{value!r}: write hours as HH:MM-HH:MM, e.g. 10:00-23:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > MINUTES_A_DAY:
        raise ValueError(f"{value!r}: not a time of day")
    if start == end:
        raise ValueError(f"{value!r}: the window is empty (use 00:00-24:00 for the whole day)")
    return (start, end)


class Schedule(BaseModel):
    """Allowed week days and hours, in a fixed zone or in each subscriber's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: frozenset[int] = frozenset(range(7))
    hours: tuple[int, int] = (10 * 60, 23 * 60)  # minutes after midnight; end ≤ start means the next day
    timezone: str = DEFAULT_ZONE  # an IANA zone, or "subscriber"
    fallback_timezone: str = DEFAULT_ZONE  # for subscribers whose zones share no window

    _days = field_validator("days", mode="before")(_parse_days)
    _hours = field_validator("hours", mode="before")(_parse_hours)

    @field_validator("days")
    @classmethod
    def _some_days(cls, days: frozenset[int]) -> frozenset[int]:
        if not days:
            raise ValueError("no day is allowed: the mailing could never send")
        if not days <= set(range(7)):
            raise ValueError("days are mon … sun (or 0 … 6)")
        return days

    @field_validator("timezone", "fallback_timezone")
    @classmethod
    def _known_zone(cls, name: str, info: Any) -> str:
        if name == SUBSCRIBER and info.field_name == "timezone":
            return name
        if name not in KNOWN_ZONES:
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Moscow, or 'subscriber')")
        return name

    @property
    def always_open(self) -> bool:
        return len(self.days) == 7 and self.hours == (0, MINUTES_A_DAY)

    @property
    def per_subscriber(self) -> bool:
        return self.timezone == SUBSCRIBER

    @property
    def default_zones(self) -> list[str]:
        """The zones of a recipient with none of its own: the mailing's zone, or the fallback in subscriber mode."""
        return [self.fallback_timezone if self.per_subscriber else self.timezone]

    def describe(self) -> str:
        (start, end), days = self.hours, sorted(self.days)
        day_names = "every day" if len(days) == 7 else ",".join(WEEKDAYS[d] for d in days)
        return f"{day_names} {start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02} {self.timezone}"


class Speed(BaseModel):
    """Recipients started per unit of time: `"600/min"`, `"20000/hour"`, `"5/s"`."""

    model_config = ConfigDict(frozen=True)

    count: int
    seconds: int

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _SPEED.match(value.lower())
            if not match:
                raise ValueError(f"{value!r}: write a speed as N/min, N/hour or N/s, e.g. 600/min")
            return {"count": int(match[1]), "seconds": _UNITS[match[2]]}
        return value

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.count <= 0:
            raise ValueError("must be more than zero")
        if self.seconds not in _UNIT_NAMES:
            raise ValueError("the unit must be 1 second, 60 or 3600 (write N/s, N/min or N/hour)")
        return self

    @property
    def interval(self) -> timedelta:
        """Time between two starts."""
        return timedelta(seconds=self.seconds / self.count)

    def __str__(self) -> str:
        return f"{self.count}/{_UNIT_NAMES[self.seconds]}"


def _local_windows(schedule: Schedule, zone_name: str, since: datetime, until: datetime) -> list[Window]:
    """The allowed windows of one zone overlapping [since, until), in UTC, merged where they touch."""
    tz = zone(zone_name)
    first_day = since.astimezone(tz).date() - timedelta(days=1)  # yesterday's window may cross midnight
    last_day = until.astimezone(tz).date()
    start_minute, end_minute = schedule.hours
    if end_minute <= start_minute:
        end_minute += MINUTES_A_DAY
    windows: list[Window] = []
    day = first_day
    while day <= last_day:
        if day.weekday() in schedule.days:
            midnight = datetime.combine(day, datetime.min.time())
            start = (midnight + timedelta(minutes=start_minute)).replace(tzinfo=tz).astimezone(UTC)
            end = (midnight + timedelta(minutes=end_minute)).replace(tzinfo=tz).astimezone(UTC)
            if end > since and start < until and start < end:
                if windows and start <= windows[-1].end:
                    windows[-1] = Window(start=windows[-1].start, end=max(end, windows[-1].end))
                else:
                    windows.append(Window(start=start, end=end))
        day += timedelta(days=1)
    return windows


def _intersect(a: Sequence[Window], b: Sequence[Window]) -> list[Window]:
    result: list[Window] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i].start, b[j].start), min(a[i].end, b[j].end)
        if start < end:
            result.append(Window(start=start, end=end))
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return result


def windows(schedule: Schedule, zones: Iterable[str], since: datetime, until: datetime) -> list[Window]:
    """Windows in which the hour and day are allowed in *every* one of `zones`."""
    common: list[Window] | None = None
    for name in dict.fromkeys(zones):
        local = _local_windows(schedule, name, since, until)
        common = local if common is None else _intersect(common, local)
    return common or []


def next_window(schedule: Schedule, zones: Iterable[str], at: datetime, end_at: datetime | None) -> Window | None:
    """The window `at` is in (from `at` on), or the next one; None when none opens before `end_at`.

    Without an end date the search goes `HORIZON` ahead; a window is then cut at the horizon and the
    caller asks again when it ends.
    """
    until = min(end_at, at + HORIZON) if end_at else at + HORIZON
    if at >= until:
        return None
    if schedule.always_open:
        return Window(start=at, end=until)
    for window in windows(schedule, zones, at, until):
        if window.end > at:
            return Window(start=max(window.start, at), end=min(window.end, until))
    return None


def has_common_window(schedule: Schedule, zones: Sequence[str], at: datetime) -> bool:
    """Whether subscribers in all these zones can ever be reached at an allowed hour (within a week and more)."""
    return bool(windows(schedule, zones, at, at + HORIZON))


def aware(value: Any) -> Any:
    """A spec's date-time: naive means Moscow time (as the seed's cabinet reads it); an explicit offset, or a
    zone in brackets (`2026-12-01T10:00[Europe/Berlin]`), is honoured."""
    zone_name = DEFAULT_ZONE
    if isinstance(value, str):
        zoned = _ZONED.match(value.strip())
        if zoned:
            zone_name = zoned["zone"]
            if zone_name not in KNOWN_ZONES:
                raise ValueError(f"unknown time zone {zone_name!r}")
            value = zoned["moment"]
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"{value!r}: write a date-time as 2026-12-01T10:00 (optionally +03:00)") from exc
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=zone(zone_name))
    return value


ALWAYS = Schedule(hours=(0, MINUTES_A_DAY))
