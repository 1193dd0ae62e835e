"""A local stand-in for the Vonage Messages API v1 that answers as Vonage documents it.

`POST /v1/messages` checks the application JWT (RS256, when a public key is given) and the required fields,
answers 202 `{"message_uuid"}` and later POSTs signed status webhooks to the message's `webhook_url`, with
the statuses `sandbox.outcomes.planned_reports` plans for the number (a `submitted` first). Tests can queue
failures and slow answers. Unlike the sandbox it does NOT de-duplicate by `client_ref`: neither does Vonage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from domain.status import Channel, MessageStatus
from sandbox.delivery import Reporter, post_until_accepted
from sandbox.outcomes import planned_reports

log = logging.getLogger("kaskad.fake.vonage")

REQUIRED_FIELDS = ("to", "from", "channel", "message_type")
CHANNELS = {"sms": Channel.SMS, "viber_service": Channel.VIBER, "whatsapp": Channel.WHATSAPP}
ERRORS_URL = "https://developer.vonage.com/api-errors"

# Status webhook `error` objects for failures, shaped like Vonage's (title is the numeric code).
FAILURES: dict[Channel, tuple[str, dict[str, Any]]] = {
    Channel.SMS: (
        "undeliverable",
        {"type": f"{ERRORS_URL}/messages#1260", "title": 1260, "detail": "Destination unreachable"},
    ),
    Channel.VIBER: (
        "rejected",
        {"type": f"{ERRORS_URL}/messages#1300", "title": 1300, "detail": "Not part of the provider network"},
    ),
    Channel.WHATSAPP: (
        "rejected",
        {"type": f"{ERRORS_URL}/messages#1300", "title": 1300, "detail": "Not part of the provider network"},
    ),
}
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    422: "Invalid params",
    429: "Rate Limit Hit",
    500: "Internal Error",
    503: "Service Unavailable",
}


def error_body(status_code: int, detail: str, **extra: Any) -> dict[str, Any]:
    """Vonage's error JSON (RFC 7807 style) for an HTTP status."""
    return {
        "type": f"{ERRORS_URL}#{_TITLES.get(status_code, 'error').lower().replace(' ', '-')}",
        "title": _TITLES.get(status_code, "Error"),
        "detail": detail,
        "instance": str(uuid.uuid4()),
        **extra,
    }


def rsa_key_pair() -> tuple[str, str]:
    """A fresh (private PEM, public PEM) pair, as a Vonage application holds."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def sign_webhook(body: bytes, secret: str, api_key: str, iat: int | None = None) -> str:
    """The `Authorization` header value Vonage puts on a signed webhook carrying `body`."""
    claims = {
        "iat": int(time.time()) if iat is None else iat,
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "api_key": api_key,
        "payload_hash": hashlib.sha256(body).hexdigest(),
    }
    return f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case keys
    json: Any


@dataclass(frozen=True)
class _Failure:
    status_code: int
    headers: Mapping[str, str] | None
    body: Any


@dataclass
class PostedReport:
    """A status webhook the fake delivered (or gave up on): `answer` is the receiver's last status code."""

    url: str
    body: dict[str, Any]
    answer: int | None = None
    attempts: int = 0


@dataclass
class FakeVonageState:
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # message_uuid → accepted request body
    reports: list[PostedReport] = field(default_factory=list)
    retry_for: float = 3600.0  # keep retrying a webhook this long while the receiver fails
    _failures: deque[_Failure] = field(default_factory=deque)
    _delays: deque[float] = field(default_factory=deque)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def fail_next(
        self, status_code: int, headers: Mapping[str, str] | None = None, body: Any = None, count: int = 1
    ) -> None:
        """Answer the next `count` message requests with this status (body: Vonage's error JSON by default)."""
        for _ in range(count):
            self._failures.append(_Failure(status_code, headers, body))

    def delay_next(self, seconds: float) -> None:
        """Accept the next message but answer only after `seconds` (to make a client time out)."""
        self._delays.append(seconds)

    def delivered(self, status: str | None = None) -> list[PostedReport]:
        """Reports the receiver acknowledged (2xx), optionally only those with this Vonage status."""
        return [
            r
            for r in self.reports
            if r.answer is not None and 200 <= r.answer < 300 and (status is None or r.body["status"] == status)
        ]

    async def wait_reports(self, count: int, within: float = 5.0) -> list[PostedReport]:
        """Wait until `count` reports were acknowledged; returns them (fewer if `within` seconds pass)."""
        deadline = time.monotonic() + within
        while len(self.delivered()) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - a test helper polling plain state
            await asyncio.sleep(0.02)
        return self.delivered()


def vonage_statuses(channel: Channel, phone: str) -> list[tuple[str, dict[str, Any] | None]]:
    """The Vonage statuses (and error objects) the fake reports for a message: `submitted`, then the plan."""
    statuses: list[tuple[str, dict[str, Any] | None]] = [("submitted", None)]
    for planned in planned_reports(channel, phone):
        if planned is MessageStatus.UNDELIVERED:
            statuses.append(FAILURES[channel])
        else:
            statuses.append((planned.value, None))  # delivered, read: same words as Vonage's
    return statuses


def create_fake(
    signature_secret: str,
    api_key: str = "abcd1234",
    public_key_pem: str | None = None,
    report_delay: float = 0.2,
) -> tuple[FastAPI, FakeVonageState]:
    state = FakeVonageState()
    reporter = Reporter(state._tasks)
    http = reporter.http

    app = FastAPI(title="fake Vonage Messages API", lifespan=reporter.lifespan)

    @app.post("/v1/messages")
    async def send(request: Request) -> Response:
        raw = await request.body()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = None
        state.requests.append(RecordedRequest(request.method, request.url.path, dict(request.headers), payload))
        if state._failures:
            failure = state._failures.popleft()
            body = failure.body if failure.body is not None else error_body(failure.status_code, "Queued failure")
            return JSONResponse(body, status_code=failure.status_code, headers=dict(failure.headers or {}))
        if not _authorised(request.headers.get("authorization", ""), public_key_pem):
            return JSONResponse(error_body(401, "You did not provide correct credentials."), status_code=401)
        if not isinstance(payload, dict):
            return JSONResponse(error_body(400, "The request body is not valid JSON."), status_code=400)
        missing = [name for name in REQUIRED_FIELDS if not payload.get(name)]
        if missing:
            invalid = [{"name": name, "reason": "is required"} for name in missing]
            return JSONResponse(
                error_body(422, "The value of one or more parameters is invalid.", invalid_parameters=invalid),
                status_code=422,
            )
        channel = CHANNELS.get(str(payload["channel"]))
        if channel is None or not str(payload["to"]).isdigit():
            name = "channel" if channel is None else "to"
            invalid = [{"name": name, "reason": "Invalid value"}]
            return JSONResponse(
                error_body(422, "The value of one or more parameters is invalid.", invalid_parameters=invalid),
                status_code=422,
            )
        bad = _whatsapp_problem(payload) if channel is Channel.WHATSAPP else None
        if bad is not None:
            invalid = [{"name": bad, "reason": "Invalid value"}]
            return JSONResponse(
                error_body(422, "The value of one or more parameters is invalid.", invalid_parameters=invalid),
                status_code=422,
            )
        message_uuid = str(uuid.uuid4())
        state.messages[message_uuid] = payload
        if payload.get("webhook_url"):
            reporter.spawn(_report(message_uuid, channel, payload))
        if state._delays:  # accepted already: the answer is late, as when the client's read times out
            await asyncio.sleep(state._delays.popleft())
        return JSONResponse({"message_uuid": message_uuid}, status_code=202)

    async def _report(message_uuid: str, channel: Channel, message: dict[str, Any]) -> None:
        for status, error in vonage_statuses(channel, "+" + str(message["to"])):
            await asyncio.sleep(report_delay)
            body: dict[str, Any] = {
                "message_uuid": message_uuid,
                "to": message["to"],
                "from": message["from"],
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "status": status,
                "channel": message["channel"],
            }
            if message.get("client_ref"):
                body["client_ref"] = message["client_ref"]
            if error is not None:
                body["error"] = error | {"instance": str(uuid.uuid4())}
            charged = "submitted" if channel is Channel.SMS else "delivered"  # SMS bills on submission
            if status == charged:
                body["usage"] = {"currency": "EUR", "price": "0.0333"}
            report = PostedReport(url=str(message["webhook_url"]), body=body)
            state.reports.append(report)
            await _post_until_accepted(report)

    async def _post_until_accepted(report: PostedReport) -> None:
        content = json.dumps(report.body).encode()

        def post() -> Awaitable[httpx.Response]:
            headers = {  # a fresh token per attempt, as its iat must stay fresh
                "Content-Type": "application/json",
                "Authorization": sign_webhook(content, signature_secret, api_key),
            }
            report.attempts += 1
            return http.post(report.url, content=content, headers=headers)

        def record(status_code: int | None) -> None:
            report.answer = status_code

        await post_until_accepted(post, state.retry_for, record)

    return app, state


def _whatsapp_problem(payload: dict[str, Any]) -> str | None:
    """The first field a business-initiated WhatsApp message gets wrong: Vonage's template message is
    `message_type: template`, `template: {name, parameters: [str]}`, `whatsapp: {policy, locale}`."""
    if payload.get("message_type") != "template":
        return "message_type"
    template, whatsapp = payload.get("template"), payload.get("whatsapp")
    if not isinstance(template, dict) or not template.get("name"):
        return "template.name"
    parameters = template.get("parameters", [])
    if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
        return "template.parameters"
    if not isinstance(whatsapp, dict) or whatsapp.get("policy") != "deterministic" or not whatsapp.get("locale"):
        return "whatsapp"
    return None


def _authorised(header: str, public_key_pem: str | None) -> bool:
    """A bearer application JWT is required; with a public key it must verify (RS256, application_id)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    if public_key_pem is None:
        return True
    try:
        claims = jwt.decode(token, public_key_pem, algorithms=["RS256"], options={"require": ["iat", "jti"]})
    except jwt.InvalidTokenError:
        return False
    return bool(claims.get("application_id"))
