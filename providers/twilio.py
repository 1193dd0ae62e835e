"""Adapter for Twilio Programmable Messaging: SMS and WhatsApp (template messages by ContentSid), form-encoded
REST, status callbacks signed with HMAC-SHA1.

Twilio has no client reference field and does not de-duplicate sends, so the reference travels in the
`StatusCallback` URL (`?ref=…`) and an ambiguous send failure is reported as handed over rather than retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from domain.models import SendRequest, SendResult
from domain.status import Channel, MessageStatus
from providers.base import AMBIGUOUS_ERRORS, ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from providers.common import channel_refusal, raise_if_worth_retrying, validate_account

SIGNATURE_HEADER = "X-Twilio-Signature"
API_VERSION = "2010-04-01"
MIN_VALIDITY, MAX_VALIDITY = 1, 36000  # seconds, as the Messages resource allows
WHATSAPP_PREFIX = "whatsapp:"  # Twilio's channel address prefix for `To` and `From`
CONTENT_SID = r"^HX[0-9a-fA-F]{32}$"  # a Content API template's SID

# Twilio MessageStatus → ours (the table in /work/shared/product/providers.md).
STATUSES: dict[str, MessageStatus] = {
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "accepted": MessageStatus.SENT,
    "scheduled": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "failed": MessageStatus.UNDELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "canceled": MessageStatus.UNDELIVERED,
}


class TwilioConfig(BaseModel):
    """One `[name]` table of the providers file with `type = "twilio"`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["twilio"]
    rate: float | None = None
    account_sid: str
    auth_token: SecretStr
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"
    # WhatsApp template name (as in the spec) → the ContentSid of its approved Content API template; the
    # ContentSid fixes the template's language, so the spec's `language` is not sent.
    whatsapp_templates: dict[str, str] = Field(default={})

    @model_validator(mode="after")
    def _content_sids(self) -> TwilioConfig:
        bad = sorted(name for name, sid in self.whatsapp_templates.items() if not re.fullmatch(CONTENT_SID, sid))
        if bad:
            raise ValueError(f"whatsapp_templates: not a ContentSid (HX + 32 hex digits) for {', '.join(bad)}")
        return self

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioConfig:
        """Twilio takes either a `From` number or a messaging service, and refuses both or neither."""
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one of from_number and messaging_service_sid")
        return self


def build(name: str, raw: Mapping[str, Any], http: httpx.AsyncClient, webhook_url: str) -> TwilioAdapter:
    """The adapter of account `name`; AccountError names every bad field (never its value: it may be a secret)."""
    config = validate_account(TwilioConfig, name, raw, whole="from_number|messaging_service_sid")
    return TwilioAdapter(name, config, http, webhook_url)


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """base64(HMAC-SHA1(auth token, url + name+value of every POST parameter, sorted by name)).

    Repeated names are sorted by value too, as Twilio's own validators do.
    """
    payload = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """The URL without and with an explicit port: Twilio may sign either form (its validators try both)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port_text = hostport.rpartition(":")
    if not colon or "]" in port_text:  # no port (a bare IPv6 literal's colons are inside brackets)
        host, port_text = hostport, ""
    port = port_text or {"https": "443", "http": "80"}.get(parts.scheme, "")
    prefix = userinfo + at  # the host keeps its case: Twilio signs the URL exactly as configured
    without = urlunsplit(parts._replace(netloc=prefix + host))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")) if port else url
    return [without, with_port]


class TwilioAdapter:
    """Sends SMS through one Twilio account and reads its status callbacks."""

    provider_type = "twilio"
    channels = frozenset({Channel.SMS, Channel.WHATSAPP})
    deduplicates = False

    def __init__(self, name: str, config: TwilioConfig, http: httpx.AsyncClient, webhook_url: str) -> None:
        self.name = name
        self._config = config
        self._http = http
        self._webhook_url = webhook_url
        self._messages_url = f"{config.base_url.rstrip('/')}/{API_VERSION}/Accounts/{config.account_sid}/Messages.json"

    def status_callback(self, client_ref: str) -> str:
        """Our webhook URL carrying the reference: Twilio echoes nothing else of ours back."""
        separator = "&" if "?" in self._webhook_url else "?"
        return f"{self._webhook_url}{separator}ref={quote(client_ref, safe='')}"

    async def send(self, request: SendRequest) -> SendResult:
        """Create one Message resource.

        Twilio does not de-duplicate: a retried POST would be a second SMS. So once the request may have
        reached Twilio (read/write timeout or error, a broken response), this returns
        `SendResult(unconfirmed=True)` — handed over as far as we know — instead of raising a retryable error. The
        status callback URL carries the reference, so its reports still find the recipient (and bring the
        message id); if none ever comes, the step times out and the cascade moves on. Only failures that
        certainly happened before Twilio saw the request (connect, pool) raise ProviderUnavailable.
        """
        refusal = channel_refusal(self, request)
        if refusal is not None:
            return refusal
        phone = request.phone if request.phone.startswith("+") else f"+{request.phone}"
        if request.channel is Channel.WHATSAPP:
            form_or_refusal = self._whatsapp_form(request, phone)
            if isinstance(form_or_refusal, SendResult):
                return form_or_refusal
            form = form_or_refusal
        else:
            form = {"To": phone}
            if self._config.messaging_service_sid is not None:
                form["MessagingServiceSid"] = self._config.messaging_service_sid
            else:
                assert self._config.from_number is not None  # the config allows exactly one of the two
                form["From"] = self._config.from_number
            form["Body"] = request.text
        ttl = int(request.ttl.total_seconds())
        form |= {
            "StatusCallback": self.status_callback(request.client_ref),
            "ValidityPeriod": str(min(max(ttl, MIN_VALIDITY), MAX_VALIDITY)),
        }
        auth = (self._config.account_sid, self._config.auth_token.get_secret_value())
        try:
            response = await self._http.post(self._messages_url, data=form, auth=auth)
        except AMBIGUOUS_ERRORS:
            return SendResult(unconfirmed=True)
        except httpx.TransportError as exc:  # connect refused/timeout, pool timeout: Twilio never saw it
            raise ProviderUnavailable(f"twilio unreachable: {type(exc).__name__}") from exc
        return self._result(response, phone)

    def _whatsapp_form(self, request: SendRequest, phone: str) -> dict[str, str] | SendResult:
        """A template message: `To`/`From` as `whatsapp:+E164` (From: the step's sender, the business's WhatsApp
        number), `ContentSid` from the account's `whatsapp_templates`, `ContentVariables` = {"1": …, "2": …}
        from the rendered parameters. A template the account has no ContentSid for is refused (no request)."""
        template = request.template
        assert template is not None  # channel_refusal refuses a WhatsApp message without one
        content_sid = self._config.whatsapp_templates.get(template.name)
        if content_sid is None:
            known = ", ".join(sorted(self._config.whatsapp_templates)) or "none"
            return SendResult(
                rejected=f"twilio account {self.name!r} has no ContentSid for WhatsApp template {template.name!r} "
                f"(add it to whatsapp_templates; mapped: {known})"
            )
        sender = request.sender.removeprefix(WHATSAPP_PREFIX)
        sender = sender if sender.startswith("+") else f"+{sender}"
        form = {"To": WHATSAPP_PREFIX + phone, "From": WHATSAPP_PREFIX + sender, "ContentSid": content_sid}
        if template.parameters:
            variables = {str(i): value for i, value in enumerate(template.parameters, start=1)}
            form["ContentVariables"] = json.dumps(variables, ensure_ascii=False)
        return form

    def _result(self, response: httpx.Response, phone: str) -> SendResult:
        raise_if_worth_retrying(response, self.name, "twilio", "account_sid/auth_token")
        status = response.status_code
        payload = _json(response)
        if status >= 400:
            code = payload.get("code", status)
            # Twilio quotes the number in some messages (21211): keep it out of the step's error.
            message = str(payload.get("message") or response.reason_phrase).replace(phone, "<To>")
            message = message.replace(phone.lstrip("+"), "<To>")[:300]
            return SendResult(rejected=f"{code}: {message}")
        sid = payload.get("sid")
        if not isinstance(sid, str) or not sid:
            # Accepted (2xx) but unreadable: the message exists, so do not retry; the callback brings its id.
            return SendResult(message_id=None)
        return SendResult(message_id=sid)

    def parse_webhook(self, request: WebhookRequest) -> list[ParsedReport]:
        """Verify `X-Twilio-Signature` over the URL Twilio requested and the form, then map the status."""
        try:
            params = parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=bool(request.body))
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookRejected(400, "not a form-encoded twilio callback") from exc
        self._verify(request, params)
        form = dict(params)
        if form.get("AccountSid") != self._config.account_sid:
            raise WebhookRejected(401, "callback for another twilio account")
        ref = request.query_params().get("ref")
        if not ref:
            raise WebhookRejected(400, "status callback URL without ref")
        sid, twilio_status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus")
        if not sid or not twilio_status:
            raise WebhookRejected(400, "twilio callback without MessageSid or MessageStatus")
        status = STATUSES.get(twilio_status)
        if status is None:
            # A status we do not map (Twilio adds some now and then, e.g. for other features): acknowledge it so
            # Twilio does not alarm or retry, and report nothing — a later mapped status still arrives.
            return []
        error = None
        if status is MessageStatus.UNDELIVERED:
            code = form.get("ErrorCode")
            error = f"ErrorCode {code}" if code else twilio_status
        return [ParsedReport(client_ref=ref, status=status, message_id=sid, error=error)]

    def _verify(self, request: WebhookRequest, params: list[tuple[str, str]]) -> None:
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        if not signature:
            raise WebhookRejected(401, f"missing {SIGNATURE_HEADER}")
        base = self._webhook_url.split("?", 1)[0]
        url = f"{base}?{request.query}" if request.query else base
        token = self._config.auth_token.get_secret_value()
        matches = [
            hmac.compare_digest(compute_signature(token, candidate, params).encode(), signature.encode())
            for candidate in url_variants(url)
        ]
        if not any(matches):
            raise WebhookRejected(401, f"wrong {SIGNATURE_HEADER}")

    async def was_received(self, request: SendRequest) -> bool | None:
        """This provider offers no look-up by our reference: a send that may have reached it is not repeated."""
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
