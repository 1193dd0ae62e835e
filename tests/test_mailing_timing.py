"""The mailing workflow's timing on the time-skipping server: a delayed start days ahead, and a cancel
while waiting for it.

The test server has no visibility (count/list are unimplemented), so the two activities that rely on it —
progress and the control broadcast — are replaced by ones that find the recipients through the stored list
and ask each workflow directly. Everything else is the real wiring: import, paced dispatch, windows, sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.dispatch import DispatchActivities
from activities.ledger import LedgerActivities
from activities.recipients import RecipientActivities
from activities.schedule import next_send_window
from activities.send import SendActivities
from domain.models import (
    BroadcastRequest,
    MailingCounts,
    MailingInput,
    MailingSummary,
    ProgressRequest,
    RecipientState,
)
from domain.refs import mailing_workflow_id, recipient_workflow_id, send_task_queue
from domain.spec import MailingSpec
from domain.status import FINAL_CASCADE_STATUSES
from providers.base import ProviderAdapter
from recipients.importer import read_stored, stored_list_path
from tests.test_cascade import RecordingProvider
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

NUMBERS = ["+79990000001", "+79990000002", "+79990000003"]


class DirectLookups:
    """Progress and broadcast without visibility: the recipients are the stored list's, asked one by one."""

    def __init__(self, client: Client, data_dir: Path) -> None:
        self._client, self._data_dir = client, data_dir

    async def _states(self, mailing_id: str) -> list[RecipientState]:
        states = []
        for recipient in read_stored(stored_list_path(self._data_dir, mailing_id)):
            handle = self._client.get_workflow_handle(recipient_workflow_id(mailing_id, recipient.phone))
            with contextlib.suppress(RPCError):  # not started (yet)
                states.append(await handle.query(RecipientCascadeWorkflow.state))
        return states

    @activity.defn(name="await_progress")
    async def await_progress(self, request: ProgressRequest) -> MailingCounts:
        states = await self._states(request.mailing_id)
        outcomes = {"delivered": 0, "undelivered": 0, "not_sent": 0}
        for state in states:
            if state.status in FINAL_CASCADE_STATUSES:
                outcomes[state.status.value] += 1
        closed = await self._closed(request.mailing_id) if request.until_closed else 0
        if request.until_closed and closed < request.expected:
            await asyncio.sleep(0.1)  # the late-report windows pass in real time: no hot loop meanwhile
        finished = sum(outcomes.values())
        return MailingCounts(outcomes=outcomes, delivered_by_channel={}, channels={}, finished=finished, closed=closed)

    async def _closed(self, mailing_id: str) -> int:
        """Recipient workflows no longer running (their late-report window is over)."""
        closed = 0
        for recipient in read_stored(stored_list_path(self._data_dir, mailing_id)):
            handle = self._client.get_workflow_handle(recipient_workflow_id(mailing_id, recipient.phone))
            with contextlib.suppress(RPCError):
                closed += (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
        return closed

    @activity.defn(name="broadcast_control")
    async def broadcast(self, request: BroadcastRequest) -> int:
        for recipient in read_stored(stored_list_path(self._data_dir, request.mailing_id)):
            handle = self._client.get_workflow_handle(recipient_workflow_id(request.mailing_id, recipient.phone))
            with contextlib.suppress(RPCError):
                await handle.signal(RecipientCascadeWorkflow.control, request.control)
        return 0


@pytest.fixture
async def mailing_worker(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[str, RecordingProvider]]:
    client, queue, provider = time_skipping_env.client, f"mailing-{uuid.uuid4().hex[:8]}", RecordingProvider()
    lookups = DirectLookups(client, tmp_path / "data")
    async with (
        Worker(
            client,
            task_queue=queue,
            workflows=[MailingWorkflow, RecipientCascadeWorkflow],
            activities=[
                RecipientActivities(tmp_path / "data").import_recipients,
                DispatchActivities(client, queue, {}, 100.0).dispatch,
                lookups.await_progress,
                lookups.broadcast,
                next_send_window,
                *LedgerActivities(None).all(),
            ],
        ),
        Worker(
            client,
            task_queue=send_task_queue(queue, "sandbox"),
            activities=[SendActivities({"sandbox": cast(ProviderAdapter, provider)}).send],
        ),
    ):
        yield queue, provider


def spec(start_at: str) -> MailingSpec:
    return MailingSpec.model_validate(
        {
            "name": "Later",
            "numbers": NUMBERS,
            "start_at": start_at,
            "late_reports": "1s",
            "schedule": {"hours": "00:00-24:00"},
            # Short: while a progress activity runs, the server cannot skip time, so this wait passes for real.
            "steps": [{"channel": "sms", "sender": "Shop", "text": "Hi", "wait": "2s"}],
        }
    )


async def start_in_three_days(
    env: WorkflowEnvironment, queue: str
) -> tuple[WorkflowHandle[MailingWorkflow, MailingSummary], datetime]:
    start_at = (await env.get_current_time()) + timedelta(days=3)
    mailing_id = f"later-{uuid.uuid4().hex[:6]}"
    handle = await env.client.start_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec(start_at.isoformat())),
        id=mailing_workflow_id(mailing_id),
        task_queue=queue,
    )
    return handle, start_at


async def test_a_delayed_start_days_ahead(
    time_skipping_env: WorkflowEnvironment, mailing_worker: tuple[str, RecordingProvider]
) -> None:
    queue, provider = mailing_worker
    handle, start_at = await start_in_three_days(time_skipping_env, queue)
    mailing_id = handle.id.removeprefix("mailing-")
    summary = await handle.result()
    assert summary.status == "completed" and summary.dispatched == 3
    assert summary.outcomes == {"delivered": 0, "undelivered": 3, "not_sent": 0}  # nobody reported
    assert len(provider.requests) == 3
    for phone in NUMBERS:
        recipient = time_skipping_env.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone))
        state = await recipient.query(RecipientCascadeWorkflow.state)
        assert state.steps[0].sent_at is not None and state.steps[0].sent_at >= start_at


async def test_cancel_while_waiting_for_the_start_sends_nothing(
    time_skipping_env: WorkflowEnvironment, mailing_worker: tuple[str, RecordingProvider]
) -> None:
    queue, provider = mailing_worker
    handle, _ = await start_in_three_days(time_skipping_env, queue)
    for _ in range(100):
        if (await handle.query(MailingWorkflow.summary)).status == "waiting":
            break
    assert await handle.execute_update(MailingWorkflow.pause) == "paused"
    assert (await handle.query(MailingWorkflow.summary)).status == "paused"
    assert await handle.execute_update(MailingWorkflow.cancel) == "cancelled"
    summary = await handle.result()
    assert summary.status == "aborted" and summary.error == "cancelled by the user"
    assert summary.dispatched == 0 and summary.not_started == 3
    assert summary.outcomes["not_sent"] == 3 and sum(summary.outcomes.values()) == 3
    assert provider.requests == []
