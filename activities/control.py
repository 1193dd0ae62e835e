"""Tell a mailing's running recipients that it was paused, resumed or cancelled (a `control` signal each).

The mailing stops dispatching first, so every recipient that can be affected already runs. Visibility lags
a second or so behind a start, so the running recipients are listed and signalled twice, a few seconds
apart; a recipient applies a control only if its version is newer, so the second pass changes nothing
for those the first reached.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from domain.models import BroadcastRequest
from workflows.recipient import RecipientCascadeWorkflow

PASSES = 2
PAUSE_BETWEEN_PASSES = 3.0  # seconds: longer than visibility takes to show a new workflow here
CONCURRENCY = 50


class ControlActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="broadcast_control")
    async def broadcast(self, request: BroadcastRequest) -> int:
        """Signal every running recipient of the mailing; returns how many signals were delivered."""
        query = (
            f"MailingId = '{request.mailing_id}' AND ExecutionStatus = 'Running'"
            f" AND WorkflowType = '{RecipientCascadeWorkflow.__name__}'"
        )
        delivered = 0
        limit = asyncio.Semaphore(CONCURRENCY)

        async def signal(workflow_id: str) -> bool:
            async with limit:
                try:
                    handle = self._client.get_workflow_handle(workflow_id)
                    await handle.signal(RecipientCascadeWorkflow.control, request.control)
                except RPCError:  # it finished meanwhile: nothing to hold or cancel
                    return False
                return True

        for number in range(PASSES):
            if number:
                await asyncio.sleep(PAUSE_BETWEEN_PASSES)
            ids = [execution.id async for execution in self._client.list_workflows(query)]
            activity.heartbeat(number)
            delivered += sum(await asyncio.gather(*(signal(i) for i in ids)))
        return delivered
