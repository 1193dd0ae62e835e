"""Cascade throughput: the full kaskad path against a minimal workflow of the same shape.

On one Temporal dev server (SQLite file with the WAL pragmas, as `starter.py dev` runs it), in one run:

* full:    a mailing of N recipients, one SMS step, sandbox answering at once. Path per recipient:
           dispatch activity starts the workflow → send activity → sandbox over HTTP → signed report over
           HTTP → gateway → signal → workflow completes.
* minimal: N workflows written here: one no-op activity, one signal sent by this script once the
           activity has run (as a provider's report follows a send), complete.

Both are timed from the first start to the moment visibility counts N completed workflows (polled every
0.2 s). Prints recipients/s for both and the ratio full/minimal.

    .venv/bin/python benchmarks/cascade.py [-n 1000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from minimal_workflow import MinimalWorkflow, noop, sent
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from domain.models import MailingInput
from domain.refs import mailing_workflow_id
from domain.spec import MailingSpec
from runtime.devstack import embedded_stack, private_settings
from runtime.settings import Settings
from workflows.mailing import MailingWorkflow


def bench_settings(folder: Path) -> Settings:
    """A private stack in `folder` whose sandbox answers at once and is never rate-capped: the path is
    measured, not the cap."""
    return private_settings(
        folder,
        "bench",
        sandbox_report_delay=0.0,
        webhook_secret=SecretStr("bench"),
        provider_rates={"sandbox": 10_000},
    )


async def wait_completed(client: Client, query: str, n: int) -> None:
    while (await client.count_workflows(f"{query} AND ExecutionStatus = 'Completed'")).count < n:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # visibility offers no push: poll it


async def run_full(client: Client, settings: Settings, n: int) -> float:
    mailing_id = f"bench-{uuid.uuid4().hex[:6]}"
    numbers = [f"+7999{i:07d}" for i in range(n) if not f"{i:07d}".endswith("9")][:n]
    i = n
    while len(numbers) < n:  # top up, still avoiding the sandbox's undelivered digit
        if i % 10 != 9:
            numbers.append(f"+7999{i:07d}")
        i += 1
    spec = MailingSpec.model_validate(
        {
            "name": "bench",
            "numbers": numbers,
            "late_reports": "0s",
            "schedule": {"hours": "00:00-24:00"},  # any hour of the day
            "steps": [{"channel": "sms", "sender": "Bench", "text": "hi", "wait": "10m"}],
        }
    )
    began = time.perf_counter()
    await client.start_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec),
        id=mailing_workflow_id(mailing_id),
        task_queue=settings.task_queue,
    )
    await wait_completed(client, f"MailingId = '{mailing_id}' AND WorkflowType = 'RecipientCascadeWorkflow'", n)
    return n / (time.perf_counter() - began)


async def run_minimal(client: Client, n: int) -> float:
    queue = f"minimal-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[MinimalWorkflow], activities=[noop]):
        began = time.perf_counter()
        semaphore = asyncio.Semaphore(50)  # the same start concurrency as the dispatch activity

        async def start(i: int) -> None:
            async with semaphore:
                await client.start_workflow(MinimalWorkflow.run, i, id=f"{queue}-{i}", task_queue=queue)

        async def report() -> None:
            signals = []
            for _ in range(n):
                workflow_id = await sent.get()
                signals.append(
                    asyncio.ensure_future(client.get_workflow_handle(workflow_id).signal(MinimalWorkflow.done))
                )
            await asyncio.gather(*signals)

        await asyncio.gather(report(), *(start(i) for i in range(n)))
        await wait_completed(client, f"TaskQueue = '{queue}'", n)
        return n / (time.perf_counter() - began)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="alternate full/minimal this many times")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        settings = bench_settings(Path(scratch))
        async with embedded_stack(settings, ui=False) as stack:
            full, minimal = [], []
            for round_ in range(args.rounds):
                full.append(await run_full(stack.client, settings, args.n))
                minimal.append(await run_minimal(stack.client, args.n))
                print(f"round {round_ + 1}: full {full[-1]:.1f}/s, minimal {minimal[-1]:.1f}/s", flush=True)
    f, m = statistics.median(full), statistics.median(minimal)
    print(f"N={args.n} rounds={args.rounds}")
    print(f"full path:        {f:8.1f} recipients/s (median)")
    print(f"minimal workflow: {m:8.1f} workflows/s  (median)")
    print(f"ratio full/minimal: {f / m:.2f}  (goal >= 0.9)")


if __name__ == "__main__":
    asyncio.run(main())
