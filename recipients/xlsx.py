"""A streaming reader for large .xlsx sheets: flat memory, whatever the number of rows.

calamine loads a whole sheet into memory (about 100 bytes a cell: 300 MB for a million rows of three
columns), so sheets whose XML is larger than `STREAM_ABOVE_BYTES` are read here instead, with expat over the
zipped XML, a megabyte at a time. Only the shared-strings table is held in memory, packed (UTF-8 bytes and
offsets, not one Python object per string) and bounded.

A workbook is a zip: a small file can inflate into gigabytes (an "xlsx bomb"). `check_archive` refuses one by
the sizes its zip declares before anything is read (Python's zipfile never inflates a member past its declared
size), and the shared strings are bounded while they are read, so memory stays flat whatever the file holds.
"""

from __future__ import annotations

import math
import posixpath
import re
import struct
import zipfile
from array import array
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO
from xml.parsers import expat

STREAM_ABOVE_BYTES = 64 * 1024 * 1024
# Bomb limits. A million rows with three text columns: a 202 MB sheet (openpyxl, inline strings), or about a
# 100 MB sheet and a 60 MB table of 2M shared strings (Excel); these leave room for several times that.
MAX_MEMBERS = 10_000  # a workbook has tens of members; each one costs a ZipInfo before it is counted
MAX_CENTRAL_DIRECTORY_BYTES = 4 * 1024 * 1024  # read before the members can be counted, so bounded first
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # uncompressed, any member (a streamed sheet costs time, not memory)
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed, all members together
MAX_SHARED_STRINGS = 8_000_000  # packed: 4 bytes each (a million rows with several unique text columns)
MAX_SHARED_TEXT_BYTES = 128 * 1024 * 1024  # UTF-8 text together (two unique Cyrillic columns of 1M rows: ~110 MB)
MAX_CELL_CHARS = 32_767  # Excel's own limit for one cell
MAX_COLUMNS = 16_384  # Excel's own last column, XFD: a cell further right would pad a row into gigabytes
MAX_ROW_CHARS = 1024 * 1024  # all the cells of one row together
# Cell slots (padding included) of the rows parsed from one chunk and not yet handed on: rows that each reach
# column XFD are 16,384 slots apiece, so a chunk of them would otherwise be gigabytes.
MAX_PENDING_CELLS = 2_000_000
_MAX_NUMBER_DIGITS = 10  # a row number or a shared-string index (Excel's last row has 7 digits)
_CHUNK = 1024 * 1024
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


class XlsxError(ValueError):
    """The workbook is not a readable .xlsx (or has no such sheet)."""


def check_archive(path: Path) -> None:
    """Refuse a zip whose members, by number or uncompressed size, could exhaust memory or time (a bomb)."""
    with path.open("rb") as file:  # the central directory's size, from its end record, before zipfile reads it
        file.seek(0, 2)
        file.seek(max(0, file.tell() - 65_557))
        tail = file.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) < end + 22:
        raise XlsxError("not a readable workbook: not a zip file")
    directory_bytes = struct.unpack_from("<I", tail, end + 12)[0]
    if directory_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
        raise XlsxError(f"its zip directory holds {directory_bytes} bytes (limit {MAX_CENTRAL_DIRECTORY_BYTES})")
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise XlsxError(f"the zip has {len(members)} members (limit {MAX_MEMBERS})")
    for member in members:
        if member.file_size > MAX_MEMBER_BYTES:
            raise XlsxError(f"{member.filename} inflates to {member.file_size} bytes (limit {MAX_MEMBER_BYTES})")
    total = sum(member.file_size for member in members)
    if total > MAX_TOTAL_BYTES:
        raise XlsxError(f"its members inflate to {total} bytes together (limit {MAX_TOTAL_BYTES})")


class SharedStrings:
    """The shared-strings table packed: UTF-8 bytes end to end and where each string ends.

    A list of str costs about 60 bytes a string beyond its text (a million-row table: over 100 MB); this costs
    4. The table is bounded (MAX_SHARED_STRINGS, MAX_SHARED_TEXT_BYTES, MAX_CELL_CHARS) as it is read.
    """

    def __init__(self) -> None:
        self._text = bytearray()
        self._ends = array("I")
        self.longest = 0  # characters of the longest string

    def append(self, text: str) -> None:
        if len(self._ends) >= MAX_SHARED_STRINGS:
            raise XlsxError(f"xl/sharedStrings.xml has over {MAX_SHARED_STRINGS} strings")
        if len(text) > MAX_CELL_CHARS:
            raise XlsxError(f"xl/sharedStrings.xml has a string of {len(text)} characters (limit {MAX_CELL_CHARS})")
        self._text += text.encode()
        if len(self._text) > MAX_SHARED_TEXT_BYTES:
            raise XlsxError(f"xl/sharedStrings.xml holds over {MAX_SHARED_TEXT_BYTES} bytes of text")
        self._ends.append(len(self._text))
        self.longest = max(self.longest, len(text))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        start = self._ends[index - 1] if index else 0
        return self._text[start : self._ends[index]].decode()


class NoSuchSheet(XlsxError):
    """The workbook has no sheet of the name asked for."""


def sheet_member(archive: zipfile.ZipFile, sheet: str | None) -> zipfile.ZipInfo:
    """The zip member of the first sheet, or of the sheet with this name (workbook order, as Excel shows it)."""
    sheets = [(attrs["name"], attrs[f"{_REL_NS} id"]) for attrs in _elements(archive, "xl/workbook.xml", "sheet")]
    relations = _elements(archive, "xl/_rels/workbook.xml.rels", "Relationship")
    targets = {attrs["Id"]: attrs["Target"] for attrs in relations}
    if not sheets:
        raise XlsxError("the workbook has no sheets")
    chosen = sheets[0] if sheet is None else next((s for s in sheets if s[0] == sheet), None)
    if chosen is None:
        raise NoSuchSheet(f"no sheet named {sheet!r} (sheets: {', '.join(name for name, _ in sheets)})")
    target = targets[chosen[1]]
    path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
    return archive.getinfo(path)


def stream_rows(
    path: Path, sheet: str | None, progress: Callable[[float], None], shared: SharedStrings | None = None
) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts) for every row of the sheet; `progress` gets the fraction of the sheet read.

    `shared` is the workbook's table when the caller has read it already (see `shared_strings`).
    """
    try:
        check_archive(path)
        archive = zipfile.ZipFile(path)
        member = sheet_member(archive, sheet)
        shared = shared if shared is not None else _shared_strings(archive)
    except (zipfile.BadZipFile, KeyError, expat.ExpatError) as exc:
        raise XlsxError(f"not a readable workbook: {exc}") from exc
    with archive, archive.open(member) as stream:
        yield from _SheetParser(shared, _cell_formats(archive)).rows(stream, member.file_size, progress)


def _elements(archive: zipfile.ZipFile, name: str, local: str) -> list[dict[str, str]]:
    """Attributes of every element with this local name in a (small) XML member."""
    found: list[dict[str, str]] = []
    parser = expat.ParserCreate(namespace_separator=" ")

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag.rpartition(" ")[2] == local:
            found.append(attrs)

    parser.StartElementHandler = start
    parser.Parse(archive.read(name), True)
    return found


def shared_strings(path: Path) -> SharedStrings:
    """The workbook's shared-strings table, bounded (call `check_archive` first)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _shared_strings(archive)
    except (zipfile.BadZipFile, KeyError, expat.ExpatError) as exc:
        raise XlsxError(f"not a readable workbook: {exc}") from exc


def _shared_strings(archive: zipfile.ZipFile) -> SharedStrings:
    """The shared-strings table: the text of each `<si>` (rich-text runs joined; phonetic hints skipped)."""
    strings = SharedStrings()
    if "xl/sharedStrings.xml" not in archive.namelist():
        return strings
    parts: list[str] = []
    length = 0  # characters in `parts`, kept as they come (summing them at each run would be quadratic)
    depth_in_phonetic = 0
    in_text = False
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True

    def start(tag: str, _attrs: dict[str, str]) -> None:
        nonlocal depth_in_phonetic, in_text
        local = tag.rpartition(" ")[2]
        if local == "rPh":
            depth_in_phonetic += 1
        elif local == "t" and not depth_in_phonetic:
            in_text = True

    def end(tag: str) -> None:
        nonlocal depth_in_phonetic, in_text, length
        local = tag.rpartition(" ")[2]
        if local == "si":
            strings.append("".join(parts))
            parts.clear()
            length = 0
        elif local == "rPh":
            depth_in_phonetic -= 1
        elif local == "t":
            in_text = False

    def text(data: str) -> None:
        nonlocal length
        if in_text:
            parts.append(data)
            length += len(data)
            if len(parts) > 1 and length > MAX_CELL_CHARS:  # one string's runs: bounded as they come
                strings.append("".join(parts))

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    with archive.open("xl/sharedStrings.xml") as stream:
        parser.ParseFile(stream)
    return strings


def ascii_number(text: str) -> int | None:
    """A row number or an index written as plain ASCII digits (`²` and `٣` are digits to str.isdigit but not
    to int, and 5,000 digits pass int's limit), else None."""
    if text.isascii() and text.isdigit() and len(text) <= _MAX_NUMBER_DIGITS:
        return int(text)
    return None


def column_index(reference: str) -> int:
    """0-based column of a cell reference such as `AB12`."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - 64
    return index - 1


class _SheetParser:
    """expat callbacks that turn `<row><c><v>…</v></c></row>` into lists of cell texts."""

    def __init__(self, shared: SharedStrings, formats: CellFormats | None = None) -> None:
        self._shared = shared
        self._formats = formats or CellFormats()
        self._kind = _NUMBER
        self._done: list[tuple[int, list[str]]] = []
        self._pending_cells = 0
        self._row_number = 0
        self._cells: list[str] = []
        self._column = 0
        self._type: str | None = None
        self._text: list[str] = []
        self._text_chars = 0
        self._row_chars = 0
        self._reference: str | None = None
        self._in_text = False

    def rows(self, stream: IO[bytes], size: int, progress: Callable[[float], None]) -> Iterator[tuple[int, list[str]]]:
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.buffer_text = True
        parser.StartElementHandler, parser.EndElementHandler = self._start, self._end
        parser.CharacterDataHandler = self._chars
        read = 0
        try:
            while chunk := stream.read(_CHUNK):
                read += len(chunk)
                parser.Parse(chunk, False)
                yield from self._done
                self._done.clear()
                self._pending_cells = 0
                progress(read / size if size else 1.0)
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise XlsxError(f"not a readable workbook: {exc}") from exc
        yield from self._done

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        local = tag.rpartition(" ")[2]
        if local == "c":
            reference = attrs.get("r")
            self._column = column_index(reference) if reference else len(self._cells)
            if self._column >= MAX_COLUMNS:
                raise XlsxError(f"a cell ({reference}) is past the last column, XFD")
            self._type = attrs.get("t")
            self._kind = self._formats.kind(attrs.get("s"))
            self._text = []
            self._text_chars = 0
            self._reference = reference
        elif local in ("v", "t"):
            self._in_text = True
        elif local == "row":
            self._cells = []
            self._row_chars = 0
            row = ascii_number(attrs["r"]) if "r" in attrs else self._row_number + 1
            if row is None:
                raise XlsxError(f"a row has the number {attrs['r'][:20]!r}")
            self._row_number = row
        elif local == "rPh":  # phonetic hints inside an inline string are not its text
            self._in_text = False

    def _end(self, tag: str) -> None:
        local = tag.rpartition(" ")[2]
        if local == "c":
            self._cells.extend([""] * (self._column - len(self._cells)))
            self._cells.append(self._value("".join(self._text)))
        elif local in ("v", "t"):
            self._in_text = False
        elif local == "row":
            self._pending_cells += len(self._cells)
            if self._pending_cells > MAX_PENDING_CELLS:
                raise XlsxError(
                    f"rows up to {self._row_number} are too wide: over {MAX_PENDING_CELLS} cells in one megabyte"
                    " of the sheet (cells far to the right in many rows)"
                )
            self._done.append((self._row_number, self._cells))

    def _chars(self, data: str) -> None:
        if self._in_text:
            self._text.append(data)
            self._text_chars += len(data)
            self._row_chars += len(data)
            if self._text_chars > MAX_CELL_CHARS:
                cell = self._reference or f"row {self._row_number}, column {len(self._cells) + 1}"
                raise XlsxError(f"a cell ({cell}) holds over {MAX_CELL_CHARS} characters, Excel's limit")
            if self._row_chars > MAX_ROW_CHARS:
                raise XlsxError(f"row {self._row_number} holds over {MAX_ROW_CHARS} characters")

    def _value(self, text: str) -> str:
        """The cell as text: shared strings looked up, numbers as Excel shows them (no `.0` on whole numbers)."""
        if self._type == "s":
            index = ascii_number(text)
            if index is None and text:
                raise XlsxError(f"row {self._row_number} refers to the shared string {text[:20]!r}")
            return self._shared[index] if index is not None and index < len(self._shared) else ""
        if self._type == "b":  # as calamine gives it: a bool
            return str(text.strip() not in ("", "0", "false"))
        if self._type == "d":  # an ISO 8601 date written as such
            return _iso_date(text)
        if self._type in (None, "n") and text:
            try:
                number = float(text)
            except ValueError:
                return text
            if self._kind != _NUMBER and math.isfinite(number):
                return _serial_text(number, self._kind, self._formats.epoch)
            return str(int(number)) if number.is_integer() else text
        return text


# Number formats, as calamine tells dates from numbers: a cell whose style's format is a date (or a duration)
# holds a serial number of days that calamine gives as a date, datetime, time or timedelta; so does this reader,
# so a variable column of dates reads the same whichever reader the file's size chose.
_NUMBER, _DATE, _DURATION = 0, 1, 2
_BUILTIN_DATES = frozenset([*range(14, 23), *range(27, 37), 45, 47, *range(50, 59), *range(71, 82)])
_BUILTIN_DURATIONS = frozenset({46})
MAX_CELL_FORMATS = 65_536  # Excel allows 64,000 cell formats in a workbook
_QUOTED = re.compile(r'"[^"]*"|\\.|[_*].')  # literal text, an escaped character, a padding or fill character
_BRACKETS = re.compile(r"\[([^\]]*)\]")
_EPOCH_1900 = datetime(1899, 12, 30)
_EPOCH_1904 = datetime(1904, 1, 1)


def format_kind(code: str) -> int:
    """Whether a custom number format shows a date (d, m, y, h, s outside quotes and brackets), a duration
    (`[h]`, `[mm]`, `[ss]`) or a number."""
    plain = _QUOTED.sub("", code)
    brackets = [inside.lower() for inside in _BRACKETS.findall(plain)]
    if any(inside and set(inside) <= set("hms") for inside in brackets):
        return _DURATION
    outside = _BRACKETS.sub("", plain).split(";")[0].lower()
    if outside == "general":
        return _NUMBER
    return _DATE if any(char in outside for char in "dmyhs") else _NUMBER


class CellFormats:
    """Each cell style's kind of number format (from xl/styles.xml), and the workbook's date system."""

    def __init__(self, kinds: bytes = b"", epoch: datetime = _EPOCH_1900) -> None:
        self._kinds = kinds
        self.epoch = epoch

    def kind(self, style: str | None) -> int:
        index = ascii_number(style) if style else 0
        return self._kinds[index] if index is not None and index < len(self._kinds) else _NUMBER


def _cell_formats(archive: zipfile.ZipFile) -> CellFormats:
    """Read with expat as a stream (styles.xml is bounded only by check_archive's sizes), the styles bounded."""
    names = set(archive.namelist())
    epoch = _EPOCH_1900
    if "xl/workbook.xml" in names:
        properties = _elements(archive, "xl/workbook.xml", "workbookPr")
        if properties and properties[0].get("date1904", "").lower() in ("1", "true"):
            epoch = _EPOCH_1904
    if "xl/styles.xml" not in names:
        return CellFormats(epoch=epoch)
    codes: dict[int, int] = {}
    kinds = bytearray()
    depth_in_cell_xfs = 0
    parser = expat.ParserCreate(namespace_separator=" ")

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth_in_cell_xfs
        local = tag.rpartition(" ")[2]
        if local == "numFmt" and len(codes) < MAX_CELL_FORMATS:
            number = ascii_number(attrs.get("numFmtId", ""))
            if number is not None:
                codes[number] = format_kind(attrs.get("formatCode", "")[:1000])
        elif local == "cellXfs":
            depth_in_cell_xfs += 1
        elif local == "xf" and depth_in_cell_xfs:
            if len(kinds) >= MAX_CELL_FORMATS:
                raise XlsxError(f"xl/styles.xml has over {MAX_CELL_FORMATS} cell formats")
            number = ascii_number(attrs.get("numFmtId", "0"))
            if number is None:
                kinds.append(_NUMBER)
            elif number in codes:
                kinds.append(codes[number])
            else:
                kinds.append(_DATE if number in _BUILTIN_DATES else _DURATION if number in _BUILTIN_DURATIONS else 0)

    def end(tag: str) -> None:
        nonlocal depth_in_cell_xfs
        if tag.rpartition(" ")[2] == "cellXfs":
            depth_in_cell_xfs -= 1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    try:
        with archive.open("xl/styles.xml") as stream:
            parser.ParseFile(stream)
    except expat.ExpatError as exc:
        raise XlsxError(f"not a readable workbook: xl/styles.xml: {exc}") from exc
    return CellFormats(bytes(kinds), epoch)


def _serial_text(serial: float, kind: int, epoch: datetime) -> str:
    """A serial number of days as calamine gives it: a timedelta for a duration; else a time below one day,
    a date when whole, a datetime (to the millisecond) otherwise. Out of range: the number as it is."""
    try:
        if kind == _DURATION:
            return str(timedelta(milliseconds=round(serial * 86_400_000)))
        if 0 <= serial < 1:  # a time of day
            moment = datetime.min + timedelta(milliseconds=round(serial * 86_400_000))
            return str(moment.time()) if moment.day == 1 else "00:00:00"
        shifted = serial + 1 if epoch == _EPOCH_1900 and serial < 61 else serial  # Excel's 1900-02-29
        moment = epoch + timedelta(milliseconds=round(shifted * 86_400_000))
    except OverflowError:
        return repr(serial)
    if serial.is_integer():
        return str(moment.date())
    return str(moment)


def _iso_date(text: str) -> str:
    try:
        return str(date.fromisoformat(text)) if len(text) == 10 else str(datetime.fromisoformat(text))
    except ValueError:
        return text
