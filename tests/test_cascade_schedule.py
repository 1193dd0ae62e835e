"""The recipient cascade's timing on the time-skipping server: windows, zones, end date, pause and cancel.

The test server's clock moves ahead as tests skip time, so windows are placed relative to its current time
(in UTC hours).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.models import Control, RecipientInput, RecipientState
from domain.schedule import Schedule
from domain.spec import CascadePlan, Step
from domain.status import CascadeStatus, Channel, MessageStatus
from tests.test_cascade import Cascade, CascadeRunner
from workflows.recipient import RecipientCascadeWorkflow

StartTimed = Callable[..., Awaitable[Cascade]]


def hhmm(moment: datetime) -> str:
    return f"{moment.hour:02}:{moment.minute:02}"


async def window_from_now(env: WorkflowEnvironment, start_in: timedelta, length: timedelta) -> tuple[datetime, str]:
    """A daily UTC window opening `start_in` from the server's now (to the minute) and `length` long."""
    start = (await env.get_current_time() + start_in).replace(second=0, microsecond=0)
    return start, f"{hhmm(start)}-{hhmm(start + length)}"


def timed_plan(*waits: timedelta, **plan: Any) -> CascadePlan:
    channels = [Channel.VIBER, Channel.SMS]
    steps = [Step(channel=channels[i % 2], sender="Shop", text="Hi", wait=wait) for i, wait in enumerate(waits)]
    return CascadePlan(provider="sandbox", late_reports=timedelta(0), steps=steps, **plan)


@pytest.fixture
async def timed(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[StartTimed]:
    async with CascadeRunner(time_skipping_env).running() as runner:

        async def start(plan: CascadePlan, zones: list[str] | None = None) -> Cascade:
            return await runner.start(RecipientInput(mailing_id="m1", phone="+79990000001", plan=plan, zones=zones))

        yield start


def sent_at(state: RecipientState, step: int) -> datetime:
    moment = state.steps[step].sent_at
    assert moment is not None, f"step {step} was not sent"
    return moment


async def test_the_first_send_waits_for_the_window(timed: StartTimed, time_skipping_env: WorkflowEnvironment) -> None:
    opens, hours = await window_from_now(time_skipping_env, timedelta(hours=2), timedelta(hours=1))
    cascade = await timed(timed_plan(timedelta(minutes=1), schedule=Schedule(hours=hours, timezone="UTC")))
    state = await cascade.result()
    assert opens <= sent_at(state, 0) < opens + timedelta(minutes=1)
    assert state.status is CascadeStatus.UNDELIVERED  # nobody reported: timed out, no fallback left


async def test_a_fallback_due_after_the_window_waits_for_the_next_days_window(
    timed: StartTimed, time_skipping_env: WorkflowEnvironment
) -> None:
    opens, hours = await window_from_now(time_skipping_env, timedelta(hours=1), timedelta(minutes=30))
    plan = timed_plan(timedelta(hours=1), timedelta(minutes=1), schedule=Schedule(hours=hours, timezone="UTC"))
    state = await (await timed(plan)).result()
    assert opens <= sent_at(state, 0) < opens + timedelta(minutes=1)
    tomorrow = opens + timedelta(days=1)
    assert tomorrow <= sent_at(state, 1) < tomorrow + timedelta(minutes=1)


async def test_several_candidate_zones_send_only_when_every_zone_allows(timed: StartTimed) -> None:
    """Kaliningrad (UTC+2) and Kamchatka (UTC+12): 10:00-23:00 in both is 08:00-11:00 UTC."""
    plan = timed_plan(timedelta(minutes=1), schedule=Schedule(timezone="subscriber"))
    state = await (await timed(plan, zones=["Europe/Kaliningrad", "Asia/Kamchatka"])).result()
    assert 8 <= sent_at(state, 0).astimezone(UTC).hour < 11


async def test_the_end_date_cuts_the_cascade_between_steps(
    timed: StartTimed, time_skipping_env: WorkflowEnvironment
) -> None:
    end_at = await time_skipping_env.get_current_time() + timedelta(minutes=30)
    cascade = await timed(timed_plan(timedelta(hours=1), timedelta(minutes=5), end_at=end_at))
    state = await cascade.result()
    assert state.steps[0].status is MessageStatus.SENT
    assert state.steps[1].status is MessageStatus.NOT_SENT and state.steps[1].error == "end date reached"
    assert state.status is CascadeStatus.UNDELIVERED
    assert len(cascade.provider.requests) == 1
    assert state.steps[1].failed_at is not None and state.steps[1].failed_at < end_at + timedelta(minutes=1)


async def test_pause_holds_the_fallback_until_resumed(
    timed: StartTimed, time_skipping_env: WorkflowEnvironment
) -> None:
    cascade = await timed(timed_plan(timedelta(minutes=5), timedelta(minutes=5)))
    await cascade.sends(1)
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=1, paused=True))
    await time_skipping_env.sleep(timedelta(hours=2))  # the fallback fell due long ago
    assert len(cascade.provider.requests) == 1
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=1, paused=False))  # stale
    await time_skipping_env.sleep(timedelta(minutes=1))
    assert len(cascade.provider.requests) == 1
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=2, paused=False))
    await cascade.sends(2)
    assert (await cascade.state()).steps[1].status is MessageStatus.SENT


async def test_cancel_during_a_wait_marks_the_rest_not_sent(timed: StartTimed) -> None:
    cascade = await timed(timed_plan(timedelta(hours=1), timedelta(minutes=5)))
    await cascade.sends(1)
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=1, cancelled=True))
    state = await cascade.result()
    assert state.steps[1].status is MessageStatus.NOT_SENT and state.steps[1].error == "cancelled"
    assert state.status is CascadeStatus.UNDELIVERED and len(cascade.provider.requests) == 1


async def test_cancel_before_the_window_sends_nothing(
    timed: StartTimed, time_skipping_env: WorkflowEnvironment
) -> None:
    _, hours = await window_from_now(time_skipping_env, timedelta(hours=3), timedelta(hours=1))
    cascade = await timed(timed_plan(timedelta(minutes=1), schedule=Schedule(hours=hours, timezone="UTC")))
    await cascade.handle.signal(RecipientCascadeWorkflow.control, Control(version=1, cancelled=True))
    state = await cascade.result()
    assert state.status is CascadeStatus.NOT_SENT and cascade.provider.requests == []
