"""The kaskad worker: runs the mailing and recipient workflows and their activities.

`python worker.py` connects to the configured Temporal (see runtime/settings.py) and the ledger
(KASKAD_DATABASE_URL) and runs until stopped; start as many as you need, on as many machines as reach both.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.control import ControlActivities
from activities.dispatch import DispatchActivities
from activities.ledger import LedgerActivities
from activities.progress import ProgressActivities
from activities.recipients import RecipientActivities
from activities.schedule import next_send_window
from activities.send import EXCHANGE_BUDGET, SendActivities
from domain.refs import send_task_queue
from ledger.store import Ledger
from providers.accounts import AccountError
from providers.base import ProviderAdapter
from providers.registry import build_registry, provider_rates, registry_accounts
from runtime.logs import configure_logging
from runtime.settings import Settings, SettingsError
from runtime.temporal import connect
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

# The modules workflows import are deterministic and hold no mutable state, so the sandbox shares them
# instead of re-executing them for every workflow it starts (a million recipients is a million workflow
# instances; this cut the worker's CPU per recipient by about a sixth). `workflows` itself stays
# sandboxed, so the sandbox still catches non-deterministic calls in workflow code.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "activities", "domain", "ledger", "providers", "recipients", "runtime", "pydantic", "sqlalchemy", "alembic"
    )
)


def build_workers(
    client: Client, settings: Settings, providers: Mapping[str, ProviderAdapter], ledger: Ledger | None
) -> list[Worker]:
    """Wire every activity to its dependencies; tests call this too, so they run the real wiring.

    `ledger`: the record every worker writes to and reads lists from. None records nothing and keeps lists
    on this worker's disk (how benchmarks measure the cascade without the ledger).

    The main task queue runs the workflows and the bookkeeping activities. Each provider has a send task
    queue of its own whose rate the server caps across all workers (`max_task_queue_activities_per_second`).
    """
    rates = provider_rates(settings)
    send = SendActivities(providers).send
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[MailingWorkflow, RecipientCascadeWorkflow],
        workflow_runner=SANDBOX,
        activities=[
            RecipientActivities(settings.data_dir, ledger, registry_accounts(providers)).import_recipients,
            DispatchActivities(client, settings.task_queue, rates, settings.default_provider_rate, ledger).dispatch,
            ProgressActivities(client).await_progress,
            ControlActivities(client, settings.data_dir, ledger).broadcast,
            next_send_window,
            *LedgerActivities(ledger).all(),
        ],
    )
    senders = [
        Worker(
            client,
            task_queue=send_task_queue(settings.task_queue, name),
            activities=[send],
            max_task_queue_activities_per_second=rates.get(name, settings.default_provider_rate),
            # On shutdown (a deploy) a request already out is answered before the worker goes; a send not
            # yet made is handed back for another worker (activities/send.py).
            graceful_shutdown_timeout=EXCHANGE_BUDGET + timedelta(seconds=5),
        )
        for name in providers
    ]
    return [main, *senders]


@asynccontextmanager
async def running_workers(
    client: Client, settings: Settings, providers: Mapping[str, ProviderAdapter], ledger: Ledger | None
) -> AsyncIterator[None]:
    """All of kaskad's workers, running for the duration of the block."""
    async with contextlib.AsyncExitStack() as stack:
        for worker in build_workers(client, settings, providers, ledger):
            await stack.enter_async_context(worker)
        yield


async def main() -> None:
    settings = Settings()
    async with httpx.AsyncClient(timeout=10) as http:
        providers = build_registry(settings, http)  # a broken account fails here, before anything connects
        try:
            client = await connect(settings)
        except RuntimeError as exc:
            raise SystemExit(f"error: cannot reach Temporal at {settings.temporal_address}: {exc}") from None
        ledger = Ledger(settings.ledger_url)
        workers = build_workers(client, settings, providers, ledger)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # a deploy stops the worker: drain, do not drop
            loop.add_signal_handler(signum, lambda: [asyncio.ensure_future(w.shutdown()) for w in workers])
        try:
            await asyncio.gather(*(worker.run() for worker in workers))
        finally:
            ledger.close()  # waits for the send records still queued


if __name__ == "__main__":
    configure_logging()
    try:
        asyncio.run(main())
    except (
        AccountError,
        SettingsError,
    ) as exc:  # a provider account that cannot be used: say which field, not a traceback
        raise SystemExit(f"error: {exc}") from None
