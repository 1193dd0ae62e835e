"""The ledger's read side: figures, the report workbook and CSV, search, the mailings list and `status` from the
ledger — on SQLite and on PostgreSQL (`ledger_url`, see tests/ledger_fixtures.py).

One hand-built mailing, written through the Ledger's own write methods, covers every case the figures must get
right: delivered on step 1; a timeout then step 2 delivered; refused at the send then step 2 undelivered; a
wasted fallback (step 1 delivered by a late report after step 2 went out); not sent; never started; and a
duplicate report.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from temporalio.testing import WorkflowEnvironment

from domain.models import ImportReport, MailingSummary, RecipientRecord, RecipientState, StepState
from domain.refs import ClientRef
from domain.spec import MailingSpec, Step
from domain.status import CascadeStatus, Channel, MessageStatus
from ledger.queries import iter_recipients, list_mailings, mailing_figures, search_messages
from ledger.report import ReportError, detail_header, write_report
from ledger.store import Change, Ledger
from providers.prices import PriceBook
from recipients.importer import StoredRecipient
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PRICES = PriceBook({"sandbox": {"viber": Decimal("1.00"), "sms": Decimal("2.50")}}, "RUB")
MAILING = "spring-sale-1a2b3c"
OLDER = "older-sms-4d5e6f"
A, B, C, D, E, F = (f"+7999000000{n}" for n in range(1, 7))
MINUTE = timedelta(minutes=1)


def spec(name: str, *channels: Channel) -> MailingSpec:
    return MailingSpec(
        name=name,
        numbers=["+79990000001"],
        steps=[Step(channel=c, sender="Shop", text="Hello", wait=timedelta(minutes=5)) for c in channels],
    )


def sent(ledger: Ledger, phone: str, step: int, channel: str, at: datetime, parts: int | None = None) -> ClientRef:
    ref = ClientRef(MAILING, phone, step)
    fields = {"channel": channel, "account": "sandbox", "sender": "Shop", "parts": parts}
    ledger.record_send(ref, fields, Change(MessageStatus.SENT, at, message_id=f"id-{phone[-1]}-{step}"))
    return ref


def report(ledger: Ledger, ref: ClientRef, status: MessageStatus, at: datetime, *, late: bool = False) -> bool:
    """A report through the gateway. One its open workflow took reaches the message with the recipient's
    final record — written here directly; a late one the ledger applies itself."""
    error = "expired" if status is MessageStatus.UNDELIVERED else None
    recorded = ledger.record_report(ref, "sandbox", Change(status, at, error), reported_at=at, late=late)
    if recorded and not late:
        ledger.record_send(ref, {}, Change(status, at, error))
    return recorded


def fill(ledger: Ledger) -> None:
    """The two mailings of these tests (the older one still running, by the ledger)."""
    ledger.create_mailing(OLDER, spec("Older SMS", Channel.SMS), T0 - timedelta(days=3), None)
    ledger.record_status(OLDER, "running", T0 - timedelta(days=3))
    older = ClientRef(OLDER, A, 0)
    ledger.record_send(
        older,
        {"channel": "sms", "account": "sandbox", "parts": 1},
        Change(MessageStatus.SENT, T0 - 3 * timedelta(days=1)),
    )

    ledger.create_mailing(MAILING, spec("Spring sale", Channel.VIBER, Channel.SMS), T0, None)
    entries = [(row, StoredRecipient(row - 2, phone, {}, None)) for row, phone in enumerate((A, B, C, D, E, F), 2)]
    rejected = [(8, "12345", "too short"), (9, '=HYPERLINK("http://x")', "not a number")]
    import_report = ImportReport(rows=8, valid=6, invalid=2, invalid_by_reason={"too short": 1, "not a number": 1})
    ledger.record_import(MAILING, import_report, entries, rejected)
    ledger.record_status(MAILING, "running", T0)

    # A: viber delivered (and the same report twice)
    a = sent(ledger, A, 0, "viber", T0)
    assert report(ledger, a, MessageStatus.DELIVERED, T0 + MINUTE)
    assert not report(ledger, a, MessageStatus.DELIVERED, T0 + MINUTE)  # a duplicate: changes nothing
    # B: viber timed out, SMS (2 parts) delivered; the recipient workflow's record of it
    delivered = MessageStatus.DELIVERED
    steps = [
        StepState(
            channel=Channel.VIBER, expect=delivered, client_ref=f"{MAILING}/{B}/0", status=MessageStatus.SENT,
            handed_over=True, timed_out=True, sent_at=T0, message_id="id-2-0",
        ),
        StepState(
            channel=Channel.SMS, expect=delivered, client_ref=f"{MAILING}/{B}/1", status=delivered,
            handed_over=True, sent_at=T0 + 5 * MINUTE, delivered_at=T0 + 6 * MINUTE,
        ),
    ]  # fmt: skip
    sent(ledger, B, 1, "sms", T0 + 5 * MINUTE, parts=2)
    state = RecipientState(
        mailing_id=MAILING, phone=B, status=CascadeStatus.DELIVERED, delivered_channel=Channel.SMS, steps=steps
    )
    ledger.record_recipient(RecipientRecord(state=state, accounts=["sandbox", "sandbox"], closed_at=T0 + 20 * MINUTE))
    # C: viber refused at the send, SMS undelivered
    c = ClientRef(MAILING, C, 0)
    ledger.record_send(c, {"channel": "viber", "account": "sandbox"}, Change(MessageStatus.UNDELIVERED, T0, "blocked"))
    report(ledger, sent(ledger, C, 1, "sms", T0, parts=1), MessageStatus.UNDELIVERED, T0 + 2 * MINUTE)
    # D: viber silent, SMS delivered — then viber's delivery report arrives after the workflow closed
    d = sent(ledger, D, 0, "viber", T0)
    report(ledger, sent(ledger, D, 1, "sms", T0 + 5 * MINUTE, parts=1), MessageStatus.DELIVERED, T0 + 6 * MINUTE)
    report(ledger, d, MessageStatus.DELIVERED, T0 + 30 * MINUTE, late=True)
    # E: the provider never took either message
    for step, channel in enumerate(("viber", "sms")):
        ref = ClientRef(MAILING, E, step)
        ledger.record_send(ref, {"channel": channel}, Change(MessageStatus.NOT_SENT, T0, "provider unavailable"))
    # F: never started (the mailing was stopped before its turn)

    # What the workflow counted (before D's late report): the ledger corrects it
    summary = MailingSummary(
        mailing_id=MAILING,
        name="Spring sale",
        status="completed",
        cascade=[Channel.VIBER, Channel.SMS],
        recipients={"total": 8, "valid": 6, "invalid": 2, "duplicates": 0},
        invalid_by_reason={"too short": 1, "not a number": 1},
        outcomes={"delivered": 2, "undelivered": 2, "not_sent": 2},
        delivered_by_channel={"viber": 1, "sms": 1},
        dispatched=5,
        not_started=1,
        schedule="any time",
        started_at=T0,
        finished_at=T0 + 40 * MINUTE,
    )
    ledger.record_final(summary, dispatched=5)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger(ledger_url)
    fill(opened)
    yield opened
    opened.close()


EXPECTED_CHANNELS = {
    "viber": {"sent": 4, "delivered": 2, "read": 0, "undelivered": 1, "not_sent": 1},
    "sms": {"sent": 3, "delivered": 2, "read": 0, "undelivered": 1, "not_sent": 1},
}


def test_figures_follow_the_messages_late_reports_included(ledger: Ledger) -> None:
    with ledger.reading() as conn:
        figures = mailing_figures(conn, MAILING, PRICES)
    assert figures.recipients == 6
    assert figures.outcomes == {"delivered": 3, "undelivered": 1, "not_sent": 2}
    assert figures.delivered_by_channel == {"viber": 2, "sms": 1}  # D: viber, its expected status came first
    assert figures.channels == EXPECTED_CHANNELS
    assert (figures.wasted_fallbacks, figures.wasted_messages, figures.wasted_cost) == (1, 1, Decimal("2.50"))
    assert figures.sms_parts == 4
    assert figures.cost == {"viber": Decimal("4.00"), "sms": Decimal("10.00")}
    assert figures.total_cost == Decimal("14.00")
    assert figures.unpriced == {}
    assert figures.late_reports == 1


def test_figures_of_a_running_mailing_say_pending_and_unpriced(ledger: Ledger) -> None:
    with ledger.reading() as conn:
        figures = mailing_figures(conn, OLDER, PriceBook())
    assert figures.outcomes == {"delivered": 0, "undelivered": 0, "not_sent": 0, "in_progress": 1}
    assert figures.channels == {"sms": {"sent": 1, "delivered": 0, "read": 0, "undelivered": 0, "not_sent": 0}}
    assert figures.unpriced == {"sms": 1} and figures.cost == {}


def test_report_workbook_agrees_with_the_summary_and_has_a_chart(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.xlsx"
    out.parent.mkdir()
    with ledger.reading() as conn:
        result = write_report(conn, MAILING, out, PRICES)
    assert result.recipients == 6
    assert [p.name for p in out.parent.iterdir()] == ["report.xlsx"]  # no temporary file left
    with zipfile.ZipFile(out) as archive:
        assert "xl/charts/chart1.xml" in archive.namelist()
        assert "Summary" in archive.read("xl/charts/chart1.xml").decode()  # it plots the Summary's cells
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == ["Summary", "Detail", "Rejected"]
    detail = list(book["Detail"].iter_rows(values_only=True))
    assert list(detail[0]) == detail_header(2)
    rows = detail[1:]
    assert [r[1] for r in rows] == [A, B, C, D, E, F]  # list order, one row per valid recipient
    assert [r[0] for r in rows] == [2, 3, 4, 5, 6, 7]
    statuses = [r[2] for r in rows]
    assert statuses == ["delivered", "delivered", "undelivered", "delivered", "not_sent", "not_sent"]
    assert [r[3] for r in rows] == ["viber", "sms", None, "viber", None, None]
    d = rows[3]
    assert d[4:10] == (
        "viber",
        "delivered",
        T0.replace(tzinfo=None),
        (T0 + 30 * MINUTE).replace(tzinfo=None),
        None,
        None,
    )
    assert d[12:14] == ("sms", "delivered") and d[18] == 1  # step 2: sms, 1 part
    assert rows[2][9] == "blocked"  # C's step 1 error
    assert rows[5][4:] == (None,) * 16  # F: nothing sent

    summary: dict[object, tuple[object, ...]] = {}
    funnel: dict[object, tuple[object, ...]] = {}
    for r in book["Summary"].iter_rows(values_only=True):  # outcomes first, then the funnel's stages
        if r and r[0]:
            (funnel if r[0] in summary else summary)[r[0]] = r[1:]
    for outcome in ("delivered", "undelivered", "not_sent"):
        assert summary[outcome][0] == statuses.count(outcome)
    assert summary["funnel (messages)"][:2] == ("viber", "sms")
    assert funnel["delivered"][:2] == (2, 2) and summary["sent"][:2] == (4, 3)
    assert summary["total"][:2] == (7, 14)
    assert summary["cost of wasted fallbacks"][1] == 2.5
    assert summary["SMS parts"][0] == 4
    rejected = list(book["Rejected"].iter_rows(values_only=True))
    assert rejected == [
        ("row", "value", "reason"),
        (8, "12345", "too short"),
        (9, '\'=HYPERLINK("http://x")', "not a number"),
    ]


def test_csv_is_the_detail_sheet(ledger: Ledger, tmp_path: Path) -> None:
    with ledger.reading() as conn:
        write_report(conn, MAILING, tmp_path / "r.xlsx", PRICES)
        write_report(conn, MAILING, tmp_path / "r.csv", PRICES)
    sheet = list(openpyxl.load_workbook(tmp_path / "r.xlsx")["Detail"].iter_rows(values_only=True))
    with (tmp_path / "r.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))

    def as_text(value: object) -> str:
        if isinstance(value, datetime):
            return value.isoformat(sep=" ")
        return "" if value is None else str(value)

    assert rows == [[as_text(v) for v in row] for row in sheet]


def test_report_refuses_bad_requests_and_leaves_nothing(ledger: Ledger, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with ledger.reading() as conn:
        with pytest.raises(ReportError, match="no mailing 'nope-000000' in the ledger"):
            write_report(conn, "nope-000000", tmp_path / "r.xlsx", PRICES)
        with pytest.raises(ReportError, match=r"r\.pdf: a report is written to \.xlsx or \.csv"):
            write_report(conn, MAILING, tmp_path / "r.pdf", PRICES)
        with pytest.raises(OSError):
            write_report(conn, MAILING, tmp_path / "missing" / "r.xlsx", PRICES)
    assert list(tmp_path.iterdir()) == []


def test_search_finds_every_message_to_a_number_newest_first(ledger: Ledger) -> None:
    with ledger.reading() as conn:
        found = search_messages(conn, A)
        recent = search_messages(conn, A, since=T0 - timedelta(days=1))
        nothing = search_messages(conn, "+79990000009")
    assert [(m.mailing_id, m.mailing_name, m.step, m.channel, m.status) for m in found] == [
        (MAILING, "Spring sale", 1, "viber", "delivered"),
        (OLDER, "Older SMS", 1, "sms", "sent"),
    ]
    assert found[0].delivered_at == T0 + MINUTE and found[0].account == "sandbox"
    assert [m.mailing_id for m in recent] == [MAILING]
    assert nothing == []


def test_list_is_newest_first_and_filters(ledger: Ledger) -> None:
    with ledger.reading() as conn:
        everything = list_mailings(conn)
        running = list_mailings(conn, status="running")
        recent = list_mailings(conn, since=T0 - timedelta(hours=1))
    assert [(m.id, m.status, m.channels, m.valid, m.dispatched, m.finished) for m in everything] == [
        (MAILING, "completed", ["viber", "sms"], 6, 5, 1),
        (OLDER, "running", ["sms"], None, None, 0),
    ]
    assert [m.id for m in running] == [OLDER]
    assert [m.id for m in recent] == [MAILING]


# --- the CLI, as a user runs it -----------------------------------------------------------------------------------


def cli(ledger_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASKAD_")} | {
        "KASKAD_DATABASE_URL": ledger_url,
        "KASKAD_DATA_DIR": str(tmp_path / "data"),
        "KASKAD_TEMPORAL_ADDRESS": "127.0.0.1:9",  # nothing there: these commands must not need Temporal
        "KASKAD_SANDBOX_PRICES": '{"viber": 1.00, "sms": 2.50}',
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


def test_cli_status_list_search_and_report(ledger: Ledger, ledger_url: str, tmp_path: Path) -> None:
    status = cli(ledger_url, tmp_path, "status", MAILING)
    assert status.returncode == 0, status.stderr
    assert f"mailing {MAILING} (Spring sale): completed" in status.stdout
    assert "outcomes: delivered 3, undelivered 1, not_sent 2" in status.stdout
    assert (
        "wasted fallbacks: 1 (got a later step after an earlier one was delivered: 1 message, 2.50 RUB)"
        in status.stdout
    )
    assert "cost: viber 4.00, sms 10.00, total 14.00 RUB" in status.stdout
    assert "late reports: 1" in status.stdout

    as_json = json.loads(cli(ledger_url, tmp_path, "status", MAILING, "--json").stdout)
    assert as_json["outcomes"] == {"delivered": 3, "undelivered": 1, "not_sent": 2}
    assert as_json["channels"] == EXPECTED_CHANNELS
    assert (as_json["source"], as_json["wasted_cost"], as_json["total_cost"]) == ("ledger", "2.50", "14.00")

    listing = cli(ledger_url, tmp_path, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "CREATED", "(UTC)", "START", "(UTC)", "CHANNELS", "PROGRESS"]
    assert lines[1].startswith(MAILING) and "viber→sms" in lines[1] and lines[1].endswith("5/6")
    assert lines[2].startswith(OLDER)
    only = json.loads(
        cli(ledger_url, tmp_path, "list", "--status", "completed", "--since", "2026-03-01", "--json").stdout
    )
    assert [m["id"] for m in only] == [MAILING] and only[0]["progress"] == "5/6"

    search = cli(ledger_url, tmp_path, "search", "8 (999) 000-00-01", "--json")
    assert search.returncode == 0, search.stderr
    assert [(m["mailing_id"], m["status"]) for m in json.loads(search.stdout)] == [
        (MAILING, "delivered"),
        (OLDER, "sent"),
    ]
    not_a_number = cli(ledger_url, tmp_path, "search", "hello")
    assert (not_a_number.returncode, not_a_number.stderr) == (
        1,
        "error: 'hello' is not a phone number (not a number)\n",
    )

    (tmp_path / "out").mkdir()
    report = cli(ledger_url, tmp_path, "report", MAILING, "--out", "out/report.xlsx")
    assert report.returncode == 0, report.stderr
    assert openpyxl.load_workbook(tmp_path / "out" / "report.xlsx")["Detail"].max_row == 7
    for args, message in (
        (("report", "nope-000000", "--out", "out/x.xlsx"), "error: no mailing 'nope-000000' in the ledger"),
        (("report", MAILING, "--out", "out/x.ods"), "error: x.ods: a report is written to .xlsx or .csv, not .ods"),
        (("report", MAILING, "--out", "missing/x.csv"), "error: cannot write missing/x.csv: No such file or directory"),
    ):
        refused = cli(ledger_url, tmp_path, *args)
        assert (refused.returncode, refused.stderr.strip()) == (1, message)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.xlsx"]  # nothing half-written


async def test_status_answers_from_the_ledger_when_temporal_forgot(
    ledger: Ledger, ledger_url: str, tmp_path: Path, time_skipping_env: WorkflowEnvironment
) -> None:
    """The older mailing is running by the ledger, but Temporal has no such workflow (its history expired)."""
    from starter import CliError, LedgerAnswer, mailing_status

    settings = Settings(database_url=ledger_url, data_dir=tmp_path)

    async def temporal(_: Settings) -> object:
        return time_skipping_env.client

    answer = await mailing_status(settings, OLDER, temporal)  # type: ignore[arg-type]
    assert isinstance(answer, LedgerAnswer)
    assert answer.summary.status == "running" and answer.summary.outcomes["in_progress"] == 1
    with pytest.raises(CliError, match="no mailing 'nope-000000'"):
        await mailing_status(settings, "nope-000000", temporal)  # type: ignore[arg-type]


def test_a_detail_longer_than_excel_allows_continues_on_another_sheet(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ledger.report.EXCEL_MAX_ROWS", 4)  # a header and three recipients a sheet
    with ledger.reading() as conn:
        write_report(conn, MAILING, tmp_path / "r.xlsx", PRICES)
    book = openpyxl.load_workbook(tmp_path / "r.xlsx")
    assert book.sheetnames == ["Summary", "Detail", "Detail (2)", "Rejected"]
    first, second = ([r[1] for r in book[name].iter_rows(values_only=True)] for name in ("Detail", "Detail (2)"))
    assert first == ["phone", A, B, C] and second == ["phone", D, E, F]


def test_libreoffice_opens_the_report(tmp_path: Path) -> None:
    """The workbook as LibreOffice Calc reads it: every sheet, saved as CSV."""
    soffice = shutil.which("soffice")
    assert soffice, "LibreOffice is not installed: .ci/run installs libreoffice-calc-nogui"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        fill(ledger)
        with ledger.reading() as conn:
            write_report(conn, MAILING, tmp_path / "r.xlsx", PRICES)
    finally:
        ledger.close()
    out = tmp_path / "converted"
    all_sheets = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"
    command = [soffice, f"-env:UserInstallation=file://{tmp_path / 'profile'}", "--headless", "--convert-to"]
    subprocess.run([*command, all_sheets, "--outdir", str(out), str(tmp_path / "r.xlsx")], check=True, timeout=180)
    sheets = {}
    for name in ("Summary", "Detail", "Rejected"):
        with (out / f"r-{name}.csv").open(encoding="utf-8", newline="") as file:
            sheets[name] = list(csv.reader(file))
    assert [row[1] for row in sheets["Detail"][1:]] == [A, B, C, D, E, F]
    assert sheets["Detail"][4][4:8] == ["viber", "delivered", "2026-03-02 09:00:00", "2026-03-02 09:30:00"]
    assert ["delivered", "3", "", ""] in sheets["Summary"] and ["sent", "4", "3", ""] in sheets["Summary"]
    assert sheets["Rejected"][2][1] in ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")')  # text, not a link


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_a_failure_mid_report_leaves_nothing_behind(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    real = iter_recipients

    def two_then_fail(*args: Any) -> Iterator[Any]:
        yield from itertools.islice(real(*args), 2)
        raise RuntimeError("the database went away")

    monkeypatch.setattr("ledger.report.iter_recipients", two_then_fail)
    out = tmp_path / "out"
    out.mkdir()
    with ledger.reading() as conn, pytest.raises(RuntimeError, match="the database went away"):
        write_report(conn, MAILING, out / f"r{suffix}", PRICES)
    assert list(out.iterdir()) == []
