"""Issue 10.4: a report counts only for a step its account sent, and its texts are bounded before they reach
a workflow's history (an authenticated sender cannot report on another account's messages, nor grow
histories by a megabyte a report)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import cast

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from domain.models import ERROR_MAX, MESSAGE_ID_MAX, DeliveryReport, RecipientInput
from domain.status import CascadeStatus, Channel, MessageStatus
from gateway.app import create_gateway
from runtime.servers import base_url, running
from tests.hostile import REF
from tests.test_cascade import CascadeRunner, plan
from tests.test_hostile_webhooks import ADAPTERS, StubTemporal, signed
from workflows.recipient import RecipientCascadeWorkflow

D = MessageStatus.DELIVERED


@pytest.fixture
async def runner(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[CascadeRunner]:
    async with CascadeRunner(time_skipping_env).running() as running_runner:
        yield running_runner


async def test_a_report_from_an_account_that_did_not_send_the_step_is_ignored(runner: CascadeRunner) -> None:
    cascade = await runner.start(
        RecipientInput(mailing_id="m1", phone="+79990000001", variables={"name": "A"}, plan=plan())
    )
    await cascade.sends(1)
    forged = DeliveryReport(step=0, status=D, message_id="x", account="twilio-other")
    await cascade.handle.signal(RecipientCascadeWorkflow.report, forged)
    state = await cascade.state()
    assert state.steps[0].status is MessageStatus.SENT and state.steps[0].reports == 0
    await cascade.handle.signal(RecipientCascadeWorkflow.report, forged.model_copy(update={"account": "sandbox"}))
    state = await cascade.result()
    assert state.status is CascadeStatus.DELIVERED and state.delivered_channel is Channel.VIBER


async def _post(report: dict[str, str]) -> tuple[int, StubTemporal]:
    temporal = StubTemporal()
    body = json.dumps(report).encode()
    headers, _ = signed("sandbox", body)
    gateway = create_gateway(cast(Client, temporal), ADAPTERS)
    async with running(gateway, "127.0.0.1", 0) as server, httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{base_url(server)}/webhooks/sandbox", content=body, headers=headers)
    return response.status_code, temporal


REPORT = {"message_id": "m", "client_ref": REF, "status": "undelivered", "timestamp": "2026-01-01T00:00Z"}


async def test_the_gateway_names_the_account_and_cuts_a_long_error() -> None:
    code, temporal = await _post(REPORT | {"error_code": "e" * 500_000})
    assert code == 200
    [signal] = temporal.signals
    assert signal.account == "sandbox" and signal.error == "e" * ERROR_MAX


async def test_the_gateway_refuses_a_message_id_longer_than_any_provider_issues() -> None:
    code, temporal = await _post(REPORT | {"message_id": "m" * (MESSAGE_ID_MAX + 1)})
    assert code == 400 and temporal.signals == []
