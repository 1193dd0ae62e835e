"""The minimal workflow the cascade benchmark compares with: one activity, one signal, complete.

In a module of its own because Temporal's sandbox re-imports a workflow's module, which `__main__` is not.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

# Workflow ids whose activity ran: the benchmark signals them then, as a provider reports after a send.
sent: asyncio.Queue[str] = asyncio.Queue()


@activity.defn
async def noop(value: int) -> int:
    workflow_id = activity.info().workflow_id
    assert workflow_id is not None
    sent.put_nowait(workflow_id)
    return value


@workflow.defn
class MinimalWorkflow:
    def __init__(self) -> None:
        self.signalled = False

    @workflow.signal
    def done(self) -> None:
        self.signalled = True

    @workflow.run
    async def run(self, value: int) -> None:
        await workflow.execute_activity(noop, value, start_to_close_timeout=timedelta(seconds=30))
        await workflow.wait_condition(lambda: self.signalled)
