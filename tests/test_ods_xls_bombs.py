""".ods and .xls bombs: repeats and far cells that calamine would expand into a dense grid.

An .ods declares repeated rows and cells (`table:number-rows-repeated`, `table:number-columns-repeated`);
calamine expands them all, so a file of a kilobyte could take gigabytes. .ods sheets are streamed
(recipients/ods.py); .xls sheets are checked for their cells' span before calamine opens them.
Peak RSS is measured through `starter.py validate` in a subprocess (`validate_peak`).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import xlwt
from python_calamine import CalamineWorkbook

from recipients import ods
from recipients.reader import RecipientsError, _cell_text, read_file
from recipients.xls import check_xls
from tests.test_xlsx_bombs import validate_peak

NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
)
MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest'
    ' xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>'
)
PHONE = (
    '<table:table-row><table:table-cell office:value-type="string"><text:p>+79990000001</text:p></table:table-cell>'
    "</table:table-row>"
)


def cell(text: str, attrs: str = "") -> str:
    return f'<table:table-cell office:value-type="string"{attrs}><text:p>{text}</text:p></table:table-cell>'


def spreadsheet(path: Path, rows: str | list[str], tables: tuple[str, ...] = ("S",)) -> Path:
    """An .ods whose tables each hold `rows` (an iterable of row XML, written as it comes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("META-INF/manifest.xml", MANIFEST)
        with archive.open("content.xml", "w", force_zip64=True) as member:
            member.write(f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {NS}>'.encode())
            member.write(b"<office:body><office:spreadsheet>")
            for name in tables:
                member.write(f'<table:table table:name="{name}">'.encode())
                for row in [rows] if isinstance(rows, str) else rows:
                    member.write(row.encode())
                member.write(b"</table:table>")
            member.write(b"</office:spreadsheet></office:body></office:document-content>")
    return path


def test_a_kilobyte_of_repeated_rows_reads_in_flat_memory(tmp_path: Path) -> None:
    """The review's bomb: a million rows of ten repeated cells (calamine: 1.3 GB). Within the bounds, so read,
    a row at a time."""
    bomb = '<table:table-row table:number-rows-repeated="1000000">' + cell("x", ' table:number-columns-repeated="10"')
    path = spreadsheet(tmp_path / "rows.ods", PHONE + bomb + "</table:table-row>")
    assert path.stat().st_size < 2_000
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of a {path.stat().st_size} byte .ods of 10M repeated cells: exit {returncode}, {peak_mb:.0f} MB")
    assert returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "1000001 rows" in result.stdout
    assert peak_mb < 300


@pytest.mark.parametrize(
    "rows",
    [
        '<table:table-row table:number-rows-repeated="1000000">'
        + cell("x", ' table:number-columns-repeated="1000"')
        + "</table:table-row>",
        "<table:table-row>" + cell("x", ' table:number-columns-repeated="1000000000"') + "</table:table-row>",
        '<table:table-row><table:table-cell table:number-columns-repeated="1000000000"/>'
        + cell("x")
        + "</table:table-row>",
        '<table:table-row><table:table-cell office:value-type="string"><text:p>a<text:s text:c="1000000000"/></text:p>'
        "</table:table-cell></table:table-row>",
        "<table:table-row>" + cell("x" * 30_000, ' table:number-columns-repeated="100"') + "</table:table-row>",
    ],
    ids=["billion-cells", "repeated-far-columns", "empty-run-then-a-value", "a-billion-spaces", "wide-text"],
)
def test_an_ods_bomb_is_refused_in_small_memory(tmp_path: Path, rows: str) -> None:
    path = spreadsheet(tmp_path / "bomb.ods", PHONE + rows)
    assert path.stat().st_size < 3_000
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of an .ods bomb: exit {returncode}, peak RSS {peak_mb:.0f} MB: {result.stderr.strip()}")
    assert returncode == 1 and result.stderr.startswith("error: bomb.ods: "), result.stderr
    assert peak_mb < 300


def test_libreoffice_s_trailing_empty_repeats_are_not_refused(tmp_path: Path) -> None:
    """LibreOffice ends a formatted row with one empty cell repeated to the last column, and the sheet with one
    empty row repeated to the last row: nothing of them is materialised."""
    trailing = '<table:table-cell table:number-columns-repeated="16383"/>'
    rows = [f"<table:table-row>{cell(f'+7999000{n:04d}')}{trailing}</table:table-row>" for n in range(1000)]
    rows.append(
        '<table:table-row table:number-rows-repeated="1047576">'
        '<table:table-cell table:number-columns-repeated="16384"/></table:table-row>'
    )
    path = spreadsheet(tmp_path / "lo.ods", rows, tables=("First", "Second"))
    table = read_file(path)
    records = list(table.records)
    assert len(records) == 1000 and records[-1] == (1000, ["+79990000999"])
    result, returncode, peak_mb = validate_peak(path)
    assert returncode == 0 and "1000 rows: 1000 valid" in result.stdout, result.stdout + result.stderr
    assert peak_mb < 300


TYPED = (
    "<table:table-row>"
    '<table:table-cell office:value-type="float" office:value="79991234567"><text:p>7999</text:p></table:table-cell>'
    '<table:table-cell office:value-type="date" office:date-value="2024-05-01"><text:p>1.5</text:p></table:table-cell>'
    '<table:table-cell office:value-type="date" office:date-value="2024-05-01T10:30:00"><text:p/></table:table-cell>'
    '<table:table-cell office:value-type="time" office:time-value="PT10H30M05S"><text:p>x</text:p></table:table-cell>'
    '<table:table-cell office:value-type="boolean" office:boolean-value="true"><text:p>TRUE</text:p></table:table-cell>'
    '<table:table-cell office:value-type="percentage" office:value="0.25"><text:p>25%</text:p></table:table-cell>'
    '<table:table-cell office:value-type="string"><text:p>a<text:s text:c="3"/>b<text:span>c</text:span></text:p>'
    "<text:p>d</text:p></table:table-cell>"
    "<table:table-cell><text:p>no value type</text:p></table:table-cell>"
    '<table:table-cell office:value-type="float" office:value="1e20"/>'
    '<table:table-cell office:value-type="string" office:string-value="attribute"><text:p>t</text:p></table:table-cell>'
    '<table:table-cell table:number-columns-repeated="3"/>'
    + cell("after a gap", ' table:number-columns-repeated="2"')
    + "</table:table-row>"
)


def calamine_rows(path: Path) -> list[list[str]]:
    """The first sheet's rows as calamine reads them, without the empty cells it pads each row with to the
    sheet's width (the streamed readers end a row at its last value)."""
    table = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
    rows = [[_cell_text(value) for value in row] for row in table.iter_rows()]
    return [row[: max((i + 1 for i, text in enumerate(row) if text), default=0)] for row in rows]


def test_streamed_cells_read_as_calamine_reads_them(tmp_path: Path) -> None:
    path = spreadsheet(tmp_path / "typed.ods", ["<table:table-row>" + cell("phone") + "</table:table-row>", TYPED])
    streamed = [cells for _, cells in ods.stream_ods_rows(path, None, lambda _: None)]
    assert streamed == calamine_rows(path)
    assert streamed[1][:6] == ["79991234567", "2024-05-01", "2024-05-01 10:30:00", "10:30:05", "True", "0.25"]


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_a_libreoffice_written_ods_reads_as_calamine_reads_it(tmp_path: Path) -> None:
    source = tmp_path / "list.csv"
    source.write_text(
        "phone,date,flag,amount,name\n+79991234567,2024-05-01,TRUE,12.5,Иван\n79991234568,2023-02-01,FALSE,3,Ann\n",
        encoding="utf-8",
    )
    subprocess.run(
        [
            "soffice",
            "--headless",
            "--infilter=CSV:44,34,76",
            "--convert-to",
            "ods",
            "--outdir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    path = tmp_path / "list.ods"
    records = [
        cells
        for _, cells in read_file(
            path,
        ).records
    ]
    assert records == calamine_rows(path)[1:]
    assert records[0] == ["79991234567", "2024-05-01", "True", "12.5", "Иван"]


def test_a_named_sheet_and_a_missing_one(tmp_path: Path) -> None:
    path = spreadsheet(tmp_path / "two.ods", PHONE, tables=("One", "Two"))
    from recipients.reader import SourceOptions

    assert [c for _, c in read_file(path, SourceOptions(sheet="Two", header=False)).records] == [["+79990000001"]]
    with pytest.raises(RecipientsError, match="no sheet named 'Three'"):
        list(read_file(path, SourceOptions(sheet="Three")).records)


def test_a_million_row_ods_stays_under_300_mb(tmp_path: Path) -> None:
    """The largest list: a million rows of a phone and two names, as LibreOffice writes it (calamine: 564 MB)."""
    trailing = '<table:table-cell table:number-columns-repeated="1021"/>'
    rows = (
        f"<table:table-row>{cell(f'+7999{n:07d}')}{cell(f'Иван {n}')}{cell(f'Петров {n}')}{trailing}</table:table-row>"
        for n in range(1_000_000)
    )
    path = spreadsheet(tmp_path / "million.ods", list(rows))
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of a million-row .ods ({path.stat().st_size} bytes): peak RSS {peak_mb:.0f} MB")
    assert returncode == 0 and "1000000 rows: 1000000 valid" in result.stdout, result.stdout + result.stderr
    assert peak_mb < 300


def xls_file(path: Path, sheets: int = 1, far: bool = True) -> Path:
    workbook = xlwt.Workbook()
    for index in range(sheets):
        sheet = workbook.add_sheet(f"S{index}")
        sheet.write(0, 0, "+79990000001")
        if far:
            sheet.write(65535, 255, "x")  # IV65536, the last cell an .xls has
    workbook.save(str(path))
    return path


def with_dimensions(path: Path, rows: int) -> Path:
    """The .xls with its sheet's DIMENSIONS record claiming `rows` rows of 256 columns (same length, in place)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x00\x02\x0e\x00")  # DIMENSIONS, 14 bytes
    struct.pack_into("<IIHH", data, at + 4, 0, rows, 0, 255)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: xls_file(tmp / "bomb.xls"),
        lambda tmp: xls_file(tmp / "bomb.xls", sheets=3),
        lambda tmp: with_dimensions(xls_file(tmp / "bomb.xls", far=False), 0xFFFF0000),
    ],
    ids=["a1-and-iv65536", "three-such-sheets", "dimensions-of-four-billion-rows"],
)
def test_an_xls_bomb_is_refused_in_small_memory(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    """calamine: 1.1 GB, 2.1 GB, and an abort (SIGABRT) for these files of a few kilobytes."""
    path = make(tmp_path)
    result, returncode, peak_mb = validate_peak(path)
    print(
        f"validate of a {path.stat().st_size} byte .xls: exit {returncode}, {peak_mb:.0f} MB: {result.stderr.strip()}"
    )
    assert returncode == 1 and result.stderr.startswith("error: bomb.xls: "), result.stderr
    assert peak_mb < 300


def test_a_full_height_xls_within_the_bound_is_read(tmp_path: Path) -> None:
    """65,536 rows of 30 columns (the bound: about 2M cells): read, under 300 MB."""
    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("S")
    for row in range(65_536):
        sheet.write(row, 0, f"+7999{row:07d}")
        sheet.write(row, 29, "x")
    path = tmp_path / "tall.xls"
    workbook.save(str(path))
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of 65,536 x 30 .xls: exit {returncode}, peak RSS {peak_mb:.0f} MB")
    assert returncode == 0 and "65536 rows: 65536 valid" in result.stdout, result.stdout + result.stderr
    assert peak_mb < 300


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_a_libreoffice_written_xls_passes_the_check(tmp_path: Path) -> None:
    source = tmp_path / "list.csv"
    source.write_text("phone,name\n" + "".join(f"+7999{n:07d},N{n}\n" for n in range(3000)), encoding="utf-8")
    subprocess.run(
        ["soffice", "--headless", "--convert-to", "xls", "--outdir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    path = tmp_path / "list.xls"
    check_xls(path)
    assert len(list(read_file(path).records)) == 3000
