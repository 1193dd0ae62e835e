"""The dispatch activity: start one RecipientCascadeWorkflow per stored recipient, a chunk at a time, paced.

Runs as a heartbeating activity rather than as child workflows, so one mailing can hold a million
recipients: the workflow ids are deterministic, so a retried chunk resumes from its last heartbeat and
any recipient it starts again is refused by Temporal as already started — never sent twice.

Speed: each start has a slot, `interval` after the previous one, carried from chunk to chunk by the
mailing workflow (`not_before`), so starts are even across chunks, retries and workers: only one chunk
of a mailing runs at a time. A recipient found already started takes no slot.

A mailing without a speed is paced by its first step's provider rate: the server caps that provider's send
queue at the rate anyway, so starting faster would only queue thousands of sends there (and hold them past
a pause or the end date). A chunk then lasts about a second, as a paced one does.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from itertools import islice

from temporalio import activity
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from domain.models import DispatchRequest, DispatchResult, RecipientInput, ledger_list_mailing
from domain.refs import recipient_workflow_id
from domain.status import CascadeStatus
from ledger.store import Ledger
from recipients.importer import StoredRecipient, read_stored
from workflows.recipient import RecipientCascadeWorkflow
from workflows.search_attributes import CASCADE_STATUS, MAILING_ID


class DispatchActivities:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        rates: Mapping[str, float],
        default_rate: float,
        ledger: Ledger | None = None,
    ) -> None:
        """`rates`: messages per second per provider account (`default_rate` for the others), as the send
        workers cap their task queues; `ledger`: where imported lists are."""
        self._client = client
        self._ledger = ledger
        self._task_queue = task_queue
        self._rates = rates
        self._default_rate = default_rate

    @activity.defn(name="dispatch_recipients")
    async def dispatch(self, request: DispatchRequest) -> DispatchResult:
        details = activity.info().heartbeat_details
        if details:  # a retry: resume where the last attempt got to
            result = DispatchResult.model_validate(details[0])
        else:
            result = DispatchResult(position=request.position, started=0, already_running=0)
            result.next_start = request.not_before
        interval, limit = request.interval, request.limit
        if interval is None:  # no speed: the first step's provider rate, about a second's worth per chunk
            rate = self._rates.get(request.plan.provider_for(request.plan.steps[0]), self._default_rate)
            interval, limit = timedelta(seconds=1 / rate), min(limit, max(1, math.ceil(rate)))
        end = request.position + limit
        recipients = await self._read(request, result.position, end - result.position)
        await self._paced(request, interval, recipients, result, end)
        return result

    async def _paced(
        self,
        request: DispatchRequest,
        interval: timedelta,
        recipients: Iterator[StoredRecipient],
        result: DispatchResult,
        end: int,
    ) -> None:
        for recipient in recipients:
            # A start late by up to one interval (a chunk's own overhead) is caught up at once: the rate holds
            # over time, and no 60 s window sees more than one message above it.
            slot = max(result.next_start or _now(), _now() - interval)
            if request.until is not None and slot >= request.until:
                return
            await asyncio.sleep((slot - _now()).total_seconds())
            started = await self._start(request, recipient)
            if started:
                result.next_start = slot + interval
            self._advance(result, recipient.position + 1, int(started), int(not started))
        result.exhausted = result.position < end

    async def _read(self, request: DispatchRequest, start: int, count: int) -> Iterator[StoredRecipient]:
        """The chunk's recipients: from the ledger, or from the file of a list imported before it."""
        in_ledger = ledger_list_mailing(request.stored_list)
        if in_ledger is None:
            return islice(read_stored(request.stored_list, start=start), count)
        if self._ledger is None:
            raise ApplicationError("this worker has no ledger to read the list from", non_retryable=False)
        chunk = await self._ledger.run(self._ledger.read_list, in_ledger, start, count)
        if not chunk and not await self._ledger.run(self._ledger.has_list, in_ledger):
            # not "the end of the list": this worker's ledger is not the one the list was imported into
            raise ApplicationError(f"the ledger at this worker holds no list for mailing {in_ledger}")
        return iter(chunk)

    @staticmethod
    def _advance(result: DispatchResult, position: int, started: int, already: int) -> None:
        result.position = position
        result.started += started
        result.already_running += already
        activity.heartbeat(result.model_dump(mode="json"))

    async def _start(self, request: DispatchRequest, recipient: StoredRecipient) -> bool:
        """True when started now; False when a previous attempt already started this recipient."""
        try:
            await self._client.start_workflow(
                RecipientCascadeWorkflow.run,
                RecipientInput(
                    mailing_id=request.mailing_id,
                    phone=recipient.phone,
                    variables=recipient.variables,
                    plan=request.plan,
                    zones=recipient.zones,
                    window=request.window,
                ),
                id=recipient_workflow_id(request.mailing_id, recipient.phone),
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(MAILING_ID, request.mailing_id),
                        SearchAttributePair(CASCADE_STATUS, CascadeStatus.PENDING.value),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            return False
        return True


def _now() -> datetime:
    return datetime.now(UTC)


def _past(moment: datetime | None) -> bool:
    return moment is not None and _now() >= moment
