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


def test_validate_a_bare_file_writes_the_rejected_rows_to_xlsx(tmp_path: Path) -> None:
    import openpyxl

    path = tmp_path / "list.csv"
    path.write_text("телефон\n+79990000001\n12345\n8 495 123-45-67\n8 999 000-00-01\n", encoding="utf-8")
    rejected = tmp_path / "rejected.xlsx"
    result = run("validate", str(path), "--rejected", str(rejected))
    assert result.returncode == 0, result.stderr
    assert "4 rows: 1 valid, 2 invalid, 1 duplicates" in result.stdout
    assert "  invalid, not a mobile number: 1" in result.stdout
    sheet = openpyxl.load_workbook(rejected).active
    assert sheet is not None
    assert [list(row) for row in sheet.iter_rows(values_only=True)] == [
        ["row", "value", "reason"],
        [3, "12345", "too short"],
        [4, "8 495 123-45-67", "not a mobile number"],
        [5, "8 999 000-00-01", "duplicate of row 2"],
    ]

    kept = run("validate", str(path), "--keep-landlines", "--json")
    assert json.loads(kept.stdout)["valid"] == 2


def test_validate_writes_the_rejected_rows_to_csv_and_refuses_other_formats(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "phone\nhello\n+79990000001\n", "Hi")
    assert run("validate", str(spec), "--rejected", str(tmp_path / "out.csv")).returncode == 0
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines() == [
        "row,value,reason",
        "2,hello,not a number",
    ]
    refused = run("validate", str(spec), "--rejected", str(tmp_path / "out.txt"))
    assert refused.returncode == 1
    assert "error: out.txt: the rejected rows can be written to .csv or .xlsx" in refused.stderr


def test_validate_shows_a_progress_bar_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("".join(f"+7999{i:07d}\n" for i in range(30_000)), encoding="utf-8")
    result = run("validate", str(path), "--progress")
    assert result.returncode == 0, result.stderr
    assert "reading [" in result.stderr and "100%" in result.stderr
    assert "30000 rows: 30000 valid" in result.stdout
    assert "reading [" not in run("validate", str(path)).stderr  # not a terminal: no bar by default


def test_validate_a_list_without_a_valid_number_fails(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("12345\nhello\n", encoding="utf-8")
    result = run("validate", str(path))
    assert result.returncode == 1
    assert "2 rows: 0 valid, 2 invalid" in result.stdout


def test_a_broken_provider_account_is_a_clear_error_naming_the_field(tmp_path: Path) -> None:
    accounts = tmp_path / "providers.toml"
    accounts.write_text(
        '[sms-main]\ntype = "twilio"\naccount_sid = "AC1"\nauth_token = "secret-token"\n', encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "worker.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={
            "PATH": "",
            "KASKAD_PROVIDERS_FILE": str(accounts),
            "KASKAD_TEMPORAL_ADDRESS": "127.0.0.1:9",
            "KASKAD_WEBHOOK_SECRET": "a-secret",  # else it stops at the missing secret first
        },
    )
    assert result.returncode == 1
    assert "error: sms-main.from_number|messaging_service_sid: " in result.stderr
    assert "secret-token" not in result.stderr + result.stdout


def cascade_spec(tmp_path: Path, viber_provider: str, sms_provider: str) -> Path:
    (tmp_path / "list.csv").write_text("phone\n+79990000001\n", encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "Providers"\nrecipients = "list.csv"\n'
        f'[[steps]]\nchannel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\nprovider = "{viber_provider}"\n'
        f'[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\nprovider = "{sms_provider}"\n',
        encoding="utf-8",
    )
    return spec


def run_with_accounts(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a providers file of one Twilio account (SMS only) and nothing to reach: any launch that
    got past the checks would fail on Temporal (port 9) and leave a ledger file behind."""
    accounts = tmp_path / "providers.toml"
    accounts.write_text(
        '[twilio-main]\ntype = "twilio"\naccount_sid = "AC1"\nauth_token = "t"\nfrom_number = "+15550001"\n',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            "PATH": "",
            "KASKAD_PROVIDERS_FILE": str(accounts),
            "KASKAD_TEMPORAL_ADDRESS": "127.0.0.1:9",
            "KASKAD_DATA_DIR": str(tmp_path / "data"),
        },
    )


def test_validate_and_start_refuse_an_unknown_provider_account_and_an_unsupported_channel(tmp_path: Path) -> None:
    spec = cascade_spec(tmp_path, viber_provider="twilio-main", sms_provider="sandbx")
    for command in (["validate", str(spec)], ["start", str(spec)], ["estimate", str(spec)]):
        result = run_with_accounts(tmp_path, *command)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith("error: "), result.stderr
        refusal = "steps.1.provider: 'twilio-main' (twilio) does not send viber (it sends: sms, whatsapp)\n"
        assert refusal in result.stderr
        assert (
            "steps.2.provider: 'sandbx' is not a configured provider account (known: sandbox, twilio-main)\n"
            in result.stderr
        )
        assert "started" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing reached the ledger, let alone Temporal

    fine = run_with_accounts(tmp_path, "validate", str(cascade_spec(tmp_path, "sandbox", "twilio-main")))
    assert fine.returncode == 0, fine.stderr


def test_validate_a_bare_list_has_no_steps_to_check(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone\n+79990000001\n", encoding="utf-8")
    assert run_with_accounts(tmp_path, "validate", str(path)).returncode == 0
