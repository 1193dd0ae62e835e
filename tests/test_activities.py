"""Activities against the real dev server and the real sandbox: idempotency is what matters here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.dispatch import DispatchActivities
from activities.recipients import RecipientActivities
from domain.models import DispatchRequest, DispatchResult, ImportRequest, SendRequest
from domain.refs import recipient_workflow_id
from domain.spec import CascadePlan, MailingSpec, Step, load_spec
from domain.status import Channel
from providers import twilio
from providers.base import ProviderAdapter
from providers.registry import build_registry, registry_accounts
from providers.sandbox import SandboxAdapter
from runtime.devstack import Stack
from starter import start_mailing
from tests.test_e2e import cli, write_spec
from worker import build_workers

pytestmark = pytest.mark.e2e
PHONES = [f"+7999123000{i}" for i in range(5)]


def stored_list(folder: Path) -> Path:
    path = folder / "recipients.jsonl"
    path.write_text("".join(json.dumps({"row": i, "phone": p, "vars": {}}) + "\n" for i, p in enumerate(PHONES)))
    return path


def one_sms_plan() -> CascadePlan:
    return CascadePlan(
        steps=[Step(channel=Channel.SMS, sender="S", text="hi", wait=timedelta(seconds=5))],
        provider="sandbox",
        late_reports=timedelta(0),
    )


async def test_a_retried_dispatch_resumes_and_never_starts_anyone_twice(stack: Stack, tmp_path: Path) -> None:
    mailing_id = f"dispatch-{uuid.uuid4().hex[:6]}"
    plan = one_sms_plan()
    request = DispatchRequest(mailing_id=mailing_id, plan=plan, stored_list=stored_list(tmp_path))
    # A queue no worker polls: the recipients are started, never run.
    dispatch = DispatchActivities(stack.client, f"idle-{uuid.uuid4().hex[:6]}", {}, 100.0).dispatch

    first = await ActivityEnvironment().run(dispatch, request)
    assert (first.position, first.started, first.already_running, first.exhausted) == (5, 5, 0, True)

    beats: list[DispatchResult] = []
    resumed_env = ActivityEnvironment()
    at_three = DispatchResult(position=3, started=3, already_running=0).model_dump(mode="json")
    resumed_env.info = dataclasses.replace(resumed_env.info, heartbeat_details=[at_three])
    resumed_env.on_heartbeat = lambda *details: beats.append(DispatchResult.model_validate(details[0]))
    resumed = await resumed_env.run(dispatch, request)  # a retry after the heartbeat at position 3
    assert (resumed.started, resumed.already_running) == (3, 2)
    assert [(b.position, b.started, b.already_running) for b in beats] == [(4, 3, 1), (5, 3, 2)]

    restarted = await ActivityEnvironment().run(dispatch, request)  # a retry that lost its heartbeat
    assert (restarted.started, restarted.already_running) == (0, 5)

    try:
        query = f"MailingId = '{mailing_id}'"
        for _ in range(50):  # visibility is eventually consistent
            runs = [w async for w in stack.client.list_workflows(query)]
            if len(runs) >= 5:
                break
            await asyncio.sleep(0.1)
        assert sorted(r.id for r in runs) == sorted(recipient_workflow_id(mailing_id, p) for p in PHONES)
        assert all(r.status == WorkflowExecutionStatus.RUNNING for r in runs)  # one run each, never restarted
    finally:
        for phone in PHONES:
            await stack.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone)).terminate()


async def test_a_paced_dispatch_spaces_its_starts_and_stops_at_its_deadline(stack: Stack, tmp_path: Path) -> None:
    mailing_id = f"paced-{uuid.uuid4().hex[:6]}"
    plan = one_sms_plan()
    dispatch = DispatchActivities(stack.client, f"idle-{uuid.uuid4().hex[:6]}", {}, 100.0).dispatch
    interval = timedelta(milliseconds=300)
    began = datetime.now(UTC)
    request = DispatchRequest(
        mailing_id=mailing_id,
        plan=plan,
        stored_list=stored_list(tmp_path),
        interval=interval,
        until=began + timedelta(milliseconds=700),  # room for the slots at 0, 300 and 600 ms
    )
    try:
        cut = await ActivityEnvironment().run(dispatch, request)
        assert (cut.position, cut.started, cut.exhausted) == (3, 3, False)
        assert cut.next_start is not None and cut.next_start >= began + 3 * interval
        rest = await ActivityEnvironment().run(
            dispatch, request.model_copy(update={"position": 3, "not_before": cut.next_start, "until": None})
        )
        assert (rest.position, rest.started, rest.exhausted) == (5, 2, True)
        assert datetime.now(UTC) >= began + 4 * interval  # five starts, four intervals apart at least
    finally:
        for phone in PHONES:
            with contextlib.suppress(RPCError):
                await stack.client.get_workflow_handle(recipient_workflow_id(mailing_id, phone)).terminate()


async def test_a_retried_send_is_one_message_at_the_provider(stack: Stack) -> None:
    settings = stack.settings
    ref = f"retry-{uuid.uuid4().hex[:6]}/+79991230001/0"
    request = SendRequest(
        client_ref=ref,
        provider="sandbox",
        channel=Channel.SMS,
        phone="+79991230001",
        sender="S",
        text="hi",
        ttl=timedelta(minutes=1),
    )
    async with httpx.AsyncClient() as http:
        adapter = SandboxAdapter(http, settings.sandbox_base_url, "http://127.0.0.1:9/unused", "x")
        first, second = await adapter.send(request), await adapter.send(request)
        listed = [m for m in (await http.get(f"{settings.sandbox_base_url}/messages")).json() if m["client_ref"] == ref]
    assert first.message_id == second.message_id
    assert len(listed) == 1 and listed[0]["requests"] == 2


async def test_start_refuses_a_list_without_a_valid_number_before_launching(stack: Stack, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "delivered", ["12345", "not a phone"])
    code, out, err = await cli(stack.settings, "start", str(spec), "--wait", "--json")
    assert code == 1 and out == ""
    assert "2 rows: 0 valid, 2 invalid, 0 duplicates" in err
    assert "error: the recipients hold no valid number; nothing was started" in err


async def test_a_mailing_started_without_a_valid_number_is_aborted_with_the_reason(
    stack: Stack, tmp_path: Path
) -> None:
    """Another client may skip the CLI's check: the mailing workflow refuses too."""
    spec = load_spec(write_spec(tmp_path, "delivered", ["12345", "not a phone"]))
    assert stack.ledger is not None
    handle = await start_mailing(stack.client, stack.settings, stack.ledger, spec, f"empty-{uuid.uuid4().hex[:6]}")
    summary = await handle.result()
    assert summary.status == "aborted" and summary.error == "the recipients hold no valid number"
    assert summary.recipients == {"total": 2, "valid": 0, "invalid": 2, "duplicates": 0}


async def test_each_provider_sends_through_its_own_rate_capped_task_queue(stack: Stack) -> None:
    settings = stack.settings.model_copy(update={"task_queue": "wiring", "provider_rates": {"sandbox": 7.5}})
    async with httpx.AsyncClient() as http:
        workers = build_workers(stack.client, settings, build_registry(settings, http), stack.ledger)
    by_queue = {worker.task_queue: worker.config() for worker in workers}
    assert set(by_queue) == {"wiring", "wiring-send-sandbox"}
    assert by_queue["wiring-send-sandbox"].get("max_task_queue_activities_per_second") == 7.5
    assert by_queue["wiring"].get("max_task_queue_activities_per_second") is None


async def test_the_import_refuses_unknown_accounts_and_unsupported_channels(tmp_path: Path) -> None:
    """Another client may start a mailing without the CLI's checks: the import activity makes them too, against
    the adapters the worker built (`build_workers` passes `registry_accounts` of its registry)."""
    async with httpx.AsyncClient() as http:
        providers: dict[str, ProviderAdapter] = {
            "sandbox": SandboxAdapter(http, "http://127.0.0.1:9", "http://127.0.0.1:9/unused", "x"),
            "twilio-main": twilio.build(
                "twilio-main",
                {"type": "twilio", "account_sid": "AC1", "auth_token": "t", "from_number": "+15550001"},
                http,
                "http://127.0.0.1:9/unused",
            ),
        }
    activities = RecipientActivities(tmp_path, accounts=registry_accounts(providers))

    def request(viber_provider: str, sms_provider: str) -> ImportRequest:
        steps = [
            {"channel": "viber", "sender": "S", "text": "hi", "wait": "5m", "provider": viber_provider},
            {"channel": "sms", "sender": "S", "text": "hi", "wait": "5m", "provider": sms_provider},
        ]
        spec = MailingSpec.model_validate({"name": "T", "numbers": ["+79990000001"], "steps": steps})
        return ImportRequest(mailing_id=f"check-{uuid.uuid4().hex[:6]}", spec=spec)

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.import_recipients, request("twilio-main", "sandbx"))
    assert refused.value.non_retryable and refused.value.type == "SpecError"
    assert refused.value.message == (
        "steps.1.provider: 'twilio-main' (twilio) does not send viber (it sends: sms, whatsapp); "
        "steps.2.provider: 'sandbx' is not a configured provider account (known: sandbox, twilio-main)"
    )
    assert not list(tmp_path.iterdir())  # noqa: ASYNC240  (refused before anything was read or written)

    report = await ActivityEnvironment().run(activities.import_recipients, request("sandbox", "twilio-main"))
    assert report.valid == 1
