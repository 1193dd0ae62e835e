""".xlsx bombs: a small file that inflates into gigabytes must end in a clean RecipientsError, not in the OOM killer.

Each bomb is made here: a highly compressible shared-strings table, a zip of very many members, a sheet whose
XML is huge, a cell in a column far past Excel's last. The worst one also goes through `starter.py validate`
in a subprocess whose peak RSS is measured.
"""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from recipients import xlsx
from recipients.reader import RecipientsError, read_file

ROOT = Path(__file__).resolve().parent.parent
NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
RELS_NS = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
WORKBOOK = f'<workbook {NS} {RELS_NS}><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'
WORKBOOK_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"'
    ' Target="worksheets/sheet1.xml"/></Relationships>'
)
CONTENT_TYPES = (
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml"'
    ' ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml"'
    ' ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'
)
ROOT_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="xl/workbook.xml"'
    ' Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/></Relationships>'
)
SMALL_SHEET = f'<worksheet {NS}><sheetData><row r="1"><c r="A1"><v>79990000001</v></c></row></sheetData></worksheet>'


def workbook(
    path: Path, sheet: str | bytes = SMALL_SHEET, shared: tuple[bytes, bytes, bytes, int] | None = None
) -> Path:
    """A minimal .xlsx; `shared` = (head, repeated part, tail, repeats) of sharedStrings.xml, streamed in."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", ROOT_RELS)
        archive.writestr("xl/workbook.xml", WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
        if shared is not None:
            head, part, tail, repeats = shared
            block = part * 10_000
            with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as member:
                member.write(head)
                for _ in range(repeats // 10_000):
                    member.write(block)
                member.write(tail)
    return path


def many_small_strings(path: Path, count: int) -> Path:
    """A shared-strings table of `count` tiny strings: each one a Python/Rust object when held whole."""
    head = f'<sst {NS} count="{count}" uniqueCount="{count}">'.encode()
    return workbook(path, shared=(head, b"<si><t>ab</t></si>", b"</sst>", count))


def test_huge_shared_strings_are_refused(tmp_path: Path) -> None:
    path = many_small_strings(tmp_path / "strings.xlsx", 20_000_000)  # 360 MB of XML in a ~1 MB file
    assert path.stat().st_size < 2_000_000
    with pytest.raises(RecipientsError, match=r"strings\.xlsx: .*xl/sharedStrings\.xml"):
        list(read_file(path).records)


def test_a_zip_of_very_many_members_is_refused(tmp_path: Path) -> None:
    path = workbook(tmp_path / "members.xlsx")
    with zipfile.ZipFile(path, "a") as archive:
        for index in range(20_000):
            archive.writestr(f"xl/media/{index}.bin", b"")
    with pytest.raises(RecipientsError, match=r"members\.xlsx: .*members"):
        list(read_file(path).records)


def test_a_huge_sheet_is_refused(tmp_path: Path) -> None:
    row = b'<row><c t="inlineStr"><is><t>+79990000001</t></is></c></row>'
    path = tmp_path / "sheet.xlsx"
    workbook(path)
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("xl/worksheets/sheet2.xml", "w", force_zip64=True) as member,
    ):
        member.write(f"<worksheet {NS}><sheetData>".encode())
        block = row * 100_000
        for _ in range(100):  # 570 MB of XML
            member.write(block)
        member.write(b"</sheetData></worksheet>")
    with pytest.raises(RecipientsError, match=r"sheet\.xlsx: .*sheet2\.xml"):
        list(read_file(path).records)


def test_a_cell_past_the_last_column_is_refused(tmp_path: Path) -> None:
    sheet = f'<worksheet {NS}><sheetData><row r="1"><c r="ZZZZZZZ1"><v>1</v></c></row></sheetData></worksheet>'
    path = workbook(tmp_path / "wide.xlsx", sheet=sheet)
    with pytest.raises(xlsx.XlsxError, match=r"\(ZZZZZZZ1\) is past the last column"):
        list(xlsx.stream_rows(path, None, lambda _: None))


def validate_peak(path: Path) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """`starter.py validate PATH` in a fresh parent process: its exit code and its own peak RSS in MB."""
    measure = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(r.stderr); sys.stdout.write(r.stdout); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [sys.executable, "-c", measure, sys.executable, str(ROOT / "starter.py"), "validate", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    returncode, peak_kb = map(int, result.stdout.split()[-2:])
    return result, returncode, peak_kb / 1024


def test_two_cells_far_apart_do_not_make_a_dense_grid(tmp_path: Path) -> None:
    """calamine holds the span from the first to the last cell: A1 and XFD1048576 would be 17 billion cells.
    Such a sheet is streamed, which holds only the cells there are."""
    sheet = (
        f'<worksheet {NS}><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>+79990000001</t></is></c></row>'
        '<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData></worksheet>'
    )
    path = workbook(tmp_path / "sparse.xlsx", sheet=sheet)
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of two far-apart cells: exit {returncode}, peak RSS {peak_mb:.0f} MB")
    assert "Traceback" not in result.stderr and returncode in (0, 1), result.stderr
    assert peak_mb < 300


def test_validate_of_a_bomb_stays_small_and_says_why(tmp_path: Path) -> None:
    path = many_small_strings(tmp_path / "bomb.xlsx", 20_000_000)
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of a {path.stat().st_size} byte bomb: peak RSS {peak_mb:.0f} MB")
    assert returncode == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert peak_mb < 300


FAR_CELL = '<row r="200000"><c r="Z200000"><v>1</v></c></row>'  # a span past 4M cells: the streamed path


def far_sheet(rows: str) -> str:
    return f'<worksheet {NS}><sheetData><row r="1"><c r="A1"><v>79990000001</v></c></row>{rows}</sheetData></worksheet>'


@pytest.mark.parametrize(
    "rows",
    [
        '<row r="x"><c><v>1</v></c></row>' + FAR_CELL,
        '<row r="2"><c r="A2" t="s"><v>\u00b2</v></c></row>' + FAR_CELL,
        '<row r="2"><c r="A2" t="s"><v>' + "9" * 5000 + "</v></c></row>" + FAR_CELL,
        '<row r="' + "9" * 5000 + '"><c><v>1</v></c></row>' + FAR_CELL,
    ],
    ids=["row-not-a-number", "superscript-index", "index-of-5000-digits", "row-of-5000-digits"],
)
def test_a_malformed_number_in_a_streamed_sheet_is_a_clean_error(tmp_path: Path, rows: str) -> None:
    path = workbook(tmp_path / "odd.xlsx", sheet=far_sheet(rows))
    with pytest.raises(RecipientsError, match=r"odd\.xlsx: "):
        list(read_file(path).records)


def test_a_shared_string_of_many_runs_is_read_in_linear_time(tmp_path: Path) -> None:
    head = f'<sst {NS} count="1" uniqueCount="1"><si>'.encode()
    path = workbook(tmp_path / "runs.xlsx", shared=(head, b"<r><t>a</t></r>", b"</si></sst>", 30_000))
    started = time.monotonic()
    strings = xlsx.shared_strings(path)
    assert time.monotonic() - started < 2
    assert strings[0] == "a" * 30_000


def test_a_streamed_cell_past_excel_s_limit_is_refused_naming_it(tmp_path: Path) -> None:
    cell = '<row r="2"><c r="B2" t="inlineStr"><is><t>' + "a" * 40_000 + "</t></is></c></row>"
    path = workbook(tmp_path / "long.xlsx", sheet=far_sheet(cell + FAR_CELL))
    with pytest.raises(RecipientsError, match=r"long\.xlsx: .*B2.*32767"):
        list(read_file(path).records)


def test_a_streamed_row_past_its_bound_is_refused(tmp_path: Path) -> None:
    cells = "".join(f'<c t="inlineStr"><is><t>{"a" * 30_000}</t></is></c>' for _ in range(40))
    path = workbook(tmp_path / "wide.xlsx", sheet=far_sheet(f'<row r="2">{cells}</row>' + FAR_CELL))
    with pytest.raises(RecipientsError, match=r"wide\.xlsx: row 2 .*characters"):
        list(read_file(path).records)


def test_validate_of_one_huge_inline_cell_stays_small(tmp_path: Path) -> None:
    """200 MB of one inline string (a 200 KB file): refused while it is read, not held whole."""
    path = tmp_path / "cell.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, text in workbook_parts().items():
            archive.writestr(name, text)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            member.write(f'<worksheet {NS}><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>'.encode())
            block = b"a" * 1_000_000
            for _ in range(200):
                member.write(block)
            member.write(b"</t></is></c></row></sheetData></worksheet>")
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of a 200 MB cell: exit {returncode}, peak RSS {peak_mb:.0f} MB")
    assert "Traceback" not in result.stderr and returncode == 1, result.stderr
    assert "A1" in result.stderr
    assert peak_mb < 300


def workbook_parts() -> dict[str, str]:
    return {
        "[Content_Types].xml": CONTENT_TYPES,
        "_rels/.rels": ROOT_RELS,
        "xl/workbook.xml": WORKBOOK,
        "xl/_rels/workbook.xml.rels": WORKBOOK_RELS,
    }


@pytest.mark.parametrize(
    "far",
    [
        "<row r='1048576'><c r='XFD1048576' t='inlineStr'><is><t>x</t></is></c></row>",
        '<row r = "1048576"><c r = "XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>',
        '<row r="1048576">' + "<c/>" * 16_383 + '<c t="inlineStr"><is><t>x</t></is></c></row>',
    ],
    ids=["single-quotes", "spaces-around-equals", "cells-without-r"],
)
def test_a_far_cell_however_written_does_not_make_a_dense_grid(tmp_path: Path, far: str) -> None:
    sheet = (
        f'<worksheet {NS}><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>+79990000001</t></is></c></row>'
        f"{far}</sheetData></worksheet>"
    )
    path = workbook(tmp_path / "sparse.xlsx", sheet=sheet)
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of a far cell: exit {returncode}, peak RSS {peak_mb:.0f} MB")
    assert "Traceback" not in result.stderr and returncode in (0, 1), result.stderr
    assert peak_mb < 300


def test_rows_that_each_reach_the_last_column_stay_small(tmp_path: Path) -> None:
    """Each row padded to column XFD is 16,384 slots; thousands of such rows in one parsed chunk would be
    gigabytes. Refused once the rows held at once pass a bound."""
    rows = "".join(f'<row r="{n}"><c r="XFD{n}"><v>1</v></c></row>' for n in range(1, 10_001))
    sheet = f"<worksheet {NS}><sheetData>{rows}</sheetData></worksheet>"
    path = workbook(tmp_path / "wide-rows.xlsx", sheet=sheet)
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate of 10,000 rows reaching XFD: exit {returncode}, peak RSS {peak_mb:.0f} MB")
    assert "Traceback" not in result.stderr and returncode == 1, result.stderr
    assert "wide" in result.stderr and peak_mb < 300


def test_the_largest_shared_strings_within_the_limits_stay_under_300_mb(tmp_path: Path) -> None:
    """Just under MAX_SHARED_TEXT_BYTES (4M Cyrillic strings, 120 MB of UTF-8): read packed, and calamine —
    which would hold each as a Rust String — never opens it."""
    count = 4_000_000
    head = f'<sst {NS} count="{count}" uniqueCount="{count}">'.encode()
    path = workbook(
        tmp_path / "big-strings.xlsx", shared=(head, b"<si><t>" + "я".encode() * 15 + b"</t></si>", b"</sst>", count)
    )
    assert count * 30 < xlsx.MAX_SHARED_TEXT_BYTES
    result, returncode, peak_mb = validate_peak(path)
    print(f"validate with {count} shared strings: exit {returncode}, peak RSS {peak_mb:.0f} MB")
    assert returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert peak_mb < 300
