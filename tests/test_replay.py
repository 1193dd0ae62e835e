"""Every committed workflow history replays on today's code.

Recipients live for hours to days and mailings for weeks, so a deploy meets workflows in flight: a change
to `workflows/` that alters the commands an old history recorded fails here (a nondeterminism error),
not in production. Behaviour changes go behind `workflow.patched(...)` (see the README's versioning policy)
and their histories are recorded into a new folder with `python -m tests.histories.record`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import SANDBOX
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

HISTORIES = sorted(Path(__file__).parent.joinpath("histories").glob("*/*.json"))
TEXTS = {path: path.read_text() for path in HISTORIES}


def test_histories_are_committed() -> None:
    """The replay test must never pass on zero histories."""
    folders = {path.parent.name for path in HISTORIES}
    assert {"2026-12-01-before-issue-9", "2026-12-01-after-issue-9"} <= folders and len(HISTORIES) >= 30


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(TEXTS[path]))
    replayer = Replayer(
        workflows=[MailingWorkflow, RecipientCascadeWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=SANDBOX,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
