"""The CLI commands that need no running stack: validate and preview, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def spec_with(tmp_path: Path, csv_text: str, sms_text: str) -> Path:
    (tmp_path / "list.csv").write_text(csv_text, encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "CLI"\nrecipients = "list.csv"\n'
        f'[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "{sms_text}"\nwait = "5m"\n',
        encoding="utf-8",
    )
    return spec


def test_validate_json_counts_and_writes_no_stack_state(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "phone,name\n+79990000001,Anna\n12345,Bob\n8 999 000-00-01,Anna again\n", "Hi {name}")
    result = run("validate", str(spec), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["valid"], report["invalid"], report["duplicates"]) == (3, 1, 1, 1)
    assert report["invalid_by_reason"] == {"too short": 1}
    assert [(r["row"], r["reason"]) for r in report["rejected_sample"]] == [(3, "too short"), (4, "duplicate of row 2")]


def test_validate_names_a_missing_variable(tmp_path: Path) -> None:
    result = run("validate", str(spec_with(tmp_path, "phone,name\n+79990000001,Anna\n", "Hi {surname}")))
    assert result.returncode == 1
    assert "steps.0.text uses {surname}, which the recipients do not have" in result.stderr


def test_preview_renders_and_counts_sms_parts(tmp_path: Path) -> None:
    text = "Здравствуйте, {name}! " + "Скидка 20% на всё. " * 4
    spec = spec_with(tmp_path, "phone,name\nnot a phone,Nobody\n+79990000001,Анна\n", text)
    result = run("preview", str(spec))
    assert result.returncode == 0, result.stderr
    assert "recipient: row 3, +79990000001 (name=Анна)" in result.stdout
    assert "| Здравствуйте, Анна! Скидка 20%" in result.stdout
    assert "UCS-2 · 96 chars · 2 parts" in result.stdout

    invalid_row = run("preview", str(spec), "--row", "2")
    assert "recipient: row 2, 'not a phone' — invalid: not a number" in invalid_row.stdout
