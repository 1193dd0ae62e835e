"""The control broadcast against real servers and real recipient workflows held before their first send.

Refusals are injected with a client interceptor, where a rate-limited frontend's answer would surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowUpdateHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import control
from activities.control import ControlActivities
from domain.models import BroadcastRequest, Control, RecipientInput
from domain.refs import recipient_workflow_id
from domain.schedule import Schedule
from domain.spec import CascadePlan
from recipients.importer import stored_list_path
from runtime.devstack import Stack
from tests.test_cascade import Cascade, CascadeRunner
from tests.test_cascade_schedule import hhmm, timed_plan
from workflows.recipient import RecipientCascadeWorkflow
from workflows.search_attributes import MAILING_ID

PHONES = [f"+7999555000{i}" for i in range(6)]
CANCEL = Control(version=1, cancelled=True)


class FlakySignals(Interceptor):
    """Refuses the first `failures` control updates to each of `failing` with RESOURCE_EXHAUSTED, as a
    rate-limited frontend does; records the workflow id of each one that went through."""

    def __init__(self, failing: Iterable[str] = (), failures: int = 0) -> None:
        self.left = dict.fromkeys(failing, failures)
        self.delivered: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _FlakyOutbound(next, self)


class _FlakyOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, owner: FlakySignals) -> None:
        super().__init__(next)
        self._owner = owner

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        if self._owner.left.get(input.id, 0) > 0:
            self._owner.left[input.id] -= 1
            raise RPCError("namespace rate limit exceeded", RPCStatusCode.RESOURCE_EXHAUSTED, b"")
        handle = await super().start_workflow_update(input)
        self._owner.delivered.append(input.id)
        return handle


def intercepted(client: Client, interceptor: Interceptor) -> Client:
    config = client.config()
    config["interceptors"] = [interceptor]
    return Client(**config)


def held_plan(now: datetime) -> CascadePlan:
    """One step whose daily window opens two hours from `now`: the recipient holds, nothing is sent."""
    opens = now + timedelta(hours=2)
    hours = f"{hhmm(opens)}-{hhmm(opens + timedelta(hours=1))}"
    return timed_plan(timedelta(minutes=1), schedule=Schedule(hours=hours, timezone="UTC"))


async def dispatch(client: Client, queue: str, data_dir: Path, mailing_id: str, now: datetime, count: int) -> int:
    """Store PHONES as the mailing's list and start the first `count`, held, as the dispatch activity does
    (its own pacing is beside the point here); returns how many were started, not found already started."""
    path = stored_list_path(data_dir, mailing_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"row": i, "phone": p, "vars": {}}) + "\n" for i, p in enumerate(PHONES)))
    started = 0
    for phone in PHONES[:count]:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await client.start_workflow(
                RecipientCascadeWorkflow.run,
                RecipientInput(mailing_id=mailing_id, phone=phone, plan=held_plan(now)),
                id=recipient_workflow_id(mailing_id, phone),
                task_queue=queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes([SearchAttributePair(MAILING_ID, mailing_id)]),
            )
            started += 1
    return started


async def outcome(client: Client, mailing_id: str, phone: str) -> str:
    """What became of a held recipient: "cancelled" when the control reached it."""
    handle = client.get_workflow_handle_for(RecipientCascadeWorkflow.run, recipient_workflow_id(mailing_id, phone))
    try:
        state = await asyncio.wait_for(handle.result(), timeout=20)
    except TimeoutError:
        return "still held"
    return state.steps[0].error or state.status.value


async def outcomes(client: Client, mailing_id: str, phones: Iterable[str]) -> list[str]:
    return list(await asyncio.gather(*(outcome(client, mailing_id, p) for p in phones)))


@pytest.fixture
async def on_stack(stack: Stack) -> AsyncIterator[str]:
    """A fresh mailing id whose recipients run on the stack's worker; they are terminated at the end."""
    mailing_id = f"control-{uuid.uuid4().hex[:6]}"
    yield mailing_id
    for phone in PHONES:
        with contextlib.suppress(RPCError):
            await stack.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone)).terminate()


@pytest.mark.e2e
async def test_a_refused_signal_is_tried_again(stack: Stack, on_stack: str, tmp_path: Path) -> None:
    client, mailing_id = stack.client, on_stack
    await dispatch(client, stack.settings.task_queue, tmp_path, mailing_id, datetime.now(UTC), len(PHONES))
    flaky = FlakySignals([recipient_workflow_id(mailing_id, p) for p in PHONES[::2]], failures=2)
    broadcast = ControlActivities(intercepted(client, flaky), tmp_path).broadcast

    delivered = await ActivityEnvironment().run(broadcast, BroadcastRequest(mailing_id=mailing_id, control=CANCEL))

    assert await outcomes(client, mailing_id, PHONES) == ["cancelled"] * len(PHONES)
    assert delivered == len(PHONES)


@pytest.mark.e2e
async def test_a_signal_refused_for_good_fails_the_attempt_and_the_retry_resumes(
    stack: Stack, on_stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"BATCH": 2, "TRIES": 3, "FIRST_BACKOFF": 0.01}.items():
        monkeypatch.setattr(control, name, value, raising=False)
    client, mailing_id = stack.client, on_stack
    ids = [recipient_workflow_id(mailing_id, p) for p in PHONES]
    await dispatch(client, stack.settings.task_queue, tmp_path, mailing_id, datetime.now(UTC), len(PHONES))
    flaky = FlakySignals([ids[3]], failures=3)  # each try of the first attempt
    broadcast = ControlActivities(intercepted(client, flaky), tmp_path).broadcast
    request = BroadcastRequest(mailing_id=mailing_id, control=CANCEL)

    beats: list[tuple[int, ...]] = []
    first = ActivityEnvironment()
    first.on_heartbeat = lambda *details: beats.append(details)
    with pytest.raises(RPCError) as refused:
        await first.run(broadcast, request)
    assert refused.value.status == RPCStatusCode.RESOURCE_EXHAUSTED
    assert beats == [(2, 2)]  # the first batch; the second failed at its second recipient

    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=list(beats[-1]), attempt=2)
    resumed = await retry.run(broadcast, request)

    assert await outcomes(client, mailing_id, PHONES) == ["cancelled"] * len(PHONES)
    # Recipient 2, in the failed batch, is signalled again unless it closed (cancelled) in between.
    again = flaky.delivered.count(ids[2]) - 1
    assert Counter(flaky.delivered) == Counter(ids) + Counter([ids[2]] * again)
    assert resumed == 2 + 3 + again


@pytest.mark.e2e
async def test_a_retry_resumes_from_its_heartbeat_and_stops_at_upto(
    stack: Stack, on_stack: str, tmp_path: Path
) -> None:
    client, mailing_id = stack.client, on_stack
    ids = [recipient_workflow_id(mailing_id, p) for p in PHONES]
    await dispatch(client, stack.settings.task_queue, tmp_path, mailing_id, datetime.now(UTC), len(PHONES))
    counting = FlakySignals()
    broadcast = ControlActivities(intercepted(client, counting), tmp_path).broadcast

    beats: list[tuple[int, ...]] = []
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=[3, 3], attempt=2)
    retry.on_heartbeat = lambda *details: beats.append(details)
    delivered = await retry.run(broadcast, BroadcastRequest(mailing_id=mailing_id, control=CANCEL, upto=5))

    assert sorted(counting.delivered) == ids[3:5]  # neither those before the heartbeat nor those from upto on
    assert (delivered, beats) == (5, [(5, 5)])
    assert await outcomes(client, mailing_id, PHONES[3:5]) == ["cancelled"] * 2


async def test_just_started_recipients_get_it_closed_and_unstarted_ones_are_skipped(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    env, mailing_id = time_skipping_env, f"control-{uuid.uuid4().hex[:6]}"
    closed, held, unstarted = PHONES[0], PHONES[1:4], PHONES[4:]
    async with CascadeRunner(env).running() as runner:
        try:
            handle = await env.client.start_workflow(
                RecipientCascadeWorkflow.run,
                RecipientInput(mailing_id=mailing_id, phone=closed, plan=timed_plan(timedelta(minutes=1))),
                id=recipient_workflow_id(mailing_id, closed),
                task_queue=runner.queue,
            )
            assert (await Cascade(env, runner.provider, handle).result()).steps[0].sent_at is not None  # closed

            now = await env.get_current_time()
            assert await dispatch(env.client, runner.queue, tmp_path, mailing_id, now, 4) == 3
            # At once, with no allowance for visibility: this server has none at all.
            broadcast = ControlActivities(env.client, tmp_path).broadcast
            request = BroadcastRequest(mailing_id=mailing_id, control=CANCEL)
            delivered = await ActivityEnvironment().run(broadcast, request)

            assert await outcomes(env.client, mailing_id, held) == ["cancelled"] * len(held)
            assert delivered == len(held)
            for phone in unstarted:
                with pytest.raises(RPCError) as missing:
                    await env.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone)).describe()
                assert missing.value.status == RPCStatusCode.NOT_FOUND
        finally:  # an open recipient would keep the test server from skipping time in later tests
            for phone in held:
                with contextlib.suppress(RPCError):
                    await env.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone)).terminate()
