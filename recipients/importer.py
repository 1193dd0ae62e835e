"""Validate, de-duplicate and store a recipient list; report what happened to every row."""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TextIO

import phonenumbers
import phonenumbers.timezone
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell, WriteOnlyCell
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from domain.models import ImportReport, RejectedRow
from domain.phones import PhoneClassifier, RejectReason
from domain.schedule import KNOWN_ZONES, Schedule, has_common_window
from domain.spec import MailingSpec
from domain.template import variables_used
from recipients.reader import Progress, RecipientsError, SourceOptions, Table, read_file, read_manual

SAMPLE_SIZE = 20
SAMPLE_CHARS = 100  # a sample's value and reason are cut to this (the report crosses Temporal, 2 MB)
REJECTED_SUFFIXES = (".csv", ".xlsx")
REJECTED_HEADER = ("row", "value", "reason")
# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): neutralised in every export.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Header names (lower case) of a column that gives each subscriber's time zone.
ZONE_HEADERS = frozenset({"timezone", "time zone", "time_zone", "tz", "часовой пояс"})

# Called for each valid recipient: (row number, E.164 number, the variables the texts use, its time zones
# when the schedule follows the subscriber's local time).
ValidSink = Callable[[int, str, dict[str, str], list[str] | None], None]


class StoredRecipient(NamedTuple):
    position: int
    phone: str
    variables: dict[str, str]
    zones: list[str] | None


@dataclass(frozen=True)
class ListRules:
    """What decides whether a row can be sent: numbering region, landline policy, the texts' variables, and
    (for a schedule in the subscriber's local time) the schedule and the moment the zones are judged at."""

    region: str = "RU"
    keep_landlines: bool = False
    texts: tuple[str, ...] = ()
    schedule: Schedule | None = None
    now: datetime | None = None

    @classmethod
    def of(cls, spec: MailingSpec, now: datetime | None = None) -> ListRules:
        texts = tuple(text for step in spec.steps for text in step.personalised)
        schedule = spec.schedule if spec.schedule.per_subscriber else None
        return cls(spec.region, spec.keep_landlines, texts, schedule, max(now, spec.start_at or now) if now else None)


class SubscriberZones:
    """Each subscriber's candidate zones: a `timezone` cell, else all the zones phonenumbers gives the number.

    When the candidates share no allowed window (a Russian mobile maps to 16 zones, from UTC+2 to UTC+12),
    the schedule's fallback zone is used instead, and counted.
    """

    def __init__(self, schedule: Schedule, now: datetime) -> None:
        self._schedule, self._now = schedule, now
        self._usable: dict[tuple[str, ...], bool] = {}
        self.fallbacks = 0

    def of(self, e164: str, declared: str) -> list[str] | RejectReason:
        if declared:
            if declared not in KNOWN_ZONES:
                return RejectReason.UNKNOWN_ZONE
            candidates: tuple[str, ...] = (declared,)
        else:
            found = phonenumbers.timezone.time_zones_for_number(phonenumbers.parse(e164))
            candidates = tuple(z for z in found if z in KNOWN_ZONES) or (self._schedule.fallback_timezone,)
        usable = self._usable.get(candidates)
        if usable is None:
            usable = self._usable[candidates] = has_common_window(self._schedule, candidates, self._now)
        if not usable:
            self.fallbacks += 1
            return [self._schedule.fallback_timezone]
        return list(candidates)


def open_source(spec: MailingSpec, progress: Progress | None = None) -> Table:
    """The spec's recipient source as a table, after checking that every variable the texts use exists."""
    if spec.recipients is None:
        table = read_manual(spec.numbers or [])
    else:
        options = SourceOptions(sheet=spec.sheet, header=spec.header, phone_column=spec.phone_column)
        table = read_file(spec.recipients, options, progress)
    for index, step in enumerate(spec.steps):
        for where, text in zip(
            ("text", "template.parameters"), (step.text, " ".join(step.personalised[1:])), strict=True
        ):
            missing = [
                name
                for name, default in variables_used(text).items()
                if default is None and name not in table.variable_names
            ]
            if missing:
                columns = ", ".join(sorted(table.variable_names, key=lambda n: (n.isdigit(), n)))
                raise RecipientsError(
                    f"steps.{index}.{where} uses {', '.join('{' + m + '}' for m in missing)}, "
                    f"which the recipients do not have (columns: {columns})"
                )
    return table


def validate_rows(
    table: Table,
    rules: ListRules,
    rejected_out: Callable[[int, str, str], None] | None = None,
    valid_out: ValidSink | None = None,
) -> ImportReport:
    """Classify every row: valid (first of its number), invalid (with a reason) or a duplicate.

    The loop is the hot path of a million-row import: the phone is classified by PhoneClassifier, a row's
    variables are only looked at for the names the texts use, and a duplicate is found by the number as an int.
    """
    reasons: Counter[RejectReason | None] = Counter()
    sample: list[RejectedRow] = []
    classify = PhoneClassifier(rules.region, allow_landline=rules.keep_landlines).classify
    used: dict[str, str | None] = {}
    for text in rules.texts:  # a variable is required if any text uses it without a default
        for name, default in variables_used(text).items():
            if name not in used or default is None:
                used[name] = default
    columns = {name: table.column_of(name) for name in used if name in table.variable_names}
    required = [(name, columns[name]) for name, default in used.items() if default is None]
    first_row: dict[int, int] = {}  # E.164 digits → the row that has them
    rows = duplicates = 0
    phone_index = table.phone_index
    zones = SubscriberZones(rules.schedule, rules.now or datetime.now(UTC)) if rules.schedule else None
    zone_index = next((i for i, name in enumerate(table.header or ()) if name.lower() in ZONE_HEADERS), None)

    def reject(row: int, value: str, reason: str) -> None:
        if rejected_out is not None:
            rejected_out(row, value, reason)
        if len(sample) < SAMPLE_SIZE:
            sample.append(RejectedRow(row=row, value=_cut(value), reason=_cut(reason)))

    for row, cells in table.records:
        rows += 1
        phone = cells[phone_index] if phone_index < len(cells) else ""
        e164, reason = classify(phone)
        if e164 is None:
            reasons[reason] += 1
            reject(row, phone, str(reason))
            continue
        key = int(e164[1:])
        if key in first_row:
            duplicates += 1  # counted apart from invalid rows
            reject(row, phone, f"duplicate of row {first_row[key]}")
            continue
        if required:
            missing = next((name for name, i in required if i >= len(cells) or not cells[i].strip()), None)
            if missing is not None:
                reasons[RejectReason.MISSING_VARIABLE] += 1
                reject(row, phone, f"{RejectReason.MISSING_VARIABLE}: {{{missing}}}")
                continue
        subscriber_zones = None
        if zones is not None:
            declared = cells[zone_index].strip() if zone_index is not None and zone_index < len(cells) else ""
            found = zones.of(e164, declared)
            if isinstance(found, RejectReason):
                reasons[found] += 1
                reject(row, phone, f"{found}: {declared!r}")
                continue
            subscriber_zones = found
        first_row[key] = row
        if valid_out is not None:
            variables = {name: cells[i].strip() if i < len(cells) else "" for name, i in columns.items()}
            valid_out(row, e164, variables, subscriber_zones)
    return ImportReport(
        rows=rows,
        valid=len(first_row),
        invalid=sum(reasons.values()),
        duplicates=duplicates,
        invalid_by_reason={str(reason): count for reason, count in reasons.items()},
        rejected_sample=sample,
        zone_fallback=zones.fallbacks if zones else 0,
    )


def _cut(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"


REJECTED_RAW = "rejected.jsonl"  # the rejected rows unneutralised, for the ledger


def stored_list_path(data_dir: Path, mailing_id: str) -> Path:
    return data_dir / "mailings" / mailing_id / "recipients.jsonl"


def import_recipients(spec: MailingSpec, data_dir: Path, mailing_id: str, now: datetime | None = None) -> ImportReport:
    """Write the valid, de-duplicated recipients (one JSON object a line) and the rejected rows (CSV).

    Only the variables the texts use are stored: the rest of a row is personal data kaskad does not need.
    Files are written under a temporary name and renamed, so a retried import simply redoes the work.
    """
    table = open_source(spec)
    folder = stored_list_path(data_dir, mailing_id).parent
    folder.mkdir(parents=True, exist_ok=True)
    stored, rejected_file = folder / "recipients.jsonl", folder / "rejected.csv"
    rejected_raw = folder / REJECTED_RAW
    with (
        _atomic(stored) as valid_file,
        rejected_writer(rejected_file) as rejected_out,
        _atomic(rejected_raw) as raw_file,
    ):

        def store(row: int, phone: str, variables: dict[str, str], zones: list[str] | None) -> None:
            item = {"row": row, "phone": phone, "vars": variables} | ({"zones": zones} if zones else {})
            valid_file.write(json.dumps(item, ensure_ascii=False) + "\n")

        def reject(row: int, value: str, reason: str) -> None:
            rejected_out(row, value, reason)
            raw_file.write(json.dumps([row, value, reason], ensure_ascii=False) + "\n")

        report = validate_rows(table, ListRules.of(spec, now or datetime.now(UTC)), reject, store)
    return report.model_copy(update={"stored_list": stored, "rejected_file": rejected_file})


def neutralise(text: str) -> str:
    """The text with a `'` in front if it begins like a formula (`=` `+` `-` `@` tab CR), else unchanged.

    A recipient list is someone else's data: a value such as `=HYPERLINK(…)` written as it is to a .csv or
    .xlsx export would run in the spreadsheet of whoever opens it. OWASP's CSV-injection rule: the quote makes
    Excel and Calc take the cell as text, and the original text stays visible after it. Every .csv export goes
    through this one function; an .xlsx export keeps the text exact and styles the cell quote-prefixed instead
    (`_text_cell`).
    """
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@contextmanager
def rejected_writer(path: Path) -> Iterator[Callable[[int, str, str], None]]:
    """A function that writes one rejected row (row, value, reason) to a .csv or .xlsx file, streamed.

    In .csv, text cells are neutralised (see `neutralise`); in .xlsx they are explicit string cells (openpyxl
    would otherwise store any text that starts with `=` as a live formula), those that begin like a formula
    styled quote-prefixed instead of given a visible `'` (see `_text_cell`).
    """
    if path.suffix.lower() not in REJECTED_SUFFIXES:
        raise RecipientsError(f"{path.name}: the rejected rows can be written to .csv or .xlsx")
    if path.suffix.lower() == ".csv":
        with _atomic(path) as file:
            writer = csv.writer(file)
            writer.writerow(REJECTED_HEADER)
            yield lambda row, value, reason: writer.writerow((row, neutralise(value), neutralise(reason)))
        return
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("rejected")
    sheet.append([_text_cell(sheet, name) for name in REJECTED_HEADER])
    yield lambda row, value, reason: sheet.append((row, _text_cell(sheet, value), _text_cell(sheet, reason)))
    tmp = path.with_name(path.name + ".tmp")
    try:
        workbook.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _text_cell(sheet: WriteOnlyWorksheet, text: str) -> Cell:
    """The text as an explicit string cell: never a formula, whatever openpyxl infers from it. A text that
    begins like a formula keeps its exact characters and gets the quote-prefix style (`quotePrefix`, what
    Excel and Calc set when one types `'=1+1`): shown and edited as text, no visible quote. Control characters
    an .xlsx cannot hold become U+FFFD."""
    cell = WriteOnlyCell(sheet, ILLEGAL_CHARACTERS_RE.sub("\ufffd", text))
    cell.data_type = "s"
    if text.startswith(FORMULA_STARTS):
        cell.quotePrefix = True
    return cell


def read_stored(path: Path, start: int = 0) -> Iterator[StoredRecipient]:
    """Stored recipients from position `start` on."""
    with path.open(encoding="utf-8") as lines:
        for position, line in enumerate(itertools.islice(lines, start, None), start=start):
            item = json.loads(line)
            yield StoredRecipient(position, item["phone"], item["vars"], item.get("zones"))


def read_stored_rows(path: Path) -> Iterator[tuple[int, StoredRecipient]]:
    """Every stored recipient with the row of the file it came from."""
    with path.open(encoding="utf-8") as lines:
        for position, line in enumerate(lines):
            item = json.loads(line)
            yield item["row"], StoredRecipient(position, item["phone"], item["vars"], item.get("zones"))


def read_rejected_raw(folder: Path) -> Iterator[tuple[int, str, str]]:
    """The rejected rows (row, value, reason) as they were: for the ledger, which neutralises on export."""
    with (folder / REJECTED_RAW).open(encoding="utf-8") as lines:
        for line in lines:
            row, value, reason = json.loads(line)
            yield int(row), str(value), str(reason)


@contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    """Write a text file under a temporary name; rename it into place only on success."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as file:
            yield file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
