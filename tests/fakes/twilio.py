"""A local Twilio Messages API that answers as Twilio documents and posts signed status callbacks: SMS (`Body`)
and WhatsApp template messages (`To`/`From` as `whatsapp:+E164`, `ContentSid` + `ContentVariables`).

No machine here reaches api.twilio.com, so the adapter and end-to-end mailings run against this fake. Its
signature code is written independently of `providers.twilio` (and checked against Twilio's own test vector
in the tests), so a shared mistake cannot make both sides agree.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from domain.sms import sms_size
from domain.status import Channel, MessageStatus
from sandbox.delivery import Reporter, post_until_accepted
from sandbox.outcomes import planned_reports

log = logging.getLogger("kaskad.fake_twilio")

API_VERSION = "2010-04-01"
POOL_NUMBER = "+15005550006"  # the sender a messaging service picks in this fake
FAILURE_ERROR_CODE = "30003"  # Unreachable destination handset
WHATSAPP_FAILURE_ERROR_CODE = "63024"  # Invalid message recipient (not a WhatsApp user)
WHATSAPP = "whatsapp:"
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
_TWILIO_STATUS = {
    MessageStatus.SENT: "sent",
    MessageStatus.DELIVERED: "delivered",
    MessageStatus.READ: "read",
    MessageStatus.UNDELIVERED: "undelivered",
}


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 keyed by the auth token over the URL + sorted name/value pairs."""
    data = url
    for name in sorted(params):
        data += name + params[name]
    return base64.b64encode(hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()).decode()


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's REST error body."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case keys
    form: dict[str, str]


@dataclass
class FakeMessage:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    messaging_service_sid: str | None = None
    content_sid: str | None = None  # WhatsApp: the template sent
    content_variables: dict[str, str] | None = None
    callbacks_sent: list[str] = field(default_factory=list)  # Twilio statuses, as each was accepted


@dataclass(frozen=True)
class PostedCallback:
    url: str
    params: dict[str, str]
    signature: str
    status_code: int | None  # None: the receiver was unreachable


@dataclass
class _Failure:
    status_code: int
    headers: dict[str, str] | None
    body: Any


@dataclass
class FakeTwilioState:
    """Everything the fake saw and did; queue failures and delays for the next requests."""

    account_sid: str
    auth_token: str
    report_delay: float = 0.2
    retry_for: float = 3600.0  # keep retrying a callback this long while the receiver fails
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: dict[str, FakeMessage] = field(default_factory=dict)
    callbacks: list[PostedCallback] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def fail_next(
        self, status_code: int, headers: Mapping[str, str] | None = None, body: Any = None, count: int = 1
    ) -> None:
        """The next `count` sends answer `status_code` (body: a dict as JSON, str/bytes as is, None: Twilio's)."""
        for _ in range(count):
            self.failures.append(_Failure(status_code, dict(headers) if headers else None, body))

    def delay_next(self, seconds: float) -> None:
        """The next send is processed, then answered only after `seconds` (to provoke client read timeouts)."""
        self.delays.append(seconds)


def create_fake(account_sid: str, auth_token: str, report_delay: float = 0.2) -> tuple[FastAPI, FakeTwilioState]:
    state = FakeTwilioState(account_sid=account_sid, auth_token=auth_token, report_delay=report_delay)
    reporter = Reporter(state.tasks)
    http = reporter.http

    app = FastAPI(title="fake Twilio", lifespan=reporter.lifespan)

    @app.post("/2010-04-01/Accounts/{path_sid}/Messages.json")
    async def create_message(path_sid: str, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        state.requests.append(
            RecordedRequest(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, form)
        )
        delay = state.delays.pop(0) if state.delays else 0.0
        response = _failure() if state.failures else _accept(path_sid, request.headers.get("authorization"), form)
        if delay:
            await asyncio.sleep(delay)
        return response

    def _failure() -> Response:
        failure = state.failures.pop(0)
        if failure.body is None:
            code = {429: 20429, 401: 20003, 404: 20404}.get(failure.status_code, 20500)
            response: Response = twilio_error(failure.status_code, code, "Simulated failure")
        elif isinstance(failure.body, (str, bytes)):
            response = Response(failure.body, status_code=failure.status_code, media_type="application/json")
        else:
            response = JSONResponse(failure.body, status_code=failure.status_code)
        response.headers.update(failure.headers or {})
        return response

    def _accept(path_sid: str, authorization: str | None, form: dict[str, str]) -> Response:
        if not _authenticated(authorization):
            return twilio_error(401, 20003, "Authenticate")
        if path_sid != state.account_sid:
            return twilio_error(404, 20404, f"The requested resource /2010-04-01/Accounts/{path_sid} was not found")
        to, body = form.get("To", ""), form.get("Body", "")
        service, sender = form.get("MessagingServiceSid"), form.get("From")
        content_sid, variables_text = form.get("ContentSid"), form.get("ContentVariables")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        whatsapp = to.startswith(WHATSAPP)
        number = to.removeprefix(WHATSAPP)
        if not (number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if whatsapp and not (sender or "").startswith(WHATSAPP):  # a channel address on one side only
            return twilio_error(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
        if whatsapp and not (sender or "").removeprefix(WHATSAPP).lstrip("+").isdigit():
            return twilio_error(
                400, 63007, f"Twilio could not find a Channel with the specified From address: {sender}"
            )
        variables: dict[str, str] | None = None
        if content_sid is not None:
            if not CONTENT_SID.fullmatch(content_sid):
                return twilio_error(400, 21655, "The ContentSid is Invalid.")
            if variables_text is not None:
                try:
                    variables = json.loads(variables_text)
                except ValueError:
                    variables = None
                if not (
                    isinstance(variables, dict)
                    and len(variables) <= 100
                    and all(isinstance(v, str) for v in variables.values())
                ):
                    return twilio_error(400, 21656, "The ContentVariables Parameter is invalid.")
        elif whatsapp:  # business-initiated WhatsApp: only an approved template (no open 24-hour session here)
            return twilio_error(
                400, 63016, "Failed to send freeform message because you are outside the allowed window."
            )
        elif not body:
            return twilio_error(400, 21602, "Message body is required.")
        message = FakeMessage(
            sid="SM" + secrets.token_hex(16),
            to=to,
            from_=sender or POOL_NUMBER,
            body=body,
            status_callback=form.get("StatusCallback"),
            messaging_service_sid=service,
            content_sid=content_sid,
            content_variables=variables,
        )
        state.messages[message.sid] = message
        if message.status_callback:
            reporter.spawn(_report(message, message.status_callback))
        return JSONResponse(_resource(message), status_code=201)

    def _authenticated(authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, state.account_sid) and hmac.compare_digest(password, state.auth_token)

    def _resource(message: FakeMessage) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=False)
        uri = f"/{API_VERSION}/Accounts/{state.account_sid}/Messages/{message.sid}"
        return {
            "account_sid": state.account_sid,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": None if message.messaging_service_sid and message.from_ == POOL_NUMBER else message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "num_media": "0",
            "num_segments": "1" if message.content_sid else str(sms_size(message.body).parts),
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": message.to,
            "uri": f"{uri}.json",
        }

    async def _report(message: FakeMessage, url: str) -> None:
        """`sent`, then the planned final status, each after `report_delay`, as Twilio posts them."""
        whatsapp = message.to.startswith(WHATSAPP)
        channel = Channel.WHATSAPP if whatsapp else Channel.SMS
        planned = [_TWILIO_STATUS[status] for status in planned_reports(channel, message.to.removeprefix(WHATSAPP))]
        if whatsapp:  # WhatsApp refuses a number without an account: Twilio reports `failed` (63024)
            planned = ["failed" if status == "undelivered" else status for status in planned]
        for status in ["sent", *planned]:
            await asyncio.sleep(state.report_delay)
            params = {
                "AccountSid": state.account_sid,
                "ApiVersion": API_VERSION,
                "From": message.from_,
                "MessageSid": message.sid,
                "MessageStatus": status,
                "SmsSid": message.sid,
                "SmsStatus": status,
                "To": message.to,
            }
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
            if whatsapp:  # WhatsApp callbacks also name the channel and the recipient's bare address
                params |= {"ChannelPrefix": "whatsapp", "ChannelToAddress": message.to.removeprefix(WHATSAPP)}
            if status in ("undelivered", "failed"):
                params["ErrorCode"] = WHATSAPP_FAILURE_ERROR_CODE if whatsapp else FAILURE_ERROR_CODE
            await _post_until_accepted(url, params)
            message.callbacks_sent.append(status)

    async def _post_until_accepted(url: str, params: dict[str, str]) -> None:
        signed = signature(state.auth_token, url, params)
        headers = {"X-Twilio-Signature": signed, "User-Agent": "TwilioProxy/1.1"}

        def record(status_code: int | None) -> None:
            state.callbacks.append(PostedCallback(url, params, signed, status_code))

        await post_until_accepted(lambda: http.post(url, data=params, headers=headers), state.retry_for, record)

    return app, state
