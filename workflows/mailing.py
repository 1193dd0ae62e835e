"""MailingWorkflow: one per mailing — imports the recipients, waits for the start, dispatches the cascades at
the configured speed inside the schedule, follows them to the end; can be paused, resumed and cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.control import ControlActivities
    from activities.dispatch import DispatchActivities
    from activities.ledger import MAILING_GIVE_UP, RECORD_RETRY, RECORD_TIMEOUT, LedgerActivities
    from activities.progress import ProgressActivities
    from activities.recipients import RecipientActivities
    from activities.schedule import next_send_window
    from domain.models import (
        BroadcastRequest,
        Control,
        DispatchRequest,
        ImportReport,
        ImportRequest,
        MailingFinalRecord,
        MailingInput,
        MailingResume,
        MailingStatusRecord,
        MailingSummary,
        ProgressRequest,
        WindowRequest,
    )
    from domain.schedule import Window
    from workflows.search_attributes import MAILING_STATUS

# Long activities prove they are alive by heartbeating; a dead worker is noticed within this time.
HEARTBEAT = timedelta(seconds=15)  # dispatch beats per start, progress per poll (1 s), import every 5 s
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# A file that fails to import five times will not import on the sixth: abort with the reason instead.
IMPORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# A dispatch chunk lasts about this long (or starts CHUNK_MAX recipients): pause, cancel and the end of a
# window take effect on dispatching within it.
CHUNK_SECONDS = 1.0
CHUNK_MAX = 100
# Starts are paced 1% under the configured speed: a send follows its start by a variable delay (workflow
# task, activity poll; p99 about 100 ms here), which would otherwise let a 60 s window at the provider see
# a message or two above the rate. benchmarks/speed.py measures both sides of this.
SPEED_MARGIN = 0.99

# Patches (workflow.patched): behaviour changes of issue 9; histories recorded before them replay the old way.
# A pause, resume or cancel during the delayed start no longer ends the wait: it runs on until start_at
# (cancel still ends it). Before, any control change started the mailing at once.
PATCH_START_AT = "start-at-holds"
# The mailing completes once every recipient workflow has closed (their late-report window is over), not
# once every cascade is decided: another await_progress loop (until_closed) after the old one ended.
PATCH_AWAIT_CLOSED = "await-closed"
# At a window's end or the end date, when the next start could not happen before it closes, a timer until
# it closes replaces the back-to-back dispatch activities that started nobody.
PATCH_HOLD_AT_CLOSE = "hold-at-close"
# Pause and cancel answer once the control broadcast reached every dispatched recipient, not at once.
PATCH_ACKNOWLEDGED = "control-acknowledged"
# A pause or cancel that arrives while the dispatch computes the window stops the next chunk; before, that
# chunk started recipients the broadcast (already past them) never told.
PATCH_CONTROL_BEFORE_CHUNK = "control-before-chunk"
# A mailing paused past its end date ends at the end date; before, it waited for a resume forever.
PATCH_END_WHILE_PAUSED = "end-while-paused"
# Issue 11: every status change, and the final summary, is written to the ledger (activities).
PATCH_LEDGER = "issue-11-ledger"


class MailingStatus(StrEnum):
    NEW = "new"
    PROCESSING_CONTACTS = "processing_contacts"
    WAITING = "waiting"  # for the delayed start
    RUNNING = "running"
    PAUSED_BY_SCHEDULE = "paused_by_schedule"  # outside the allowed days and hours
    PAUSED = "paused"  # by the user
    COMPLETED = "completed"
    COMPLETED_BY_END_DATE = "completed_by_end_date"
    ABORTED = "aborted"


FINISHED = frozenset({MailingStatus.COMPLETED, MailingStatus.COMPLETED_BY_END_DATE, MailingStatus.ABORTED})


@workflow.defn
class MailingWorkflow:
    @workflow.init
    def __init__(self, input: MailingInput) -> None:
        self._input = input
        self._r = input.resume or MailingResume(
            import_report=ImportReport(), started_at=workflow.now(), status=MailingStatus.NEW
        )
        self._phase = MailingStatus(self._r.status)  # what the mailing does, when not paused or finished
        self._published: str | None = None
        self._error: str | None = None
        self._finished_at: datetime | None = None
        self._dispatching = False
        self._record = workflow.patched(PATCH_LEDGER)

    # --- lifecycle updates (python starter.py pause|resume|cancel) -------------------------------------------

    @workflow.update
    async def pause(self) -> str:
        """Hold every send not yet made, fallbacks included; idempotent."""
        if self._r.control.cancelled or self.status in FINISHED:
            return f"mailing is {self.status}; nothing to pause"
        if self._r.control.paused:
            return "already paused"
        self._control(paused=True)
        await self._told()
        return "paused"

    @workflow.update
    def resume(self) -> str:
        """Continue at the configured speed; idempotent."""
        if not self._r.control.paused or self._r.control.cancelled:
            return f"not paused (mailing is {self.status})"
        self._control(paused=False)
        return "resumed"

    @workflow.update
    async def cancel(self) -> str:
        """Stop every pending send (those become not_sent); the mailing ends as aborted. Idempotent."""
        if self._r.control.cancelled:
            return "already cancelled"
        if self.status in FINISHED:
            return f"mailing is {self.status}; nothing to cancel"
        self._control(cancelled=True)
        await self._told()
        return "cancelled"

    async def _told(self) -> None:
        """Answer a pause or cancel only once every dispatched recipient has it: from then on none of them starts
        a send (one whose request is already out finishes; see activities/send.py)."""
        if workflow.patched(PATCH_ACKNOWLEDGED):
            version = self._r.control.version
            await workflow.wait_condition(lambda: self._r.broadcast >= version)

    def _control(self, *, paused: bool | None = None, cancelled: bool | None = None) -> None:
        current = self._r.control
        self._r.control = Control(
            version=current.version + 1,
            paused=current.paused if paused is None else paused,
            cancelled=current.cancelled if cancelled is None else cancelled,
        )
        self._publish_status()

    # --- state --------------------------------------------------------------------------------------------------

    @property
    def status(self) -> MailingStatus:
        if self._phase in FINISHED:
            return self._phase
        if self._r.control.paused and not self._r.control.cancelled:
            return MailingStatus.PAUSED
        return self._phase

    @workflow.query
    def summary(self) -> MailingSummary:
        report, counts, spec = self._r.import_report, self._r.counts, self._input.spec
        not_started = report.valid - self._r.position if self._phase in FINISHED else 0
        outcomes = dict(counts.outcomes) if counts else {}
        if not_started:
            outcomes["not_sent"] = outcomes.get("not_sent", 0) + not_started
        return MailingSummary(
            mailing_id=self._input.mailing_id,
            name=spec.name,
            status=self.status.value,
            error=self._error,
            cascade=[step.channel for step in spec.steps],
            recipients={
                "total": report.rows,
                "valid": report.valid,
                "invalid": report.invalid,
                "duplicates": report.duplicates,
            },
            invalid_by_reason=report.invalid_by_reason,
            rejected_sample=report.rejected_sample,
            rejected_file=report.rejected_file,
            outcomes=outcomes,
            delivered_by_channel=counts.delivered_by_channel if counts else {},
            channels=counts.channels if counts else {},
            dispatched=self._r.position,
            not_started=not_started,
            zone_fallback=report.zone_fallback,
            schedule=spec.schedule.describe(),
            start_at=spec.start_at,
            end_at=spec.end_at,
            speed=str(spec.speed) if spec.speed else None,
            started_at=self._r.started_at,
            finished_at=self._finished_at,
        )

    # --- the run ------------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: MailingInput) -> MailingSummary:
        self._publish_status()
        broadcaster = asyncio.create_task(self._broadcast_controls())
        recorder = None
        if self._record:
            recorder = asyncio.create_task(self._record_statuses(self._r.recorded_status or self.status.value))
        try:
            if input.resume is None:
                await self._import(input)
            await self._wait_for_start(input)
            await self._dispatch(input)
            await self._follow(input)
            self._phase = self._final_status(input)
        except (ActivityError, ApplicationError) as error:
            cause = error.cause if isinstance(error, ActivityError) and error.cause else error
            self._error = str(cause)
            self._phase = MailingStatus.ABORTED
        if self._r.control.cancelled:
            self._error = self._error or "cancelled by the user"
        await workflow.wait_condition(lambda: self._r.broadcast >= self._r.control.version)
        await workflow.wait_condition(workflow.all_handlers_finished)  # their answers go out before the end
        broadcaster.cancel()
        self._finished_at = workflow.now()
        self._publish_status()
        if recorder is not None:
            recorder.cancel()
            await self._record_in_ledger(
                LedgerActivities.record_mailing_final,
                MailingFinalRecord(summary=self.summary(), dispatched=self._r.position),
            )
        return self.summary()

    async def _import(self, input: MailingInput) -> None:
        """Import the recipients; their counts are in the summary at once."""
        self._set_phase(MailingStatus.PROCESSING_CONTACTS)
        self._r.import_report = await workflow.execute_activity_method(
            RecipientActivities.import_recipients,
            ImportRequest(mailing_id=input.mailing_id, spec=input.spec),
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=IMPORT_RETRY,
        )
        if self._r.import_report.valid == 0:
            raise ApplicationError("the recipients hold no valid number", non_retryable=True)

    async def _wait_for_start(self, input: MailingInput) -> None:
        """A delayed start: a durable timer (visible in the UI) until `start_at`; cancel ends it early. A pause
        or resume wakes the timer (so the status shows at once) but the wait goes on: a pause still on at
        `start_at` is then held by the dispatch loop."""
        start_at = input.spec.start_at
        if start_at is None or workflow.now() >= start_at:
            return
        self._set_phase(MailingStatus.WAITING)
        while True:
            await self._hold(start_at - workflow.now(), lambda: self._r.control.cancelled)
            if self._r.control.cancelled or workflow.now() >= start_at or not workflow.patched(PATCH_START_AT):
                return

    async def _dispatch(self, input: MailingInput) -> None:
        """Start the recipients chunk by chunk: at the speed, inside the window, never while paused."""
        spec, r = input.spec, self._r
        interval = spec.speed.interval / SPEED_MARGIN if spec.speed else None
        limit = CHUNK_MAX if interval is None else max(1, math.ceil(CHUNK_SECONDS / interval.total_seconds()))
        while not r.dispatched:
            await self._wait_while_paused(spec.end_at)
            now = workflow.now()
            if r.control.cancelled:
                return
            if spec.end_at is not None and now >= spec.end_at:
                r.end_reached = True
                return
            version = r.control.version
            window = await self._mailing_window(input, now)
            if r.control.version != version and workflow.patched(PATCH_CONTROL_BEFORE_CHUNK):
                continue  # a pause or cancel came while the window was computed: decide again
            if window is None:
                r.end_reached = True  # no allowed window opens before the end date
                return
            if window.start > now:
                self._set_phase(MailingStatus.PAUSED_BY_SCHEDULE)
                await self._hold(window.start - now)
                continue
            if r.next_start is not None and (r.next_start - now).total_seconds() > CHUNK_SECONDS:
                await self._hold(r.next_start - now)  # a slow speed: wait here, where pause can interrupt
                continue
            ends = [moment for moment in (window.end, spec.end_at) if moment is not None]
            until = min(ends) if ends else None
            if (
                until is not None
                and r.next_start is not None
                and r.next_start >= until > now
                and workflow.patched(PATCH_HOLD_AT_CLOSE)
            ):
                await self._hold(until - now)  # the next slot is past the close: nobody can start, so a timer
                continue
            self._set_phase(MailingStatus.RUNNING)
            request = DispatchRequest(
                mailing_id=input.mailing_id,
                plan=spec.cascade(),
                stored_list=_stored_list(r.import_report),
                position=r.position,
                limit=limit,
                interval=interval,
                not_before=r.next_start,
                until=until,
                window=None if spec.schedule.per_subscriber else window,
            )
            self._dispatching = True
            try:
                result = await workflow.execute_activity_method(
                    DispatchActivities.dispatch,
                    request,
                    start_to_close_timeout=timedelta(seconds=limit * (interval or timedelta()).total_seconds())
                    + timedelta(minutes=10),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                )
            finally:
                self._dispatching = False
            started_nobody = result.position == r.position and not result.exhausted
            r.position, r.next_start, r.dispatched = result.position, result.next_start, result.exhausted
            self._continue_as_new_if_long(input)
            now = workflow.now()
            if started_nobody and until is not None and until > now and workflow.patched(PATCH_HOLD_AT_CLOSE):
                await self._hold(until - now)  # the activity found the close (by its clock) already reached

    async def _wait_while_paused(self, end_at: datetime | None) -> None:
        """Hold dispatching while paused; a pause still on at the end date ends it there (since the patch)."""
        r = self._r

        def resumed() -> bool:
            return not r.control.paused or r.control.cancelled

        # Always awaited, even when not paused: wait_condition yields to the other coroutines (the control
        # broadcaster), and the order of their commands is what histories recorded.
        if end_at is not None and not resumed() and workflow.patched(PATCH_END_WHILE_PAUSED):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(resumed, timeout=max(end_at - workflow.now(), timedelta(0)))
        else:
            await workflow.wait_condition(resumed)

    async def _mailing_window(self, input: MailingInput, now: datetime) -> Window | None:
        """The fixed-zone window now is in (or the next); for subscriber zones each recipient waits for its own."""
        schedule = input.spec.schedule
        if schedule.per_subscriber or schedule.always_open:
            end = input.spec.end_at
            return Window(start=now, end=end) if end else Window(start=now, end=now + timedelta(days=3650))
        return await workflow.execute_local_activity(
            next_send_window,
            WindowRequest(schedule=schedule, zones=[schedule.timezone], at=now, end_at=input.spec.end_at),
            start_to_close_timeout=timedelta(seconds=10),
        )

    async def _follow(self, input: MailingInput) -> None:
        """Wait until every started recipient's cascade is decided, then until every recipient workflow has
        closed: each stays open `late_reports` for reports that can still turn undelivered into delivered,
        so the final figures are taken only then. The figures refresh as they change meanwhile."""
        r = self._r
        if not r.end_reached and not r.control.cancelled:
            self._set_phase(MailingStatus.RUNNING)
        while not self._followed():
            decided = r.counts is not None and r.counts.finished >= r.position
            r.counts = await workflow.execute_activity_method(
                ProgressActivities.await_progress,
                ProgressRequest(
                    mailing_id=input.mailing_id,
                    cascade=[s.channel for s in input.spec.steps],
                    expected=r.position,
                    last_finished=r.counts.finished if r.counts else -1,
                    until_closed=decided,
                    last_closed=r.counts.closed if r.counts and decided else -1,
                ),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=RETRY,
            )
            if not self._followed():
                self._continue_as_new_if_long(input)

    def _followed(self) -> bool:
        """Every started recipient is done: its cascade decided and (since PATCH_AWAIT_CLOSED) its workflow closed."""
        counts, position = self._r.counts, self._r.position
        if counts is None or counts.finished < position:
            return False
        return counts.closed >= position or not workflow.patched(PATCH_AWAIT_CLOSED)

    def _final_status(self, input: MailingInput) -> MailingStatus:
        r, end_at = self._r, input.spec.end_at
        if r.control.cancelled:
            return MailingStatus.ABORTED
        cut_by_end = r.counts is not None and r.counts.outcomes.get("not_sent", 0) > 0
        if r.end_reached or (end_at is not None and workflow.now() >= end_at and cut_by_end):
            return MailingStatus.COMPLETED_BY_END_DATE
        return MailingStatus.COMPLETED

    async def _broadcast_controls(self) -> None:
        """Pass each pause/resume/cancel on to the running recipients, once no dispatch chunk is in flight."""
        r = self._r
        while True:
            await workflow.wait_condition(lambda: r.control.version > r.broadcast and not self._dispatching)
            control = r.control
            await workflow.execute_activity_method(
                ControlActivities.broadcast,
                BroadcastRequest(mailing_id=self._input.mailing_id, control=control, upto=r.position),
                start_to_close_timeout=timedelta(minutes=30),
                # a batch of 50 updates beats within the 20 s a recipient may take to finish a request it has out
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
            )
            r.broadcast = control.version

    async def _record_statuses(self, recorded: str) -> None:
        """Write each status the mailing enters after `recorded` to the ledger, with its time (the final one:
        at the end). `new` was recorded at launch; after a continue-as-new, the status was recorded before."""

        def changed() -> bool:
            return self.status.value != recorded and self.status not in FINISHED

        while True:
            await workflow.wait_condition(changed)
            recorded = self.status.value
            record = MailingStatusRecord(mailing_id=self._input.mailing_id, status=recorded, at=workflow.now())
            await self._record_in_ledger(LedgerActivities.record_mailing_status, record)
            self._r.recorded_status = recorded  # carried over a continue-as-new that cuts a write short

    async def _record_in_ledger(self, write: Callable[..., Awaitable[None]], record: object) -> None:
        try:
            await workflow.execute_activity_method(
                write,
                record,
                start_to_close_timeout=RECORD_TIMEOUT,
                schedule_to_close_timeout=MAILING_GIVE_UP,
                retry_policy=RECORD_RETRY,
            )
        except ActivityError as error:
            workflow.logger.warning("the ledger did not take the mailing's record: %s", error.cause or error)

    async def _hold(self, limit: timedelta, until: Callable[[], bool] | None = None) -> None:
        """A durable timer that a pause, resume or cancel (or `until()`) interrupts."""
        version = self._r.control.version

        def woken() -> bool:
            return self._r.control.version != version or (until is not None and until())

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(woken, timeout=limit)

    def _continue_as_new_if_long(self, input: MailingInput) -> None:
        """A long mailing (days of paced dispatch) starts a fresh history, carrying its state over."""
        if (
            workflow.info().is_continue_as_new_suggested()
            and self._r.broadcast >= self._r.control.version
            and workflow.all_handlers_finished()  # a pause or cancel still waiting for its broadcast
        ):
            self._r.status = self._phase.value
            workflow.continue_as_new(input.model_copy(update={"resume": self._r}))

    def _set_phase(self, phase: MailingStatus) -> None:
        self._phase = phase
        self._publish_status()

    def _publish_status(self) -> None:
        status = self.status.value
        if status != self._published:
            self._published = status
            workflow.upsert_search_attributes([MAILING_STATUS.value_set(status)])


def _stored_list(report: ImportReport) -> Path:
    if report.stored_list is None:
        raise ApplicationError("the import stored no list", non_retryable=True)
    return report.stored_list
