"""Reading recipient rows from .csv / .txt files and manual lists."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from python_calamine import CalamineError, CalamineWorkbook

MAX_FILE_BYTES = 128 * 1024 * 1024
SUPPORTED_SUFFIXES = (".csv", ".txt", ".xlsx", ".xls", ".ods")
EXCEL_SUFFIXES = (".xlsx", ".xls", ".ods")
# Header names (lower case) that mark the phone column; otherwise the first column holds the phone.
PHONE_HEADERS = frozenset(
    {
        "phone",
        "phone number",
        "mobile",
        "msisdn",
        "tel",
        "number",
        "телефон",
        "номер",
        "номер телефона",
        "мобильный",
        "мобильный телефон",
        "тел",
        "тел.",
    }
)
_ENCODINGS = ("utf-8-sig", "cp1251")
_MANUAL_SEPARATORS = re.compile(r"[,;\n]")


class RecipientsError(ValueError):
    """A recipient source that cannot be used at all (the message says why)."""


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based row number in the file, the raw phone cell and the variables."""

    number: int
    phone: str
    variables: dict[str, str]


@dataclass(frozen=True)
class Table:
    """A parsed source: column names (None when the file has no header) and its rows."""

    header: list[str] | None
    columns: int
    rows: Iterator[Row]

    @property
    def variable_names(self) -> set[str]:
        """Names a text may use: header names (when there is a header) and column numbers `1`, `2`, …"""
        return set(self.header or ()) | {str(i) for i in range(1, self.columns + 1)}


def read_manual(numbers: list[str]) -> Table:
    """A manual list: entries may themselves hold several numbers separated by comma, semicolon, newline."""
    values = [part.strip() for entry in numbers for part in _MANUAL_SEPARATORS.split(entry)]
    values = [v for v in values if v]
    return Table(None, 1, (Row(i, v, {"1": v}) for i, v in enumerate(values, start=1)))


def read_file(path: Path) -> Table:
    """Read a .csv (delimiter `,` `;` or tab, detected), .txt (one number per line) or a workbook."""
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise RecipientsError(f"{path.name}: unsupported file type; use {', '.join(SUPPORTED_SUFFIXES)}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RecipientsError(f"{path.name}: {size} bytes is over the 128 MB limit")
    if size == 0:
        raise RecipientsError(f"{path.name}: the file is empty")
    if path.suffix.lower() in EXCEL_SUFFIXES:
        return _read_excel(path)
    text = _decode(path)
    if path.suffix.lower() == ".txt":
        return Table(
            None, 1, (Row(i, line, {"1": line}) for i, line in enumerate(text.splitlines(), 1) if line.strip())
        )
    return _read_csv(text)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export
        return data.decode("utf-16")
    for encoding in _ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise RecipientsError(f"{path.name}: cannot decode the text (tried UTF-8 and Windows-1251)")


def _read_csv(text: str) -> Table:
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max((",", ";", "\t"), key=first_line.count)
    return _table(_csv_records(csv.reader(io.StringIO(text), delimiter=delimiter)))


def _csv_records(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """CSV rows; a malformed file (e.g. an unclosed quote) becomes a RecipientsError naming the line."""
    try:
        yield from reader
    except csv.Error as exc:
        line = getattr(reader, "line_num", "?")
        raise RecipientsError(f"malformed CSV near line {line}: {exc}") from exc


def _read_excel(path: Path) -> Table:
    """The first sheet of an .xlsx / .xls / .ods workbook, read by calamine (streaming, row by row)."""
    try:
        sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
    except CalamineError as exc:
        raise RecipientsError(f"{path.name}: not a readable workbook: {exc}") from exc
    return _table([_cell_text(cell) for cell in row] for row in sheet.iter_rows())


def _cell_text(cell: object) -> str:
    """Excel stores phone numbers typed as numbers as floats (79991234567.0): give back the digits."""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return "" if cell is None else str(cell)


def _table(records: Iterator[list[str]]) -> Table:
    """Rows with a detected header and phone column (a phone-like header name, else the first column)."""
    blank_lines = 0
    for first in records:
        if any(cell.strip() for cell in first):
            break
        blank_lines += 1
    else:
        raise RecipientsError("the file has no rows")
    names = [cell.strip() for cell in first]
    phone_column = next((i for i, name in enumerate(names) if name.lower() in PHONE_HEADERS), None)
    has_header = phone_column is not None or not any(ch.isdigit() for ch in (names or [""])[0])
    header = names if has_header else None
    phone_column = phone_column or 0

    def rows() -> Iterator[Row]:
        start = blank_lines + (2 if has_header else 1)
        body = records if has_header else _chain_first(first, records)
        for number, cells in enumerate(body, start=start):
            if not any(cell.strip() for cell in cells):
                continue
            variables = {str(i): cell.strip() for i, cell in enumerate(cells, start=1)}
            if header:
                variables.update({name: cell.strip() for name, cell in zip(header, cells, strict=False)})
            phone = cells[phone_column] if phone_column < len(cells) else ""
            yield Row(number, phone, variables)

    return Table(header, len(first), rows())


def _chain_first(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest
