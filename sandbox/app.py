"""The sandbox provider's HTTP API: accept a message, later POST signed delivery reports to its callback.

It de-duplicates by `client_ref` (as Rapporto does by partner id), so a retried send never becomes a second
message, and it records every request so tests can prove that no step was sent twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from domain.spec import Button
from domain.status import Channel, MessageStatus
from domain.whatsapp import WhatsAppTemplate
from providers.sandbox import SIGNATURE_HEADER, sign
from sandbox.delivery import Reporter, post_until_accepted
from sandbox.outcomes import CHANNELS, ERROR_CODES, planned_reports

log = logging.getLogger("kaskad.sandbox")


class MessageIn(BaseModel):
    client_ref: str
    channel: Channel
    to: str
    sender: str
    text: str = ""
    image_url: str | None = None
    button: Button | None = None
    template: WhatsAppTemplate | None = None
    ttl_seconds: int
    callback_url: str


class Accepted(BaseModel):
    message_id: str
    client_ref: str
    channel: Channel
    to: str
    text: str
    template: WhatsAppTemplate | None = None
    requests: int = 1
    accepted_at: datetime
    reports_sent: list[MessageStatus] = []


@dataclass
class SandboxConfig:
    webhook_secret: str
    report_delay: float = 0.2  # seconds between acceptance and each report
    retry_for: float = 3600.0  # keep retrying a report this long while the gateway is down


@dataclass
class _State:
    messages: dict[str, Accepted] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def create_app(config: SandboxConfig) -> FastAPI:
    state = _State()
    reporter = Reporter(state.tasks)
    http = reporter.http

    app = FastAPI(title="kaskad sandbox provider", lifespan=reporter.lifespan)

    @app.post("/messages")
    async def send(message: MessageIn) -> JSONResponse:
        if not message.to.startswith("+") or not message.to[1:].isdigit():
            return JSONResponse({"error": "invalid destination"}, status_code=400)
        if message.channel not in CHANNELS:
            return JSONResponse({"error": f"the sandbox does not send {message.channel.value}"}, status_code=400)
        if (message.template is None) == (message.channel is Channel.WHATSAPP):
            return JSONResponse({"error": "a template is for whatsapp messages, and required there"}, status_code=400)
        known = state.messages.get(message.client_ref)
        if known is not None:  # a retried send: same message, nothing new is delivered
            known.requests += 1
            return JSONResponse({"message_id": known.message_id, "duplicate": True})
        accepted = Accepted(
            message_id=uuid.uuid4().hex,
            client_ref=message.client_ref,
            channel=message.channel,
            to=message.to,
            text=message.text,
            template=message.template,
            accepted_at=datetime.now(UTC),
        )
        state.messages[message.client_ref] = accepted
        reporter.spawn(_report(accepted, message.callback_url))
        return JSONResponse({"message_id": accepted.message_id})

    @app.get("/messages")
    async def messages(client_ref: str | None = None) -> list[Accepted]:
        """Every accepted message, or the one with `client_ref` (how a sender checks whether a request whose
        answer it lost did arrive)."""
        if client_ref is not None:
            known = state.messages.get(client_ref)
            return [known] if known is not None else []
        return list(state.messages.values())

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def _report(message: Accepted, callback_url: str) -> None:
        for status in planned_reports(message.channel, message.to):
            await asyncio.sleep(config.report_delay)
            body = json.dumps(
                {
                    "message_id": message.message_id,
                    "client_ref": message.client_ref,
                    "status": status.value,
                    "error_code": ERROR_CODES[message.channel] if status is MessageStatus.UNDELIVERED else None,
                    "timestamp": datetime.now(UTC).isoformat(),
                }
            ).encode()
            await _post_until_accepted(callback_url, body)
            message.reports_sent.append(status)

    async def _post_until_accepted(url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(config.webhook_secret, body)}
        await post_until_accepted(lambda: http.post(url, content=body, headers=headers), config.retry_for)

    return app
