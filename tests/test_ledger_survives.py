"""Issue 11's acceptance: the ledger survives Temporal. A mailing runs on the dev stack; the stack stops and its
Temporal database is thrown away; on a fresh stack over the same data folder `status`, `list`, `search` and
`report` — the real CLI, in subprocesses — still answer, with the figures the mailing ended with."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from python_calamine import CalamineWorkbook
from temporalio.service import RPCError, RPCStatusCode

from domain.models import MailingSummary
from domain.refs import mailing_workflow_id
from domain.spec import load_spec
from runtime.devstack import embedded_stack, private_settings
from runtime.settings import Settings
from starter import start_mailing
from tests.test_ledger_e2e import PHONES, write_mailing

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


async def cli(settings: Settings, *args: str) -> str:
    """`python starter.py ARGS` against the stack of `settings`; its stdout (it must exit 0)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        *args,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **settings.process_env()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def answers(settings: Settings, mailing_id: str, folder: Path) -> dict[str, Any]:
    await asyncio.to_thread(folder.mkdir)
    return {
        "status": json.loads(await cli(settings, "status", mailing_id, "--json")),
        "list": json.loads(await cli(settings, "list", "--json")),
        "search": json.loads(await cli(settings, "search", PHONES[8], "--json")),
        "report": await cli(settings, "report", mailing_id, "--out", str(folder / "report.xlsx")),
        "csv": await cli(settings, "report", mailing_id, "--out", str(folder / "report.csv")),
    }


async def test_status_list_search_and_report_outlive_the_temporal_database(tmp_path: Path) -> None:
    settings = private_settings(tmp_path / "stack", "survive", sandbox_report_delay=0.05)
    spec = load_spec(write_mailing(tmp_path))
    mailing_id = f"survive-{uuid.uuid4().hex[:6]}"
    async with embedded_stack(settings, ui=False) as stack:
        assert stack.ledger is not None
        settings = stack.settings  # with the stack's webhook secret, for the CLI's environment
        handle = await start_mailing(stack.client, settings, stack.ledger, spec, mailing_id)
        summary: MailingSummary = await handle.result()
        before = await answers(settings, mailing_id, tmp_path / "before")

    for leftover in settings.dev_db_file.parent.glob(settings.dev_db_file.name + "*"):
        leftover.unlink()  # the Temporal database and its WAL: Temporal forgets everything

    async with embedded_stack(settings, ui=False) as stack:
        with pytest.raises(RPCError) as gone:
            await stack.client.get_workflow_handle(mailing_workflow_id(mailing_id)).describe()
        assert gone.value.status == RPCStatusCode.NOT_FOUND
        after = await answers(settings, mailing_id, tmp_path / "after")

    status = after["status"]
    assert status["source"] == "ledger" and status["status"] == "completed"
    assert status["outcomes"] == summary.outcomes == {"delivered": 9, "undelivered": 1, "not_sent": 0}
    assert status["delivered_by_channel"] == summary.delivered_by_channel
    # the ledger's funnel adds not_sent to the stages visibility counts
    assert {
        c: {k: status["channels"][c][k] for k in stages} for c, stages in summary.channels.items()
    } == summary.channels
    assert status["recipients"] == summary.recipients
    assert {k: v for k, v in status.items() if k != "finished_at"} == {
        k: v for k, v in before["status"].items() if k != "finished_at"
    }
    assert [m["id"] for m in after["list"]] == [mailing_id] and after["list"] == before["list"]
    assert after["search"] == before["search"]
    assert [(m["channel"], m["status"]) for m in after["search"]] == [("sms", "delivered"), ("viber", "sent")]

    report = tmp_path / "after" / "report.xlsx"
    with zipfile.ZipFile(report) as archive:
        assert any(name.startswith("xl/charts/chart") for name in archive.namelist())
    book = CalamineWorkbook.from_path(str(report))  # a reader other than the writer's own
    detail = book.get_sheet_by_name("Detail").to_python()
    rows = detail[1:]
    assert len(rows) == summary.recipients["valid"] == 10
    finals = [row[2] for row in rows]
    assert {outcome: finals.count(outcome) for outcome in summary.outcomes} == summary.outcomes
    with (tmp_path / "after" / "report.csv").open(newline="", encoding="utf-8") as file:
        assert len(list(csv.reader(file))) == len(detail)
