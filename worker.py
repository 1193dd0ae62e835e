"""The kaskad worker: runs the mailing and recipient workflows and their activities.

`python worker.py` connects to the configured Temporal (see runtime/settings.py) and runs until stopped;
start as many as you need, on as many machines as share the data folder.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.control import ControlActivities
from activities.dispatch import DispatchActivities
from activities.progress import ProgressActivities
from activities.recipients import RecipientActivities
from activities.schedule import next_send_window
from activities.send import SendActivities
from providers.registry import build_registry
from runtime.settings import Settings
from runtime.temporal import connect
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

# The modules workflows import are deterministic and hold no mutable state, so the sandbox shares them
# instead of re-executing them for every workflow it starts (a million recipients is a million workflow
# instances; this cut the worker's CPU per recipient by about a sixth). `workflows` itself stays
# sandboxed, so the sandbox still catches non-deterministic calls in workflow code.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "activities", "domain", "providers", "recipients", "runtime", "pydantic"
    )
)


def build_worker(client: Client, settings: Settings, http: httpx.AsyncClient) -> Worker:
    """Wire every activity to its dependencies; tests call this too, so they run the real wiring."""
    providers = build_registry(settings, http)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[MailingWorkflow, RecipientCascadeWorkflow],
        workflow_runner=SANDBOX,
        activities=[
            SendActivities(providers).send,
            RecipientActivities(settings.data_dir).import_recipients,
            DispatchActivities(client, settings.task_queue).dispatch,
            ProgressActivities(client).await_progress,
            ControlActivities(client).broadcast,
            next_send_window,
        ],
    )


async def main() -> None:
    settings = Settings()
    client = await connect(settings)
    async with httpx.AsyncClient(timeout=10) as http:
        await build_worker(client, settings, http).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
