"""A local Infobip that answers `/sms/3/messages`, `/viber/2/messages` and `/whatsapp/1/message/template` as
Infobip documents, then posts delivery reports (and Viber/WhatsApp seen reports) to the per-message webhook
URLs (WhatsApp: its one `notifyUrl` for every report type), retrying while they fail.

Like Infobip, it does not de-duplicate by messageId: every accepted request becomes a message and is recorded,
so tests can prove how many sends reached it. Outcomes follow `sandbox.outcomes.planned_reports`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from domain.status import Channel, MessageStatus
from sandbox.delivery import Reporter, post_until_accepted
from sandbox.outcomes import planned_reports

log = logging.getLogger("kaskad.fakes.infobip")

SMS_PATH = "/sms/3/messages"
VIBER_PATH = "/viber/2/messages"
WHATSAPP_PATH = "/whatsapp/1/message/template"

PENDING_ACCEPTED = {
    "groupId": 1,
    "groupName": "PENDING",
    "id": 26,
    "name": "PENDING_ACCEPTED",
    "description": "Message sent to next instance",
}
REJECTED_DESTINATION = {
    "groupId": 5,
    "groupName": "REJECTED",
    "id": 51,
    "name": "REJECTED_DESTINATION",
    "description": "Invalid destination address",
}
DELIVERED_TO_OPERATOR = {
    "groupId": 3,
    "groupName": "DELIVERED",
    "id": 2,
    "name": "DELIVERED_TO_OPERATOR",
    "description": "Message delivered to operator",
}
DELIVERED_TO_HANDSET = {
    "groupId": 3,
    "groupName": "DELIVERED",
    "id": 5,
    "name": "DELIVERED_TO_HANDSET",
    "description": "Message delivered to handset",
}
UNDELIVERABLE_NOT_DELIVERED = {
    "groupId": 2,
    "groupName": "UNDELIVERABLE",
    "id": 9,
    "name": "UNDELIVERABLE_NOT_DELIVERED",
    "description": "Message sent not delivered",
}
NO_ERROR = {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR", "description": "No Error", "permanent": False}
ERRORS = {
    Channel.SMS: {
        "groupId": 1,
        "groupName": "HANDSET_ERRORS",
        "id": 27,
        "name": "EC_ABSENT_SUBSCRIBER",
        "description": "Absent Subscriber",
        "permanent": False,
    },
    Channel.VIBER: {
        "groupId": 1,
        "groupName": "HANDSET_ERRORS",
        "id": 7001,
        "name": "EC_NOT_VIBER_USER",
        "description": "Destination is not a Viber user",
        "permanent": True,
    },
    Channel.WHATSAPP: {
        "groupId": 1,
        "groupName": "HANDSET_ERRORS",
        "id": 7020,
        "name": "EC_NOT_WHATSAPP_USER",
        "description": "Destination is not a WhatsApp user",
        "permanent": True,
    },
}


def timestamp(at: datetime | None = None) -> str:
    """Infobip's report timestamp format, yyyy-MM-dd'T'HH:mm:ss.SSSZ (e.g. 2024-05-01T10:00:00.000+0000)."""
    at = at or datetime.now(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def service_error(message_id: str, text: str) -> dict[str, Any]:
    """Infobip's classic error body."""
    return {"requestError": {"serviceException": {"messageId": message_id, "text": text}}}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # keys in lower case
    query: str
    json: Any


@dataclass
class PostedReport:
    url: str
    body: dict[str, Any]
    status_code: int | None  # the last answer (None: unreachable)


@dataclass
class _Failure:
    status_code: int
    headers: dict[str, str]
    body: Any


@dataclass
class FakeInfobipState:
    """What the fake saw and did; queue failures and delays for the next requests."""

    requests: list[RecordedRequest] = field(default_factory=list)
    reports: list[PostedReport] = field(default_factory=list)  # every report delivered (or given up on)
    retry_for: float = 3600.0  # keep retrying a report this long while the receiver fails
    _failures: deque[_Failure] = field(default_factory=deque)
    _delays: deque[float] = field(default_factory=deque)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def fail_next(
        self, status_code: int, headers: dict[str, str] | None = None, body: Any = None, count: int = 1
    ) -> None:
        """Answer the next `count` send requests with this status (body defaults to Infobip's error shape)."""
        if body is None:
            body = service_error(str(status_code), f"Fake failure {status_code}")
        for _ in range(count):
            self._failures.append(_Failure(status_code, dict(headers or {}), body))

    def delay_next(self, seconds: float) -> None:
        """Hold the next send request this long before handling it (then handle it normally)."""
        self._delays.append(seconds)

    async def drain(self, seconds: float = 10.0) -> None:
        """Wait until every scheduled report has been posted."""
        async with asyncio.timeout(seconds):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)


def create_fake(api_key: str, report_delay: float = 0.2) -> tuple[FastAPI, FakeInfobipState]:
    """The fake app and its state; `report_delay` is the pause before each report."""
    state = FakeInfobipState()
    reporter = Reporter(state._tasks)
    http = reporter.http

    app = FastAPI(title="fake Infobip", lifespan=reporter.lifespan)

    async def handle(request: Request, channel: Channel) -> Response:
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        state.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                headers={key.lower(): value for key, value in request.headers.items()},
                query=request.url.query,
                json=body,
            )
        )
        if state._delays:
            await asyncio.sleep(state._delays.popleft())
        if state._failures:
            failure = state._failures.popleft()
            return JSONResponse(failure.body, status_code=failure.status_code, headers=failure.headers)
        if request.headers.get("authorization") != f"App {api_key}":
            return JSONResponse(service_error("UNAUTHORIZED", "Invalid login details"), status_code=401)
        problem = _invalid(body, channel)
        if problem:
            return JSONResponse(service_error("BAD_REQUEST", problem), status_code=400)
        bulk_id = uuid.uuid4().hex
        answers = []
        for message in body["messages"]:
            # WhatsApp messages name one recipient (`to`, `messageId`); SMS and Viber list destinations.
            destinations = [message] if channel is Channel.WHATSAPP else message["destinations"]
            for destination in destinations:
                message_id = str(destination.get("messageId") or uuid.uuid4().hex)
                to = str(destination["to"])
                valid = to.isdigit() and 6 <= len(to) <= 15
                status = PENDING_ACCEPTED if valid else REJECTED_DESTINATION
                if channel is Channel.WHATSAPP:
                    answers.append({"to": to, "messageCount": 1, "messageId": message_id, "status": status})
                else:
                    answers.append(
                        {"messageId": message_id, "status": status, "destination": to, "details": {"messageCount": 1}}
                    )
                if valid:
                    _schedule(bulk_id, message_id, to, message, channel)
        return JSONResponse({"bulkId": bulk_id, "messages": answers})

    @app.post(SMS_PATH)
    async def send_sms(request: Request) -> Response:
        return await handle(request, Channel.SMS)

    @app.post(VIBER_PATH)
    async def send_viber(request: Request) -> Response:
        return await handle(request, Channel.VIBER)

    @app.post(WHATSAPP_PATH)
    async def send_whatsapp_template(request: Request) -> Response:
        return await handle(request, Channel.WHATSAPP)

    def _schedule(bulk_id: str, message_id: str, to: str, message: dict[str, Any], channel: Channel) -> None:
        reporter.spawn(_report(bulk_id, message_id, to, message, channel))

    async def _report(bulk_id: str, message_id: str, to: str, message: dict[str, Any], channel: Channel) -> None:
        webhooks = message.get("webhooks") or {}
        delivery_url = (webhooks.get("delivery") or {}).get("url")
        seen_url = (webhooks.get("seen") or {}).get("url")
        sender = message.get("sender")
        if channel is Channel.WHATSAPP:  # one notifyUrl for delivery and seen reports, callbackData at the top
            delivery_url = seen_url = message.get("notifyUrl")
            webhooks = {"callbackData": message["callbackData"]} if "callbackData" in message else {}
            sender = message.get("from")
        sent_at = datetime.now(UTC)
        statuses: list[tuple[dict[str, Any], dict[str, Any]] | None] = []  # None: a seen report
        for planned in planned_reports(channel, "+" + to):
            if planned is MessageStatus.DELIVERED:
                if channel is Channel.SMS:
                    statuses.append((DELIVERED_TO_OPERATOR, NO_ERROR))
                statuses.append((DELIVERED_TO_HANDSET, NO_ERROR))
            elif planned is MessageStatus.UNDELIVERED:
                statuses.append((UNDELIVERABLE_NOT_DELIVERED, ERRORS[channel]))
            elif planned is MessageStatus.READ:
                statuses.append(None)
        for entry in statuses:
            await asyncio.sleep(report_delay)
            if entry is None:
                if seen_url:
                    seen = {
                        "messageId": message_id,
                        "from": to,
                        "to": sender,
                        "sentAt": timestamp(sent_at),
                        "seenAt": timestamp(),
                    }
                    await _post_until_accepted(seen_url, {"results": [seen]})
                continue
            if not delivery_url:
                continue
            status, error = entry
            result: dict[str, Any] = {
                "bulkId": bulk_id,
                "messageId": message_id,
                "to": to,
                "sender": sender,
                "sentAt": timestamp(sent_at),
                "doneAt": timestamp(),
                "messageCount": 1,
                "mccMnc": "25001",
                "price": {"pricePerMessage": 0.01, "currency": "EUR"},
                "status": status,
                "error": error,
            }
            if "callbackData" in webhooks:
                result["callbackData"] = webhooks["callbackData"]
            await _post_until_accepted(delivery_url, {"results": [result]})

    async def _post_until_accepted(url: str, body: dict[str, Any]) -> None:
        answers: list[int | None] = []
        await post_until_accepted(lambda: http.post(url, json=body), state.retry_for, answers.append)
        state.reports.append(PostedReport(url, body, answers[-1]))

    return app, state


def _invalid(body: Any, channel: Channel) -> str | None:
    """Why Infobip would answer 400 to this body, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return "Invalid request: messages must not be empty"
    for message in body["messages"]:
        if not isinstance(message, dict):
            return "Invalid request: messages[] must be objects"
        if channel is Channel.WHATSAPP:
            problem = _invalid_whatsapp(message)
            if problem:
                return problem
            continue
        destinations = message.get("destinations")
        if not isinstance(destinations, list) or not destinations:
            return "Invalid request: destinations must not be empty"
        if any(not isinstance(d, dict) or not d.get("to") for d in destinations):
            return "Invalid request: destinations[].to is required"
        if not message.get("sender"):
            return "Invalid request: sender is required"
        content = message.get("content")
        if not isinstance(content, dict):
            return "Invalid request: content is required"
        if channel is Channel.SMS and not content.get("text"):
            return "Invalid request: content.text is required"
        if channel is Channel.VIBER:
            kind = content.get("type")
            if kind == "TEXT" and not content.get("text"):
                return "Invalid request: content.text is required"
            if kind == "IMAGE" and not content.get("mediaUrl"):
                return "Invalid request: content.mediaUrl is required"
            if kind not in ("TEXT", "IMAGE"):
                return "Invalid request: content.type is not supported"
    return None


def _invalid_whatsapp(message: dict[str, Any]) -> str | None:
    """Infobip's WhatsApp template message: `from`, `to`, `content: {templateName, templateData: {body:
    {placeholders: [str]}}, language}`."""
    for name in ("from", "to"):
        if not message.get(name):
            return f"Invalid request: {name} is required"
    content = message.get("content")
    if not isinstance(content, dict):
        return "Invalid request: content is required"
    for name in ("templateName", "language"):
        if not content.get(name):
            return f"Invalid request: content.{name} is required"
    body = (content.get("templateData") or {}).get("body") if isinstance(content.get("templateData"), dict) else None
    placeholders = body.get("placeholders") if isinstance(body, dict) else None
    if not isinstance(placeholders, list) or not all(isinstance(p, str) for p in placeholders):
        return "Invalid request: content.templateData.body.placeholders is required"
    return None
