"""The recipient cascade on Temporal's time-skipping server.

The provider is a recording stand-in (the outside world); reports are signalled exactly as the gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import cast

import pytest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ledger import LedgerActivities
from activities.schedule import next_send_window
from activities.send import SendActivities
from domain.models import DeliveryReport, RecipientInput, RecipientState, SendRequest, SendResult
from domain.refs import ClientRef, send_task_queue
from domain.spec import CascadePlan, Step
from domain.status import CascadeStatus, Channel, MessageStatus
from providers.base import ProviderAdapter, ProviderUnavailable
from workflows.recipient import RecipientCascadeWorkflow

VIBER_WAIT = timedelta(minutes=5)
SMS_WAIT = timedelta(minutes=10)
D, R, U, S = MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.UNDELIVERED, MessageStatus.SENT


class RecordingProvider:
    """Stands in for a provider: records each send; can refuse, fail, or report from inside the send."""

    name = "sandbox"
    deduplicates = True

    def __init__(self) -> None:
        self.requests: list[SendRequest] = []
        self.reject_channels: set[Channel] = set()
        self.failures_before_success = 0
        self.failure = ProviderUnavailable("503 from provider", retry_after=1)
        self.on_send: Callable[[SendRequest], Awaitable[None]] | None = None

    async def send(self, request: SendRequest) -> SendResult:
        self.requests.append(request)
        if self.failures_before_success > 0:
            self.failures_before_success -= 1
            raise self.failure
        if request.channel in self.reject_channels:
            return SendResult(rejected="not a viber user")
        if self.on_send is not None:
            await self.on_send(request)
        return SendResult(message_id=f"msg-{request.client_ref}")

    def parse_webhook(self, request: object) -> list[object]:
        raise NotImplementedError

    async def was_received(self, request: SendRequest) -> bool | None:
        return None


def plan(viber_expect: MessageStatus = D) -> CascadePlan:
    return CascadePlan(
        provider="sandbox",
        late_reports=timedelta(minutes=10),
        steps=[
            Step(channel=Channel.VIBER, sender="Shop", text="Hi {name}", wait=VIBER_WAIT, expect=viber_expect),
            Step(channel=Channel.SMS, sender="Shop", text="Hi {name}, sms", wait=SMS_WAIT),
        ],
    )


class Cascade:
    """One running recipient workflow and the levers a test pulls."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        provider: RecordingProvider,
        handle: WorkflowHandle[RecipientCascadeWorkflow, RecipientState],
    ) -> None:
        self.env, self.provider, self.handle = env, provider, handle

    async def report(self, step: int, *statuses: MessageStatus) -> None:
        for status in statuses:
            await self.handle.signal(RecipientCascadeWorkflow.report, DeliveryReport(step=step, status=status))

    async def sends(self, count: int, *, allow_timeout: timedelta | None = None) -> None:
        """Wait (in real time, up to 15 s: CI machines can be slow) until `count` messages were sent.

        With `allow_timeout`, first wait until the step that must time out is handed over — its wait timer
        is then running — and skip that much time once."""
        if allow_timeout is not None:
            for _ in range(1500):
                if (await self.state()).steps[count - 2].handed_over:
                    break
                await asyncio.sleep(0.01)
            await self.env.sleep(allow_timeout)
        for _ in range(1500):
            if len(self.provider.requests) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {count} sends, saw {len(self.provider.requests)}")

    async def result(self) -> RecipientState:
        """The workflow's result, time skipped; a test that cannot get it fails within a minute, not at CI's end."""
        return await asyncio.wait_for(self.handle.result(), timeout=60)

    async def state(self) -> RecipientState:
        return await self.handle.query(RecipientCascadeWorkflow.state)


StartCascade = Callable[..., Awaitable[Cascade]]


class CascadeRunner:
    """Workers for recipient workflows (with the window local activity) and for the provider's send queue;
    starts recipients and terminates whatever is still open at the end."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env, self.provider, self.queue = env, RecordingProvider(), f"cascade-{uuid.uuid4().hex[:8]}"
        self.started: list[Cascade] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CascadeRunner]:
        client = self.env.client
        async with (
            Worker(
                client,
                task_queue=self.queue,
                workflows=[RecipientCascadeWorkflow],
                activities=[next_send_window, *LedgerActivities(None).all()],
            ),
            Worker(
                client,
                task_queue=send_task_queue(self.queue, "sandbox"),
                activities=[SendActivities({"sandbox": cast(ProviderAdapter, self.provider)}).send],
            ),
        ):
            try:
                yield self
            finally:
                # A workflow left open (a failed test's too) would hold timers or activities nobody polls, and
                # such pending tasks stop the test server from skipping time for the next test.
                for cascade in self.started:
                    with contextlib.suppress(RPCError):
                        await cascade.handle.terminate("test finished")

    async def start(self, recipient: RecipientInput) -> Cascade:
        handle = await self.env.client.start_workflow(
            RecipientCascadeWorkflow.run,
            recipient,
            id=f"mailing-m1/{recipient.phone}/{uuid.uuid4().hex[:6]}",
            task_queue=self.queue,
        )
        self.started.append(Cascade(self.env, self.provider, handle))
        return self.started[-1]


@pytest.fixture
async def cascade_factory(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[StartCascade]:
    async with CascadeRunner(time_skipping_env).running() as runner:

        async def start(phone: str = "+79990000001", viber_expect: MessageStatus = D) -> Cascade:
            variables = {"name": "Anna"}
            return await runner.start(
                RecipientInput(mailing_id="m1", phone=phone, variables=variables, plan=plan(viber_expect))
            )

        yield start


# The sandbox table, written out independently of sandbox/outcomes.py:
# last digit → (viber reports, sms reports, expect=delivered outcome, expect=read outcome)
ROWS = {
    0: ((D, R), (D,), "viber", "viber"),
    3: ((D, R), (D,), "viber", "viber"),
    4: ((D,), (D,), "viber", "sms"),
    5: ((D,), (D,), "viber", "sms"),
    6: ((U,), (D,), "sms", "sms"),
    7: ((U,), (D,), "sms", "sms"),
    8: ((), (D,), "sms", "sms"),
    9: ((), (U,), None, None),
}


@pytest.mark.parametrize("expect", [D, R], ids=["expect-delivered", "expect-read"])
@pytest.mark.parametrize("digit", sorted(ROWS))
async def test_each_sandbox_row(cascade_factory: StartCascade, digit: int, expect: MessageStatus) -> None:
    viber_reports, sms_reports, by_delivered, by_read = ROWS[digit]
    expected_channel = by_delivered if expect is D else by_read
    cascade: Cascade = await cascade_factory(f"+7999000000{digit}", expect)
    await cascade.sends(1)
    await cascade.report(0, *viber_reports)
    if expected_channel != "viber":
        await cascade.sends(2, allow_timeout=VIBER_WAIT)
        await cascade.report(1, *sms_reports)
    state = await cascade.result()

    assert state.delivered_channel == (Channel(expected_channel) if expected_channel else None)
    assert state.status is (CascadeStatus.DELIVERED if expected_channel else CascadeStatus.UNDELIVERED)
    assert [r.channel for r in cascade.provider.requests] == [Channel.VIBER, Channel.SMS][
        : 1 if expected_channel == "viber" else 2
    ]
    assert state.steps[0].status is (viber_reports[-1] if viber_reports else S)
    assert [r.client_ref for r in cascade.provider.requests] == [
        f"m1/+7999000000{digit}/{i}" for i in range(len(cascade.provider.requests))
    ]


async def test_report_before_the_wait_starts(
    cascade_factory: StartCascade, time_skipping_env: WorkflowEnvironment
) -> None:
    cascade: Cascade = await cascade_factory()

    async def report_during_send(request: SendRequest) -> None:
        await cascade.report(ClientRef.parse(request.client_ref).step, D)

    cascade.provider.on_send = report_during_send
    state = await cascade.result()
    assert state.status is CascadeStatus.DELIVERED and state.delivered_channel is Channel.VIBER
    assert state.steps[0].status is D and not state.steps[0].timed_out
    assert len(cascade.provider.requests) == 1


async def test_duplicate_and_out_of_order_reports_only_move_forward(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory(viber_expect=R)
    await cascade.sends(1)
    await cascade.report(0, R, D, S, D, R, U)
    state = await cascade.result()
    viber = state.steps[0]
    assert viber.status is R and viber.reports == 4  # the repeated D and R are the same reports again
    assert viber.read_at is not None and viber.delivered_at is not None and viber.failed_at is None
    assert state.delivered_channel is Channel.VIBER and len(cascade.provider.requests) == 1


async def test_explicit_failure_falls_back_before_the_timer(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    await cascade.sends(1)
    await cascade.report(0, U)
    await cascade.sends(2)  # no time skipped: the fallback came from the report, not the timer
    state = await cascade.state()
    viber, sms = state.steps
    assert viber.status is U and not viber.timed_out
    assert sms.sent_at is not None and viber.sent_at is not None
    assert sms.sent_at - viber.sent_at < VIBER_WAIT / 10


async def test_timeout_falls_back(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    await cascade.sends(1)
    await cascade.sends(2, allow_timeout=VIBER_WAIT)
    state = await cascade.state()
    viber, sms = state.steps
    assert viber.timed_out and viber.status is S
    assert sms.sent_at is not None and viber.sent_at is not None
    assert sms.sent_at - viber.sent_at >= VIBER_WAIT


async def test_last_step_failing_leaves_the_recipient_undelivered(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    await cascade.sends(1)
    await cascade.report(0, U)
    await cascade.sends(2)
    await cascade.report(1, U)
    state = await cascade.result()
    assert state.status is CascadeStatus.UNDELIVERED and state.delivered_channel is None
    assert [s.status for s in state.steps] == [U, U]


async def test_late_report_of_an_earlier_step_is_recorded(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    await cascade.sends(1)
    await cascade.sends(2, allow_timeout=VIBER_WAIT)
    await cascade.report(0, D)  # Viber arrives after the SMS went out: double delivery, recorded
    await cascade.report(1, D)
    state = await cascade.result()
    viber, sms = state.steps
    assert viber.status is D and viber.timed_out and viber.delivered_at is not None
    assert sms.status is D
    assert state.status is CascadeStatus.DELIVERED and state.delivered_channel is Channel.VIBER


async def test_permanent_rejection_falls_back_at_once(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    cascade.provider.reject_channels.add(Channel.VIBER)
    await cascade.sends(2)
    await cascade.report(1, D)
    state = await cascade.result()
    assert state.steps[0].status is U and state.steps[0].error == "not a viber user"
    assert state.delivered_channel is Channel.SMS


async def test_provider_outage_is_retried_with_the_same_reference(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    cascade.provider.failures_before_success = 2
    await cascade.sends(3)
    await cascade.report(0, D)
    state = await cascade.result()
    refs = {r.client_ref for r in cascade.provider.requests}
    assert len(cascade.provider.requests) == 3 and refs == {"m1/+79990000001/0"}
    assert state.steps[0].message_id == "msg-m1/+79990000001/0" and state.delivered_channel is Channel.VIBER


async def test_reports_for_unknown_steps_are_ignored(cascade_factory: StartCascade) -> None:
    cascade: Cascade = await cascade_factory()
    await cascade.sends(1)
    await cascade.report(7, D)
    await cascade.report(0, D)
    state = await cascade.result()
    assert state.delivered_channel is Channel.VIBER and [s.reports for s in state.steps] == [1, 0]


async def test_a_late_delivery_turns_an_undelivered_recipient_into_a_delivered_one(
    cascade_factory: StartCascade,
) -> None:
    cascade: Cascade = await cascade_factory()
    await cascade.sends(1)
    await cascade.report(0, U)
    await cascade.sends(2)
    await cascade.env.sleep(SMS_WAIT + timedelta(seconds=1))  # SMS times out: the cascade is decided
    decided = await cascade.state()
    assert decided.status is CascadeStatus.UNDELIVERED and decided.steps[1].timed_out
    await cascade.report(1, D)  # ... and then the SMS report comes after all
    state = await cascade.result()
    assert state.status is CascadeStatus.DELIVERED and state.delivered_channel is Channel.SMS


async def test_a_failure_report_before_the_send_returns_still_records_when_it_was_sent(
    cascade_factory: StartCascade,
) -> None:
    cascade: Cascade = await cascade_factory()

    async def fail_during_send(request: SendRequest) -> None:
        if request.channel is Channel.VIBER:
            await cascade.report(0, U)

    cascade.provider.on_send = fail_during_send
    await cascade.sends(2)
    await cascade.report(1, D)
    state = await cascade.result()
    viber = state.steps[0]
    assert viber.status is U and viber.sent_at is not None and viber.failed_at is not None
    assert state.delivered_channel is Channel.SMS
