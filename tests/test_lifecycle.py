"""Mailing lifecycle on the real dev server, driven through the CLI: delayed start, speed, end date,
pause / resume / cancel, and their errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.refs import mailing_workflow_id
from runtime.devstack import Stack
from starter import with_live_counts
from tests.test_e2e import TEN_NUMBERS, cli, sandbox_messages
from workflows.mailing import MailingWorkflow

pytestmark = pytest.mark.e2e


def timed_spec(folder: Path, head: str, numbers: list[str] = TEN_NUMBERS) -> Path:
    spec = folder / f"spec-{uuid.uuid4().hex[:6]}.toml"
    spec.write_text(
        f'name = "Lifecycle"\nnumbers = {json.dumps(numbers)}\nlate_reports = "1s"\n{head}\n'
        '[schedule]\nhours = "00:00-24:00"\n'
        '[[steps]]\nchannel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "2s"\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "2s"\n',
        encoding="utf-8",
    )
    return spec


async def status(stack: Stack, mailing_id: str) -> dict[str, Any]:
    """The mailing's own figures, queried directly: polling through the CLI would be too slow to catch states."""
    handle = stack.client.get_workflow_handle_for(MailingWorkflow.run, mailing_workflow_id(mailing_id))
    summary = await with_live_counts(stack.client, await handle.query(MailingWorkflow.summary))
    return summary.model_dump(mode="json")


async def until_status(stack: Stack, mailing_id: str, *wanted: str, within: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        summary = await status(stack, mailing_id)
        if summary["status"] in wanted or asyncio.get_running_loop().time() > deadline:
            assert summary["status"] in wanted, summary
            return summary
        await asyncio.sleep(0.3)


async def start(stack: Stack, spec: Path) -> str:
    mailing_id = f"life-{uuid.uuid4().hex[:6]}"
    code, out, err = await cli(stack.settings, "start", str(spec), "--id", mailing_id)
    assert code == 0, err
    assert out.strip() == mailing_id
    return mailing_id


async def test_pause_holds_sends_and_resume_finishes_the_mailing(stack: Stack, tmp_path: Path) -> None:
    mailing_id = await start(stack, timed_spec(tmp_path, 'speed = "1/s"'))
    await until_status(stack, mailing_id, "running")
    code, out, _ = await cli(stack.settings, "pause", mailing_id)
    assert code == 0 and out.strip() == f"mailing {mailing_id}: paused"
    code, out, _ = await cli(stack.settings, "pause", mailing_id)
    assert code == 0 and out.strip() == f"mailing {mailing_id}: already paused"
    await asyncio.sleep(5)  # the dispatch chunk in flight ends; the broadcast reaches the running recipients
    paused = await status(stack, mailing_id)
    held = len(await sandbox_messages(stack.settings, mailing_id))
    await asyncio.sleep(5)  # long past every step's wait: nothing is sent while paused
    assert len(await sandbox_messages(stack.settings, mailing_id)) == held
    assert paused["status"] == "paused" and paused["dispatched"] < 10

    code, out, _ = await cli(stack.settings, "resume", mailing_id)
    assert code == 0 and out.strip() == f"mailing {mailing_id}: resumed"
    final = await until_status(stack, mailing_id, "completed", within=90)
    assert final["outcomes"] == {"delivered": 9, "undelivered": 1, "not_sent": 0}
    messages = await sandbox_messages(stack.settings, mailing_id)
    assert len(messages) == 14 and all(m["requests"] == 1 for m in messages)

    code, _, err = await cli(stack.settings, "pause", mailing_id)
    assert code == 1 and f"error: mailing {mailing_id} has finished (completed); nothing to pause" in err


async def test_cancel_stops_pending_sends_and_aborts(stack: Stack, tmp_path: Path) -> None:
    mailing_id = await start(stack, timed_spec(tmp_path, 'speed = "1/s"'))
    await until_status(stack, mailing_id, "running")
    code, out, _ = await cli(stack.settings, "cancel", mailing_id)
    assert code == 0 and out.strip() == f"mailing {mailing_id}: cancelled"
    code, out, err = await cli(stack.settings, "cancel", mailing_id)  # the first answered once all were told,
    already = code == 0 and out.strip() == f"mailing {mailing_id}: already cancelled"  # so the mailing may
    assert already or (code == 1 and "has finished (aborted)" in err)  # have ended meanwhile
    handle = stack.client.get_workflow_handle_for(MailingWorkflow.run, mailing_workflow_id(mailing_id))
    await asyncio.wait_for(handle.result(), timeout=60)
    final = await status(stack, mailing_id)
    assert final["status"] == "aborted"
    assert final["error"] == "cancelled by the user"
    assert 0 < final["dispatched"] < 10 and final["not_started"] == 10 - final["dispatched"]
    assert sum(final["outcomes"].values()) == 10
    assert final["outcomes"]["not_sent"] >= final["not_started"]
    code, out, err = await cli(stack.settings, "cancel", mailing_id)
    assert code == 1 and "has finished (aborted); nothing to cancel" in err


async def test_delayed_start_waits_then_runs(stack: Stack, tmp_path: Path) -> None:
    start_at = (datetime.now(UTC) + timedelta(seconds=6)).isoformat(timespec="seconds")
    mailing_id = await start(stack, timed_spec(tmp_path, f'start_at = "{start_at}"', TEN_NUMBERS[:2]))
    waiting = await until_status(stack, mailing_id, "waiting")
    assert waiting["dispatched"] == 0 and waiting["recipients"]["valid"] == 2
    final = await until_status(stack, mailing_id, "completed", within=60)
    messages = await sandbox_messages(stack.settings, mailing_id)
    first_send = min(datetime.fromisoformat(m["accepted_at"]) for m in messages)
    assert first_send >= datetime.fromisoformat(start_at)
    assert final["outcomes"]["delivered"] == 2


async def test_the_end_date_stops_the_mailing(stack: Stack, tmp_path: Path) -> None:
    end_at = (datetime.now(UTC) + timedelta(seconds=6)).isoformat(timespec="seconds")
    mailing_id = await start(stack, timed_spec(tmp_path, f'speed = "1/s"\nend_at = "{end_at}"'))
    final = await until_status(stack, mailing_id, "completed_by_end_date", within=60)
    assert 0 < final["dispatched"] < 10 and final["not_started"] == 10 - final["dispatched"]
    messages = await sandbox_messages(stack.settings, mailing_id)
    assert all(datetime.fromisoformat(m["accepted_at"]) < datetime.fromisoformat(end_at) for m in messages)


async def test_lifecycle_commands_name_an_unknown_mailing(stack: Stack) -> None:
    for command in ("pause", "resume", "cancel"):
        code, _, err = await cli(stack.settings, command, "no-such-mailing")
        assert code == 1 and "error: no mailing 'no-such-mailing'" in err


async def test_start_refuses_an_end_date_in_the_past(stack: Stack, tmp_path: Path) -> None:
    code, _, err = await cli(stack.settings, "start", str(timed_spec(tmp_path, 'end_at = "2020-01-01T10:00"')))
    assert code == 1 and "end_at: 2020-01-01T10:00:00+03:00 is in the past" in err


async def test_outside_the_allowed_hours_the_mailing_is_paused_by_schedule(stack: Stack, tmp_path: Path) -> None:
    opens = datetime.now(UTC) + timedelta(hours=2)
    closes = opens + timedelta(hours=1)
    spec = timed_spec(tmp_path, "", TEN_NUMBERS[:2])
    spec.write_text(
        spec.read_text().replace('hours = "00:00-24:00"', f'hours = "{opens:%H:%M}-{closes:%H:%M}"\ntimezone = "UTC"'),
        encoding="utf-8",
    )
    mailing_id = await start(stack, spec)
    paused = await until_status(stack, mailing_id, "paused_by_schedule")
    assert paused["dispatched"] == 0 and paused["schedule"].endswith(f"{opens:%H:%M}-{closes:%H:%M} UTC")
    code, out, _ = await cli(stack.settings, "cancel", mailing_id)
    assert out.strip() == f"mailing {mailing_id}: cancelled"
    assert code == 0
    handle = stack.client.get_workflow_handle_for(MailingWorkflow.run, mailing_workflow_id(mailing_id))
    summary = await asyncio.wait_for(handle.result(), timeout=30)
    assert summary.status == "aborted" and summary.not_started == 2
    assert await sandbox_messages(stack.settings, mailing_id) == []
