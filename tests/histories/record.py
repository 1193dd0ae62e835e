"""Record workflow histories of the common paths, for the replay test (tests/test_replay.py).

    .venv/bin/python -m tests.histories.record tests/histories/<yyyy-mm-dd>-<what changed>

Run it after every deploy-relevant change to `workflows/`, into a new folder: every folder stays, and CI
replays all of them against the current code, so a change that would break a workflow in flight (a
nondeterminism error on replay) fails CI instead of production. Recipients run on the time-skipping
server; mailings on the real dev server, with continue-as-new suggested after a few events so that path
is recorded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.control import ControlActivities
from activities.dispatch import DispatchActivities
from activities.ledger import LedgerActivities
from activities.progress import ProgressActivities
from activities.recipients import RecipientActivities
from activities.schedule import next_send_window
from activities.send import SendActivities
from domain.models import Control, MailingInput, RecipientInput, SendRequest, SendResult
from domain.refs import mailing_workflow_id, send_task_queue
from domain.schedule import Schedule
from domain.spec import MailingSpec, Step
from domain.status import Channel, MessageStatus
from providers.base import ProviderAdapter, ProviderUnavailable
from runtime.devstack import temporal_binary
from runtime.temporal import register_search_attributes, release_sdk_runtime, sdk_runtime
from tests.test_cascade import VIBER_WAIT, Cascade, CascadeRunner, RecordingProvider, plan
from tests.test_cascade_schedule import timed_plan, window_from_now
from tests.test_mailing_timing import DirectLookups
from workflows import search_attributes
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

D, U = MessageStatus.DELIVERED, MessageStatus.UNDELIVERED
NAME = {"name": "Anna"}
Scenario = Callable[[WorkflowEnvironment, CascadeRunner], Awaitable[Cascade]]


async def _save(folder: Path, name: str, handle: WorkflowHandle[Any, Any]) -> None:
    history = await handle.fetch_history()
    (folder / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print(f"  {name}: {len(history.events)} events")


# --- recipients (time-skipping server) -------------------------------------------------------------------


async def delivered_first_step(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    cascade = await runner.start(RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000001", plan=plan()))
    await cascade.sends(1)
    await cascade.report(0, D)
    return cascade


async def timeout_then_fallback(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    cascade = await runner.start(RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000002", plan=plan()))
    await cascade.sends(1)
    await cascade.sends(2, allow_timeout=VIBER_WAIT)
    await cascade.report(1, D)
    return cascade


async def rejected_then_fallback(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    runner.provider.reject_channels = {Channel.VIBER}
    cascade = await runner.start(RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000003", plan=plan()))
    await cascade.sends(2)
    await cascade.report(1, D)
    return cascade


async def undelivered_report_then_late_delivery(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    cascade = await runner.start(RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000004", plan=plan()))
    await cascade.sends(1)
    await cascade.report(0, U)
    await cascade.sends(2)
    await cascade.report(1, MessageStatus.SENT, D)
    await cascade.report(0, D)
    return cascade


async def outage_retried(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    runner.provider.failures_before_success = 2
    cascade = await runner.start(RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000005", plan=plan()))
    await cascade.sends(3)
    await cascade.report(0, D)
    return cascade


async def paused_and_resumed(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    cascade = await runner.start(
        RecipientInput(
            mailing_id="m1",
            variables=NAME,
            phone="+79990000006",
            plan=timed_plan(timedelta(minutes=5), timedelta(minutes=5)),
        )
    )
    await cascade.sends(1)
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=1, paused=True))
    await env.sleep(timedelta(hours=1))
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=2, paused=False))
    await cascade.sends(2)
    return cascade


async def cancelled_during_wait(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    cascade = await runner.start(
        RecipientInput(
            mailing_id="m1",
            variables=NAME,
            phone="+79990000007",
            plan=timed_plan(timedelta(hours=1), timedelta(minutes=5)),
        )
    )
    await cascade.sends(1)
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=1, cancelled=True))
    return cascade


async def window_hold(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    _, hours = await window_from_now(env, timedelta(hours=2), timedelta(hours=1))
    recipient_plan = timed_plan(
        timedelta(minutes=1), timedelta(minutes=1), schedule=Schedule(hours=hours, timezone="UTC")
    )
    return await runner.start(
        RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000008", plan=recipient_plan)
    )


async def end_date_between_steps(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    end_at = await env.get_current_time() + timedelta(minutes=30)
    return await runner.start(
        RecipientInput(
            mailing_id="m1",
            phone="+79990000009",
            plan=timed_plan(timedelta(hours=1), timedelta(minutes=5), end_at=end_at),
        )
    )


class RefusedAccount:
    """A provider account its provider refuses (401): the step fails over."""

    name = "refused"
    deduplicates = False

    async def send(self, request: SendRequest) -> SendResult:
        raise ProviderUnavailable("refused: credentials refused (401)", account_refused=True)

    def parse_webhook(self, request: object) -> list[object]:
        raise NotImplementedError

    async def was_received(self, request: SendRequest) -> bool | None:
        return None


async def failover_after_a_refused_account(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    two_accounts = plan().model_copy(update={"provider": ["refused", "sandbox"]})
    refused = Worker(
        env.client,
        task_queue=send_task_queue(runner.queue, "refused"),
        activities=[SendActivities({"refused": cast(ProviderAdapter, RefusedAccount())}).send],
    )
    async with refused:
        cascade = await runner.start(
            RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000010", plan=two_accounts)
        )
        await cascade.sends(1)  # the sandbox's: the refused account's attempt never reaches a provider
        await cascade.report(0, D)
    return cascade


async def viber_whatsapp_sms(env: WorkflowEnvironment, runner: CascadeRunner) -> Cascade:
    three = plan().model_copy(
        update={
            "steps": [
                plan().steps[0],
                Step(
                    channel=Channel.WHATSAPP,
                    sender="Shop",
                    wait=VIBER_WAIT,
                    template={"name": "order_update", "language": "ru", "parameters": ["{name}"]},
                ),
                plan().steps[1],
            ]
        }
    )
    cascade = await runner.start(RecipientInput(mailing_id="m1", variables=NAME, phone="+79990000011", plan=three))
    await cascade.sends(1)
    await cascade.report(0, U)
    await cascade.sends(2)
    await cascade.report(1, MessageStatus.DELIVERED, MessageStatus.READ)
    return cascade


RECIPIENT_SCENARIOS: tuple[Scenario, ...] = (
    delivered_first_step,
    timeout_then_fallback,
    rejected_then_fallback,
    undelivered_report_then_late_delivery,
    outage_retried,
    paused_and_resumed,
    cancelled_during_wait,
    window_hold,
    end_date_between_steps,
    failover_after_a_refused_account,
    viber_whatsapp_sms,
)


async def record_recipients(folder: Path) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        runtime=sdk_runtime(),
        test_server_existing_path=_binary("temporal-test-server"),
    )
    async with env:
        await register_search_attributes(env.client)
        for scenario in RECIPIENT_SCENARIOS:
            async with CascadeRunner(env).running() as runner:
                cascade = await scenario(env, runner)
                await cascade.result()
                await _save(folder, f"recipient-{scenario.__name__.replace('_', '-')}", cascade.handle)


# --- mailings (dev server: visibility, continue-as-new) -----------------------------------------------------


def _mailing_spec(**extra: Any) -> MailingSpec:
    return MailingSpec.model_validate(
        {
            "name": "Recorded",
            "numbers": [f"+799900001{i:02}" for i in range(10)],
            "late_reports": "1s",
            "schedule": {"hours": "00:00-24:00"},
            "steps": [{"channel": "sms", "sender": "Shop", "text": "Hi", "wait": "1s"}],
        }
        | extra
    )


@contextlib.asynccontextmanager
async def _mailing_workers(client: Client, data_dir: Path, *, direct: bool) -> AsyncIterator[str]:
    queue, provider = f"record-{uuid.uuid4().hex[:6]}", RecordingProvider()
    lookups = DirectLookups(client, data_dir)
    visibility: list[Callable[..., Any]]
    visibility = (
        [lookups.await_progress, lookups.broadcast]
        if direct
        else [
            ProgressActivities(client).await_progress,
            ControlActivities(client, data_dir).broadcast,
        ]
    )
    async with (
        Worker(
            client,
            task_queue=queue,
            workflows=[MailingWorkflow, RecipientCascadeWorkflow],
            activities=[
                RecipientActivities(data_dir).import_recipients,
                DispatchActivities(client, queue, {}, 100.0).dispatch,
                next_send_window,
                *LedgerActivities(None).all(),
                *visibility,
            ],
        ),
        Worker(
            client,
            task_queue=send_task_queue(queue, "sandbox"),
            activities=[SendActivities({"sandbox": cast(ProviderAdapter, provider)}).send],
        ),
    ):
        yield queue


async def _start_mailing(client: Client, queue: str, name: str, spec: MailingSpec) -> WorkflowHandle[Any, Any]:
    mailing_id = f"{name}-{uuid.uuid4().hex[:6]}"
    return await client.start_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec),
        id=mailing_workflow_id(mailing_id),
        task_queue=queue,
    )


async def _status(handle: WorkflowHandle[Any, Any], wanted: str) -> None:
    for _ in range(600):
        summary = await handle.query(MailingWorkflow.summary)
        if summary.status == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"mailing never became {wanted}: {summary}")


async def record_mailings(folder: Path, scratch: Path) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        runtime=sdk_runtime(),
        test_server_existing_path=_binary("temporal-test-server"),
    )
    async with env, _mailing_workers(env.client, scratch / "ts", direct=True) as queue:
        await register_search_attributes(env.client)
        start_at = (await env.get_current_time()) + timedelta(days=2)
        delayed = await _start_mailing(env.client, queue, "delayed", _mailing_spec(start_at=start_at.isoformat()))
        await delayed.result()
        await _save(folder, "mailing-delayed-start", delayed)
        _, hours = await window_from_now(env, timedelta(hours=3), timedelta(hours=2))
        held = await _start_mailing(
            env.client, queue, "held", _mailing_spec(schedule={"hours": hours, "timezone": "UTC"})
        )
        await held.result()
        await _save(folder, "mailing-window-hold", held)

    async with (
        _dev_server(suggest_continue_as_new_after=20) as dev,
        _mailing_workers(dev.client, scratch / "dev", direct=False) as queue,
    ):
        paused = await _start_mailing(dev.client, queue, "paused", _mailing_spec(speed="120/min"))
        await _status(paused, "running")
        await paused.execute_update(MailingWorkflow.pause)
        await asyncio.sleep(1.5)
        await paused.execute_update(MailingWorkflow.resume)
        await paused.result()
        for number, run in enumerate(await _runs(dev.client, paused.id)):
            await _save(folder, f"mailing-paused-and-resumed-run{number}", run)
        cancelled = await _start_mailing(dev.client, queue, "cancelled", _mailing_spec(speed="60/min"))
        await _status(cancelled, "running")
        await asyncio.sleep(1.5)
        await cancelled.execute_update(MailingWorkflow.cancel)
        await cancelled.result()
        for number, run in enumerate(await _runs(dev.client, cancelled.id)):
            await _save(folder, f"mailing-cancelled-run{number}", run)


async def _runs(client: Client, workflow_id: str) -> list[WorkflowHandle[Any, Any]]:
    """Every run of a workflow id (continue-as-new makes several), oldest first."""
    runs = [e async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    runs.sort(key=lambda e: e.start_time)
    return [client.get_workflow_handle(workflow_id, run_id=e.run_id) for e in runs]


@contextlib.asynccontextmanager
async def _dev_server(*, suggest_continue_as_new_after: int) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        runtime=sdk_runtime(),
        ui=False,
        search_attributes=search_attributes.ALL,
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={suggest_continue_as_new_after}",
        ],
    )
    async with env:
        yield env


def _binary(name: str) -> str:
    from tests.conftest import venv_binary

    return venv_binary(name)


async def main(folder: Path) -> None:
    scratch = folder / ".scratch"
    try:
        await record_recipients(folder)
        await record_mailings(folder, scratch)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(Path(sys.argv[1])))
    release_sdk_runtime()
