"""Validate, de-duplicate and store a recipient list; report what happened to every row."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from domain.models import ImportReport, RejectedRow
from domain.phones import RejectReason, normalize_phone
from domain.spec import MailingSpec
from domain.template import MissingVariableError, render, variables_used
from recipients.reader import RecipientsError, Table, read_file, read_manual

SAMPLE_SIZE = 20


def open_source(spec: MailingSpec) -> Table:
    """The spec's recipient source as a table, after checking that every variable the texts use exists."""
    table = read_file(spec.recipients) if spec.recipients is not None else read_manual(spec.numbers or [])
    for index, step in enumerate(spec.steps):
        missing = [
            name
            for name, default in variables_used(step.text).items()
            if default is None and name not in table.variable_names
        ]
        if missing:
            columns = ", ".join(sorted(table.variable_names, key=lambda n: (n.isdigit(), n)))
            raise RecipientsError(
                f"steps.{index}.text uses {', '.join('{' + m + '}' for m in missing)}, "
                f"which the recipients do not have (columns: {columns})"
            )
    return table


def stored_list_path(data_dir: Path, mailing_id: str) -> Path:
    return data_dir / "mailings" / mailing_id / "recipients.jsonl"


def import_recipients(spec: MailingSpec, data_dir: Path, mailing_id: str) -> ImportReport:
    """Write the valid, de-duplicated recipients (one JSON object a line) and the rejected rows (CSV).

    Files are written under a temporary name and renamed, so a retried import simply redoes the work.
    """
    table = open_source(spec)
    folder = stored_list_path(data_dir, mailing_id).parent
    folder.mkdir(parents=True, exist_ok=True)
    stored, rejected_file = folder / "recipients.jsonl", folder / "rejected.csv"
    report = ImportReport(stored_list=stored, rejected_file=rejected_file)
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    with _atomic(stored) as valid_out, _atomic(rejected_file) as rejected_out:
        rejected = csv.writer(rejected_out)
        rejected.writerow(["row", "value", "reason"])

        def reject(row: int, value: str, reason: str) -> None:
            rejected.writerow([row, value, reason])
            if len(report.rejected_sample) < SAMPLE_SIZE:
                report.rejected_sample.append(RejectedRow(row=row, value=value, reason=reason))

        for row in table.rows:
            report.rows += 1
            result = normalize_phone(row.phone, spec.region)
            if result.e164 is None:
                reasons[str(result.reason)] += 1
                reject(row.number, row.phone, str(result.reason))
                continue
            if result.e164 in seen:
                report.duplicates += 1  # counted apart from invalid rows
                reject(row.number, row.phone, "duplicate")
                continue
            try:
                for step in spec.steps:
                    render(step.text, row.variables)
            except MissingVariableError as exc:
                reasons[str(RejectReason.MISSING_VARIABLE)] += 1
                reject(row.number, row.phone, f"{RejectReason.MISSING_VARIABLE}: {{{exc.variable}}}")
                continue
            seen.add(result.e164)
            report.valid += 1
            valid_out.write(json.dumps({"row": row.number, "phone": result.e164, "vars": row.variables}) + "\n")
    report.invalid_by_reason = dict(reasons)
    report.invalid = sum(report.invalid_by_reason.values())
    return report


def read_stored(path: Path, start: int = 0) -> Iterator[tuple[int, str, dict[str, str]]]:
    """Stored recipients from position `start` on, as (position, phone, variables)."""
    with path.open(encoding="utf-8") as lines:
        for position, line in enumerate(lines):
            if position >= start:
                item = json.loads(line)
                yield position, item["phone"], item["vars"]


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
