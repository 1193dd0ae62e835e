"""The dispatch activity: start one RecipientCascadeWorkflow per stored recipient.

Runs as a heartbeating activity rather than as child workflows, so one mailing can hold a million
recipients: the workflow ids are deterministic, so a retried dispatch resumes from its last heartbeat and
any recipient it starts again is refused by Temporal as already started — never sent twice.
"""

from __future__ import annotations

import asyncio
from itertools import islice

from temporalio import activity
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from domain.models import DispatchRequest, DispatchResult, RecipientInput
from domain.refs import recipient_workflow_id
from domain.status import CascadeStatus
from recipients.importer import read_stored
from workflows.recipient import RecipientCascadeWorkflow
from workflows.search_attributes import CASCADE_STATUS, MAILING_ID

BATCH = 50  # concurrent start calls; the server, not this loop, is the bottleneck


class DispatchActivities:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    @activity.defn(name="dispatch_recipients")
    async def dispatch(self, request: DispatchRequest) -> DispatchResult:
        details = activity.info().heartbeat_details
        position, started, already = details[0] if details else (0, 0, 0)
        recipients = read_stored(request.stored_list, start=position)
        while batch := list(islice(recipients, BATCH)):
            results = await asyncio.gather(*(self._start(request, phone, variables) for _, phone, variables in batch))
            started += sum(results)
            already += len(results) - sum(results)
            position = batch[-1][0] + 1
            activity.heartbeat((position, started, already))
        return DispatchResult(started=started, already_running=already)

    async def _start(self, request: DispatchRequest, phone: str, variables: dict[str, str]) -> bool:
        """True when started now; False when a previous attempt already started this recipient."""
        try:
            await self._client.start_workflow(
                RecipientCascadeWorkflow.run,
                RecipientInput(mailing_id=request.mailing_id, phone=phone, variables=variables, plan=request.plan),
                id=recipient_workflow_id(request.mailing_id, phone),
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
