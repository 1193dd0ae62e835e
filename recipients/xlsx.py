"""A streaming reader for large .xlsx sheets: flat memory, whatever the number of rows.

calamine loads a whole sheet into memory (about 100 bytes a cell: 300 MB for a million rows of three
columns), so sheets whose XML is larger than `STREAM_ABOVE_BYTES` are read here instead, with expat over the
zipped XML, a megabyte at a time. Only the shared-strings table is held in memory.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO
from xml.parsers import expat

STREAM_ABOVE_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


class XlsxError(ValueError):
    """The workbook is not a readable .xlsx (or has no such sheet)."""


def sheet_member(archive: zipfile.ZipFile, sheet: str | None) -> zipfile.ZipInfo:
    """The zip member of the first sheet, or of the sheet with this name (workbook order, as Excel shows it)."""
    sheets = [(attrs["name"], attrs[f"{_REL_NS} id"]) for attrs in _elements(archive, "xl/workbook.xml", "sheet")]
    relations = _elements(archive, "xl/_rels/workbook.xml.rels", "Relationship")
    targets = {attrs["Id"]: attrs["Target"] for attrs in relations}
    if not sheets:
        raise XlsxError("the workbook has no sheets")
    chosen = sheets[0] if sheet is None else next((s for s in sheets if s[0] == sheet), None)
    if chosen is None:
        raise XlsxError(f"no sheet named {sheet!r} (sheets: {', '.join(name for name, _ in sheets)})")
    target = targets[chosen[1]]
    path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
    return archive.getinfo(path)


def stream_rows(path: Path, sheet: str | None, progress: Callable[[float], None]) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts) for every row of the sheet; `progress` gets the fraction of the sheet read."""
    try:
        archive = zipfile.ZipFile(path)
        member = sheet_member(archive, sheet)
        shared = _shared_strings(archive)
    except (zipfile.BadZipFile, KeyError, expat.ExpatError) as exc:
        raise XlsxError(f"not a readable workbook: {exc}") from exc
    with archive, archive.open(member) as stream:
        yield from _SheetParser(shared).rows(stream, member.file_size, progress)


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


def _shared_strings(archive: zipfile.ZipFile) -> list[str]:
    """The shared-strings table: the text of each `<si>` (rich-text runs joined; phonetic hints skipped)."""
    if "xl/sharedStrings.xml" not in archive.namelist():
        return []
    strings: list[str] = []
    parts: list[str] = []
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
        nonlocal depth_in_phonetic, in_text
        local = tag.rpartition(" ")[2]
        if local == "si":
            strings.append("".join(parts))
            parts.clear()
        elif local == "rPh":
            depth_in_phonetic -= 1
        elif local == "t":
            in_text = False

    def text(data: str) -> None:
        if in_text:
            parts.append(data)

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    with archive.open("xl/sharedStrings.xml") as stream:
        parser.ParseFile(stream)
    return strings


def _column_index(reference: str) -> int:
    """0-based column of a cell reference such as `AB12`."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - 64
    return index - 1


class _SheetParser:
    """expat callbacks that turn `<row><c><v>…</v></c></row>` into lists of cell texts."""

    def __init__(self, shared: list[str]) -> None:
        self._shared = shared
        self._done: list[tuple[int, list[str]]] = []
        self._row_number = 0
        self._cells: list[str] = []
        self._column = 0
        self._type: str | None = None
        self._text: list[str] = []
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
                progress(read / size if size else 1.0)
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise XlsxError(f"not a readable workbook: {exc}") from exc
        yield from self._done

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        local = tag.rpartition(" ")[2]
        if local == "c":
            reference = attrs.get("r")
            self._column = _column_index(reference) if reference else len(self._cells)
            self._type = attrs.get("t")
            self._text = []
        elif local in ("v", "t"):
            self._in_text = True
        elif local == "row":
            self._cells = []
            self._row_number = int(attrs["r"]) if "r" in attrs else self._row_number + 1
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
            self._done.append((self._row_number, self._cells))

    def _chars(self, data: str) -> None:
        if self._in_text:
            self._text.append(data)

    def _value(self, text: str) -> str:
        """The cell as text: shared strings looked up, numbers as Excel shows them (no `.0` on whole numbers)."""
        if self._type == "s":
            return self._shared[int(text)] if text.isdigit() and int(text) < len(self._shared) else ""
        if self._type in (None, "n") and text:
            try:
                number = float(text)
            except ValueError:
                return text
            return str(int(number)) if number.is_integer() else text
        return text
