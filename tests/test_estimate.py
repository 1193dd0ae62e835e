"""`starter.py estimate`: the forecast before launch, from a list and a ledger of past mailings with known
outcomes — on SQLite and on PostgreSQL (skipped with a message where no server answers)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

import starter
from domain.models import MailingSummary
from domain.refs import ClientRef
from domain.spec import MailingSpec
from domain.status import MessageStatus
from ledger.store import Change, Ledger
from recipients.importer import ListRules
from runtime.settings import Settings

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DAY = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PRICES = '{"sms": 2.35, "viber": 0.95}'

# 12 rows: 10 valid, one invalid, one duplicate. The SMS text is GSM-7 in one part for 8 of them, two parts
# for the long name, UCS-2 (one part) for the Cyrillic one: 11 parts if everyone got the SMS.
LIST = (
    "phone,name\n"
    + "".join(f"+7999100000{i},Ann\n" for i in range(8))
    + f"+79991000008,{'x' * 200}\n"
    + "+79991000009,Анна\n"
    + "12345,Bad\n"
    + "8 999 100-00-01,Again\n"
)


def write_spec(folder: Path, *, expect: str = "delivered", sms_provider: str | None = None) -> Path:
    (folder / "list.csv").write_text(LIST, encoding="utf-8")
    spec = folder / "spec.toml"
    provider_line = f'provider = "{sms_provider}"\n' if sms_provider else ""
    spec.write_text(
        'name = "Estimate"\nrecipients = "list.csv"\nprovider = "sandbox"\n'
        f'[[steps]]\nchannel = "viber"\nsender = "Shop"\ntext = "Hi {{name}}"\nwait = "5m"\nexpect = "{expect}"\n'
        f'[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hello {{name}}, see example.com"\nwait = "5m"\n'
        + provider_line,
        encoding="utf-8",
    )
    return spec


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ledger URL: a SQLite file, or a throwaway database on the local PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        return
    server = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    name = f"kaskad_estimate_{uuid.uuid4().hex[:10]}"
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        server.dispose()
        pytest.skip(f"no PostgreSQL server answers on 127.0.0.1:5432 ({type(exc).__name__}): PostgreSQL leg skipped")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    """The ledger the CLI will read (through KASKAD_DATABASE_URL), with the sandbox's prices configured."""
    for name in ("KASKAD_PROVIDERS_FILE", "KASKAD_CURRENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KASKAD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KASKAD_DATABASE_URL", ledger_url)
    monkeypatch.setenv("KASKAD_SANDBOX_PRICES", PRICES)
    opened = Ledger(ledger_url)
    try:
        yield opened
    finally:
        opened.close()


def past_mailing(
    ledger: Ledger,
    mailing_id: str,
    finished: datetime | None,
    outcomes: dict[tuple[str, str], list[str]],
) -> None:
    """A mailing with one message per listed final status, by (account, channel) — step 0 for Viber, 1 for
    SMS; finished at `finished` (None: still running)."""
    spec = MailingSpec.model_validate(
        {
            "name": mailing_id,
            "numbers": ["+79990000000"],
            "steps": [{"channel": "sms", "sender": "S", "text": "x", "wait": "1m"}],
        }
    )
    created = (finished or DAY) - timedelta(hours=1)
    ledger.create_mailing(mailing_id, spec, created, None)
    phone = 0
    for (account, channel), statuses in outcomes.items():
        for status in statuses:
            phone += 1
            ref = ClientRef(mailing_id, f"+7999555{phone:04d}", 0 if channel == "viber" else 1)
            changes = [] if status == "not_sent" else [Change(MessageStatus.SENT, created)]
            if status != "sent":
                changes.append(Change(MessageStatus(status), created + timedelta(minutes=1), error=None))
            ledger.record_send(ref, {"channel": channel, "account": account}, *changes)
    if finished is not None:
        summary = MailingSummary(
            mailing_id=mailing_id, name=mailing_id, status="completed", recipients={}, finished_at=finished
        )
        ledger.record_final(summary, phone)


def with_history(ledger: Ledger) -> None:
    """Two finished sandbox mailings on Viber (delivered-or-read 8/10 and 6/10, read 5/10 and 2/10), plus
    what must not count: a running mailing, another account, not_sent messages."""
    viber = ("sandbox", "viber")
    past_mailing(
        ledger,
        "older",
        DAY,
        {viber: ["read"] * 5 + ["delivered"] * 3 + ["undelivered", "sent", "not_sent"]},
    )
    past_mailing(
        ledger, "newer", DAY + timedelta(days=2), {viber: ["read"] * 2 + ["delivered"] * 4 + ["undelivered"] * 4}
    )
    past_mailing(ledger, "running", None, {viber: ["undelivered"] * 10})
    past_mailing(ledger, "elsewhere", DAY + timedelta(days=3), {("other", "viber"): ["undelivered"] * 10})


def estimate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = starter.main(["estimate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def estimate_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = estimate(capsys, *args, "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_no_history_gives_the_best_to_worst_case_range(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = estimate_json(capsys, str(write_spec(tmp_path)))
    assert result["recipients"] == {"rows": 12, "valid": 10, "invalid": 1, "duplicates": 1}
    viber, sms = result["steps"]
    assert (viber["channel"], viber["account"], viber["messages_max"], viber["unit_price"]) == (
        "viber",
        "sandbox",
        10,
        "0.95",
    )
    assert viber["messages"] == {"min": 10, "expected": 10, "max": 10}
    assert viber["cost"] == {"min": "9.50", "expected": "9.50", "max": "9.50"}
    assert viber["history"]["mailings"] == [] and viber["history"]["rate"] is None
    assert viber["history"]["basis"].startswith("no history of viber via sandbox: range from the best case")
    assert (sms["messages_max"], sms["sms_parts_max"], sms["encodings"]) == (10, 11, {"GSM-7": 9, "UCS-2": 1})
    assert sms["messages"] == {"min": 0, "expected": None, "max": 10}
    assert sms["sms_parts"] == {"min": 0, "expected": None, "max": 11}
    assert sms["cost"] == {"min": "0.00", "expected": None, "max": "25.85"}  # 11 parts x 2.35
    assert result["total_cost"] == {"min": "9.50", "expected": None, "max": "35.35"}
    assert result["unreached"] == {"min": 0, "expected": None, "max": 10}

    code, out, _ = estimate(capsys, str(write_spec(tmp_path)))
    assert code == 0
    assert "recipients: 10 valid (12 rows, 1 invalid, 1 duplicates)" in out
    assert "  if every recipient reached it: 10 messages, 11 SMS parts (GSM-7 9, UCS-2 1)" in out
    assert "  cost: 0.00..25.85 RUB (no expected value: no history)" in out
    assert "total cost: 9.50..35.35 RUB (no expected value: no history)" in out


def test_history_gives_expected_volumes_and_the_per_mailing_range(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_history(ledger)
    result = estimate_json(capsys, str(write_spec(tmp_path)))
    viber, sms = result["steps"]
    history = viber["history"]
    assert history["mailings"] == ["newer", "older"]  # not the running one, not another account's
    assert (history["handed_over"], history["reached"]) == (20, 14)  # the not_sent message never left
    assert (history["rate"], history["rate_min"], history["rate_max"]) == (0.7, 0.6, 0.8)
    assert history["since"] == (DAY - timedelta(hours=1)).isoformat()
    assert history["basis"] == "based on 20 Viber messages via sandbox in 2 mailings since 2026-11-20"
    # step 2 gets the 30% (20%..40%) whose Viber was not delivered; 1.1 SMS parts each on average
    assert sms["messages"] == {"min": 2, "expected": 3, "max": 4}
    assert sms["sms_parts"] == {"min": 2.2, "expected": 3.3, "max": 4.4}
    assert sms["cost"] == {"min": "5.17", "expected": "7.76", "max": "10.34"}  # parts x 2.35, to the cent
    assert result["total_cost"] == {"min": "14.67", "expected": "17.26", "max": "19.84"}  # 9.50 + the SMS
    assert sms["history"]["basis"].startswith("no history of sms via sandbox")
    assert result["unreached"] == {"min": 0, "expected": None, "max": 4}

    code, out, _ = estimate(capsys, str(write_spec(tmp_path)))
    assert code == 0
    assert (
        "  observed: 14 of 20 handed over reached delivered (70.0%; per mailing 60.0%..80.0%)"
        " — based on 20 Viber messages via sandbox in 2 mailings since 2026-11-20"
    ) in out
    assert "  expected messages: 3 (range 2..4)" in out
    assert "  expected SMS parts: 3.30 (range 2.20..4.40)" in out
    assert "  cost: 7.76 RUB (range 5.17..10.34)" in out
    assert "total cost: 17.26 RUB (range 14.67..19.84)" in out


def test_a_read_expectation_counts_only_read_messages(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_history(ledger)
    result = estimate_json(capsys, str(write_spec(tmp_path, expect="read")))
    viber, sms = result["steps"]
    assert (viber["history"]["reached"], viber["history"]["rate"]) == (7, 0.35)  # read 5 + 2 of 20
    assert (viber["history"]["rate_min"], viber["history"]["rate_max"]) == (0.2, 0.5)
    assert sms["messages"] == {"min": 5, "expected": 6.5, "max": 8}


def test_the_history_window_takes_the_latest_finished_mailings(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_history(ledger)
    result = estimate_json(capsys, str(write_spec(tmp_path)), "--history", "1")
    viber, sms = result["steps"]
    assert result["history_window"] == 1
    assert viber["history"]["mailings"] == ["newer"]
    assert viber["history"]["basis"] == "based on 10 Viber messages via sandbox in 1 mailing since 2026-11-22"
    assert sms["messages"] == {"min": 4, "expected": 4, "max": 4}
    assert sms["cost"] == {"min": "10.34", "expected": "10.34", "max": "10.34"}  # 4 x 1.1 parts x 2.35

    code, _, err = estimate(capsys, str(write_spec(tmp_path)), "--history", "0")
    assert code == 1 and "error: --history: give at least 1 mailing" in err


def test_steps_without_a_price_say_so(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KASKAD_SANDBOX_PRICES", '{"viber": 0.95}')
    result = estimate_json(capsys, str(write_spec(tmp_path)))
    assert [step["unit_price"] for step in result["steps"]] == ["0.95", None]
    assert result["steps"][1]["cost"] is None and result["unpriced_steps"] == [2]
    assert result["total_cost"] == {"min": "9.50", "expected": "9.50", "max": "9.50"}
    code, out, _ = estimate(capsys, str(write_spec(tmp_path)))
    assert code == 0
    assert "  unit price: no price" in out and "  cost: no price" in out
    assert "total cost: 9.50 RUB (steps without a price not included: 2)" in out


def test_an_unknown_provider_account_is_named_by_its_field(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = estimate(capsys, str(write_spec(tmp_path, sms_provider="nope")))
    assert code == 1 and out == ""
    assert (
        err.startswith("error: ")
        and "\nsteps.2.provider: 'nope' is not a configured provider account (known: sandbox)\n" in err
    )


def test_the_list_is_validated_as_validate_does(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path)
    checked = starter.checked_spec(spec, Settings())  # what `validate SPEC` runs
    validated = asyncio.run(starter.validate_list(checked, ListRules.of(checked), progress=False))
    result = estimate_json(capsys, str(spec))
    assert result["recipients"] == {
        "rows": validated.rows,
        "valid": validated.valid,
        "invalid": validated.invalid,
        "duplicates": validated.duplicates,
    }

    (tmp_path / "list.csv").write_text("phone,name\n12345,Bad\n", encoding="utf-8")
    code, _, err = estimate(capsys, str(spec))
    assert code == 1 and "error: the recipients hold no valid number; nothing to estimate" in err
