"""Issue 9, the parts that need no visibility: a delayed start survives pause/resume (time-skipping server,
visibility-free lookups as in test_mailing_timing), and the import activity heartbeats while it parses."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import activities.recipients
from activities.recipients import RecipientActivities
from domain.models import ImportReport, ImportRequest, MailingInput
from domain.refs import mailing_workflow_id, recipient_workflow_id
from tests import test_mailing_timing
from tests.test_cascade import RecordingProvider
from tests.test_mailing_timing import NUMBERS, spec
from workflows.mailing import HEARTBEAT, MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

mailing_worker = test_mailing_timing.mailing_worker  # the same workers, as a fixture of this module too


async def test_pause_and_resume_during_a_delayed_start_still_start_at_start_at(
    time_skipping_env: WorkflowEnvironment, mailing_worker: tuple[str, RecordingProvider]
) -> None:
    queue, provider = mailing_worker
    env, mailing_id = time_skipping_env, f"later-{uuid.uuid4().hex[:6]}"
    start_at = (await env.get_current_time()) + timedelta(days=3)
    handle = await env.client.start_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec(start_at.isoformat())),
        id=mailing_workflow_id(mailing_id),
        task_queue=queue,
    )
    for _ in range(100):
        if (await handle.query(MailingWorkflow.summary)).status == "waiting":
            break
    assert await handle.execute_update(MailingWorkflow.pause) == "paused"
    assert await handle.execute_update(MailingWorkflow.resume) == "resumed"
    resumed = await handle.query(MailingWorkflow.summary)
    assert (resumed.status, resumed.dispatched) == ("waiting", 0)  # still days before start_at

    summary = await handle.result()
    assert summary.status == "completed" and summary.dispatched == 3 and len(provider.requests) == 3
    for phone in NUMBERS:
        recipient = env.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone))
        state = await recipient.query(RecipientCascadeWorkflow.state)
        assert state.steps[0].sent_at is not None and state.steps[0].sent_at >= start_at
    # The import heartbeats, so the workflow gives it a heartbeat timeout: a dead worker is noticed in seconds.
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in (await handle.fetch_history()).events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    imports = [a for a in scheduled if a.activity_type.name == "import_recipients"]
    assert [a.heartbeat_timeout.ToTimedelta() for a in imports] == [HEARTBEAT]


async def test_the_import_heartbeats_while_it_parses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def slow_import(*args: Any) -> ImportReport:
        time.sleep(0.5)  # a big file: the parsing thread is busy, the event loop is free
        return ImportReport(valid=1)

    monkeypatch.setattr(activities.recipients, "import_recipients", slow_import)
    monkeypatch.setattr(activities.recipients, "HEARTBEAT_EVERY", 0.1, raising=False)
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    request = ImportRequest(mailing_id="big", spec=spec("2030-01-01T10:00"))
    report = await env.run(RecipientActivities(tmp_path).import_recipients, request)
    assert report.valid == 1
    assert len(beats) >= 3  # about every 0.1 s of the 0.5 s parse
