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


class RecipientActivities:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    @activity.defn(name="import_recipients")
    async def import_recipients(self, request: ImportRequest) -> ImportReport:
        """Runs in a thread: parsing is CPU-bound and must not stall the worker's event loop."""
        now = datetime.now(UTC)
        problems = request.spec.launch_problems(now)
        if problems:  # the CLI refuses these too; another client might not
            raise ApplicationError("; ".join(problems), type="SpecError", non_retryable=True)
        try:
            return await asyncio.to_thread(import_recipients, request.spec, self._data_dir, request.mailing_id, now)
        except (RecipientsError, OSError) as exc:
            raise ApplicationError(str(exc), type="RecipientsError", non_retryable=True) from exc
