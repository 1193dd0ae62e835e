"""The webhook gateway and the sandbox provider over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from gateway.app import MAX_BODY_BYTES, create_gateway
from providers.registry import build_registry
from providers.sandbox import SIGNATURE_HEADER, sign
from runtime.devstack import Stack
from runtime.servers import base_url, free_port, running
from runtime.settings import Settings
from runtime.temporal import connect
from sandbox.app import SandboxConfig, create_app

pytestmark = pytest.mark.e2e


def report_body(client_ref: str, status: str = "delivered") -> bytes:
    return json.dumps(
        {
            "message_id": "m-1",
            "client_ref": client_ref,
            "status": status,
            "timestamp": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def post(url: str, body: bytes, secret: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    async with httpx.AsyncClient() as http:
        return await http.post(url, content=body, headers=headers)


@pytest.fixture
def webhook(stack: Stack) -> str:
    return f"{stack.settings.webhook_base_url}/webhooks/sandbox"


@pytest.fixture
def secret(stack: Stack) -> str:
    return stack.settings.webhook_key()


async def test_wrong_or_missing_signature_is_401(webhook: str) -> None:
    body = report_body("m/+79990000001/0")
    assert (await post(webhook, body, "not-the-secret")).status_code == 401
    assert (await post(webhook, body, None)).status_code == 401


async def test_tampered_body_is_401(webhook: str, secret: str) -> None:
    body = report_body("m/+79990000001/0")
    headers = {SIGNATURE_HEADER: sign(secret, body)}
    async with httpx.AsyncClient() as http:
        response = await http.post(webhook, content=body.replace(b"delivered", b"read"), headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("body", [b"not json", b'{"client_ref": "x"}', report_body("m/+79990000001/0", "lost")])
async def test_malformed_report_is_400(webhook: str, secret: str, body: bytes) -> None:
    assert (await post(webhook, body, secret)).status_code == 400


async def test_unknown_provider_is_404(stack: Stack, secret: str) -> None:
    response = await post(f"{stack.settings.webhook_base_url}/webhooks/nobody", report_body("x"), secret)
    assert response.status_code == 404


async def test_oversized_body_is_413(webhook: str, secret: str) -> None:
    assert (await post(webhook, b"x" * (MAX_BODY_BYTES + 1), secret)).status_code == 413


@pytest.mark.parametrize("ref", ["ghost-mailing/+79990000001/0", "something we never issued"])
async def test_unknown_workflow_or_reference_is_acknowledged(webhook: str, secret: str, ref: str) -> None:
    response = await post(webhook, report_body(ref), secret)
    assert response.status_code == 200 and response.json() == {"received": 1, "recorded": 0}


async def test_temporal_unavailable_is_503_so_the_provider_retries() -> None:
    settings = Settings(
        temporal_address=f"127.0.0.1:{free_port()}", gateway_port=free_port(), webhook_secret=SecretStr("s")
    )
    client = await connect(settings, lazy=True)
    async with httpx.AsyncClient() as http:
        app = create_gateway(client, build_registry(settings, http))
        async with running(app, "127.0.0.1", settings.gateway_port) as server:
            secret = settings.webhook_key()
            response = await post(f"{base_url(server)}/webhooks/sandbox", report_body("m/+79990000001/0"), secret)
    assert response.status_code == 503


class Receiver:
    """A stand-in webhook endpoint that can be down for the first N reports."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            if self.fail_first > 0:
                self.fail_first -= 1
                return Response(status_code=503)
            self.received.append(json.loads(await request.body()))
            return Response(status_code=200)


@pytest.fixture
async def sandbox_url() -> AsyncIterator[str]:
    app = create_app(SandboxConfig(webhook_secret="s", report_delay=0.05))
    async with running(app, "127.0.0.1", 0) as server:
        yield base_url(server)


def message(ref: str, to: str, callback: str, channel: str = "viber") -> dict[str, Any]:
    return {
        "client_ref": ref,
        "channel": channel,
        "to": to,
        "sender": "Shop",
        "text": "hi",
        "ttl_seconds": 60,
        "callback_url": callback,
    }


async def test_sandbox_deduplicates_by_reference_and_retries_reports(sandbox_url: str) -> None:
    receiver = Receiver(fail_first=2)
    port = free_port()
    async with running(receiver.app, "127.0.0.1", port), httpx.AsyncClient() as http:
        hook = f"http://127.0.0.1:{port}/hook"
        first = await http.post(f"{sandbox_url}/messages", json=message("m/+79990000000/0", "+79990000000", hook))
        again = await http.post(f"{sandbox_url}/messages", json=message("m/+79990000000/0", "+79990000000", hook))
        assert first.json()["message_id"] == again.json()["message_id"] and again.json()["duplicate"]
        for _ in range(100):
            if len(receiver.received) == 2:
                break
            await asyncio.sleep(0.05)
        listed = (await http.get(f"{sandbox_url}/messages")).json()
    assert [r["status"] for r in receiver.received] == ["delivered", "read"]  # digit 0 on viber
    assert len(listed) == 1 and listed[0]["requests"] == 2


async def test_sandbox_refuses_a_malformed_destination(sandbox_url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{sandbox_url}/messages", json=message("m/x/0", "12ab", "http://127.0.0.1:1/"))
    assert response.status_code == 400
