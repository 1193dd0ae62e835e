"""Reading recipient rows from .csv / .txt / workbook files and manual lists, streaming with flat memory."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import string
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

from python_calamine import CalamineError, CalamineWorkbook

from recipients.ods import stream_ods_rows
from recipients.xls import check_xls
from recipients.xlsx import (
    STREAM_ABOVE_BYTES,
    NoSuchSheet,
    SharedStrings,
    XlsxError,
    ascii_number,
    check_archive,
    column_index,
    shared_strings,
    sheet_member,
    stream_rows,
)

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
_MANUAL_SEPARATORS = re.compile(r"[,;\n]")
_DETECT_CHUNK = 1024 * 1024
_PROGRESS_EVERY = 10_000  # rows between progress reports
# calamine holds the shared strings as one Rust String each and copies one into every cell that uses it:
# beyond these, an .xlsx is streamed instead (recipients.xlsx), whose memory the table's bounds cap.
_CALAMINE_MAX_SHARED = 500_000
_CALAMINE_MAX_COPIED_BYTES = 256 * 1024 * 1024  # (cells the sheet can hold) x (longest shared string)
_MIN_CELL_BYTES = 20  # <c t="s"><v>0</v></c>
# calamine holds a sheet as a dense grid from its first to its last used cell (about 32 bytes a cell), so two
# cells at A1 and XFD1048576 would ask for 17 billion: a sheet whose span passes this is streamed instead.
_CALAMINE_MAX_CELLS = 4_000_000

Progress = Callable[[float], None]


def _no_progress(_fraction: float) -> None:
    pass


class RecipientsError(ValueError):
    """A recipient source that cannot be used at all (the message says why)."""


@dataclass(frozen=True)
class SourceOptions:
    """What the spec may declare about a file instead of letting it be detected."""

    sheet: str | None = None  # a workbook's sheet by name; default the first
    header: bool | None = None  # whether the first row is a header; default detected
    phone_column: str | int | None = None  # a header name or a 1-based column number; default detected


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based row number in the file, the raw phone cell and the variables."""

    number: int
    phone: str
    variables: dict[str, str]


@dataclass(frozen=True)
class Table:
    """A parsed source: column names (None without a header), the phone column and the data records."""

    header: list[str] | None
    columns: int
    phone_index: int
    records: Iterator[tuple[int, list[str]]]  # (row number, cells) of each non-blank data row

    @property
    def variable_names(self) -> set[str]:
        """Names a text may use: header names (when there is a header) and column numbers `1`, `2`, …"""
        return set(self.header or ()) | {str(i) for i in range(1, self.columns + 1)}

    def column_of(self, name: str) -> int:
        """The 0-based column a variable name refers to (a header name wins over a column number)."""
        if self.header and name in self.header:
            return self.header.index(name)
        return int(name) - 1

    @property
    def rows(self) -> Iterator[Row]:
        """Rows with all their variables: by header name and by column number."""
        for number, cells in self.records:
            variables = {str(i): cell.strip() for i, cell in enumerate(cells, start=1)}
            if self.header:
                variables.update({name: cell.strip() for name, cell in zip(self.header, cells, strict=False)})
            phone = cells[self.phone_index] if self.phone_index < len(cells) else ""
            yield Row(number, phone, variables)


def read_manual(numbers: list[str]) -> Table:
    """A manual list: entries may themselves hold several numbers separated by comma, semicolon, newline."""
    values = [part.strip() for entry in numbers for part in _MANUAL_SEPARATORS.split(entry)]
    return Table(None, 1, 0, ((i, [v]) for i, v in enumerate((v for v in values if v), start=1)))


def read_file(path: Path, options: SourceOptions = SourceOptions(), progress: Progress | None = None) -> Table:
    """Read a .csv (delimiter `,` `;` or tab, detected), .txt (one number per line) or a workbook.

    Rows are streamed: nothing but the current row (and, for .xlsx, the shared strings) is held in memory.
    `progress` is called now and then with the fraction of the file read.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise RecipientsError(f"{path.name}: unsupported file type; use {', '.join(SUPPORTED_SUFFIXES)}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RecipientsError(f"{path.name}: {size} bytes is over the 128 MB limit")
    if size == 0:
        raise RecipientsError(f"{path.name}: the file is empty")
    if options.sheet is not None and suffix not in EXCEL_SUFFIXES:
        raise RecipientsError(f"sheet: {path.name} is not a workbook")
    progress = progress or _no_progress
    if suffix in EXCEL_SUFFIXES:
        return _table(_read_excel(path, options.sheet, progress), options)
    encoding = detect_encoding(path)
    if suffix == ".txt":
        lines = ((i, [line.rstrip("\r\n")]) for i, line in enumerate(_text_lines(path, encoding, progress), 1))
        return Table(None, 1, 0, ((i, cells) for i, cells in lines if cells[0].strip()))
    return _table(_read_csv(path, encoding, progress), options)


def detect_encoding(path: Path) -> str:
    """UTF-16 or UTF-8 by their BOM, else UTF-8 if the whole file decodes, else Windows-1251 (Russian Excel)."""
    with path.open("rb") as file:
        head = file.read(3)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text" export
            return "utf-16"
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        file.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := file.read(_DETECT_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
        file.seek(0)
        while chunk := file.read(_DETECT_CHUNK):
            if b"\x98" in chunk:  # the one byte Windows-1251 leaves undefined
                raise RecipientsError(f"{path.name}: cannot decode the text (tried UTF-8 and Windows-1251)")
    return "cp1251"


def _text_lines(path: Path, encoding: str, progress: Progress) -> Iterator[str]:
    """The file's lines, decoded, reporting progress by bytes read."""
    size = path.stat().st_size
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
        for count, line in enumerate(text, start=1):
            if count % _PROGRESS_EVERY == 0:
                progress(raw.tell() / size)
            yield line
    progress(1.0)


def _read_csv(path: Path, encoding: str, progress: Progress) -> Iterator[tuple[int, list[str]]]:
    size = path.stat().st_size
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
        first_lines: list[str] = []
        for line in text:  # the delimiter is the most frequent of `,` `;` tab in the first non-blank line
            first_lines.append(line)
            if line.strip():
                break
        delimiter = max((",", ";", "\t"), key=(first_lines or [""])[-1].count)
        reader = csv.reader(itertools.chain(first_lines, text), delimiter=delimiter)
        try:
            for number, cells in enumerate(reader, start=1):
                if number % _PROGRESS_EVERY == 0:
                    progress(raw.tell() / size)
                yield number, cells
        except csv.Error as exc:
            raise RecipientsError(f"malformed CSV near line {reader.line_num}: {exc}") from exc
    progress(1.0)


def _read_excel(path: Path, sheet: str | None, progress: Progress) -> Iterator[tuple[int, list[str]]]:
    """A workbook's sheet: .ods and large .xlsx sheets streamed (recipients.ods, recipients.xlsx), the rest read
    by calamine."""
    try:
        if path.suffix.lower() == ".ods":  # calamine expands every repeated row and cell of every sheet
            yield from stream_ods_rows(path, sheet, progress)
            return
        if path.suffix.lower() == ".xls":  # calamine holds every sheet's span, and reserves what DIMENSIONS says
            check_xls(path)
        if path.suffix.lower() == ".xlsx":  # bombs refused before calamine or expat inflates anything
            check_archive(path)
            shared = shared_strings(path)
            # Decided before calamine opens the file: opening loads every shared string at once.
            if not _calamine_safe(path, sheet, shared):
                yield from stream_rows(path, sheet, progress, shared)
                return
        workbook = CalamineWorkbook.from_path(str(path))
        if sheet is not None and sheet not in workbook.sheet_names:
            workbook.close()
            names = ", ".join(workbook.sheet_names)
            raise RecipientsError(f"sheet: {path.name} has no sheet named {sheet!r} (sheets: {names})")
        table = workbook.get_sheet_by_name(sheet) if sheet is not None else workbook.get_sheet_by_index(0)
    except NoSuchSheet as exc:
        raise RecipientsError(f"sheet: {path.name} has {exc}") from exc
    except XlsxError as exc:
        raise RecipientsError(f"{path.name}: {exc}") from exc
    except (CalamineError, zipfile.BadZipFile, KeyError) as exc:
        raise RecipientsError(f"{path.name}: not a readable workbook: {exc}") from exc
    first_row, first_column = table.start or (0, 0)
    padding = [""] * first_column  # iter_rows starts at the sheet's first row, but at its first used column
    for index, row in enumerate(table.iter_rows()):
        if index % _PROGRESS_EVERY == 0:
            progress(index / max(first_row + table.height, 1))
        yield index + 1, padding + [_cell_text(cell) for cell in row]
    progress(1.0)


def _calamine_safe(path: Path, sheet: str | None, shared: SharedStrings) -> bool:
    """Whether calamine can read this sheet whole within bounded memory (else it is streamed). The sheet's
    uncompressed size is about what calamine would hold of its XML."""
    with zipfile.ZipFile(path) as archive:
        member = sheet_member(archive, sheet)
        copied = member.file_size // _MIN_CELL_BYTES * shared.longest * 4
        return (
            member.file_size <= STREAM_ABOVE_BYTES
            and len(shared) <= _CALAMINE_MAX_SHARED
            and copied <= _CALAMINE_MAX_COPIED_BYTES
            and _cell_span(archive, member) <= _CALAMINE_MAX_CELLS
        )


def _cell_span(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> int:
    """Rows x columns up to the furthest cell of a sheet, placed as calamine places them: a row at its `r` or
    after the previous row, a cell at its `r` or after the previous cell. Read with expat (any quoting, any
    spacing), and asked only of sheets small enough for calamine (at most STREAM_ABOVE_BYTES of XML)."""
    rows = columns = row = column = 0
    parser = expat.ParserCreate(namespace_separator=" ")

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal rows, columns, row, column
        local = tag.rpartition(" ")[2]
        if local == "row":
            row = _placed(attrs.get("r", ""), row + 1)
            column = 0
        elif local == "c":
            reference = attrs.get("r", "")
            digits = reference.lstrip(string.ascii_letters)
            column = column_index(reference) + 1 if digits != reference else column + 1
            row = _placed(digits, row)
        else:
            return
        rows, columns = max(rows, row), max(columns, column)

    parser.StartElementHandler = start
    with archive.open(member) as xml:
        try:
            parser.ParseFile(xml)
        except expat.ExpatError as exc:
            raise XlsxError(f"not a readable workbook: {exc}") from exc
    return rows * columns


def _placed(written: str, default: int) -> int:
    """A row number as written, the default if none is; one that is no number counts as past any bound (such a
    sheet is streamed, whose reader says what is wrong with it)."""
    if not written:
        return default
    number = ascii_number(written)
    return _CALAMINE_MAX_CELLS + 1 if number is None else number


def _cell_text(cell: object) -> str:
    """Excel stores phone numbers typed as numbers as floats (79991234567.0): give back the digits."""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return "" if cell is None else str(cell)


def _is_blank(cells: list[str]) -> bool:
    return not "".join(cells).strip()


def _table(records: Iterator[tuple[int, list[str]]], options: SourceOptions) -> Table:
    """The header (declared or detected), the phone column (declared, by header name, else the first)."""
    first = next(((number, cells) for number, cells in records if not _is_blank(cells)), None)
    if first is None:
        raise RecipientsError("the file has no rows")
    names = [cell.strip() for cell in first[1]]
    detected = next((i for i, name in enumerate(names) if name.lower() in PHONE_HEADERS), None)
    has_header = options.header
    if has_header is None:
        declared_name = isinstance(options.phone_column, str)
        has_header = declared_name or detected is not None or not any(ch.isdigit() for ch in names[0])
    header = names if has_header else None
    phone_index = _phone_index(options.phone_column, header, len(names), detected if has_header else None)
    body = records if has_header else itertools.chain([first], records)
    return Table(header, len(names), phone_index, ((n, cells) for n, cells in body if "".join(cells).strip()))


def _phone_index(declared: str | int | None, header: list[str] | None, columns: int, detected: int | None) -> int:
    if declared is None:
        return detected or 0
    if isinstance(declared, int):
        if not 1 <= declared <= columns:
            raise RecipientsError(f"phone_column: column {declared} does not exist (the file has {columns})")
        return declared - 1
    if header is None:
        raise RecipientsError(f"phone_column: {declared!r} is a column name, but the file has no header row")
    lowered = [name.lower() for name in header]
    if declared.lower() not in lowered:
        raise RecipientsError(f"phone_column: no column named {declared!r} (columns: {', '.join(header)})")
    return lowered.index(declared.lower())
