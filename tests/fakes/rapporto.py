"""A local Rapporto that answers as providers.md documents, for adapter tests and end-to-end mailings.

It checks login/password, de-duplicates by the partner `id` (a repeated id returns the same mtNum and sends
nothing new), records every request, can be told to fail or stall the next requests, and after accepting a
message posts delivery reports to its `notifyUrl` — the statuses `sandbox.outcomes.planned_reports` plans for
the number, as Rapporto codes — retrying non-2xx answers with backoff as the sandbox does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from domain.status import Channel, MessageStatus
from sandbox.delivery import Reporter, post_until_accepted
from sandbox.outcomes import planned_reports

log = logging.getLogger("kaskad.fakes.rapporto")

# Our statuses → the Rapporto codes the fake reports (the reverse of the adapter's table).
REPORT_CODES = {MessageStatus.SENT: 0, MessageStatus.DELIVERED: 2, MessageStatus.READ: 9, MessageStatus.UNDELIVERED: 5}
ERROR_CODE = 1  # errorCode on undelivered reports ("absent subscriber"-like)
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_TTL_UNIT_SECONDS = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class FakeMessage:
    id: str
    mt_num: str
    type: str
    dest_addr: str
    source_addr: str
    notify_url: str | None
    body: dict[str, Any]
    submitted_at: datetime
    repeats: int = 0  # further requests with the same id (de-duplicated)
    reports_sent: list[int] = field(default_factory=list)  # Rapporto codes the receiver accepted


@dataclass
class _Failure:
    status_code: int
    headers: dict[str, str] | None
    body: Any


@dataclass
class FakeRapportoState:
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: dict[str, FakeMessage] = field(default_factory=dict)  # by partner id
    report_attempts: int = 0  # report POSTs made, successful or not
    _failures: list[_Failure] = field(default_factory=list)
    _delays: list[float] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every acceptance and report

    def fail_next(
        self, status_code: int, headers: dict[str, str] | None = None, body: Any = None, count: int = 1
    ) -> None:
        """Answer the next `count` send requests with this status (before any check; nothing is accepted)."""
        self._failures.extend(_Failure(status_code, headers, body) for _ in range(count))

    def delay_next(self, seconds: float) -> None:
        """Stall the next send request this long before handling it (it is still handled: a read timeout
        on the client side leaves an accepted message behind, as with the real provider)."""
        self._delays.append(seconds)

    @property
    def delivered_count(self) -> int:
        """Distinct messages accepted (what would reach handsets)."""
        return len(self.messages)

    async def wait_accepted(self, client_ref: str) -> FakeMessage:
        """Wait until a message with this partner id was accepted (wrap in `asyncio.timeout`)."""
        while client_ref not in self.messages:
            await self._wait_change()
        return self.messages[client_ref]

    async def wait_reports(self, client_ref: str, count: int) -> list[int]:
        """Wait until `count` reports of one message were accepted by the receiver (wrap in `asyncio.timeout`);
        their Rapporto codes."""
        message = await self.wait_accepted(client_ref)
        while len(message.reports_sent) < count:
            await self._wait_change()
        return list(message.reports_sent)

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()


def _error(status_code: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status_code)


def create_fake(login: str, password: str, report_delay: float = 0.2) -> tuple[FastAPI, FakeRapportoState]:
    """The fake app (send endpoint `POST /send`, as the adapter builds `{base_url}/send`) and its state."""
    state = FakeRapportoState()
    reporter = Reporter(state._tasks)
    http = reporter.http

    app = FastAPI(title="fake Rapporto", lifespan=reporter.lifespan)

    @app.post("/send")
    async def send(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        state.requests.append(
            RecordedRequest(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        if state._delays:
            await asyncio.sleep(state._delays.pop(0))
        if state._failures:
            failure = state._failures.pop(0)
            content = failure.body if failure.body is not None else {"error": f"injected {failure.status_code}"}
            return JSONResponse(content, status_code=failure.status_code, headers=failure.headers)
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        if body.get("login") != login or body.get("password") != password:
            return _error(401, "invalid login or password")
        problem = _missing(body)
        if problem:
            return _error(400, problem)
        known = state.messages.get(body["id"])
        if known is not None:  # de-duplication by partner id: the same message, nothing new is sent
            known.repeats += 1
            return JSONResponse({"mtNum": known.mt_num, "id": known.id})
        message = FakeMessage(
            id=body["id"],
            mt_num=uuid.uuid4().hex[:16],
            type=body["message"]["type"],
            dest_addr=body["destAddr"],
            source_addr=body["message"]["data"]["serviceNumber"],
            notify_url=body.get("notifyUrl"),
            body=body,
            submitted_at=datetime.now(UTC),
        )
        state.messages[message.id] = message
        state._notify()
        if message.notify_url:
            reporter.spawn(_report(message, message.notify_url))
        return JSONResponse({"mtNum": message.mt_num, "id": message.id})

    async def _report(message: FakeMessage, url: str) -> None:
        channel = Channel.SMS if message.type == "SMS" else Channel.VIBER
        for status in planned_reports(channel, "+" + message.dest_addr):
            await asyncio.sleep(report_delay)
            code = REPORT_CODES[status]
            body = {
                "id": message.id,
                "mtNum": message.mt_num,
                "status": code,
                "type": message.type,
                "doneDate": datetime.now(UTC).strftime(DATE_FORMAT),
                "submitDate": message.submitted_at.strftime(DATE_FORMAT),
                "sourceAddr": message.source_addr,
                "destAddr": message.dest_addr,
                "partCount": 1,
                "errorCode": ERROR_CODE if status is MessageStatus.UNDELIVERED else 0,
                "mccMnc": "25001",
                "trafficType": "SERVICE",
            }
            if await _post_until_accepted(url, json.dumps(body).encode()):
                message.reports_sent.append(code)
                state._notify()

    async def _post_until_accepted(url: str, body: bytes, retry_for: float = 3600.0) -> bool:
        def count(_: int | None) -> None:
            state.report_attempts += 1

        headers = {"Content-Type": "application/json"}
        return await post_until_accepted(lambda: http.post(url, content=body, headers=headers), retry_for, count)

    return app, state


def _missing(body: dict[str, Any]) -> str | None:
    """The first documented required field that is absent or malformed, as an error text."""
    for key in ("id", "destAddr"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key} is required"
    if not body["destAddr"].isdigit():
        return "invalid destAddr"
    message = body.get("message")
    if not isinstance(message, dict) or message.get("type") not in ("SMS", "VIBER"):
        return "message.type must be SMS or VIBER"
    data = message.get("data")
    if not isinstance(data, dict) or not data.get("serviceNumber"):
        return "message.data.serviceNumber is required"
    ttl = data.get("ttl")
    if not isinstance(ttl, int):
        return "message.data.ttl is required"
    if message["type"] == "SMS":
        if not data.get("text"):
            return "message.data.text is required"
        unit = data.get("ttlUnit")
        if unit not in _TTL_UNIT_SECONDS:
            return "message.data.ttlUnit must be SECONDS, MINUTES or HOURS"
        if not 60 <= ttl * _TTL_UNIT_SECONDS[unit] <= 2880 * 60:
            return "message.data.ttl out of range (1-2880 minutes)"
    else:
        if not 30 <= ttl <= 86400:
            return "message.data.ttl out of range (30-86400 seconds)"
        content = data.get("instantContent")
        if not isinstance(content, dict) or content.get("type") not in ("TEXT", "IMAGE_URL", "BUTTON"):
            return "message.data.instantContent.type must be TEXT, IMAGE_URL or BUTTON"
        if not isinstance(content.get("data"), dict):
            return "message.data.instantContent.data is required"
    return None
