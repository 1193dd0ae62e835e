"""A streaming reader for .ods sheets: memory bounded by one row, whatever the file declares.

calamine reads every sheet of an .ods whole and expands `table:number-rows-repeated` and
`table:number-columns-repeated` into a dense grid: a 1.4 KB file declaring a million rows of ten repeated cells
took 1.3 GB, and a genuine million-row list of three columns 564 MB. Here content.xml is parsed with expat a
megabyte at a time; only the chosen sheet's rows are built, one at a time, and repeats are bounded before
they are expanded:

- empty cells at the end of a row and empty rows are never materialised (LibreOffice writes a row's last
  empty cells as one cell repeated up to the last column, and the sheet's last empty rows as one row repeated
  to the last row: both are normal, and cost nothing here);
- an empty run followed by a value is padding: a row may reach column `MAX_COLUMNS` (XFD), no further;
- a row's text together is bounded (`MAX_ROW_CHARS`), a cell's by `MAX_CELL_CHARS`, also through
  `text:s text:c="…"` and repeated cells;
- rows built from one parsed megabyte are bounded (`MAX_PENDING_CELLS`), and the cells materialised from the
  whole sheet (repeats expanded) by `MAX_MATERIALISED_CELLS`: a million rows of 16 columns.

Cells are rendered as calamine renders them (so values read the same as before): a number as Python prints
the float (`79991234567`, `12.5`), a date as `2024-05-01` or `2024-05-01 10:30:00`, a time as `10:30:05`, a
boolean as `True`/`False`, a string as its paragraphs joined by newlines.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from xml.parsers import expat

from recipients.xlsx import (
    MAX_CELL_CHARS,
    MAX_COLUMNS,
    MAX_PENDING_CELLS,
    MAX_ROW_CHARS,
    NoSuchSheet,
    XlsxError,
    ascii_number,
    check_archive,
)

MAX_MATERIALISED_CELLS = 16 * 1_048_576  # all the sheet's cells once repeats are expanded: 1M rows x 16 columns
_CHUNK = 1024 * 1024
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE_TAG, _ROW, _CELL, _COVERED = (
    f"{_TABLE} {name}" for name in ("table", "table-row", "table-cell", "covered-table-cell")
)
_P, _SPACE, _ANNOTATION = f"{_TEXT} p", f"{_TEXT} s", f"{_OFFICE} annotation"
_DURATION = re.compile(r"-?P(?:\d+D)?T(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9})(?:\.(\d{1,9}))?S)?")


class OdsError(XlsxError):
    """The .ods is not readable or declares more than may be read."""


def stream_ods_rows(
    path: Path, sheet: str | None, progress: Callable[[float], None]
) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts) of every non-empty row of the first sheet, or of the sheet with this name."""
    check_archive(path)
    try:
        archive = zipfile.ZipFile(path)
        member = archive.getinfo("content.xml")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise OdsError(f"not a readable workbook: {exc}") from exc
    parser = _ContentParser(sheet)
    with archive, archive.open(member) as stream:
        yield from parser.rows(stream.read, member.file_size, progress)
    if not parser.found:
        names = ", ".join(parser.names)
        raise NoSuchSheet(f"no sheet named {sheet!r} (sheets: {names})" if sheet else "no sheets")


def _repeats(attrs: dict[str, str], name: str) -> int:
    written = attrs.get(f"{_TABLE} {name}")
    if written is None:
        return 1
    number = ascii_number(written)
    if number is None or number < 1:
        raise OdsError(f"not a readable workbook: {name} {written[:20]!r}")
    return number


class _ContentParser:
    """expat callbacks over content.xml that build the chosen table's rows."""

    def __init__(self, sheet: str | None) -> None:
        self._sheet = sheet
        self.names: list[str] = []
        self.found = False
        self._table_depth = 0  # table:table elements open (a cell may hold a sub-table: not read)
        self._in_chosen = False
        self._done: list[tuple[int, list[str], int]] = []  # (first row number, cells, repeats)
        self._pending_cells = 0
        self._materialised = 0
        self._row_number = 0  # the last row of the sheet so far (repeats counted)
        self._row_repeats = 1
        self._cells: list[str] = []
        self._empty_run = 0  # empty cells seen and not yet placed: placed only when a value follows
        self._row_chars = 0
        self._cell: dict[str, str] | None = None  # the open cell's attributes
        self._cell_repeats = 1
        self._text: list[str] = []
        self._text_chars = 0
        self._paragraphs = 0
        self._in_paragraph = 0
        self._in_annotation = 0

    def rows(
        self, read: Callable[[int], bytes], size: int, progress: Callable[[float], None]
    ) -> Iterator[tuple[int, list[str]]]:
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.buffer_text = True
        parser.StartElementHandler, parser.EndElementHandler = self._start, self._end
        parser.CharacterDataHandler = self._chars
        done = 0
        try:
            while chunk := read(_CHUNK):
                done += len(chunk)
                parser.Parse(chunk, False)
                yield from self._expanded()
                progress(done / size if size else 1.0)
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise OdsError(f"not a readable workbook: {exc}") from exc
        yield from self._expanded()

    def _expanded(self) -> Iterator[tuple[int, list[str]]]:
        """The rows parsed so far, a repeated row once per repeat (each a list of its own)."""
        done, self._done, self._pending_cells = self._done, [], 0
        for first, cells, repeats in done:
            for offset in range(repeats):
                yield first + offset, list(cells)

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        if tag == _TABLE_TAG:
            self._table_depth += 1
            if self._table_depth == 1:
                name = attrs.get(f"{_TABLE} name", "")
                self.names.append(name[:100])
                self._in_chosen = not self.found and (self._sheet is None or name == self._sheet)
                self.found = self.found or self._in_chosen
            return
        if not self._in_chosen or self._table_depth != 1:
            return
        if tag == _ROW:
            self._row_repeats = _repeats(attrs, "number-rows-repeated")
            self._cells, self._empty_run, self._row_chars = [], 0, 0
        elif tag in (_CELL, _COVERED):
            self._cell = attrs
            self._cell_repeats = _repeats(attrs, "number-columns-repeated")
            self._text, self._text_chars, self._paragraphs = [], 0, 0
        elif self._cell is None:
            return
        elif tag == _ANNOTATION:
            self._in_annotation += 1
        elif self._in_annotation:
            return
        elif tag == _P:
            if self._paragraphs:
                self._add_text("\n")
            self._paragraphs += 1
            self._in_paragraph += 1
        elif tag == _SPACE and self._in_paragraph:
            count = ascii_number(attrs.get(f"{_TEXT} c", "1")) or 1
            if self._text_chars + count > MAX_CELL_CHARS:
                self._too_long()
            self._add_text(" " * count)

    def _end(self, tag: str) -> None:
        if tag == _TABLE_TAG:
            self._table_depth -= 1
            if self._table_depth == 0:
                self._in_chosen = False
            return
        if not self._in_chosen or self._table_depth != 1:
            return
        if tag in (_CELL, _COVERED) and self._cell is not None:
            self._place(self._value(self._cell, "".join(self._text)))
            self._cell = None
        elif tag == _ROW:
            self._end_row()
        elif tag == _ANNOTATION:
            self._in_annotation -= 1
        elif tag == _P and self._in_paragraph:
            self._in_paragraph -= 1

    def _chars(self, data: str) -> None:
        if self._cell is not None and self._in_paragraph and not self._in_annotation:
            self._add_text(data)

    def _add_text(self, data: str) -> None:
        self._text.append(data)
        self._text_chars += len(data)
        if self._text_chars > MAX_CELL_CHARS:
            self._too_long()

    def _too_long(self) -> None:
        raise OdsError(
            f"a cell (row {self._row_number + 1}, column {len(self._cells) + self._empty_run + 1}) holds over"
            f" {MAX_CELL_CHARS} characters, Excel's limit"
        )

    def _place(self, value: str) -> None:
        repeats = self._cell_repeats
        if not value:
            self._empty_run += repeats  # placed only if a value follows: trailing empties cost nothing
            return
        width = len(self._cells) + self._empty_run + repeats
        if width > MAX_COLUMNS:
            raise OdsError(f"row {self._row_number + 1} reaches column {width}, past the last column (XFD)")
        self._row_chars += len(value) * repeats
        if self._row_chars > MAX_ROW_CHARS:
            raise OdsError(f"row {self._row_number + 1} holds over {MAX_ROW_CHARS} characters")
        self._cells.extend([""] * self._empty_run)
        self._cells.extend([value] * repeats)
        self._empty_run = 0

    def _end_row(self) -> None:
        first, repeats = self._row_number + 1, self._row_repeats
        self._row_number += repeats
        if not self._cells:  # empty rows (LibreOffice's last million): nothing to hand on
            return
        self._materialised += len(self._cells) * repeats
        if self._materialised > MAX_MATERIALISED_CELLS:
            raise OdsError(
                f"rows up to {self._row_number} expand to over {MAX_MATERIALISED_CELLS} cells"
                " (number-rows-repeated / number-columns-repeated)"
            )
        self._pending_cells += len(self._cells)  # a repeated row is held once, copied as it is handed on
        if self._pending_cells > MAX_PENDING_CELLS:
            raise OdsError(
                f"rows up to {self._row_number} are too wide: over {MAX_PENDING_CELLS} cells in one megabyte of"
                " the sheet (cells far to the right in many rows)"
            )
        self._done.append((first, self._cells, repeats))

    @staticmethod
    def _value(attrs: dict[str, str], text: str) -> str:
        """The cell as calamine gives it, as text (see the module's docstring); a value that does not parse
        falls back to the cell's displayed text."""
        kind = attrs.get(f"{_OFFICE} value-type")
        if kind in ("float", "percentage", "currency"):
            return _number(attrs.get(f"{_OFFICE} value", ""), text)
        if kind == "date":
            return _date(attrs.get(f"{_OFFICE} date-value", ""), text)
        if kind == "time":
            return _duration(attrs.get(f"{_OFFICE} time-value", ""), text)
        if kind == "boolean":
            return str(attrs.get(f"{_OFFICE} boolean-value", "").lower() == "true")
        if kind == "string":
            return attrs.get(f"{_OFFICE} string-value", text)
        return ""  # a cell without a value type is empty, whatever text it shows


def _number(written: str, text: str) -> str:
    try:
        number = float(written)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else str(number)


def _date(written: str, text: str) -> str:
    try:
        return str(date.fromisoformat(written)) if len(written) == 10 else str(datetime.fromisoformat(written))
    except ValueError:
        return text


def _duration(written: str, text: str) -> str:
    match = _DURATION.fullmatch(written)
    if match is None or not written.startswith("PT"):
        return text
    hours, minutes, seconds = (int(part or 0) for part in match.groups()[:3])
    span = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    micro = int((match.group(4) or "0")[:6].ljust(6, "0"))
    if span >= timedelta(days=1):
        return str(span + timedelta(microseconds=micro))
    whole = int(span.total_seconds())
    return str(time(whole // 3600, whole // 60 % 60, whole % 60, micro))
