"""Workbooks as people bring them: real .xlsx (openpyxl) and .xls (xlwt) files, with Excel's artefacts."""

from __future__ import annotations

from pathlib import Path

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
