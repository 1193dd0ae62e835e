"""MailingWorkflow: one per mailing — imports the recipients, dispatches their cascades, waits, summarises."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.dispatch import DispatchActivities
    from activities.progress import ProgressActivities
    from activities.recipients import RecipientActivities
    from domain.models import (
        DispatchRequest,
        ImportReport,
        ImportRequest,
        MailingCounts,
        MailingInput,
        MailingResume,
        MailingSummary,
        ProgressRequest,
    )
    from workflows.search_attributes import MAILING_STATUS

# Long activities prove they are alive by heartbeating; a dead worker is noticed within this time.
HEARTBEAT = timedelta(seconds=30)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# A file that fails to import five times will not import on the sixth: abort with the reason instead.
IMPORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


class MailingStatus(StrEnum):
    NEW = "new"
    PROCESSING_CONTACTS = "processing_contacts"
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"


@workflow.defn
class MailingWorkflow:
    @workflow.init
    def __init__(self, input: MailingInput) -> None:
        self._input = input
        self._status = MailingStatus.NEW
        self._import = ImportReport()
        self._counts: MailingCounts | None = None
        self._error: str | None = None
        self._started_at = workflow.now()
        self._finished_at: datetime | None = None

    @workflow.query
    def summary(self) -> MailingSummary:
        report = self._import
        counts = self._counts
        return MailingSummary(
            mailing_id=self._input.mailing_id,
            name=self._input.spec.name,
            status=self._status.value,
            error=self._error,
            cascade=[step.channel for step in self._input.spec.steps],
            recipients={
                "total": report.rows,
                "valid": report.valid,
                "invalid": report.invalid,
                "duplicates": report.duplicates,
            },
            invalid_by_reason=report.invalid_by_reason,
            rejected_sample=report.rejected_sample,
            rejected_file=report.rejected_file,
            outcomes=counts.outcomes if counts else {},
            delivered_by_channel=counts.delivered_by_channel if counts else {},
            channels=counts.channels if counts else {},
            started_at=self._started_at,
            finished_at=self._finished_at,
        )

    @workflow.run
    async def run(self, input: MailingInput) -> MailingSummary:
        plan = input.spec.cascade()
        try:
            if input.resume is None:
                await self._import_and_dispatch(input)
            else:
                self._import, self._counts = input.resume.import_report, input.resume.counts
                self._started_at = input.resume.started_at
                self._set_status(MailingStatus.RUNNING)
            while self._counts is None or self._counts.finished < self._import.valid:
                self._counts = await workflow.execute_activity_method(
                    ProgressActivities.await_progress,
                    ProgressRequest(
                        mailing_id=input.mailing_id,
                        cascade=[s.channel for s in plan.steps],
                        expected=self._import.valid,
                        last_finished=self._counts.finished if self._counts else -1,
                    ),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                )
                if self._counts.finished < self._import.valid and workflow.info().is_continue_as_new_suggested():
                    resume = MailingResume(import_report=self._import, counts=self._counts, started_at=self._started_at)
                    workflow.continue_as_new(input.model_copy(update={"resume": resume}))
            self._set_status(MailingStatus.COMPLETED)
        except (ActivityError, ApplicationError) as error:
            cause = error.cause if isinstance(error, ActivityError) and error.cause else error
            self._error = str(cause)
            self._set_status(MailingStatus.ABORTED)
        self._finished_at = workflow.now()
        return self.summary()

    async def _import_and_dispatch(self, input: MailingInput) -> None:
        """Import the recipients (counts reported at once), then start a cascade for each."""
        self._set_status(MailingStatus.PROCESSING_CONTACTS)
        self._import = await workflow.execute_activity_method(
            RecipientActivities.import_recipients,
            ImportRequest(mailing_id=input.mailing_id, spec=input.spec),
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=IMPORT_RETRY,
        )
        if self._import.valid == 0:
            raise ApplicationError("the recipients hold no valid number", non_retryable=True)
        assert self._import.stored_list is not None
        self._set_status(MailingStatus.RUNNING)
        await workflow.execute_activity_method(
            DispatchActivities.dispatch,
            DispatchRequest(
                mailing_id=input.mailing_id, plan=input.spec.cascade(), stored_list=self._import.stored_list
            ),
            start_to_close_timeout=timedelta(days=7),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RETRY,
        )

    def _set_status(self, status: MailingStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([MAILING_STATUS.value_set(status.value)])
