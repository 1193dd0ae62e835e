"""The mailing spec (a TOML file) and its validation, with errors that name the field and the reason."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from domain.channels import definition
from domain.durations import parse_duration
from domain.schedule import ALWAYS, Schedule, Speed, aware, next_window
from domain.status import Channel, MessageStatus
from domain.whatsapp import WhatsAppTemplate

LATE_REPORTS_MAX = timedelta(hours=72)
FAILOVER_AFTER_MAX = timedelta(hours=1)
BUTTON_CAPTION_MAX = 30
BUTTON_URL_MAX = 2048
BUTTON_URL_SCHEMES = ("http", "https", "viber", "mailto", "tel")
# A spec is a few KB. The caps refuse hostile files before tomllib sees them: it recurses once per nesting
# level (RecursionError) and is quadratic in the parts of a dotted key (a 100 KB key took 8 GB).
MAX_SPEC_BYTES = 256 * 1024
MAX_NESTING = 32
MAX_KEY_PARTS = 32


class SpecError(ValueError):
    """A spec that cannot be launched; the message lists every problem as `field: reason`."""


def _duration(value: Any) -> Any:
    """Human text ("5m") from a spec; ISO 8601 ("PT5M", how payloads carry it) is left to pydantic."""
    if isinstance(value, str) and not value.upper().startswith("P"):
        return parse_duration(value)
    return value


class Button(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    caption: str = Field(min_length=1, max_length=BUTTON_CAPTION_MAX)
    url: str = Field(min_length=1, max_length=BUTTON_URL_MAX)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in BUTTON_URL_SCHEMES:
            raise ValueError(f"URL scheme must be one of {', '.join(BUTTON_URL_SCHEMES)}, not {scheme!r}")
        return url


class Step(BaseModel):
    """One channel of the cascade: what to send and how long to wait for which status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Channel
    sender: str = Field(min_length=1, max_length=50)
    text: str = ""
    image_url: str | None = None
    button: Button | None = None
    template: WhatsAppTemplate | None = None  # whatsapp only (and required there): an approved template
    wait: timedelta
    expect: Literal[MessageStatus.DELIVERED, MessageStatus.READ] = MessageStatus.DELIVERED
    # overrides the mailing's provider for this step; a list fails over from one account to the next
    provider: str | list[str] | None = None

    _parse_wait = field_validator("wait", mode="before")(_duration)
    _check_providers = field_validator("provider")(lambda value: _accounts_list(value))

    @field_validator("wait")
    @classmethod
    def _wait_range(cls, wait: timedelta, info: ValidationInfo) -> timedelta:
        channel = info.data.get("channel")  # absent when the channel itself is invalid: reported there
        problem = definition(channel).wait_problem(wait) if channel is not None else None
        if problem:
            raise ValueError(problem)
        return wait

    @field_validator("image_url")
    @classmethod
    def _image(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL")
            if not parts.path.lower().endswith((".jpg", ".jpeg", ".png")):
                raise ValueError("image must be a JPG or PNG file")
        return url

    @property
    def personalised(self) -> tuple[str, ...]:
        """Every string of the step that holds recipient variables: its text and its template's parameters."""
        return (self.text, *(self.template.parameters if self.template else ()))

    @model_validator(mode="after")
    def _channel_rules(self) -> Self:
        rules = definition(self.channel)
        problem = (
            rules.template_problem(self.template)
            or rules.content_problem(self.text, self.image_url, self.button)
            or rules.expect_problem(self.expect)
        )
        if problem:
            raise ValueError(problem)
        return self


class MailingSpec(BaseModel):
    """What the user writes in the TOML file (paths already resolved against the spec's folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=180)
    recipients: Path | None = None
    numbers: list[str] | None = Field(default=None, min_length=1)
    sheet: str | None = Field(default=None, min_length=1)  # a workbook's sheet by name; default the first
    header: bool | None = None  # whether the file's first row is a header; default detected
    phone_column: str | int | None = None  # header name or 1-based number; default detected, else column 1
    region: str = Field(default="RU", pattern=r"^[A-Z]{2}$")
    keep_landlines: bool = False  # fixed-line numbers are refused as "not a mobile number" unless kept
    provider: str | list[str] = "sandbox"  # a list: the accounts a step fails over through, in order
    # How long an account that is not a step's last may fail (outage) before the step goes to the next one.
    failover_after: timedelta = timedelta(minutes=1)
    late_reports: timedelta = timedelta(minutes=10)
    start_at: datetime | None = None  # naive: Moscow time
    end_at: datetime | None = None
    speed: Speed | None = None  # recipients started per minute/hour; default: as fast as the server goes
    schedule: Schedule = Schedule()
    steps: list[Step] = Field(min_length=1, max_length=10)

    _parse_late = field_validator("late_reports", mode="before")(_duration)
    _parse_failover = field_validator("failover_after", mode="before")(_duration)
    _check_providers = field_validator("provider")(lambda value: _accounts_list(value))

    @field_validator("failover_after")
    @classmethod
    def _failover_range(cls, after: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= after <= FAILOVER_AFTER_MAX:
            raise ValueError("must be between 1s and 1h")
        return after

    @field_validator("late_reports")
    @classmethod
    def _late_range(cls, late: timedelta) -> timedelta:
        if not timedelta(0) <= late <= LATE_REPORTS_MAX:  # every recipient's workflow stays open this long
            raise ValueError("must be between 0s and 72h")
        return late

    _parse_moments = field_validator("start_at", "end_at", mode="before")(aware)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.recipients is None) == (self.numbers is None):
            raise ValueError("give exactly one of `recipients` (a file) or `numbers` (a list)")
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at: must be after start_at")
        file_options = [name for name in ("sheet", "header", "phone_column") if getattr(self, name) is not None]
        if self.numbers is not None and file_options:
            raise ValueError(f"{', '.join(file_options)}: only for a `recipients` file, not a `numbers` list")
        return self

    def cascade(self) -> CascadePlan:
        """What each recipient workflow needs of the spec (not the recipient list)."""
        return CascadePlan(
            steps=self.steps,
            provider=self.provider,
            failover_after=self.failover_after,
            late_reports=self.late_reports,
            schedule=self.schedule,
            end_at=self.end_at,
        )

    def launch_problems(self, now: datetime, accounts: Mapping[str, ProviderAccount]) -> list[str]:
        """What only the launch can tell, checked by every launch point (CLI `validate`, `start`, `estimate`,
        the import activity): each step's provider account exists and sends the step's channel (`accounts`:
        the deployment's, by name); and the clock: an end in the past, no allowed window before the end."""
        problems = self.provider_problems(accounts)
        if self.end_at is not None and self.end_at <= now:
            problems.append(f"end_at: {self.end_at.isoformat()} is in the past")
        elif self.end_at is not None:
            start = max(now, self.start_at or now)
            if next_window(self.schedule, self.schedule.default_zones, start, self.end_at) is None:
                problems.append(
                    f"schedule: no allowed window ({self.schedule.describe()}) between the start and end_at"
                )
        return problems

    def provider_problems(self, accounts: Mapping[str, ProviderAccount]) -> list[str]:
        """`steps.N.provider` (1-based) for each step whose account is unknown or does not send its channel."""
        problems = []
        for number, step in enumerate(self.steps, start=1):
            where = f"steps.{number}.provider"
            for name in self.cascade().providers_for(step):
                account = accounts.get(name)
                if account is None:
                    known = ", ".join(sorted(accounts))
                    problems.append(f"{where}: {name!r} is not a configured provider account (known: {known})")
                elif step.channel not in account.channels:
                    sends = ", ".join(sorted(c.value for c in account.channels)) or "nothing"
                    problems.append(
                        f"{where}: {name!r} ({account.type}) does not send {step.channel.value} (it sends: {sends})"
                    )
        return problems


@dataclass(frozen=True)
class ProviderAccount:
    """A provider account as the launch checks see it: its type (`sandbox`, `twilio`, …) and its channels."""

    type: str
    channels: frozenset[Channel]


class CascadePlan(BaseModel):
    """The cascade every recipient of a mailing goes through."""

    model_config = ConfigDict(frozen=True)

    steps: list[Step]
    provider: str | list[str]
    late_reports: timedelta
    schedule: Schedule = ALWAYS  # a plan made without a spec (tests, benchmarks) has no schedule limits
    end_at: datetime | None = None
    failover_after: timedelta = timedelta(minutes=1)

    def providers_for(self, step: Step) -> list[str]:
        """The accounts a step is sent through, in failover order."""
        chosen = step.provider or self.provider
        return [chosen] if isinstance(chosen, str) else list(chosen)

    def provider_for(self, step: Step) -> str:
        """The step's first account (the only one, without failover)."""
        return self.providers_for(step)[0]


def _accounts_list(value: str | list[str] | None) -> str | list[str] | None:
    """A provider list names 1 to 5 accounts, each once."""
    if isinstance(value, list):
        if not 1 <= len(value) <= 5:
            raise ValueError("a failover list names 1 to 5 provider accounts")
        if len(set(value)) != len(value) or not all(value):
            raise ValueError("a failover list names each provider account once, none empty")
    return value


def format_validation_error(error: ValidationError) -> str:
    """One `field.path: reason` line per problem — what a person needs to fix the file."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {reason}")
    return "\n".join(lines)


def load_spec(path: Path) -> MailingSpec:
    """Read and validate a spec file; relative `recipients` paths are taken from the spec's folder.

    Anything wrong with the file — unreadable, too big, not UTF-8, pathological structure, bad values — is a
    SpecError naming the file or the field, never another exception (the CLI prints `error: …` for it)."""
    text = _read_text(path)
    problem = structure_problem(text)
    if problem:
        raise SpecError(f"{path}: {problem}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError:  # the structure check should have caught it; never a traceback all the same
        raise SpecError(f"{path}: nested too deeply") from None
    except ValueError as exc:  # int() past Python's digit limit: a plain ValueError, not a TOMLDecodeError
        raise SpecError(f"{path}: not valid TOML: a number is too long ({exc})") from None
    recipients = raw.get("recipients")
    if isinstance(recipients, str):
        if "\0" in recipients:
            raise SpecError(f"{path}:\nrecipients: the path contains a NUL character")
        try:
            raw["recipients"] = (path.parent / recipients).resolve()
        except (OSError, ValueError) as exc:
            raise SpecError(f"{path}:\nrecipients: not a usable path: {exc}") from None
    try:
        spec = MailingSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}:\n{format_validation_error(exc)}") from exc
    except (ArithmeticError, RecursionError) as exc:  # a validator that let one through: still the file's fault
        raise SpecError(f"{path}: a value is out of range ({type(exc).__name__})") from None
    if spec.recipients is not None and not spec.recipients.is_file():
        raise SpecError(f"{path}:\nrecipients: file not found: {spec.recipients}")
    return spec


def _read_text(path: Path) -> str:
    """The file as text: at most MAX_SPEC_BYTES, UTF-8 (a BOM, as Windows editors write, is allowed)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KB; a spec is a few KB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"{path}: not UTF-8 text (line {line}, byte {exc.start}); save it as UTF-8") from None


def structure_problem(text: str) -> str | None:
    """Why `text` is too deeply nested or has too long a dotted key for tomllib, or None — in one linear pass.

    Strings and comments are skipped, so dots and brackets in texts do not count. Dotted-key parts are the
    dots since the last `=`, `,`, bracket or line end: a float or a date has one or two, a key a handful.
    """
    depth = dots = 0
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char == "#":
            newline = text.find("\n", i)
            i = end if newline < 0 else newline
            continue
        if char in "\"'":
            i = _string_end(text, i)
            continue
        if char in "[{":
            depth, dots = depth + 1, 0
            if depth > MAX_NESTING:
                return f"line {_line(text, i)}: arrays or tables nested deeper than {MAX_NESTING}"
        elif char in "]}":
            depth, dots = max(0, depth - 1), 0
        elif char == ".":
            dots += 1
            if dots >= MAX_KEY_PARTS:
                return f"line {_line(text, i)}: a dotted key of more than {MAX_KEY_PARTS} parts"
        elif char in "=,\n":
            dots = 0
        i += 1
    return None


def _string_end(text: str, start: int) -> int:
    """The index just past the TOML string opening at `start` (or the line's end if it never closes)."""
    quote = text[start]
    if text.startswith(quote * 3, start):
        i = start + 3
        while i < len(text):
            if quote == '"' and text[i] == "\\":
                i += 2
            elif text.startswith(quote * 3, i):
                closing = i + 3
                while closing < min(len(text), i + 5) and text[closing] == quote:  # `""""`: a quote of content
                    closing += 1
                return closing
            else:
                i += 1
        return len(text)
    i = start + 1
    while i < len(text) and text[i] != "\n":
        if quote == '"' and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    return i


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1
