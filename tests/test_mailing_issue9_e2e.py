"""Issue 9 on the real dev server (real visibility, real dispatch timing): the final figures wait for the
late-report window, no dispatch spin at the end date, and an unpaced mailing is paced by its provider's rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.dispatch import DispatchActivities
from domain.models import DeliveryReport, DispatchRequest, MailingInput, MailingSummary
from domain.refs import mailing_workflow_id, recipient_workflow_id
from domain.spec import MailingSpec
from domain.status import CascadeStatus, MessageStatus
from runtime.devstack import Stack
from tests.test_activities import one_sms_plan
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

pytestmark = pytest.mark.e2e
T = TypeVar("T")


async def run_mailing(
    stack: Stack, name: str, **spec: Any
) -> tuple[str, WorkflowHandle[MailingWorkflow, MailingSummary]]:
    mailing_id = f"{name}-{uuid.uuid4().hex[:6]}"
    fields = {"name": name, "schedule": {"hours": "00:00-24:00"}} | spec
    handle = await stack.client.start_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=MailingSpec.model_validate(fields)),
        id=mailing_workflow_id(mailing_id),
        task_queue=stack.settings.task_queue,
    )
    return mailing_id, handle


async def eventually(probe: Callable[[], Awaitable[T]], within: float = 30) -> T:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_a_late_report_in_the_late_report_window_is_in_the_final_figures(stack: Stack) -> None:
    phone = "+79990000008"  # sandbox viber: no report at all, so the step times out: undelivered
    mailing_id, handle = await run_mailing(
        stack,
        "late",
        numbers=[phone],
        late_reports="8s",
        steps=[{"channel": "viber", "sender": "Shop", "text": "Hi", "wait": "2s"}],
    )
    recipient = stack.client.get_workflow_handle_for(
        RecipientCascadeWorkflow.run, recipient_workflow_id(mailing_id, phone)
    )

    async def undelivered() -> bool:
        with contextlib.suppress(RPCError):
            return (await recipient.query(RecipientCascadeWorkflow.state)).status is CascadeStatus.UNDELIVERED
        return False

    assert await eventually(undelivered)

    async def counted() -> MailingSummary | None:
        summary = await handle.query(MailingWorkflow.summary)
        return summary if summary.outcomes.get("undelivered") == 1 else None

    live = await eventually(counted)  # visibility caught up: every cascade is decided
    assert live is not None
    await asyncio.sleep(3)  # the recipient is still open for late reports; the mailing must be too
    assert (await handle.query(MailingWorkflow.summary)).status == "running"

    await recipient.signal(RecipientCascadeWorkflow.report, DeliveryReport(step=0, status=MessageStatus.DELIVERED))
    summary = await asyncio.wait_for(handle.result(), 60)
    assert summary.status == "completed"
    assert summary.outcomes == {"delivered": 1, "undelivered": 0, "not_sent": 0}
    assert summary.delivered_by_channel == {"viber": 1}
    closed = (await recipient.describe()).close_time
    assert closed is not None and summary.finished_at is not None and summary.finished_at >= closed


async def test_the_end_date_does_not_spin_dispatch_activities(stack: Stack) -> None:
    # Slots every ~1.01 s from start_at; the end date falls most of a slot after the fourth start. Before the
    # fix, the dispatch loop asked again and again in that gap (dozens of activities that started nobody).
    start_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    _, handle = await run_mailing(
        stack,
        "boundary",
        numbers=[f"+799900001{i:02}" for i in range(10)],
        late_reports="1s",
        start_at=start_at.isoformat(),
        end_at=(start_at + timedelta(seconds=3.9)).isoformat(),
        speed="1/s",
        steps=[{"channel": "sms", "sender": "Shop", "text": "Hi", "wait": "1s"}],
    )
    summary = await asyncio.wait_for(handle.result(), 60)
    assert summary.status == "completed_by_end_date" and 0 < summary.dispatched < 10
    history = await handle.fetch_history()
    dispatches = [
        e
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "dispatch_recipients"
    ]
    assert len(dispatches) <= summary.dispatched + 1  # one chunk per start (speed 1/s), at most one empty


async def test_an_unpaced_mailing_starts_recipients_at_its_provider_rate(stack: Stack, tmp_path: Path) -> None:
    mailing_id = f"unpaced-{uuid.uuid4().hex[:6]}"
    phones = [f"+799912300{i:02}" for i in range(10)]
    stored = tmp_path / "recipients.jsonl"
    stored.write_text("".join(json.dumps({"row": i, "phone": p, "vars": {}}) + "\n" for i, p in enumerate(phones)))
    # A queue no worker polls: the recipients are started, never run. The sandbox account sends 5/s.
    dispatch = DispatchActivities(stack.client, f"idle-{uuid.uuid4().hex[:6]}", {"sandbox": 5.0}, 100.0).dispatch
    request = DispatchRequest(mailing_id=mailing_id, plan=one_sms_plan(), stored_list=stored, limit=100)
    try:
        while True:  # chunk after chunk, as the mailing workflow runs them
            result = await ActivityEnvironment().run(dispatch, request)
            assert result.started <= 5  # a chunk is about a second's worth at the rate
            if result.exhausted:
                break
            request = request.model_copy(update={"position": result.position, "not_before": result.next_start})
        starts = sorted(
            [
                (await stack.client.get_workflow_handle(recipient_workflow_id(mailing_id, p)).describe()).start_time
                for p in phones
            ]
        )
        assert (starts[-1] - starts[0]).total_seconds() >= 9 * 0.2 * 0.9  # 10 starts, 0.2 s apart
        assert all(sum(1 for t in starts if s <= t < s + timedelta(seconds=1)) <= 6 for s in starts)
    finally:
        for phone in phones:
            with contextlib.suppress(RPCError):
                await stack.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone)).terminate()
