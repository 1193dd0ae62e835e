"""Schedule arithmetic and the spec's timing keys: pure functions, real zones (zoneinfo), no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.schedule import Schedule, Speed, Window, aware, has_common_window, next_window, windows, zone
from domain.spec import MailingSpec, ProviderAccount, SpecError, load_spec
from domain.status import Channel

MSK, BERLIN = "Europe/Moscow", "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(name: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone(name))


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate(fields)


# --- windows -----------------------------------------------------------------------------------------------


def test_inside_the_window_it_is_now_until_the_windows_end() -> None:
    at = local(MSK, 2026, 12, 1, 12, 0)  # a Tuesday
    assert next_window(Schedule(), [MSK], at, None) == Window(start=at, end=local(MSK, 2026, 12, 1, 23, 0))


@pytest.mark.parametrize(
    ("at", "opens"),
    [
        (local(MSK, 2026, 12, 1, 9, 59), local(MSK, 2026, 12, 1, 10, 0)),  # a minute before the start
        (local(MSK, 2026, 12, 1, 10, 0), local(MSK, 2026, 12, 1, 10, 0)),  # the start is inside
        (local(MSK, 2026, 12, 1, 23, 0), local(MSK, 2026, 12, 2, 10, 0)),  # the end is outside
        (local(MSK, 2026, 12, 1, 22, 59), local(MSK, 2026, 12, 1, 22, 59)),
    ],
)
def test_window_edges(at: datetime, opens: datetime) -> None:
    window = next_window(Schedule(), [MSK], at, None)
    assert window is not None and window.start == opens


def test_a_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    night = schedule(hours="22:00-02:00", days="mon")
    monday_late = local(MSK, 2026, 11, 30, 23, 30)
    tuesday_early = local(MSK, 2026, 12, 1, 1, 30)
    assert next_window(night, [MSK], monday_late, None) == Window(start=monday_late, end=local(MSK, 2026, 12, 1, 2))
    assert next_window(night, [MSK], tuesday_early, None) == Window(start=tuesday_early, end=local(MSK, 2026, 12, 1, 2))
    after = next_window(night, [MSK], local(MSK, 2026, 12, 1, 2, 0), None)
    assert after is not None and after.start == local(MSK, 2026, 12, 7, 22, 0)  # next Monday


def test_weekdays_only_skips_the_weekend() -> None:
    friday_evening = local(MSK, 2026, 12, 4, 23, 30)
    window = next_window(schedule(days="mon-fri"), [MSK], friday_evening, None)
    assert window is not None and window.start == local(MSK, 2026, 12, 7, 10, 0)


def test_dst_change_keeps_local_hours() -> None:
    """Berlin moves to summer time on 29 March 2026: 10:00 local is 09:00 UTC before, 08:00 UTC after."""
    berlin = schedule(timezone=BERLIN)
    saturday = next_window(berlin, [BERLIN], utc(2026, 3, 28, 0), None)
    sunday = next_window(berlin, [BERLIN], utc(2026, 3, 28, 23), None)
    assert saturday == Window(start=utc(2026, 3, 28, 9), end=utc(2026, 3, 28, 22))
    assert sunday == Window(start=utc(2026, 3, 29, 8), end=utc(2026, 3, 29, 21))
    autumn = next_window(berlin, [BERLIN], utc(2026, 10, 25, 0), None)  # back to winter time
    assert autumn == Window(start=utc(2026, 10, 25, 9), end=utc(2026, 10, 25, 22))


def test_all_zones_must_allow_the_hour() -> None:
    """Kaliningrad (UTC+2) and Kamchatka (UTC+12) share 10:00-23:00 only from 08:00 to 11:00 UTC."""
    zones = ["Europe/Kaliningrad", "Asia/Kamchatka"]
    window = next_window(Schedule(), zones, utc(2026, 12, 1, 0), None)
    assert window == Window(start=utc(2026, 12, 1, 8), end=utc(2026, 12, 1, 11))


def test_zones_without_a_common_window() -> None:
    evening = schedule(hours="18:00-21:00")
    assert not has_common_window(evening, ["Europe/Kaliningrad", "Asia/Kamchatka"], utc(2026, 12, 1))
    assert has_common_window(evening, ["Europe/Kaliningrad", MSK], utc(2026, 12, 1))


def test_no_window_before_the_end_date() -> None:
    at = local(MSK, 2026, 12, 1, 23, 30)
    assert next_window(Schedule(), [MSK], at, local(MSK, 2026, 12, 2, 9, 0)) is None
    window = next_window(Schedule(), [MSK], at, local(MSK, 2026, 12, 2, 12, 0))
    assert window == Window(start=local(MSK, 2026, 12, 2, 10), end=local(MSK, 2026, 12, 2, 12))


def test_adjacent_days_merge_into_one_window() -> None:
    whole_days = windows(schedule(hours="00:00-24:00", days="mon-tue"), [MSK], utc(2026, 11, 30), utc(2026, 12, 3))
    assert whole_days == [Window(start=local(MSK, 2026, 11, 30), end=local(MSK, 2026, 12, 2))]


# --- parsing and contradictions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "expected"),
    [("mon-fri", {0, 1, 2, 3, 4}), (["mon", "wed"], {0, 2}), ("sat,sun", {5, 6}), ("fri-mon", {4, 5, 6, 0})],
)
def test_days(days: object, expected: set[int]) -> None:
    assert schedule(days=days).days == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days": []}, "no day is allowed"),
        ({"days": "mon-fry"}, "'fry' is not a day"),
        ({"hours": "10-23"}, "write hours as HH:MM-HH:MM"),
        ({"hours": "10:00-10:00"}, "the window is empty"),
        ({"hours": "25:00-26:00"}, "not a time of day"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_schedule_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(**fields)


@pytest.mark.parametrize(("text", "interval"), [("600/min", 0.1), ("20000/hour", 0.18), ("5/s", 0.2)])
def test_speed(text: str, interval: float) -> None:
    assert Speed.model_validate(text).interval == timedelta(seconds=interval)


@pytest.mark.parametrize("text", ["0/min", "-5/min", "fast", "10/day"])
def test_bad_speed(text: str) -> None:
    with pytest.raises(ValueError):
        Speed.model_validate(text)


def test_a_speed_given_as_a_table_is_one_of_the_written_units() -> None:
    assert str(Speed.model_validate({"count": 5, "seconds": 3600})) == "5/hour"
    with pytest.raises(ValueError, match="the unit must be"):
        Speed.model_validate({"count": 5, "seconds": 7})


def test_naive_times_are_moscow_and_explicit_ones_are_kept() -> None:
    assert aware("2026-12-01T10:00") == local(MSK, 2026, 12, 1, 10)
    assert aware("2026-12-01T10:00+01:00") == utc(2026, 12, 1, 9)
    assert aware("2026-12-01T10:00[Europe/Berlin]") == local(BERLIN, 2026, 12, 1, 10)
    with pytest.raises(ValueError, match="write a date-time"):
        aware("tomorrow")


def spec_file(tmp_path: Path, head: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(
        f'name = "Timed"\nnumbers = ["+79990000001"]\n{head}\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n',
        encoding="utf-8",
    )
    return path


def test_spec_timing_keys(tmp_path: Path) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            'start_at = "2026-12-01T10:00"\nend_at = 2026-12-03T21:00:00\nspeed = "600/min"\n'
            '[schedule]\ndays = "mon-fri"\nhours = "10:00-23:00"\ntimezone = "subscriber"',
        )
    )
    assert spec.start_at == local(MSK, 2026, 12, 1, 10) and spec.end_at == local(MSK, 2026, 12, 3, 21)
    assert spec.speed == Speed(count=600, seconds=60) and spec.schedule.per_subscriber


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ('start_at = "2026-12-03T10:00"\nend_at = "2026-12-01T10:00"', "end_at: must be after start_at"),
        ('speed = "0/min"', "speed: must be more than zero"),
        ("speed = { count = 5, seconds = 7 }", "speed: the unit must be 1 second, 60 or 3600"),
        ("speed = { count = 5, seconds = 0 }", "speed: the unit must be 1 second, 60 or 3600"),
        ("speed = { count = 5, seconds = -1 }", "speed: the unit must be 1 second, 60 or 3600"),
        ("speed = { count = 0, seconds = 60 }", "speed: must be more than zero"),
        ("[schedule]\ndays = []", "schedule.days: no day is allowed"),
        ('[schedule]\ntimezone = "Moscow"', "schedule.timezone: unknown time zone 'Moscow'"),
    ],
)
def test_contradictions_name_the_field(tmp_path: Path, head: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(spec_file(tmp_path, head))


SANDBOX = {"sandbox": ProviderAccount("sandbox", frozenset(Channel))}


def test_launch_problems_need_the_clock() -> None:
    base = {
        "name": "T",
        "numbers": ["+79990000001"],
        "steps": [{"channel": "sms", "sender": "S", "text": "x", "wait": "5m"}],
    }
    now = local(MSK, 2026, 12, 1, 12)
    past = MailingSpec.model_validate(base | {"end_at": "2026-12-01T11:00"})
    assert past.launch_problems(now, SANDBOX) == ["end_at: 2026-12-01T11:00:00+03:00 is in the past"]
    no_window = MailingSpec.model_validate(base | {"start_at": "2026-12-01T23:30", "end_at": "2026-12-02T09:00"})
    assert no_window.launch_problems(now, SANDBOX) == [
        "schedule: no allowed window (every day 10:00-23:00 Europe/Moscow) between the start and end_at"
    ]
    fine = MailingSpec.model_validate(base | {"end_at": "2026-12-02T11:00"})
    assert fine.launch_problems(now, SANDBOX) == []
