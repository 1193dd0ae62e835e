"""Issue 9: nothing is sent that must not be — success reported during a hold, pause/cancel/end date during a
provider outage, a send queued behind the rate cap, a text that cannot be rendered, forged or repeated reports.

Each test failed on the code before the fix (see the README's test notes); all run on the time-skipping
server with the recording provider of tests/test_cascade.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.send import HEARTBEAT_TIMEOUT, SEND_GIVE_UP_AFTER
from domain.models import Control, DeliveryReport, RecipientInput, SendRequest
from domain.schedule import Schedule
from domain.spec import CascadePlan
from domain.status import CascadeStatus, Channel, MessageStatus
from providers.base import ProviderUnavailable
from runtime.devstack import Stack
from tests.test_cascade import Cascade, CascadeRunner, RecordingProvider, plan
from tests.test_cascade_schedule import timed_plan, window_from_now
from workflows.recipient import RecipientCascadeWorkflow

D, S = MessageStatus.DELIVERED, MessageStatus.SENT
FOREVER = 10**9
PAUSE, RESUME, CANCEL = Control(version=1, paused=True), Control(version=2), Control(version=1, cancelled=True)


@pytest.fixture
async def runner(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[CascadeRunner]:
    async with CascadeRunner(time_skipping_env).running() as running:
        yield running


async def start(runner: CascadeRunner, recipient_plan: CascadePlan, **fields: object) -> Cascade:
    recipient = RecipientInput.model_validate(
        {"mailing_id": "m1", "phone": "+79990000001", "variables": {"name": "Anna"}, "plan": recipient_plan} | fields
    )
    return await runner.start(recipient)


async def control(cascade: Cascade, command: Control) -> None:
    await cascade.handle.signal(RecipientCascadeWorkflow.control, command)


async def settled(provider: RecordingProvider) -> int:
    """The number of sends once no new one came for a while (real time: activities run in real time)."""
    count = -1
    while count != len(provider.requests):
        count = len(provider.requests)
        await asyncio.sleep(1.5)
    return count


# --- 1. a success reported during a hold ---------------------------------------------------------------------


async def test_a_success_reported_while_the_fallback_waits_for_the_window_sends_no_fallback(
    runner: CascadeRunner, time_skipping_env: WorkflowEnvironment
) -> None:
    """Viber sent late in the window, its wait ends outside it: the SMS waits for tomorrow. Viber's
    `delivered` comes in the night, so no SMS may go out in the morning."""
    _, hours = await window_from_now(time_skipping_env, timedelta(minutes=10), timedelta(minutes=30))
    schedule = Schedule(hours=hours, timezone="UTC")
    cascade = await start(runner, timed_plan(timedelta(hours=1), timedelta(minutes=5), schedule=schedule))
    await time_skipping_env.sleep(timedelta(minutes=15))
    await cascade.sends(1)
    await time_skipping_env.sleep(timedelta(hours=2))  # Viber timed out; the SMS is held until tomorrow
    held = await cascade.state()
    assert held.steps[0].timed_out and held.steps[1].status is MessageStatus.PENDING
    await cascade.report(0, D)
    state = await cascade.result()
    assert len(cascade.provider.requests) == 1
    assert state.status is CascadeStatus.DELIVERED and state.delivered_channel is Channel.VIBER
    assert state.steps[1].status is MessageStatus.PENDING and not state.steps[1].handed_over


async def test_a_success_reported_while_paused_sends_no_fallback(
    runner: CascadeRunner, time_skipping_env: WorkflowEnvironment
) -> None:
    cascade = await start(runner, timed_plan(timedelta(minutes=5), timedelta(minutes=5)))
    await cascade.sends(1)
    await control(cascade, PAUSE)
    await time_skipping_env.sleep(timedelta(minutes=30))  # the fallback fell due while paused
    await cascade.report(0, D)
    await control(cascade, RESUME)
    state = await cascade.result()
    assert len(cascade.provider.requests) == 1 and state.delivered_channel is Channel.VIBER


@pytest.mark.e2e
async def test_a_success_reported_while_the_fallback_waits_in_its_queue_withdraws_it(stack: Stack) -> None:
    """The SMS waits in its provider's queue (behind the rate cap; here no worker takes it at all) when
    Viber's late `delivered` comes: the queued SMS is withdrawn, never sent."""
    async with CascadeRunner(cast(WorkflowEnvironment, stack)).running() as runner:
        steps = timed_plan(timedelta(seconds=2), timedelta(minutes=5)).steps
        queued_sms = steps[1].model_copy(update={"provider": "unserved"})
        cascade = await start(
            runner, timed_plan(timedelta(seconds=2)).model_copy(update={"steps": [steps[0], queued_sms]})
        )
        await cascade.sends(1)
        await asyncio.sleep(4)  # Viber timed out; the SMS is scheduled on a queue nobody polls
        await cascade.report(0, D)
        state = await cascade.result()
    assert state.delivered_channel is Channel.VIBER and not state.steps[1].handed_over
    assert len(runner.provider.requests) == 1


async def test_a_pause_is_acknowledged_only_once_the_request_in_flight_is_answered(runner: CascadeRunner) -> None:
    """A recipient answers the mailing's pause (the `apply_control` update) only when it has no send out: a
    request already at the provider finishes and is recorded first, so after the answer nothing leaves."""
    answer = asyncio.Event()

    async def hold_the_answer(_request: SendRequest) -> None:
        await answer.wait()

    runner.provider.on_send = hold_the_answer
    cascade = await start(runner, plan())
    await cascade.sends(1)
    pausing = asyncio.create_task(cascade.handle.execute_update(RecipientCascadeWorkflow.apply_control, PAUSE))
    await asyncio.sleep(2)
    assert not pausing.done()  # the Viber request is still at the provider
    answer.set()
    await asyncio.wait_for(pausing, timeout=30)
    state = await cascade.state()
    assert state.steps[0].status is S and state.steps[0].handed_over  # sent and recorded, then paused
    await cascade.report(0, D)
    await control(cascade, RESUME)
    assert (await cascade.result()).delivered_channel is Channel.VIBER


# --- 3. pause, cancel and the end date stop a send that is retrying -------------------------------------------


async def test_cancel_during_a_provider_outage_stops_the_send_at_once(runner: CascadeRunner) -> None:
    runner.provider.failures_before_success = FOREVER
    cascade = await start(runner, plan())
    await cascade.sends(1)
    await control(cascade, CANCEL)
    state = await cascade.result()
    tried = await settled(runner.provider)
    assert [s.status for s in state.steps] == [MessageStatus.NOT_SENT, MessageStatus.NOT_SENT]
    assert state.steps[0].error == "cancelled" and state.status is CascadeStatus.NOT_SENT
    await asyncio.sleep(3)
    assert len(runner.provider.requests) == tried  # nothing is tried after the cancel


async def test_pause_during_a_provider_outage_sends_nothing_until_resumed(
    runner: CascadeRunner, time_skipping_env: WorkflowEnvironment
) -> None:
    runner.provider.failures_before_success = FOREVER
    cascade = await start(runner, plan())
    await cascade.sends(1)
    await control(cascade, PAUSE)
    tried = await settled(runner.provider)
    runner.provider.failures_before_success = 0  # the provider is back, but the mailing is paused
    await time_skipping_env.sleep(timedelta(hours=2))
    await asyncio.sleep(3)
    assert len(runner.provider.requests) == tried
    assert (await cascade.state()).steps[0].status is MessageStatus.PENDING
    await control(cascade, RESUME)
    await cascade.sends(tried + 1)
    await cascade.report(0, D)
    state = await cascade.result()
    assert state.delivered_channel is Channel.VIBER and state.steps[0].sent_at is not None


@pytest.mark.e2e
async def test_the_end_date_stops_a_send_that_is_retrying(stack: Stack) -> None:
    """On the real dev server (real time: the end date is a few seconds away and the activity checks it too)."""
    async with CascadeRunner(cast(WorkflowEnvironment, stack)).running() as runner:
        runner.provider.failures_before_success = FOREVER
        end_at = datetime.now(UTC) + timedelta(seconds=4)
        cascade = await start(runner, timed_plan(timedelta(minutes=5), timedelta(minutes=5), end_at=end_at))
        await cascade.sends(1)
        state = await cascade.result()
        assert [s.status for s in state.steps] == [MessageStatus.NOT_SENT, MessageStatus.NOT_SENT]
        assert state.steps[0].error == "end date reached"
        tried = await settled(runner.provider)
        assert all(request.not_after == end_at for request in runner.provider.requests)
        await asyncio.sleep(3)
        assert len(runner.provider.requests) == tried


@pytest.mark.e2e
async def test_cancel_ends_a_send_that_no_worker_serves(stack: Stack) -> None:
    """A provider account no send worker polls: the send waits in its queue, and cancel still ends it. (On the
    dev server: on the time-skipping server an activity nobody polls stops time skipping for later tests.)"""
    async with CascadeRunner(cast(WorkflowEnvironment, stack)).running() as runner:
        cascade = await start(runner, plan().model_copy(update={"provider": "unserved"}))
        await asyncio.sleep(1)
        await control(cascade, CANCEL)
        state = await cascade.result()
    assert state.steps[0].status is MessageStatus.NOT_SENT and state.steps[0].error == "cancelled"


# --- 5. time queued behind the rate cap is not an outage ------------------------------------------------------


async def test_time_in_the_send_queue_does_not_count_as_an_outage(runner: CascadeRunner) -> None:
    """A backlog behind the provider's rate cap (or its worker away for hours) is no provider failure: the send
    has no schedule-to-close timeout; the activity measures the outage itself, from its first failure."""
    cascade = await start(runner, plan())
    await cascade.sends(1)
    await cascade.report(0, D)
    await cascade.result()
    history = await cascade.handle.fetch_history()
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_message"
    ]
    assert scheduled.schedule_to_close_timeout.seconds >= timedelta(days=365).total_seconds()  # unset: no limit
    assert scheduled.start_to_close_timeout.seconds > SEND_GIVE_UP_AFTER.total_seconds()
    assert scheduled.heartbeat_timeout.seconds == HEARTBEAT_TIMEOUT.total_seconds()
    assert scheduled.retry_policy.maximum_attempts == 1  # outage retries happen in the activity, see send.py


# --- 4. at most once: an answer that may hide an accepted message is not retried ---------------------------


async def test_a_502_from_a_provider_that_does_not_deduplicate_is_not_retried(runner: CascadeRunner) -> None:
    """A 502 (a gateway whose backend may have created the message) is retried only where the provider
    de-duplicates; otherwise the step counts as sent, unconfirmed, and its report decides."""
    runner.provider.deduplicates = False
    runner.provider.failures_before_success = 1
    runner.provider.failure = ProviderUnavailable("502 from provider", may_have_arrived=True)
    cascade = await start(runner, plan())
    await cascade.sends(1)
    await cascade.report(0, D)
    state = await cascade.result()
    assert len(runner.provider.requests) == 1
    assert state.steps[0].unconfirmed and state.steps[0].handed_over and state.delivered_channel is Channel.VIBER


# --- 8. a text that cannot be rendered; reports for steps never sent; repeated reports ------------------------


async def test_a_missing_variable_ends_the_recipient_as_not_sent(runner: CascadeRunner) -> None:
    cascade = await start(runner, plan(), variables={})
    state = await cascade.result()
    assert state.status is CascadeStatus.NOT_SENT and runner.provider.requests == []
    assert state.steps[0].error == "no value for variable {name}"


async def test_a_report_for_a_step_not_sent_yet_is_ignored(runner: CascadeRunner) -> None:
    cascade = await start(runner, plan())
    await cascade.sends(1)
    await cascade.report(1, D)  # the SMS was never sent: a forged or misrouted report
    state = await cascade.state()
    assert state.steps[1].status is MessageStatus.PENDING and state.steps[1].reports == 0
    assert state.status is CascadeStatus.IN_PROGRESS


async def test_a_report_batch_signalled_twice_counts_once(runner: CascadeRunner) -> None:
    """The gateway signals a provider's batch again when the provider retries it after one failure."""
    cascade = await start(runner, plan())
    await cascade.sends(1)
    batch = [DeliveryReport(step=0, status=S, message_id="x"), DeliveryReport(step=0, status=D, message_id="x")]
    for _ in range(2):
        for report in batch:
            await cascade.handle.signal(RecipientCascadeWorkflow.report, report)
    state = await cascade.result()
    assert state.steps[0].reports == 2 and state.delivered_channel is Channel.VIBER
