"""The ledger on the real stack: a mailing's file, list, messages, reports and outcomes are recorded exactly —
duplicate reports once, late reports (after the workflows closed) too — on the dev server, over real HTTP."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from domain.spec import load_spec
from ledger.schema import list_entries, mailing_statuses, mailings, messages, recipients, rejected_rows, reports
from ledger.store import Ledger
from providers.sandbox import SIGNATURE_HEADER, sign
from runtime.devstack import Stack
from starter import start_mailing

pytestmark = pytest.mark.e2e

# The sandbox's rules by last digit (README): Viber 0-3 read, 4-5 delivered, 6-7 undelivered, 8-9 silent;
# SMS 0-8 delivered, 9 undelivered.
PHONES = [f"+7999000111{digit}" for digit in range(10)]


def write_mailing(folder: Path) -> Path:
    (folder / "list.csv").write_text("phone,name\n" + "".join(f"{p},N{i}\n" for i, p in enumerate(PHONES)) + "oops,X\n")
    spec = folder / "mailing.toml"
    spec.write_text(
        """name = "Ledger e2e"
recipients = "list.csv"
provider = "sandbox"
late_reports = "1s"
[schedule]
hours = "00:00-24:00"
[[steps]]
channel = "viber"
sender = "Shop"
text = "Hi {name}"
wait = "2s"
[[steps]]
channel = "sms"
sender = "Shop"
text = "Hi {name}, see example.com"
wait = "2s"
"""
    )
    return spec


@pytest.fixture(scope="module")
async def finished(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One mailing run to its end on the stack; its id."""
    assert stack.ledger is not None
    spec = load_spec(write_mailing(tmp_path_factory.mktemp("ledger")))
    mailing_id = f"ledger-{uuid.uuid4().hex[:6]}"
    handle = await start_mailing(stack.client, stack.settings, stack.ledger, spec, mailing_id)
    summary = await handle.result()
    assert summary.status == "completed" and summary.outcomes == {"delivered": 9, "undelivered": 1, "not_sent": 0}
    return mailing_id


def ledger_of(stack: Stack) -> Ledger:
    assert stack.ledger is not None
    return stack.ledger


def message_statuses(ledger: Ledger, mailing_id: str) -> dict[tuple[str, str], int]:
    with ledger.reading() as conn:
        rows = conn.execute(
            select(messages.c.channel, messages.c.status, func.count())
            .where(messages.c.mailing_id == mailing_id)
            .group_by(messages.c.channel, messages.c.status)
        )
        return {(channel, status): count for channel, status, count in rows}


async def post_report(stack: Stack, ref: str, status: str, at: str) -> httpx.Response:
    body = json.dumps({"message_id": "late-1", "client_ref": ref, "status": status, "timestamp": at}).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(stack.settings.webhook_key(), body)}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{stack.settings.webhook_base_url}/webhooks/sandbox", content=body, headers=headers)


async def test_the_mailing_its_file_list_and_statuses_are_recorded(stack: Stack, finished: str) -> None:
    ledger = ledger_of(stack)
    with ledger.reading() as conn:
        mailing = conn.execute(select(mailings).where(mailings.c.id == finished)).mappings().one()
        statuses = conn.execute(
            select(mailing_statuses.c.status)
            .where(mailing_statuses.c.mailing_id == finished)
            .order_by(mailing_statuses.c.at)
        ).scalars()
        listed = conn.execute(
            select(list_entries.c.phone).where(list_entries.c.mailing_id == finished).order_by(list_entries.c.position)
        ).scalars()
        rejected = conn.execute(
            select(rejected_rows.c.row, rejected_rows.c.value).where(rejected_rows.c.mailing_id == finished)
        ).all()
        assert list(listed) == PHONES  # the dispatch read this list, not the client's file
        assert list(statuses) == ["new", "processing_contacts", "running", "completed"]
    assert (mailing["status"], mailing["valid"], mailing["invalid"], mailing["dispatched"]) == ("completed", 10, 1, 10)
    assert mailing["list_name"] == "list.csv" and mailing["finished_at"] is not None
    assert json.loads(mailing["summary"])["outcomes"]["delivered"] == 9
    assert rejected == [(12, "oops")]


async def test_every_message_and_outcome_is_recorded_as_the_workflows_decided(stack: Stack, finished: str) -> None:
    ledger = ledger_of(stack)
    assert message_statuses(ledger, finished) == {
        ("viber", "read"): 4,
        ("viber", "delivered"): 2,
        ("viber", "undelivered"): 2,
        ("viber", "sent"): 2,  # 8 and 9: no report, timed out
        ("sms", "delivered"): 3,
        ("sms", "undelivered"): 1,
    }
    with ledger.reading() as conn:
        outcomes: dict[str, int] = dict(
            conn.execute(
                select(recipients.c.status, func.count())
                .where(recipients.c.mailing_id == finished)
                .group_by(recipients.c.status)
            ).all()
        )
        sms = conn.execute(
            select(messages.c.account, messages.c.encoding, messages.c.parts, messages.c.message_id).where(
                messages.c.mailing_id == finished, messages.c.channel == "sms"
            )
        ).all()
        timed_out = conn.execute(
            select(messages.c.phone)
            .where(messages.c.mailing_id == finished, messages.c.timed_out)
            .order_by(messages.c.phone)
        ).scalars()
        assert list(timed_out) == [PHONES[8], PHONES[9]]
    assert outcomes == {"delivered": 9, "undelivered": 1}
    assert all(account == "sandbox" and enc == "GSM-7" and parts == 1 and mid for account, enc, parts, mid in sms)


async def test_a_late_report_is_recorded_and_corrects_the_message_once(stack: Stack, finished: str) -> None:
    """Viber to …8 timed out (no report) and SMS delivered; a Viber delivery report arriving after the
    workflow closed is applied by the ledger alone — a wasted fallback — and the same report again changes
    nothing."""
    ledger, ref = ledger_of(stack), f"{finished}/{PHONES[8]}/0"
    at = datetime.now(UTC).isoformat()
    first = await post_report(stack, ref, "delivered", at)
    again = await post_report(stack, ref, "delivered", at)
    assert first.status_code == again.status_code == 200
    assert first.json()["recorded"] == 0  # the workflow has closed: only the ledger takes it
    with ledger.reading() as conn:
        message = conn.execute(select(messages).where(messages.c.client_ref == ref)).mappings().one()
        received = conn.execute(select(reports.c.status, reports.c.late).where(reports.c.client_ref == ref)).all()
    assert received == [("delivered", True)]  # once, and marked late
    assert message["status"] == "delivered" and message["delivered_at"] is not None
    assert message_statuses(ledger, finished)[("viber", "delivered")] == 3


async def test_repeated_provider_reports_are_recorded_once(stack: Stack, finished: str) -> None:
    """The sandbox retried nothing here, so every recorded report is distinct: one per status it posted."""
    ledger = ledger_of(stack)
    with ledger.reading() as conn:
        keys = conn.execute(
            select(reports.c.client_ref, reports.c.status, func.count())
            .where(reports.c.client_ref.like(f"{finished}/%"), reports.c.late.is_(False))
            .group_by(reports.c.client_ref, reports.c.status)
        ).all()
    assert keys and all(count == 1 for _, _, count in keys)
    # Viber: 4 read numbers report delivered + read, 2 delivered, 2 undelivered; SMS: 4 reports.
    assert len(keys) == 4 * 2 + 2 + 2 + 4
