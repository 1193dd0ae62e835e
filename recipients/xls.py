"""What an .xls asks of calamine, read before calamine opens it.

calamine reads every sheet of an .xls at once, each as a dense grid from its first to its last cell (about 65
bytes a cell), and reserves room for the span a sheet's DIMENSIONS record declares: a 5.6 KB file with cells at
A1 and IV65536 took 1.1 GB, three such sheets 2.1 GB, and a DIMENSIONS record claiming four billion rows
aborted the process. `check_xls` reads the compound file's Workbook stream (a FAT file system inside the file)
and its BIFF records, and refuses a workbook whose sheets together span more than `MAX_XLS_CELLS`, or whose
records declare more. An .xls holds at most 65,536 rows of 256 columns, so any real list fits: 65,536 rows of
30 columns is 2M cells.
"""

from __future__ import annotations

import struct
from pathlib import Path

from recipients.xlsx import XlsxError

MAX_XLS_CELLS = 2_000_000  # all sheets together, each from its first to its last cell (about 130 MB in calamine)
_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_END_OF_CHAIN = 0xFFFFFFFE
_FREE = 0xFFFFFFFF
_STREAM, _ROOT = 2, 5
_BOF, _EOF, _DIMENSIONS = 0x0809, 0x000A, 0x0200
_MULRK, _MULBLANK = 0x00BD, 0x00BE
# FORMULA, RSTRING, LABELSST, BLANK, NUMBER, LABEL, BOOLERR, RK: a cell each, its row and column first.
_CELLS = frozenset({0x0006, 0x00D6, 0x00FD, 0x0201, 0x0203, 0x0204, 0x0205, 0x027E})


class XlsError(XlsxError):
    """The .xls is not readable, or asks for more memory than may be given."""


def check_xls(path: Path) -> None:
    """Refuse an .xls whose sheets (cells or DIMENSIONS) span more than MAX_XLS_CELLS together."""
    data = path.read_bytes()  # at most the 128 MB the reader allows; an .xls is not compressed
    if not data.startswith(_MAGIC):
        return  # not a compound file (e.g. an HTML or CSV file named .xls): calamine says what it is
    try:
        stream = _workbook_stream(data)
    except (struct.error, IndexError, ValueError) as exc:
        raise XlsError(f"not a readable workbook: {exc}") from None
    if stream is None:
        return  # no Workbook stream: calamine refuses it
    _check_records(stream)


def _workbook_stream(data: bytes) -> bytes | None:
    sector = 1 << struct.unpack_from("<H", data, 30)[0]
    mini_sector = 1 << struct.unpack_from("<H", data, 32)[0]
    if sector not in (512, 4096) or mini_sector != 64:
        raise ValueError("unexpected sector sizes")
    (fat_count, first_directory, _, mini_cutoff, first_mini_fat, _, first_difat, difat_count) = struct.unpack_from(
        "<IIIIIIII", data, 44
    )
    per_sector = sector // 4
    fat_sectors = [n for n in struct.unpack_from("<109I", data, 76) if n < _END_OF_CHAIN]
    difat = first_difat
    seen: set[int] = set()
    while difat < _END_OF_CHAIN and len(seen) < difat_count:
        if difat in seen:
            raise ValueError("a DIFAT loop")
        seen.add(difat)
        listed = struct.unpack_from(f"<{per_sector}I", data, (difat + 1) * sector)
        fat_sectors += [n for n in listed[:-1] if n < _END_OF_CHAIN]
        difat = listed[-1]
    fat: list[int] = []
    for number in fat_sectors[:fat_count]:
        fat += struct.unpack_from(f"<{per_sector}I", data, (number + 1) * sector)

    def chain(start: int) -> list[int]:
        found: list[int] = []
        visited: set[int] = set()
        while start < _END_OF_CHAIN:
            if start in visited or start >= len(fat):
                raise ValueError("a broken sector chain")
            visited.add(start)
            found.append(start)
            start = fat[start]
        return found

    def read(start: int, size: int) -> bytes:
        stream = b"".join(data[(n + 1) * sector : (n + 2) * sector] for n in chain(start))
        return stream[:size]

    directory = read(first_directory, len(data))
    entries = [directory[i : i + 128] for i in range(0, len(directory) - 127, 128)]
    root = entries[0]
    for entry in entries:
        name_bytes = struct.unpack_from("<H", entry, 64)[0]
        name = entry[: max(0, name_bytes - 2)].decode("utf-16-le", "replace")
        if entry[66] != _STREAM or name not in ("Workbook", "Book"):
            continue
        start, size = struct.unpack_from("<IQ", entry, 116)
        if sector == 512:  # version 3 files: the size's high half may hold garbage
            size &= 0xFFFFFFFF
        if size >= mini_cutoff:
            return read(start, size)
        mini_stream = read(*struct.unpack_from("<IQ", root, 116)) if root[66] == _ROOT else b""
        mini_fat_bytes = read(first_mini_fat, len(data))
        mini_fat = struct.unpack_from(f"<{len(mini_fat_bytes) // 4}I", mini_fat_bytes)
        parts: list[bytes] = []
        visited: set[int] = set()
        number = start
        while number < _END_OF_CHAIN:
            if number in visited or number >= len(mini_fat):
                raise ValueError("a broken mini-sector chain")
            visited.add(number)
            parts.append(mini_stream[number * mini_sector : (number + 1) * mini_sector])
            number = mini_fat[number]
        return b"".join(parts)[:size]
    return None


def _check_records(stream: bytes) -> None:
    """Sum, over the worksheets, the span of their cells and of their DIMENSIONS record."""
    total = 0
    depth = 0  # BOF..EOF nesting (a chart inside a sheet has its own)
    span: list[int] | None = None  # first row, last row, first column, last column of the current sheet
    declared = 0
    offset = 0
    while offset + 4 <= len(stream):
        kind, length = struct.unpack_from("<HH", stream, offset)
        record = stream[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if kind == _BOF:
            depth += 1
            if depth == 1:
                span, declared = None, 0
        elif kind == _EOF:
            depth = max(0, depth - 1)
            if depth == 0:
                total += max(_cells(span), declared)
                if total > MAX_XLS_CELLS:
                    raise XlsError(
                        f"its sheets span over {MAX_XLS_CELLS} cells from their first to their last cell"
                        " (cells far apart, or a DIMENSIONS record that says so)"
                    )
        elif depth != 1 or len(record) < 4:
            continue
        elif kind == _DIMENSIONS and len(record) >= 12:
            first_row, last_row, first_column, last_column = struct.unpack_from("<IIHH", record)
            declared = max(0, last_row - first_row) * max(0, last_column - first_column)
        elif kind in _CELLS or kind in (_MULRK, _MULBLANK):
            row, column = struct.unpack_from("<HH", record)
            last_column = struct.unpack_from("<H", record, len(record) - 2)[0] if kind not in _CELLS else column
            span = (
                [row, row, column, last_column]
                if span is None
                else [min(span[0], row), max(span[1], row), min(span[2], column), max(span[3], last_column)]
            )
    if depth:  # a sheet without its EOF: calamine reads what there is
        total += max(_cells(span), declared)
        if total > MAX_XLS_CELLS:
            raise XlsError(f"its sheets span over {MAX_XLS_CELLS} cells from their first to their last cell")


def _cells(span: list[int] | None) -> int:
    return 0 if span is None else (span[1] - span[0] + 1) * (max(span[3] - span[2], 0) + 1)
