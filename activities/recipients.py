"""The import activity: parse, validate and store a mailing's recipient list.

The file comes from the ledger (the CLI stored it there at launch), so any worker, on any host, can import
it; the valid recipients and the rejected rows go back to the ledger, where the dispatch reads the list.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.models import ImportReport, ImportRequest, ledger_list
from domain.spec import ProviderAccount
from ledger.store import Ledger
from providers.registry import SANDBOX_ONLY
from recipients.importer import import_recipients, read_rejected_raw, read_stored_rows
from recipients.reader import RecipientsError

# A heartbeat this often while the thread parses: the workflow's heartbeat timeout (15 s) then notices a dead
# worker in seconds instead of the hour the import may take.
HEARTBEAT_EVERY = 5.0


class RecipientActivities:
    def __init__(
        self, data_dir: Path, ledger: Ledger | None = None, accounts: Mapping[str, ProviderAccount] | None = None
    ) -> None:
        """`data_dir`: this worker's scratch space; `ledger`: where lists are shared (None: the file named by
        the spec, on this worker's disk, as before the ledger); `accounts`: the provider accounts this
        deployment sends through, with their channels (build_workers passes its registry's; None: the
        sandbox's, as in tests that run no provider of their own)."""
        self._data_dir = data_dir
        self._ledger = ledger
        self._accounts = dict(accounts) if accounts is not None else SANDBOX_ONLY

    @activity.defn(name="import_recipients")
    async def import_recipients(self, request: ImportRequest) -> ImportReport:
        """Runs in a thread: parsing is CPU-bound and must not stall the worker's event loop, which
        heartbeats meanwhile (a thread cannot)."""
        now = datetime.now(UTC)
        problems = request.spec.launch_problems(now, self._accounts)
        if problems:  # the CLI refuses these too; another client might not
            raise ApplicationError("; ".join(problems), type="SpecError", non_retryable=True)
        try:
            work = asyncio.ensure_future(asyncio.to_thread(self._import, request, now))
            while not (await asyncio.wait({work}, timeout=HEARTBEAT_EVERY))[0]:
                activity.heartbeat()
            return work.result()
        except (RecipientsError, OSError) as exc:
            raise ApplicationError(str(exc), type="RecipientsError", non_retryable=True) from exc

    def _import(self, request: ImportRequest, now: datetime) -> ImportReport:
        spec, ledger, mailing_id = request.spec, self._ledger, request.mailing_id
        if ledger is None:
            return import_recipients(spec, self._data_dir, mailing_id, now)
        with tempfile.TemporaryDirectory(prefix="kaskad-upload-") as scratch:
            if spec.recipients is not None and ledger.has_upload(mailing_id):
                local = Path(scratch) / spec.recipients.name
                ledger.read_upload(mailing_id, local)
                spec = spec.model_copy(update={"recipients": local})
            report = import_recipients(spec, self._data_dir, mailing_id, now)
        assert report.stored_list is not None and report.rejected_file is not None
        scratch_folder = report.stored_list.parent
        rejected = read_rejected_raw(scratch_folder)
        ledger.record_import(mailing_id, report, read_stored_rows(report.stored_list), rejected)
        shutil.rmtree(scratch_folder, ignore_errors=True)  # personal data: the ledger holds it now, once
        return report.model_copy(update={"stored_list": ledger_list(mailing_id), "rejected_file": None})
