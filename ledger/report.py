"""A mailing's report from the ledger: an .xlsx workbook (Summary with a native bar chart of the funnel, Detail,
Rejected) or a .csv of the Detail sheet.

Streamed end to end: the recipients are read a batch at a time (see ledger.queries) and written through
openpyxl's write-only mode, which keeps each sheet in a temporary file, so a million recipients take bounded
memory (benchmarks/report.py measures it). The Summary's figures are folded in the same pass that writes the
Detail sheet, so the two always agree. The file is written under a temporary name in the destination folder
and renamed into place only when complete: a failure leaves nothing half-written.

Every text that comes from outside (provider errors, account names, rejected values and reasons) goes through
`recipients.importer.neutralise` (OWASP's formula-injection rule), as every export of kaskad does. Validated
E.164 numbers (`+` and digits) are written as they are: a `'` in front would corrupt them, and a `+` followed
by digits is a number to a spreadsheet, never a formula.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, WriteOnlyCell
from openpyxl.chart import BarChart, Reference
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from sqlalchemy import Connection

from ledger.queries import (
    FUNNEL,
    FiguresBuilder,
    LedgerFigures,
    MailingRow,
    Recipient,
    UnknownMailing,
    iter_recipients,
    late_reports,
    load_mailing,
    rejected,
)
from providers.prices import PriceBook
from recipients.importer import neutralise

REPORT_SUFFIXES = (".xlsx", ".csv")
CHART_STAGES = ("sent", "delivered", "read", "undelivered")  # the funnel the chart draws
STEP_COLUMNS = ("channel", "status", "sent (UTC)", "delivered (UTC)", "read (UTC)", "error", "parts", "account")
_E164 = re.compile(r"\+\d{1,15}")


class ReportError(Exception):
    """The report cannot be written as asked (unknown mailing, unsupported extension); the CLI prints it."""


@dataclass(frozen=True)
class ReportResult:
    path: Path
    recipients: int
    figures: LedgerFigures


def detail_header(steps: int) -> list[str]:
    header = ["row", "phone", "status", "delivering channel"]
    for number in range(1, steps + 1):
        header += [f"step {number} {name}" for name in STEP_COLUMNS]
    return header


def text(value: str | None) -> str | None:
    """A text cell: neutralised (see recipients.importer.neutralise), control characters an .xlsx cannot hold
    replaced; a validated phone number as it is."""
    if value is None or _E164.fullmatch(value):
        return value
    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", neutralise(value))


def _naive(moment: datetime | None) -> datetime | None:
    """UTC without its zone: Excel has no time zones (the headers say UTC)."""
    return moment.replace(tzinfo=None) if moment is not None else None


def detail_row(recipient: Recipient, steps: int) -> list[Any]:
    row: list[Any] = [recipient.row, text(recipient.phone), recipient.status, recipient.channel]
    for index in range(steps):
        m = recipient.step(index)
        if m is None:
            row += [None] * len(STEP_COLUMNS)
            continue
        row += [
            m.channel,
            m.status,
            _naive(m.sent_at),
            _naive(m.delivered_at),
            _naive(m.read_at),
            text(m.error),
            m.parts,
            text(m.account),
        ]
    return row


def write_report(conn: Connection, mailing_id: str, out: Path, prices: PriceBook) -> ReportResult:
    """Write the report of `mailing_id` to `out` (.xlsx or .csv). Raises ReportError, or OSError when the file
    cannot be written — in both cases nothing is left at `out` or beside it."""
    suffix = out.suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise ReportError(f"{out.name}: a report is written to .xlsx or .csv, not {suffix or 'a file without one'}")
    try:
        mailing = load_mailing(conn, mailing_id)
    except UnknownMailing:
        raise ReportError(f"no mailing {mailing_id!r} in the ledger") from None
    if out.is_dir():
        raise ReportError(f"{out}: is a folder")
    builder = FiguresBuilder(mailing, prices)
    with _atomic(out) as tmp:
        if suffix == ".csv":
            _write_csv(conn, mailing, builder, tmp)
        else:
            _write_xlsx(conn, mailing, builder, tmp)
    return ReportResult(out, builder.figures.recipients, builder.figures)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` (created now: an unwritable folder fails before any work), renamed to
    `path` on success and removed on failure."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # as any file the user creates (mkstemp makes it private)
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _detail(conn: Connection, mailing: MailingRow, builder: FiguresBuilder, write: Callable[[list[Any]], None]) -> None:
    steps = len(mailing.spec.steps)
    write(detail_header(steps))
    for recipient in iter_recipients(conn, mailing):
        builder.add(recipient)
        write(detail_row(recipient, steps))


def _write_csv(conn: Connection, mailing: MailingRow, builder: FiguresBuilder, tmp: Path) -> None:
    with tmp.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        _detail(
            conn,
            mailing,
            builder,
            lambda row: writer.writerow(
                [v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row]  # UTC, as the header says
            ),
        )
    builder.result(late_reports(conn, mailing.id))


def _write_xlsx(conn: Connection, mailing: MailingRow, builder: FiguresBuilder, tmp: Path) -> None:
    """openpyxl makes the workbook (Summary and its chart, styles, sheet list); the Detail and Rejected rows are
    streamed straight into the archive as SpreadsheetML (openpyxl's per-cell path costs ~45 µs a cell: nine
    minutes for a million recipients). A sheet holds at most Excel's 1,048,576 rows; more continue on
    `Detail (2)`, … each with the header again."""
    workbook = Workbook(write_only=True)
    summary = workbook.create_sheet("Summary")
    date_style = WriteOnlyCell(summary, datetime(2000, 1, 1)).style_id  # registers the date format once
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as archive:
        sheets = _StreamedSheets(archive, first_index=2, date_style=date_style)
        try:
            steps = len(mailing.spec.steps)
            detail = sheets.sheet("Detail", detail_header(steps))
            for recipient in iter_recipients(conn, mailing):
                builder.add(recipient)
                detail.append(detail_row(recipient, steps))
            detail.close()
            figures = builder.result(late_reports(conn, mailing.id))
            rejected_rows = sheets.sheet("Rejected", ["row", "value", "reason"])
            for row, value, reason in rejected(conn, mailing.id):
                rejected_rows.append([row, text(value), text(reason)])
            rejected_rows.close()
        finally:
            sheets.close_open()  # after a failure: lets the archive close, so the error itself is what is raised

        _summary_sheet(summary, mailing, figures)
        placeholders = [workbook.create_sheet(title) for title in sheets.titles]  # named; their rows are ours
        made = io.BytesIO()
        workbook.save(made)
        ours = {sheet.path.lstrip("/") for sheet in placeholders}
        if ours != set(sheets.paths):
            raise RuntimeError(f"openpyxl placed the sheets at {sorted(ours)}, not {sorted(sheets.paths)}")
        with zipfile.ZipFile(made) as parts:
            for info in parts.infolist():
                if info.filename not in ours:
                    archive.writestr(info.filename, parts.read(info))


ZIP_LEVEL = 5
EXCEL_MAX_ROWS = 1_048_576
_EXCEL_EPOCH = datetime(1899, 12, 30)
_SHEET_START = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<sheetViews><sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft"'
    ' state="frozen"/></sheetView></sheetViews><sheetData>'
)
_SHEET_END = "</sheetData></worksheet>"


class _StreamedSheets:
    """Worksheets written straight into the .xlsx archive, in the order they are asked for."""

    def __init__(self, archive: zipfile.ZipFile, first_index: int, date_style: int) -> None:
        self.archive, self.next_index, self.date_style = archive, first_index, date_style
        self.titles: list[str] = []
        self.paths: list[str] = []
        self.current: IO[bytes] | None = None

    def sheet(self, title: str, header: list[str]) -> _StreamedSheet:
        return _StreamedSheet(self, title, header)

    def open(self, title: str) -> IO[bytes]:
        path = f"xl/worksheets/sheet{self.next_index}.xml"
        self.next_index += 1
        self.titles.append(title)
        self.paths.append(path)
        self.current = self.archive.open(path, "w", force_zip64=True)
        return self.current

    def close_open(self) -> None:
        if self.current is not None and not self.current.closed:
            self.current.close()


class _StreamedSheet:
    """One table (header + rows), over as many worksheets as Excel's row limit needs."""

    def __init__(self, sheets: _StreamedSheets, title: str, header: list[str]) -> None:
        self.sheets, self.title, self.header = sheets, title, header
        self.columns = [get_column_letter(i) for i in range(1, len(header) + 1)]
        self.parts = 0
        self.file: IO[bytes] | None = None
        self.row = 0
        self.buffer: list[str] = []
        self._start()

    def _start(self) -> None:
        self.parts += 1
        self.file = self.sheets.open(self.title if self.parts == 1 else f"{self.title} ({self.parts})")
        self.file.write(_SHEET_START.encode())
        self.row = 0
        self.append(list(self.header))

    def append(self, values: list[Any]) -> None:
        if self.row >= EXCEL_MAX_ROWS:
            self._finish()
            self._start()
        self.row += 1
        r = self.row
        cells = []
        for column, value in zip(self.columns, values, strict=False):
            if value is None or value == "":
                continue
            if isinstance(value, str):
                cells.append(f'<c r="{column}{r}" t="inlineStr"><is><t xml:space="preserve">{_xml(value)}</t></is></c>')
            elif isinstance(value, datetime):
                serial = (value - _EXCEL_EPOCH).total_seconds() / 86400
                cells.append(f'<c r="{column}{r}" s="{self.sheets.date_style}"><v>{serial!r}</v></c>')
            else:
                cells.append(f'<c r="{column}{r}"><v>{value}</v></c>')
        self.buffer.append(f'<row r="{r}">{"".join(cells)}</row>')
        if len(self.buffer) >= 1000:
            self._flush()

    def _flush(self) -> None:
        assert self.file is not None
        self.file.write("".join(self.buffer).encode())
        self.buffer.clear()

    def _finish(self) -> None:
        assert self.file is not None
        self._flush()
        self.file.write(_SHEET_END.encode())
        self.file.close()
        self.file = None

    def close(self) -> None:
        self._finish()


def _xml(value: str) -> str:
    """Text for a cell: XML-escaped, with the characters an .xlsx cannot hold replaced."""
    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _summary_sheet(sheet: WriteOnlyWorksheet, mailing: MailingRow, figures: LedgerFigures) -> None:
    rows: list[list[Any]] = []

    def add(*cells: Any) -> int:
        rows.append(list(cells))
        return len(rows)  # its row number

    add("kaskad mailing report", None, "times in UTC")
    add("mailing", text(mailing.name))
    add("id", mailing.id)
    add("status", mailing.status)
    if mailing.error:
        add("error", text(mailing.error))
    add("channels", " → ".join(mailing.channels))
    add("created", _naive(mailing.created_at))
    add("start", _naive(mailing.start_at))
    add("started", _naive(mailing.started_at))
    add("finished", _naive(mailing.finished_at))
    add("list rows", mailing.rows)
    add("valid", mailing.valid)
    add("invalid", mailing.invalid)
    add("duplicates", mailing.duplicates)
    add()
    add("outcome", "recipients")
    for name, count in figures.outcomes.items():
        add(name, count)
    add("recipients", figures.recipients)
    add()
    add("delivered by", "recipients")
    for channel, count in figures.delivered_by_channel.items():
        add(channel, count)
    add()
    channels = list(figures.channels)
    funnel_header = add("funnel (messages)", *channels)
    for stage in FUNNEL:
        add(stage, *(figures.channels[c].get(stage, 0) for c in channels))
    add()
    add("wasted fallbacks (got a later step after an earlier one was delivered)", figures.wasted_fallbacks)
    add("wasted messages", figures.wasted_messages)
    add("SMS parts", figures.sms_parts)
    add("late reports (after the recipient's workflow closed)", figures.late_reports)
    add()
    add(f"cost ({figures.currency})", "messages sent", "cost", "messages without a price")
    for channel in channels:
        cost = figures.cost.get(channel)
        add(channel, figures.channels[channel]["sent"], cost, figures.unpriced.get(channel, 0))
    add("total", sum(figures.channels[c]["sent"] for c in channels), figures.total_cost, sum(figures.unpriced.values()))
    add("cost of wasted fallbacks", None, figures.wasted_cost)
    add("currency", figures.currency)
    for row in rows:
        sheet.append(row)

    chart = BarChart()
    chart.type = "col"
    chart.grouping = "clustered"
    chart.title = "Funnel per channel: sent → delivered → read → undelivered"
    chart.y_axis.title = "messages"
    chart.x_axis.title = "stage"
    if channels:
        data = Reference(
            sheet,
            min_col=2,
            max_col=1 + len(channels),
            min_row=funnel_header,
            max_row=funnel_header + len(CHART_STAGES),
        )
        stages = Reference(sheet, min_col=1, min_row=funnel_header + 1, max_row=funnel_header + len(CHART_STAGES))
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(stages)
    chart.width, chart.height = 18, 9
    sheet.add_chart(chart, "F2")  # type: ignore[misc]  # WriteOnlyWorksheet borrows it from Worksheet
