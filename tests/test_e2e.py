"""End to end on the real Temporal dev server: CLI → MailingWorkflow → recipient workflows → sandbox over
HTTP → signed reports → gateway over HTTP → signals. Nothing here is faked."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.models import ImportReport, MailingCounts, MailingInput, MailingResume, RecipientState
from domain.refs import mailing_workflow_id, recipient_workflow_id
from runtime.devstack import Stack, temporal_binary
from runtime.settings import Settings
from tests.conftest import stack_env
from workflows.mailing import MailingWorkflow
from workflows.recipient import RecipientCascadeWorkflow

ROOT = Path(__file__).resolve().parents[1]
TEN_NUMBERS = [f"+7999000000{digit}" for digit in range(10)]
pytestmark = pytest.mark.e2e


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run `starter.py` as a user would (a separate process); the test's event loop keeps the worker alive."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "starter.py"),
        *args,
        env={"PATH": str(Path(sys.executable).parent), **stack_env(settings)},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_spec(folder: Path, viber_expect: str, numbers: list[str] = TEN_NUMBERS) -> Path:
    spec = folder / f"spec-{uuid.uuid4().hex[:6]}.toml"
    spec.write_text(
        f'name = "E2E {viber_expect}"\n'
        f"numbers = {json.dumps(numbers)}\n"
        'late_reports = "2s"\n'
        '[schedule]\nhours = "00:00-24:00"\n'
        '[[steps]]\nchannel = "viber"\nsender = "Shop"\ntext = "Viber for {1}"\n'
        f'wait = "3s"\nexpect = "{viber_expect}"\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "SMS for {1}"\nwait = "3s"\nexpect = "delivered"\n',
        encoding="utf-8",
    )
    return spec


async def run_mailing(stack: Stack, tmp_path: Path, viber_expect: str) -> tuple[str, dict[str, Any]]:
    mailing_id = f"e2e-{viber_expect}-{uuid.uuid4().hex[:6]}"
    code, out, err = await cli(
        stack.settings, "start", str(write_spec(tmp_path, viber_expect)), "--id", mailing_id, "--wait", "--json"
    )
    assert code == 0, err
    return mailing_id, json.loads(out)


async def sandbox_messages(settings: Settings, mailing_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        messages: list[dict[str, Any]] = (await http.get(f"{settings.sandbox_base_url}/messages")).json()
    return [m for m in messages if m["client_ref"].startswith(f"{mailing_id}/")]


async def test_viber_then_sms_expect_delivered(stack: Stack, tmp_path: Path) -> None:
    mailing_id, summary = await run_mailing(stack, tmp_path, "delivered")

    assert summary["status"] == "completed"
    assert summary["recipients"] == {"total": 10, "valid": 10, "invalid": 0, "duplicates": 0}
    assert summary["outcomes"] == {"delivered": 9, "undelivered": 1, "not_sent": 0}
    assert summary["delivered_by_channel"] == {"viber": 6, "sms": 3}
    assert summary["channels"] == {
        "viber": {"sent": 10, "delivered": 6, "read": 4, "undelivered": 2},
        "sms": {"sent": 4, "delivered": 3, "read": 0, "undelivered": 1},
    }
    messages = await sandbox_messages(stack.settings, mailing_id)
    assert len(messages) == 14 and all(m["requests"] == 1 for m in messages)  # no step sent twice
    assert len({m["client_ref"] for m in messages}) == 14

    # An explicit Viber failure (numbers ending 6, 7) falls back at once, not after the 3 s wait.
    for phone in ("+79990000006", "+79990000007"):
        handle = stack.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone))
        state: RecipientState = await handle.query(RecipientCascadeWorkflow.state)
        viber, sms = state.steps
        assert viber.sent_at and sms.sent_at and (sms.sent_at - viber.sent_at).total_seconds() < 2


async def test_viber_then_sms_expect_read(stack: Stack, tmp_path: Path) -> None:
    mailing_id, summary = await run_mailing(stack, tmp_path, "read")
    assert summary["outcomes"] == {"delivered": 9, "undelivered": 1, "not_sent": 0}
    assert summary["delivered_by_channel"] == {"viber": 4, "sms": 5}
    assert summary["channels"]["sms"] == {"sent": 6, "delivered": 5, "read": 0, "undelivered": 1}
    messages = await sandbox_messages(stack.settings, mailing_id)
    assert len(messages) == 16 and all(m["requests"] == 1 for m in messages)


async def test_every_workflow_is_listed_by_mailing_id_and_status_reports(stack: Stack, tmp_path: Path) -> None:
    mailing_id, summary = await run_mailing(stack, tmp_path, "delivered")
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        "workflow",
        "list",
        "--address",
        stack.settings.temporal_address,
        "--query",
        f"MailingId='{mailing_id}'",
        "--output",
        "json",
        stdout=asyncio.subprocess.PIPE,
    )
    listing, _ = await process.communicate()
    listed = json.loads(listing)
    ids = {item["execution"]["workflowId"] for item in listed}
    assert ids == {f"mailing-{mailing_id}"} | {recipient_workflow_id(mailing_id, p) for p in TEN_NUMBERS}

    code, out, _ = await cli(stack.settings, "status", mailing_id, "--json")
    assert code == 0
    status = json.loads(out)
    assert status["status"] == "completed" and status["outcomes"] == summary["outcomes"]


async def test_status_of_an_unknown_mailing_is_a_clear_error(stack: Stack) -> None:
    code, _, err = await cli(stack.settings, "status", "no-such-mailing")
    assert code == 1 and "no mailing 'no-such-mailing'" in err


async def test_start_refuses_an_invalid_spec_before_launching(stack: Stack, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "read")
    spec.write_text(spec.read_text().replace('expect = "delivered"', 'expect = "read"'))
    code, _, err = await cli(stack.settings, "start", str(spec))
    assert code == 1 and "steps.1: expect: 'read' is invalid for sms" in err


async def test_invalid_numbers_are_reported_with_row_and_reason(stack: Stack, tmp_path: Path) -> None:
    numbers = ["+79990000001", "8 999 000-00-02", "12345", "+79990000001", "hello"]
    spec = write_spec(tmp_path, "delivered", numbers)
    code, out, err = await cli(stack.settings, "start", str(spec), "--wait", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["recipients"] == {"total": 5, "valid": 2, "invalid": 2, "duplicates": 1}
    assert summary["invalid_by_reason"] == {"too short": 1, "not a number": 1}
    assert [(r["row"], r["reason"]) for r in summary["rejected_sample"]] == [
        (3, "too short"),
        (4, "duplicate of row 1"),
        (5, "not a number"),
    ]
    assert summary["outcomes"]["delivered"] == 2
    assert "5 rows: 2 valid, 2 invalid, 1 duplicates" in err  # printed before the launch


async def test_the_mailing_query_reports_progress_while_running(stack: Stack, tmp_path: Path) -> None:
    mailing_id = f"e2e-progress-{uuid.uuid4().hex[:6]}"
    code, _, err = await cli(stack.settings, "start", str(write_spec(tmp_path, "delivered")), "--id", mailing_id)
    assert code == 0, err
    handle = stack.client.get_workflow_handle_for(MailingWorkflow.run, mailing_workflow_id(mailing_id))
    seen_partial = False
    for _ in range(150):
        summary = await handle.query(MailingWorkflow.summary)
        finished = sum(summary.outcomes.values())
        if summary.status == "running" and 0 < finished < 10:
            seen_partial = True
        if summary.status == "completed":
            break
        await asyncio.sleep(0.1)
    assert seen_partial, "the query never showed partial progress"
    final = await handle.result()
    assert final.outcomes == {"delivered": 9, "undelivered": 1, "not_sent": 0}


async def test_a_mailing_continued_as_new_resumes_without_importing_or_dispatching_again(
    stack: Stack, tmp_path: Path
) -> None:
    mailing_id, summary = await run_mailing(stack, tmp_path, "delivered")
    first = stack.client.get_workflow_handle_for(MailingWorkflow.run, mailing_workflow_id(mailing_id))
    original = (await first.fetch_history()).events[0].workflow_execution_started_event_attributes
    spec = (await stack.client.data_converter.decode(original.input.payloads, [MailingInput]))[0].spec
    report = ImportReport(rows=10, valid=10, stored_list=tmp_path / "gone.jsonl")  # not read again
    resume = MailingResume(
        import_report=report,
        counts=MailingCounts(outcomes={}, delivered_by_channel={}, channels={}, finished=3),
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        status="running",
        position=10,
        dispatched=True,
    )
    resumed = await stack.client.execute_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec, resume=resume),
        id=f"resume-check-{mailing_id}",
        task_queue=stack.settings.task_queue,
    )
    assert resumed.status == "completed" and resumed.started_at == resume.started_at
    assert resumed.outcomes == summary["outcomes"] and resumed.channels == summary["channels"]
    messages = await sandbox_messages(stack.settings, mailing_id)
    assert len(messages) == 14 and all(m["requests"] == 1 for m in messages)  # nothing sent again
