"""The workflows' writes to the ledger. Idempotent: a retried or replayed write changes nothing. Without a
ledger (benchmarks measure the cascade with and without it) they do nothing.

A recipient writes once, as it closes, with a local activity (one marker event; a recipient has nothing else
to do by then). The mailing writes each status change with an ordinary activity: a local activity holds the
workflow task open while it runs, and a mailing must go on dispatching and answer pause or cancel meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import activity
from temporalio.common import RetryPolicy

from domain.models import MailingFinalRecord, MailingStatusRecord, RecipientRecord
from ledger.store import Ledger

# A ledger that is down is retried with backoff; then the workflow gives up on that record (and says so in its
# log): a missing record is a gap in a report, never a reason to stall or fail the cascade. A recipient
# closing waits at most RECIPIENT_GIVE_UP (its sends and reports are in the ledger already, written by the
# send activity and the gateway); a mailing's record may wait longer (its final one holds the mailing open meanwhile).
RECORD_TIMEOUT = timedelta(seconds=30)
RECIPIENT_GIVE_UP = timedelta(minutes=2)
MAILING_GIVE_UP = timedelta(hours=1)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


class LedgerActivities:
    def __init__(self, ledger: Ledger | None) -> None:
        self._ledger = ledger

    def all(self) -> list[Callable[..., Awaitable[None]]]:
        """Every record activity, for a worker's `activities` (the workflows need them registered)."""
        return [self.record_recipient, self.record_mailing_status, self.record_mailing_final]

    @activity.defn(name="record_recipient")
    async def record_recipient(self, record: RecipientRecord) -> None:
        if self._ledger is not None:
            await self._ledger.run(self._ledger.record_recipient, record)

    @activity.defn(name="record_mailing_status")
    async def record_mailing_status(self, record: MailingStatusRecord) -> None:
        if self._ledger is not None:
            await self._ledger.run(self._ledger.record_status, record.mailing_id, record.status, record.at)

    @activity.defn(name="record_mailing_final")
    async def record_mailing_final(self, record: MailingFinalRecord) -> None:
        if self._ledger is not None:
            await self._ledger.run(self._ledger.record_final, record.summary, record.dispatched)
