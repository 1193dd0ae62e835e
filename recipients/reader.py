"""Reading recipient rows from .csv / .txt files and manual lists."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 128 * 1024 * 1024
SUPPORTED_SUFFIXES = (".csv", ".txt")
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
    """Read a .csv (delimiter `,` `;` or tab, detected; header detected) or a .txt (one number per line)."""
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise RecipientsError(f"{path.name}: unsupported file type; use {', '.join(SUPPORTED_SUFFIXES)}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RecipientsError(f"{path.name}: {size} bytes is over the 128 MB limit")
    if size == 0:
        raise RecipientsError(f"{path.name}: the file is empty")
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
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    first = next(reader, None)
    if first is None:
        raise RecipientsError("the file has no rows")
    has_header = bool(first) and not any(ch.isdigit() for ch in first[0])
    header = [name.strip() for name in first] if has_header else None

    def rows() -> Iterator[Row]:
        start = 2 if has_header else 1
        body = reader if has_header else _chain_first(first, reader)
        for number, cells in enumerate(body, start=start):
            if not any(cell.strip() for cell in cells):
                continue
            variables = {str(i): cell.strip() for i, cell in enumerate(cells, start=1)}
            if header:
                variables.update({name: cell.strip() for name, cell in zip(header, cells, strict=False)})
            yield Row(number, cells[0], variables)

    return Table(header, len(first), rows())


def _chain_first(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest
