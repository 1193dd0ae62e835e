"""The workflows' writes to the ledger: local activities, so each costs its workflow one marker event.

They are idempotent (a retried or replayed write changes nothing). Without a ledger (benchmarks measure the
cascade with and without it) they do nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import activity
from temporalio.common import RetryPolicy

from domain.models import MailingFinalRecord, MailingStatusRecord, RecipientRecord
from ledger.store import Ledger

# A ledger that is down holds the write (retried with backoff) for up to a day before the workflow gives up
# on recording it: a missing record is a gap in a report, never a reason to stall or fail the cascade.
RECORD_TIMEOUT = timedelta(seconds=30)
RECORD_GIVE_UP = timedelta(days=1)
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
            await asyncio.to_thread(self._ledger.record_recipient, record.state, record.accounts, record.closed_at)

    @activity.defn(name="record_mailing_status")
    async def record_mailing_status(self, record: MailingStatusRecord) -> None:
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.record_status, record.mailing_id, record.status, record.at)

    @activity.defn(name="record_mailing_final")
    async def record_mailing_final(self, record: MailingFinalRecord) -> None:
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.record_final, record.summary, record.dispatched)
