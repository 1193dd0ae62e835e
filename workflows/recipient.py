"""RecipientCascadeWorkflow: one subscriber, tried channel after channel until one reaches its status."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from functools import partial
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.ledger import RECIPIENT_GIVE_UP, RECORD_RETRY, RECORD_TIMEOUT, LedgerActivities
    from activities.schedule import next_send_window
    from activities.send import (
        ACCOUNT_REFUSED,
        END_DATE_REACHED,
        HEARTBEAT_TIMEOUT,
        NOT_SENT_RETRY_SAFE,
        PROVIDER_GAVE_UP,
        SEND_GIVE_UP_AFTER,
        SendActivities,
    )
    from domain.channels import definition
    from domain.models import (
        Control,
        DeliveryReport,
        RecipientInput,
        RecipientRecord,
        RecipientState,
        SendProgress,
        SendRequest,
        SendResult,
        StepSend,
        StepState,
        WindowRequest,
    )
    from domain.refs import ClientRef, send_task_queue
    from domain.schedule import Window
    from domain.status import CascadeStatus, MessageStatus, advance
    from domain.template import MissingVariableError, render
    from workflows.search_attributes import CASCADE_STATUS, DELIVERED_CHANNEL, STEP_MILESTONES

# Versioning policy (README, "Deploying workflow changes"): a change to the commands this workflow issues runs
# only where its patch says so. Recipients started before a patch replay and finish on the path they began.
# Issue 9: a send stops on pause, cancel and the end date; no step is sent once an earlier one succeeded,
# even when the success is reported during a hold; a worker dying mid-send never makes a provider that does
# not de-duplicate send twice; reports for steps never sent, and repeated reports, change nothing.
SAFE_SENDS = "issue-9-safe-sends"
# Issue 10: a report from an account that did not send its step changes nothing.
REPORT_ACCOUNTS = "issue-10-report-accounts"
# Issue 11: as it closes, the recipient writes its final state to the ledger (one local activity).
LEDGER_RECORD = "issue-11-ledger"
# Issue 12, failover: a step naming several provider accounts goes to the next when one is refused or stays
# down. No patch: a plan with one account per step — every plan made before failover existed — issues exactly
# the commands it did (the same reference, account and requests); the committed histories replay to prove it.

# Outage retries happen inside the send activity (see activities/send.py), so Temporal runs it once; its
# start-to-close only has to outlast the activity's own give-up.
SEND_ONCE = RetryPolicy(maximum_attempts=1)
SEND_START_TO_CLOSE = SEND_GIVE_UP_AFTER + timedelta(minutes=10)
# Workflows started before SAFE_SENDS keep Temporal's retries, bounded by a give-up that counts queue time.
SEND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# After an attempt failed in a way that is safe to repeat, wait this long before the next; after this many
# such failures (or SEND_GIVE_UP_AFTER since the first) the step is given up.
RESEND_AFTER = timedelta(seconds=10)
MAX_RESENDS = 10
# A send no worker takes for this long (its provider's workers are gone) is given up. Generous: a backlog of
# fallbacks behind a low rate cap can legitimately wait hours.
SEND_SCHEDULE_TO_START = timedelta(hours=24)


class _Outcome(Enum):
    """What became of one send activity."""

    DECIDED = "decided"  # handed over, refused for good, or given up: the step has its status
    STOPPED = "stopped"  # paused, cancelled or past the end date before its request left
    RETRY_NOW = "retry_now"  # its worker died: send again (the activity knows whether that is safe)
    RETRY_LATER = "retry_later"  # failed in a way that is safe to repeat, after a pause
    NEXT_ACCOUNT = "next_account"  # its account is refused or down, nothing was sent: the step's next account


@workflow.defn
class RecipientCascadeWorkflow:
    @workflow.init
    def __init__(self, input: RecipientInput) -> None:
        # Initialised here, not in run(): a report signal may be handled before run() starts.
        self._state = RecipientState(
            mailing_id=input.mailing_id,
            phone=input.phone,
            steps=[
                StepState(
                    channel=step.channel,
                    expect=step.expect,
                    client_ref=str(ClientRef(input.mailing_id, input.phone, index)),
                )
                for index, step in enumerate(input.plan.steps)
            ],
        )
        self._published: tuple[str, str, list[str]] | None = None
        self._control = Control()
        self._window: Window | None = input.window
        self._zones = input.zones or input.plan.schedule.default_zones
        self._safe_sends = workflow.patched(SAFE_SENDS)
        self._check_accounts = workflow.patched(REPORT_ACCOUNTS)
        self._record = workflow.patched(LEDGER_RECORD)
        self._accounts = [input.plan.provider_for(step) for step in input.plan.steps]  # who sends each step
        self._attempted: set[int] = set()  # steps whose send was started
        self._sending = False  # a send activity is outstanding
        self._seen_reports: set[tuple[object, ...]] = set()

    @workflow.signal
    def control(self, control: Control) -> None:
        """The mailing was paused, resumed or cancelled; an older or repeated control changes nothing."""
        if control.version > self._control.version:
            self._control = control

    @workflow.update
    async def apply_control(self, control: Control) -> None:
        """The `control` signal as an update that answers once this recipient has no send out: how the
        mailing acknowledges a pause or cancel only when no recipient will send anything more."""
        self.control(control)
        if self._safe_sends and (control.paused or control.cancelled):
            await workflow.wait_condition(lambda: not self._sending)

    @workflow.signal
    def report(self, report: DeliveryReport) -> None:
        """Record a provider report. Duplicates and stale reports change nothing (statuses only advance)."""
        if not 0 <= report.step < len(self._state.steps):
            workflow.logger.warning("report for unknown step %s ignored", report.step)
            return
        if self._safe_sends:
            if report.step not in self._attempted:
                workflow.logger.warning("report for step %s, which was never sent, ignored", report.step + 1)
                return
            wrong_account = report.account is not None and report.account != self._accounts[report.step]
            if self._check_accounts and wrong_account:
                workflow.logger.warning(
                    "report for step %s from account %r, which did not send it, ignored",
                    report.step + 1,
                    report.account,
                )
                return
            key = (report.step, report.status, report.message_id, report.error, report.at)
            if key in self._seen_reports:
                return  # the same report again (a provider's retried batch): already counted
            self._seen_reports.add(key)
        step = self._state.steps[report.step]
        step.reports += 1
        step.handed_over = True
        step.message_id = step.message_id or report.message_id
        self._move(step, report.status, report.error, report.at)
        if self._state.status.is_final:
            self._finish()  # a late report can still turn an undelivered recipient into a delivered one
        # Otherwise run() publishes when it wakes up, so that one activation makes one upsert.

    @workflow.query
    def state(self) -> RecipientState:
        return self._state

    @workflow.run
    async def run(self, input: RecipientInput) -> RecipientState:
        self._state.status = CascadeStatus.IN_PROGRESS
        end_at = input.plan.end_at
        for index, step_spec in enumerate(input.plan.steps):
            if self._delivered_step() is not None:
                break  # a late report of an earlier step already reached its status
            step = self._state.steps[index]
            if self._safe_sends:
                refusal = await self._hand_over(index, input)
                if self._delivered_step() is not None:
                    break  # an earlier step's success was reported while this one was held: nothing sent
            else:
                refusal = await self._may_send(input)
            if refusal is not None:
                for later in self._state.steps[index:]:
                    if not later.handed_over:
                        self._move(later, MessageStatus.NOT_SENT, refusal, None)
                break
            if not self._safe_sends:
                self._state.current_step = index
                try:
                    request = self._request(index, input)
                except MissingVariableError as exc:  # raised here, it would retry the workflow task forever
                    for later in self._state.steps[index:]:
                        self._move(later, MessageStatus.NOT_SENT, str(exc), None)
                    break
                await self._send_before_safe_sends(step, request)
            self._publish()
            wait = step_spec.wait if end_at is None else min(step_spec.wait, end_at - workflow.now())
            step.timed_out = not await self._wait(partial(self._step_decided_or_cancelled, index), wait)
        self._finish()
        # Stay open a while so that late reports of earlier steps are recorded, not lost.
        await self._wait(lambda: all(s.settled for s in self._state.steps), input.plan.late_reports)
        self._publish()
        if self._record:
            await self._record_in_ledger(input)
        return self._state

    async def _record_in_ledger(self, input: RecipientInput) -> None:
        """The final state goes to the ledger; reports that come later go there through the gateway."""
        record = RecipientRecord(
            state=self._state, accounts=self._accounts, closed_at=workflow.now(), sends=self._sends(input)
        )
        try:
            await workflow.execute_local_activity_method(
                LedgerActivities.record_recipient,
                record,
                start_to_close_timeout=RECORD_TIMEOUT,
                schedule_to_close_timeout=RECIPIENT_GIVE_UP,
                retry_policy=RECORD_RETRY,
            )
        except ActivityError as error:
            workflow.logger.warning("the ledger did not take this recipient's record: %s", error.cause or error)

    async def _hand_over(self, index: int, input: RecipientInput) -> str | None:
        """Send step `index` once allowed: None when it was handed over (or refused by the provider, or an
        earlier step's success made it needless), else the reason it never will be sent."""
        step = self._state.steps[index]
        try:
            request = self._request(index, input)
        except MissingVariableError as exc:
            return str(exc)
        request.retries_inside = True
        accounts = input.plan.providers_for(input.plan.steps[index])
        attempt = 0
        self._use_account(index, request, accounts, attempt, input)
        failures, first_failure = 0, workflow.now()
        while True:
            refusal = await self._may_send(input)
            if refusal is not None and request.after_ambiguous:
                self._record_sent(step, SendResult(unconfirmed=True))  # its worker died with the request out
            if refusal is not None or self._delivered_step() is not None:
                return refusal
            self._state.current_step = index
            outcome = await self._send(step, request)
            if outcome is _Outcome.DECIDED:
                return None
            if outcome is _Outcome.NEXT_ACCOUNT:
                attempt += 1
                self._use_account(index, request, accounts, attempt, input)
                failures = 0
                continue
            if outcome is not _Outcome.STOPPED:
                first_failure = first_failure if failures else workflow.now()
                failures += 1
                if failures >= MAX_RESENDS or workflow.now() - first_failure >= SEND_GIVE_UP_AFTER:
                    self._give_up(step, request, f"send failed {failures} times")
                    return None
            if outcome is _Outcome.RETRY_LATER:
                await self._hold(lambda: self._control.paused or self._control.cancelled, RESEND_AFTER)
            # STOPPED: paused, cancelled or past the end date with nothing sent; _may_send says what now

    def _sends(self, input: RecipientInput) -> list[StepSend | None]:
        """Sender, SMS encoding and parts of each step handed over (what the ledger prices)."""
        sends: list[StepSend | None] = []
        for step_spec, step in zip(input.plan.steps, self._state.steps, strict=True):
            try:
                text = render(step_spec.text, input.variables) if step.handed_over else None
            except MissingVariableError:
                text = None
            size = definition(step_spec.channel).size(text) if text is not None else None
            sends.append(
                None
                if text is None
                else StepSend(
                    sender=step_spec.sender,
                    encoding=size.encoding.value if size else None,
                    parts=size.parts if size else None,
                )
            )
        return sends

    def _use_account(
        self, index: int, request: SendRequest, accounts: list[str], attempt: int, input: RecipientInput
    ) -> None:
        """Send step `index` through `accounts[attempt]`, under the reference of that attempt (reports of it find
        the step); with another account after it, a refused or lasting-down account fails over."""
        account = accounts[attempt]
        ref = ClientRef(input.mailing_id, input.phone, index, attempt)
        self._accounts[index] = account
        self._state.steps[index].client_ref = str(ref)
        last = attempt + 1 >= len(accounts)
        request.provider, request.client_ref, request.fail_over = account, str(ref), not last
        request.give_up_after = None if last else input.plan.failover_after

    def _give_up(self, step: StepState, request: SendRequest, reason: str) -> None:
        """No more tries: the step is not sent — or sent, unconfirmed, if a try may have reached the provider."""
        if request.after_ambiguous:
            self._record_sent(step, SendResult(unconfirmed=True))
        else:
            self._move(step, MessageStatus.NOT_SENT, reason, None)

    def _request(self, index: int, input: RecipientInput) -> SendRequest:
        step_spec = input.plan.steps[index]
        ref = ClientRef(input.mailing_id, input.phone, index)
        text = render(step_spec.text, input.variables)
        return SendRequest.for_step(ref, input.plan, step_spec, text, input.variables)

    async def _may_send(self, input: RecipientInput) -> str | None:
        """Wait until a send is allowed: inside a window, not paused. The reason it never will be, or None.

        With SAFE_SENDS it also returns (None) as soon as an earlier step reached its status."""
        schedule, end_at = input.plan.schedule, input.plan.end_at
        while True:
            now = workflow.now()
            if self._safe_sends and self._delivered_step() is not None:
                return None
            if self._control.cancelled:
                return "cancelled"
            if end_at is not None and now >= end_at:
                return "end date reached"
            until_end = end_at - now if end_at is not None else None
            if self._control.paused:
                await self._hold(lambda: not self._control.paused, until_end)
                continue
            if schedule.always_open or (self._window is not None and self._window.contains(now)):
                return None
            self._window = await workflow.execute_local_activity(
                next_send_window,
                WindowRequest(schedule=schedule, zones=self._zones, at=now, end_at=end_at),
                start_to_close_timeout=timedelta(seconds=10),
            )
            if self._window is None:
                return "no allowed window before the end date"
            if self._window.start > now:
                await self._hold(lambda: False, self._window.start - now)

    async def _hold(self, until: Callable[[], bool], limit: timedelta | None) -> None:
        """Sleep (a durable timer) until `until()`, a control change or `limit`, whichever comes first; with
        SAFE_SENDS also until an earlier step's success is reported (then nothing more is sent)."""
        control = self._control

        def woken() -> bool:
            succeeded = self._safe_sends and self._delivered_step() is not None
            return until() or self._control is not control or succeeded

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(woken, timeout=limit)

    async def _wait(self, condition: Callable[[], bool], limit: timedelta) -> bool:
        """Wait for `condition` up to `limit` (a durable timer); False when the time ran out.

        Reports that change the search attributes without meeting the condition are published as they
        come; otherwise the caller publishes once, after it acted on the outcome.
        """
        deadline = workflow.now() + limit
        while not condition():
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                return False
            try:
                await workflow.wait_condition(
                    lambda: condition() or self._attributes() != self._published, timeout=remaining
                )
            except TimeoutError:
                return False
            if not condition():
                self._publish()  # a report changed what the UI shows; the wait goes on
        return True

    async def _send(self, step: StepState, request: SendRequest) -> _Outcome:
        """One send activity, stopped by a pause, a cancel or the end date unless its request is already out."""
        self._attempted.add(self._state.current_step)
        end_at = request.not_after
        self._sending = True
        sending = workflow.start_activity_method(
            SendActivities.send,
            request,
            task_queue=send_task_queue(workflow.info().task_queue, request.provider),
            schedule_to_start_timeout=SEND_SCHEDULE_TO_START,
            start_to_close_timeout=SEND_START_TO_CLOSE,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=SEND_ONCE,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

        index = self._state.current_step

        def stop() -> bool:
            """Paused, cancelled, or another step succeeded (a step's own success means its request is out)."""
            succeeded = self._delivered_step()
            return self._control.paused or self._control.cancelled or (succeeded is not None and succeeded != index)

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: sending.done() or stop(),
                timeout=None if end_at is None else max(end_at - workflow.now(), timedelta(0)),
            )
        if not sending.done():
            sending.cancel()  # the activity stops unless its request is out, and then reports what happened
        try:
            result = await sending
        except ActivityError as error:
            return self._failed_send(step, request, error)
        finally:
            self._sending = False
        self._record_sent(step, result)
        return _Outcome.DECIDED

    def _failed_send(self, step: StepState, request: SendRequest, error: ActivityError) -> _Outcome:
        cause = error.cause
        if isinstance(cause, CancelledError):
            return _Outcome.STOPPED  # cancelled before its request left (or while none was in flight)
        # Not after an ambiguous attempt: a request to this account may have arrived, and another account's
        # copy would reach the subscriber twice.
        if request.fail_over and not request.after_ambiguous and _account_unusable(cause):
            workflow.logger.warning(
                "step %s: %s; failing over to the next account", self._state.current_step + 1, cause
            )
            return _Outcome.NEXT_ACCOUNT
        if isinstance(cause, ActivityTimeoutError) and cause.type is TimeoutType.SCHEDULE_TO_START:
            self._give_up(step, request, f"no worker took the send within {SEND_SCHEDULE_TO_START}")
            return _Outcome.DECIDED
        if isinstance(cause, ActivityTimeoutError):  # the worker died: was its request at the provider?
            details = cause.last_heartbeat_details
            if details and SendProgress.model_validate(details[0]).posting:
                request.after_ambiguous = True  # the activity resends only where the provider de-duplicates
                request.fail_over, request.give_up_after = False, None  # and only through this account
            return _Outcome.RETRY_NOW
        if isinstance(cause, ApplicationError) and cause.type == END_DATE_REACHED:
            return _Outcome.STOPPED
        if isinstance(cause, ApplicationError) and cause.type == NOT_SENT_RETRY_SAFE:
            return _Outcome.RETRY_LATER
        self._move(step, MessageStatus.NOT_SENT, f"provider unavailable: {cause or error}", None)
        return _Outcome.DECIDED

    async def _send_before_safe_sends(self, step: StepState, request: SendRequest) -> None:
        """The send as recipients started before SAFE_SENDS run it, to the end of their days."""
        try:
            result = await workflow.execute_activity_method(
                SendActivities.send,
                request,
                task_queue=send_task_queue(workflow.info().task_queue, request.provider),
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=SEND_GIVE_UP_AFTER,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SEND_RETRY,
            )
        except ActivityError as error:
            cause = error.cause or error
            self._move(step, MessageStatus.NOT_SENT, f"provider unavailable: {cause}", None)
            return
        self._record_sent(step, result)

    def _record_sent(self, step: StepState, result: SendResult) -> None:
        step.handed_over = True
        step.unconfirmed = result.unconfirmed
        step.sent_at = step.sent_at or workflow.now()  # even when a report came first and moved the status on
        step.message_id = step.message_id or result.message_id
        if result.rejected is not None:
            self._move(step, MessageStatus.UNDELIVERED, result.rejected, None)
        else:
            self._move(step, MessageStatus.SENT, None, None)

    def _move(self, step: StepState, reported: MessageStatus, error: str | None, at: datetime | None) -> None:
        new = advance(step.status, reported)
        if new is step.status:
            return
        when = at if at is not None else workflow.now()
        step.status = new
        if new is MessageStatus.SENT:
            step.sent_at = step.sent_at or when
        elif new is MessageStatus.DELIVERED:
            step.delivered_at = when
        elif new is MessageStatus.READ:
            step.read_at = when
            step.delivered_at = step.delivered_at or when
        else:
            step.failed_at = when
            step.error = error

    def _step_decided_or_cancelled(self, index: int) -> bool:
        return self._step_decided(index) or self._control.cancelled

    def _step_decided(self, index: int) -> bool:
        """Step `index` needs no more waiting: some step succeeded, or this one failed for good."""
        return self._delivered_step() is not None or self._state.steps[index].status.is_final

    def _delivered_step(self) -> int | None:
        """The first step whose message reached the status that step expected."""
        return next((i for i, s in enumerate(self._state.steps) if s.succeeded), None)

    def _finish(self) -> None:
        delivered = self._delivered_step()
        if delivered is not None:
            self._state.status = CascadeStatus.DELIVERED
            self._state.delivered_channel = self._state.steps[delivered].channel
        elif any(s.handed_over for s in self._state.steps):
            self._state.status = CascadeStatus.UNDELIVERED
        else:
            self._state.status = CascadeStatus.NOT_SENT
        self._publish()

    def _attributes(self) -> tuple[str, str, list[str]]:
        """Cascade status, delivering channel and step milestones, as the search attributes hold them."""
        channel = self._state.delivered_channel.value if self._state.delivered_channel else ""
        milestones = [m for i, s in enumerate(self._state.steps) for m in s.milestones(i + 1)]
        return self._state.status.value, channel, milestones

    def _publish(self) -> None:
        """Upsert the search attributes the UI filters on, only when they changed."""
        current = self._attributes()
        if current == self._published:
            return
        self._published = current
        status, channel, milestones = current
        updates: list[SearchAttributeUpdate[Any]] = [
            CASCADE_STATUS.value_set(status),
            STEP_MILESTONES.value_set(milestones),
        ]
        if channel:
            updates.append(DELIVERED_CHANNEL.value_set(channel))
        workflow.upsert_search_attributes(updates)


def _account_unusable(cause: BaseException | None) -> bool:
    """The account, not the message, failed — refused (401/403), down past its failover budget, or served by no
    worker — and nothing of the message reached its provider."""
    if isinstance(cause, ActivityTimeoutError):
        return cause.type is TimeoutType.SCHEDULE_TO_START
    return isinstance(cause, ApplicationError) and cause.type in (ACCOUNT_REFUSED, PROVIDER_GAVE_UP)
