"""Workbooks as people bring them: real .xlsx (openpyxl) and .xls (xlwt) files, with Excel's artefacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlwt

from domain.phones import RejectReason, normalize_phone
from domain.spec import MailingSpec
from recipients.importer import import_recipients
from recipients.reader import RecipientsError, read_file

ROWS: list[list[object]] = [
    ["Имя", "Телефон", "Код"],
    ["Анна", 79991234567.0, "A1"],  # typed as a number: Excel stores a float
    ["Борис", "'+7 999 123-45-68", "B2"],  # leading apostrophe keeps text in Excel
    ["Вера", "tel:+79991234569", "C3"],
    ["Глеб", "\u00a0+7\u00a0999\u00a0123\u00a045\u00a070 ", "D4"],  # non-breaking spaces
    ["Дина", "7,99912E+10", "E5"],  # Excel's scientific notation: digits lost
    [None, None, None],  # an empty row is skipped
    ["Егор", "", "F6"],
]


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def write_xls(path: Path, rows: list[list[object]]) -> Path:
    book = xlwt.Workbook()
    sheet = book.add_sheet("Лист1")
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                sheet.write(r, c, value)
    book.save(str(path))
    return path


@pytest.fixture(params=["xlsx", "xls"])
def workbook(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    writer = write_xlsx if request.param == "xlsx" else write_xls
    return writer(tmp_path / f"contacts.{request.param}", ROWS)


def test_workbook_phone_column_found_by_header_and_artefacts_undone(workbook: Path) -> None:
    table = read_file(workbook)
    assert table.header == ["Имя", "Телефон", "Код"]
    rows = list(table.rows)
    assert [r.number for r in rows] == [2, 3, 4, 5, 6, 8]
    assert [normalize_phone(r.phone).e164 for r in rows[:4]] == [
        "+79991234567",
        "+79991234568",
        "+79991234569",
        "+79991234570",
    ]
    assert normalize_phone(rows[4].phone).reason is RejectReason.PRECISION_LOST
    assert rows[0].variables["Имя"] == "Анна" and rows[0].variables["3"] == "A1"


def test_workbook_import_report(workbook: Path, tmp_path: Path) -> None:
    spec = MailingSpec.model_validate(
        {
            "name": "x",
            "recipients": workbook,
            "steps": [{"channel": "sms", "sender": "S", "text": "{Имя}, код {Код}", "wait": "5m"}],
        }
    )
    report = import_recipients(spec, tmp_path / "data", "m1")
    assert (report.rows, report.valid, report.invalid) == (6, 4, 2)
    assert report.invalid_by_reason == {"precision lost": 1, "empty": 1}
    assert [(r.row, r.reason) for r in report.rejected_sample] == [(6, "precision lost"), (8, "empty")]


def test_a_file_that_is_not_a_workbook_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(RecipientsError, match=r"broken\.xlsx: not a readable workbook"):
        read_file(path)


# --- declared sheet, streaming reader -----------------------------------------------------------------------


def two_sheet_workbook(path: Path) -> Path:
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "Notes"
    first.append(["nothing to send here"])
    second = book.create_sheet("Клиенты")
    for row in ROWS:
        second.append(row)
    book.save(path)
    return path


def test_a_named_sheet_is_read_instead_of_the_first(tmp_path: Path) -> None:
    from recipients.reader import SourceOptions

    table = read_file(two_sheet_workbook(tmp_path / "book.xlsx"), SourceOptions(sheet="Клиенты"))
    assert table.header == ["Имя", "Телефон", "Код"]
    assert len(list(table.rows)) == 6


def test_an_unknown_sheet_names_the_sheets_there_are(tmp_path: Path) -> None:
    from recipients.reader import SourceOptions

    with pytest.raises(
        RecipientsError, match=r"sheet: book\.xlsx has no sheet named 'Leads' \(sheets: Notes, Клиенты\)"
    ):
        read_file(two_sheet_workbook(tmp_path / "book.xlsx"), SourceOptions(sheet="Leads"))


def test_sheet_is_refused_for_a_csv(tmp_path: Path) -> None:
    from recipients.reader import SourceOptions

    path = tmp_path / "list.csv"
    path.write_text("79991234567\n", encoding="utf-8")
    with pytest.raises(RecipientsError, match=r"sheet: list\.csv is not a workbook"):
        read_file(path, SourceOptions(sheet="Leads"))


GAPPY: list[list[object]] = [
    [None, None, None],
    [None, "Телефон", "Имя", None, "Город"],
    [None, 79991234567, "Анна & Co <b>", None, "Тверь"],
    [None, None, None],
    [None, "+7 999 123-45-68", None, 3.5, "Омск"],
    [None, "8 999 123 45 69", "Вера"],
]


@pytest.mark.parametrize("sheet", [None, "Клиенты"])
def test_the_streaming_reader_gives_what_calamine_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sheet: str | None
) -> None:
    """Shared strings, numbers, XML escapes, empty leading rows and columns, gaps, and the chosen sheet."""
    from recipients import reader, xlsx
    from recipients.reader import SourceOptions

    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    if sheet:
        first.append(["другой лист"])
    target = book.create_sheet(sheet) if sheet else first
    for row in GAPPY:
        target.append(row)
    path = tmp_path / "gappy.xlsx"
    book.save(path)

    def read() -> list[tuple[int, list[str]]]:
        table = read_file(path, SourceOptions(sheet=sheet))
        assert table.header == ["", "Телефон", "Имя", "", "Город"] and table.phone_index == 1
        return [(number, trimmed(cells)) for number, cells in table.records]

    by_calamine = read()
    monkeypatch.setattr(reader, "STREAM_ABOVE_BYTES", 0)
    streamed: list[float] = []
    monkeypatch.setattr(reader, "stream_rows", _recording(xlsx.stream_rows, streamed))
    by_stream = read()
    assert streamed, "the streaming reader was not used"
    assert by_stream == by_calamine
    assert by_calamine == [
        (3, ["", "79991234567", "Анна & Co <b>", "", "Тверь"]),
        (5, ["", "+7 999 123-45-68", "", "3.5", "Омск"]),
        (6, ["", "8 999 123 45 69", "Вера"]),
    ]


def trimmed(cells: list[str]) -> list[str]:
    """Cells without trailing empty ones (calamine pads rows to the sheet's width, the stream does not)."""
    while cells and not cells[-1]:
        cells = cells[:-1]
    return cells


def _recording(function: Callable[..., Any], calls: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return function(*args, **kwargs)

    return wrapper


def test_the_streaming_reader_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recipients import reader

    path = write_xlsx(tmp_path / "list.xlsx", ROWS)
    monkeypatch.setattr(reader, "STREAM_ABOVE_BYTES", 0)
    seen: list[float] = []
    list(read_file(path, progress=seen.append).records)
    assert seen and seen[-1] == 1.0


def test_streamed_xlsx_renders_dates_times_and_booleans_as_calamine_does(tmp_path: Path) -> None:
    """The streamed reader (large sheets) and calamine (small ones) give a variable column the same text: a
    date as a date (not its serial number), a boolean as True (not 1), by the cell's number format."""
    import datetime as dt

    from python_calamine import CalamineWorkbook

    from recipients.reader import _cell_text
    from recipients.xlsx import stream_rows

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["phone", "date", "datetime", "time", "flag", "amount", "custom", "duration", "quoted"])
    values: list[list[Any]] = [
        ["+79991234567", dt.date(2024, 5, 1), dt.datetime(2024, 5, 1, 10, 30, 15), dt.time(10, 30), True, 12.5],
        ["+79991234568", dt.date(1900, 2, 1), dt.datetime(2024, 5, 1, 10, 30, 15, 500000), dt.time(0, 0, 1), False, 3],
    ]
    for row in values:
        sheet.append([*row, 45000.5, 1.5, 45000])
    for number in (2, 3):
        sheet[f"G{number}"].number_format = 'dd"d"/mm/yyyy hh:mm'  # a custom date format, with quoted text
        sheet[f"H{number}"].number_format = "[h]:mm:ss"  # a duration
        sheet[f"I{number}"].number_format = '"y"0'  # a quoted y: a number
    path = tmp_path / "types.xlsx"
    workbook.save(path)

    streamed = [cells for _, cells in stream_rows(path, None, lambda _: None)]
    table = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
    assert streamed == [[_cell_text(value) for value in row] for row in table.iter_rows()]
    assert streamed[1][1:6] == ["2024-05-01", "2024-05-01 10:30:15", "10:30:00", "True", "12.5"]
    assert streamed[2][1:5] == ["1900-02-01", "2024-05-01 10:30:15.500000", "00:00:01", "False"]
    assert streamed[1][6:] == ["2023-03-15 12:00:00", "1 day, 12:00:00", "45000"]
