"""The import activity: parse, validate and store a mailing's recipient list."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.models import ImportReport, ImportRequest
from recipients.importer import import_recipients
from recipients.reader import RecipientsError

# A heartbeat this often while the thread parses: the workflow's heartbeat timeout (15 s) then notices a dead
# worker in seconds instead of the hour the import may take.
HEARTBEAT_EVERY = 5.0


class RecipientActivities:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    @activity.defn(name="import_recipients")
    async def import_recipients(self, request: ImportRequest) -> ImportReport:
        """Runs in a thread: parsing is CPU-bound and must not stall the worker's event loop, which
        heartbeats meanwhile (a thread cannot)."""
        now = datetime.now(UTC)
        problems = request.spec.launch_problems(now)
        if problems:  # the CLI refuses these too; another client might not
            raise ApplicationError("; ".join(problems), type="SpecError", non_retryable=True)
        try:
            work = asyncio.ensure_future(
                asyncio.to_thread(import_recipients, request.spec, self._data_dir, request.mailing_id, now)
            )
            while not (await asyncio.wait({work}, timeout=HEARTBEAT_EVERY))[0]:
                activity.heartbeat()
            return work.result()
        except (RecipientsError, OSError) as exc:
            raise ApplicationError(str(exc), type="RecipientsError", non_retryable=True) from exc
