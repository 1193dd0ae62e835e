"""Tell a mailing's recipients that it was paused, resumed or cancelled (an `apply_control` update each).

An update, not a signal: a recipient answers a pause or cancel only once it has no send out (a send still
waiting or retrying is withdrawn; one whose request is out finishes), so when the broadcast ends — and the
mailing's `pause`/`cancel` answers — no recipient will send anything more.

The mailing stops dispatching first, so every recipient that can be affected was started already, under an
id derived from its phone: the stored list names them all, in dispatch order, whereas visibility shows a
new workflow only seconds after its start (more under load). A recipient never started or already closed
answers NOT_FOUND and needs nothing. Any other refusal (rate limit, server unavailable, deadline) is
retried here a few times, then fails the attempt so that Temporal retries it; each attempt goes on from the
stored-list position its predecessor last heartbeated. Signalling a recipient again is harmless: it
applies a control only when its version is newer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.models import BroadcastRequest, Control
from domain.refs import recipient_workflow_id
from ledger.store import Ledger
from recipients.importer import StoredRecipient, read_stored, stored_list_path
from workflows.recipient import RecipientCascadeWorkflow

BATCH = 50  # updates in flight at once; progress is heartbeated after each batch
TRIES = 5  # per recipient, before the attempt fails
FIRST_BACKOFF = 0.2  # seconds before the second try, doubled before each next one


class ControlActivities:
    def __init__(self, client: Client, data_dir: Path, ledger: Ledger | None = None) -> None:
        self._client, self._data_dir, self._ledger = client, data_dir, ledger

    @activity.defn(name="broadcast_control")
    async def broadcast(self, request: BroadcastRequest) -> int:
        """Tell each dispatched recipient of the mailing; returns how many were told (the others are gone)."""
        details = activity.info().heartbeat_details
        position, delivered = (int(details[0]), int(details[1])) if details else (0, 0)
        if request.upto and not await self._has_list(request.mailing_id):
            # recipients were dispatched from a list this worker cannot see: telling none of them would
            # acknowledge a pause while they go on sending
            raise ApplicationError(f"no stored list of mailing {request.mailing_id} at this worker")
        recipients = self._recipients(request.mailing_id, position)
        if request.upto is not None:
            recipients = islice(recipients, max(0, request.upto - position))
        while batch := await self._take(recipients):
            ids = [recipient_workflow_id(request.mailing_id, recipient.phone) for recipient in batch]
            outcomes = await asyncio.gather(*(self._tell(i, request.control) for i in ids), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome  # the whole batch is told again on the retry
            delivered += sum(outcome is True for outcome in outcomes)
            activity.heartbeat(batch[-1].position + 1, delivered)
        return delivered

    async def _has_list(self, mailing_id: str) -> bool:
        if stored_list_path(self._data_dir, mailing_id).exists():
            return True
        return self._ledger is not None and await self._ledger.run(self._ledger.has_list, mailing_id)

    def _recipients(self, mailing_id: str, start: int) -> Iterator[StoredRecipient]:
        """The stored list from `start`: in the ledger, or in the file of a list imported before it; empty
        when a control came before the import ended (nobody was started)."""
        path = stored_list_path(self._data_dir, mailing_id)
        if self._ledger is None or (path.exists() and not self._ledger.has_list(mailing_id)):
            yield from read_stored(path, start=start) if path.exists() else ()
            return
        while batch := self._ledger.read_list(mailing_id, start, BATCH * 20):
            yield from batch
            start = batch[-1].position + 1

    async def _take(self, recipients: Iterator[StoredRecipient]) -> list[StoredRecipient]:
        """The next batch (on the ledger's threads: reading it blocks)."""
        if self._ledger is None:
            return _take(recipients, BATCH)
        return await self._ledger.run(_take, recipients, BATCH)

    async def _tell(self, workflow_id: str, control: Control) -> bool:
        """True when delivered, False when the recipient was never started or has closed."""
        handle = self._client.get_workflow_handle(workflow_id)
        tries = 0
        while True:
            try:
                await handle.execute_update(RecipientCascadeWorkflow.apply_control, control)
                return True
            except RPCError as error:
                tries += 1
                if error.status == RPCStatusCode.NOT_FOUND:
                    return False
                if tries == TRIES:
                    raise
            await asyncio.sleep(FIRST_BACKOFF * 2 ** (tries - 1))


def _take(recipients: Iterator[StoredRecipient], count: int) -> list[StoredRecipient]:
    """The next `count` recipients (in a thread: reading the ledger blocks)."""
    return list(islice(recipients, count))
