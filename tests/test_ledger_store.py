"""The ledger's writes on SQLite and PostgreSQL alike: idempotent, forward-only, safe with hostile values,
and a migrated schema equal to the code's tables."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from domain.models import ImportReport, RecipientRecord, RecipientState, StepSend, StepState
from domain.refs import ClientRef
from domain.spec import MailingSpec
from domain.status import CascadeStatus, Channel, MessageStatus
from ledger.schema import list_entries, messages, metadata, recipients, reports
from ledger.store import Change, Ledger
from recipients.importer import StoredRecipient

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MAILING, PHONE = "store", "+79991234567"
D, S, U = MessageStatus.DELIVERED, MessageStatus.SENT, MessageStatus.UNDELIVERED


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    spec = MailingSpec.model_validate(
        {
            "name": "store",
            "numbers": [PHONE],
            "provider": "main",
            "steps": [
                {"channel": "viber", "sender": "Shop", "text": "hi", "wait": "1m"},
                {"channel": "sms", "sender": "Shop", "text": "hi", "wait": "1m", "provider": "backup"},
            ],
        }
    )
    ledger.create_mailing(MAILING, spec, T0, None)
    try:
        yield ledger
    finally:
        ledger.close()


def message(ledger: Ledger, step: int = 0) -> dict[str, object]:
    with ledger.reading() as conn:
        row = conn.execute(select(messages).where(messages.c.client_ref == f"{MAILING}/{PHONE}/{step}")).mappings()
        return dict(row.one())


def count(ledger: Ledger, table: object) -> int:
    with ledger.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def report(ledger: Ledger, status: MessageStatus, *, step: int = 0, account: str = "main", **kw: object) -> bool:
    """A report the gateway got after its workflow closed (`late`): the ledger alone applies it."""
    at = kw.pop("at", T0 + timedelta(minutes=1))
    change = Change(status, at, kw.get("error"), kw.get("message_id"))  # type: ignore[arg-type]
    ref = ClientRef(MAILING, PHONE, step)
    return ledger.record_report(ref, account, change, reported_at=at, late=bool(kw.get("late", True)))  # type: ignore[arg-type]


def test_the_migrations_build_exactly_the_tables_the_code_defines(ledger: Ledger) -> None:
    with ledger._write.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_a_repeated_report_is_recorded_once_and_a_stale_one_changes_nothing(ledger: Ledger) -> None:
    ref = ClientRef(MAILING, PHONE, 0)
    ledger.record_send(ref, {"channel": "viber", "account": "main"}, Change(S, T0, message_id="m-1"))
    assert report(ledger, D)
    assert not report(ledger, D)  # the provider retried its post
    assert report(ledger, U, error="expired", at=T0 + timedelta(minutes=2))  # stale: delivered stays
    row = message(ledger)
    assert (row["status"], row["delivered_at"], row["error"], row["message_id"]) == (
        "delivered",
        T0 + timedelta(minutes=1),
        None,
        "m-1",
    )
    assert count(ledger, reports) == 2


def test_a_report_before_its_send_record_and_a_retried_send_leave_one_exact_row(ledger: Ledger) -> None:
    """The send's record is written in the background: the report can come first."""
    ref = ClientRef(MAILING, PHONE, 1)
    assert report(ledger, D, step=1, account="backup", message_id="m-9")
    fields = {"channel": "sms", "account": "backup", "sender": "Shop", "encoding": "GSM-7", "parts": 2}
    for _ in range(2):  # a retried send activity writes its record again
        ledger.record_send(ref, fields, Change(S, T0, message_id="m-9"))
    row = message(ledger, 1)
    assert (row["status"], row["account"], row["parts"], row["sent_at"]) == ("delivered", "backup", 2, T0)
    assert count(ledger, messages) == 1


def test_a_report_its_open_workflow_took_is_recorded_but_left_to_the_workflows_record(ledger: Ledger) -> None:
    """Not late: the recipient's final record carries it (with everything else the workflow decided)."""
    ref = ClientRef(MAILING, PHONE, 0)
    ledger.record_send(ref, {"channel": "viber", "account": "main"}, Change(S, T0))
    assert report(ledger, D, late=False)
    assert message(ledger)["status"] == "sent" and count(ledger, reports) == 1


def test_a_report_from_an_account_that_did_not_send_the_step_changes_nothing(ledger: Ledger) -> None:
    ref = ClientRef(MAILING, PHONE, 0)
    ledger.record_send(ref, {"channel": "viber", "account": "main"}, Change(S, T0))
    assert report(ledger, D, account="backup")  # kept as received …
    assert message(ledger)["status"] == "sent"  # … but it is not the sender's word
    assert report(ledger, U, step=1, account="main")  # before any record of step 2: still not applied
    with ledger.reading() as conn:
        foreign = conn.execute(select(reports.c.foreign)).scalars().all()
        step_two = conn.execute(select(messages).where(messages.c.step == 1)).first()
    assert foreign == [True, True] and step_two is None


def test_reports_about_mailings_not_in_the_ledger_or_steps_it_has_not_are_not_recorded(ledger: Ledger) -> None:
    ghost = ClientRef("ghost", PHONE, 0)
    assert not ledger.record_report(ghost, "main", Change(D, T0), reported_at=None, late=True)
    assert not report(ledger, D, step=7)
    assert count(ledger, reports) == count(ledger, messages) == 0


def test_values_a_database_would_refuse_are_stored_safely(ledger: Ledger) -> None:
    """A NUL (PostgreSQL refuses it) and provider times of year 1 or 9999 with an offset (no UTC for them)."""
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    assert report(ledger, U, error="bad\x00byte", message_id="id\x00", at=year_one)
    assert report(
        ledger, D, step=1, account="backup", at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    )
    row = message(ledger)
    assert row["status"] == "undelivered" and row["error"] == "bad\ufffdbyte" and row["failed_at"] is not None


def test_not_sent_is_overturned_by_a_providers_report_and_statuses_only_advance(ledger: Ledger) -> None:
    ref = ClientRef(MAILING, PHONE, 0)
    ledger.record_send(ref, {"channel": "viber", "account": "main"}, Change(MessageStatus.NOT_SENT, T0, "gave up"))
    assert report(ledger, D)
    assert report(ledger, MessageStatus.READ, at=T0 + timedelta(minutes=3))
    assert report(ledger, S, at=T0 + timedelta(minutes=4))
    row = message(ledger)
    assert (row["status"], row["read_at"]) == ("read", T0 + timedelta(minutes=3))


def test_a_replayed_recipient_record_changes_nothing(ledger: Ledger) -> None:
    steps = [
        StepState(
            channel=Channel.VIBER, expect=D, client_ref="x", status=S, handed_over=True, timed_out=True, sent_at=T0,
        ),
        StepState(
            channel=Channel.SMS, expect=D, client_ref="y", status=D, handed_over=True,
            sent_at=T0 + timedelta(minutes=1), delivered_at=T0 + timedelta(minutes=2),
        ),
    ]  # fmt: skip
    state = RecipientState(
        mailing_id=MAILING, phone=PHONE, status=CascadeStatus.DELIVERED, delivered_channel=Channel.SMS, steps=steps
    )
    record = RecipientRecord(
        state=state,
        accounts=["main", "backup"],
        closed_at=T0 + timedelta(minutes=5),
        sends=[StepSend(sender="Shop"), StepSend(sender="Shop", encoding="GSM-7", parts=1)],
    )
    for _ in range(3):
        ledger.record_recipient(record)
    viber, sms = message(ledger, 0), message(ledger, 1)
    assert (viber["status"], viber["timed_out"], viber["account"]) == ("sent", True, "main")
    assert (sms["status"], sms["parts"], sms["account"], sms["delivered_at"]) == (
        "delivered",
        1,
        "backup",
        T0 + timedelta(minutes=2),
    )
    assert count(ledger, messages) == 2 and count(ledger, recipients) == 1


def test_a_retried_import_replaces_the_list_it_wrote(ledger: Ledger) -> None:
    entries = [(2 + i, StoredRecipient(i, f"+7999000000{i}", {"name": "A"}, None)) for i in range(3)]
    for _ in range(2):
        ledger.record_import(MAILING, ImportReport(rows=3, valid=3), entries, [(9, "x", "not a number")])
    assert count(ledger, list_entries) == 3
    assert [r.phone for r in ledger.read_list(MAILING, 1, 10)] == ["+79990000001", "+79990000002"]


def test_concurrent_writers_of_one_message_end_in_its_furthest_status(ledger: Ledger) -> None:
    """The worker's send record and the gateway's reports race (threads here, processes in production)."""
    ref = ClientRef(MAILING, PHONE, 0)
    statuses = [S, D, MessageStatus.READ, D, S] * 4

    def write(i: int) -> None:
        if i % 5 == 0:
            ledger.record_send(ref, {"channel": "viber", "account": "main"}, Change(S, T0))
        else:
            report(ledger, statuses[i], at=T0 + timedelta(seconds=i))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(len(statuses))))
    assert message(ledger)["status"] == "read" and count(ledger, messages) == 1


def test_a_report_on_a_failover_attempt_the_step_never_had_is_not_recorded(ledger: Ledger) -> None:
    """Step 1 has one account: a reference to its second attempt (`…/0.1`) was never issued."""
    attempt = ClientRef(MAILING, PHONE, 0, 1)
    assert not ledger.record_report(attempt, "main", Change(D, T0), reported_at=T0, late=True)
    assert count(ledger, reports) == count(ledger, messages) == 0
