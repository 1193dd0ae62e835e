"""Adapter for Infobip: SMS API v3 (`/sms/3/messages`), Viber Business Messages (`/viber/2/messages`) and
WhatsApp template messages (`/whatsapp/1/message/template`).

Infobip does not sign delivery reports, so the callback URL carries the account's `webhook_secret` as
`?secret=…` and, optionally, reports must come from an allowed source network. Both the destination's
`messageId` and `webhooks.callbackData` carry our client reference: delivery reports echo `callbackData`,
Viber and WhatsApp "seen" reports only echo `messageId`. WhatsApp takes one `notifyUrl` for every report type.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from domain.models import SendRequest, SendResult
from domain.status import Channel, MessageStatus
from providers.base import (
    AMBIGUOUS_ERRORS,
    ParsedReport,
    ProviderUnavailable,
    WebhookRejected,
    WebhookRequest,
    batch_of,
)
from providers.common import (
    authenticate_by_url_secret,
    bad_fields,
    channel_refusal,
    check_networks,
    load_json,
    raise_if_worth_retrying,
    unsupported_channel,
    validate_account,
    with_secret,
)

log = logging.getLogger("kaskad.providers.infobip")

SMS_PATH = "/sms/3/messages"
VIBER_PATH = "/viber/2/messages"
WHATSAPP_PATH = "/whatsapp/1/message/template"
# Infobip silently caps any validity period at 48 h; we clamp so the request says what will happen.
MAX_VALIDITY_MINUTES = 48 * 60

# Status groups (status.groupId / groupName) of Infobip's messaging API.
GROUP_PENDING, GROUP_UNDELIVERABLE, GROUP_DELIVERED, GROUP_EXPIRED, GROUP_REJECTED = 1, 2, 3, 4, 5
_GROUP_BY_NAME = {
    "ACCEPTED": GROUP_PENDING,
    "PENDING": GROUP_PENDING,
    "UNDELIVERABLE": GROUP_UNDELIVERABLE,
    "DELIVERED": GROUP_DELIVERED,
    "EXPIRED": GROUP_EXPIRED,
    "REJECTED": GROUP_REJECTED,
}
# DELIVERED_TO_OPERATOR sits in the DELIVERED group but only means the operator took it: not delivered yet.
DELIVERED_TO_OPERATOR = "DELIVERED_TO_OPERATOR"

# Failures where Infobip never saw the request: safe to retry.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class InfobipConfig(BaseModel):
    """One Infobip account of the providers file."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["infobip"]
    rate: float | None = Field(default=None, gt=0)
    base_url: str  # per account, e.g. https://xyz.api.infobip.com
    api_key: SecretStr
    webhook_secret: SecretStr  # goes into the callback URL as ?secret=…: Infobip does not sign reports
    allowed_ips: Annotated[
        list[str], AfterValidator(check_networks)
    ] = []  # IPs or CIDR networks reports may come from; empty: any
    viber_label: Literal["TRANSACTIONAL", "PROMOTIONAL"] = "TRANSACTIONAL"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (e.g. https://xyz.api.infobip.com)")
        return url.rstrip("/")

    @field_validator("api_key", "webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


def build(name: str, raw: Mapping[str, Any], http: httpx.AsyncClient, webhook_url: str) -> InfobipAdapter:
    """Validate an account table; errors name `account.field` and never echo a value (it may be a secret)."""
    return InfobipAdapter(name, validate_account(InfobipConfig, name, raw), http, webhook_url)


def validity_minutes(seconds: float) -> int:
    """The step's wait as Infobip validity: whole minutes rounded up, at least 1, at most Infobip's 48 h."""
    return max(1, min(MAX_VALIDITY_MINUTES, math.ceil(seconds / 60)))


def error_text(response: httpx.Response) -> str:
    """Infobip's reason: `requestError.serviceException.text`, or the newer `{errorCode, description}` shape."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        request_error = data.get("requestError")
        exception = request_error.get("serviceException") if isinstance(request_error, dict) else None
        if isinstance(exception, dict) and exception.get("text"):
            return str(exception["text"])[:300]
        if data.get("description"):
            return f"{data.get('errorCode', '')} {data['description']}".strip()[:300]
    return response.text[:200]


class _Status(BaseModel):
    groupId: int | None = None
    groupName: str | None = None
    id: int | None = None
    name: str | None = None
    description: str | None = None

    @property
    def group(self) -> int | None:
        if self.groupId is not None:
            return self.groupId
        return _GROUP_BY_NAME.get((self.groupName or "").upper())


class _Error(BaseModel):
    groupId: int | None = None
    groupName: str | None = None
    id: int | None = None
    name: str | None = None
    description: str | None = None
    permanent: bool | None = None


class _Result(BaseModel):
    """One element of `results`: a delivery report, or a Viber seen report (no status, a `seenAt`)."""

    messageId: str | None = None
    callbackData: str | None = None
    status: _Status | None = None
    error: _Error | None = None
    sentAt: datetime | None = None
    doneAt: datetime | None = None
    seenAt: datetime | None = None


class InfobipAdapter:
    provider_type = "infobip"
    channels = frozenset({Channel.SMS, Channel.VIBER, Channel.WHATSAPP})
    deduplicates = False  # not documented to de-duplicate by messageId
    """Sends through one Infobip account and reads the reports posted to its callback URL."""

    def __init__(self, name: str, config: InfobipConfig, http: httpx.AsyncClient, webhook_url: str) -> None:
        self.name = name
        self._config = config
        self._http = http
        self._callback_url = with_secret(webhook_url, config.webhook_secret.get_secret_value())

    # --- sending -------------------------------------------------------------------------------------------

    def request_body(self, request: SendRequest) -> tuple[str, dict[str, Any]]:
        """The path and JSON body Infobip documents for this message."""
        destination = {"to": request.phone.removeprefix("+"), "messageId": request.client_ref}
        validity = {"amount": validity_minutes(request.ttl.total_seconds()), "timeUnit": "MINUTES"}
        delivery = {"url": self._callback_url, "intermediateReport": False}
        if request.channel is Channel.SMS:
            message: dict[str, Any] = {
                "sender": request.sender,
                "destinations": [destination],
                "content": {"text": request.text},
                "options": {"validityPeriod": validity},
                "webhooks": {
                    "delivery": delivery,
                    "contentType": "application/json",
                    "callbackData": request.client_ref,
                },
            }
            return SMS_PATH, {"messages": [message]}
        if request.channel is Channel.WHATSAPP and request.template is not None:  # channel_refusal: never None
            # One recipient per message; `from` is the WhatsApp sender number (the step's sender). The template
            # API takes no validity period: the step's wait still ends the step.
            template = request.template
            whatsapp = {
                "from": request.sender.removeprefix("+"),
                "to": destination["to"],
                "messageId": request.client_ref,
                "content": {
                    "templateName": template.name,
                    "templateData": {"body": {"placeholders": list(template.parameters)}},
                    "language": template.language,
                },
                "callbackData": request.client_ref,
                "notifyUrl": self._callback_url,
            }
            return WHATSAPP_PATH, {"messages": [whatsapp]}
        if request.channel is not Channel.VIBER:
            raise unsupported_channel(self.provider_type, self.channels, request.channel)
        message = {
            "sender": request.sender,
            "destinations": [destination],
            "content": self._viber_content(request),
            "options": {"validityPeriod": validity, "label": self._config.viber_label},
            "webhooks": {
                "delivery": delivery,
                "seen": {"url": self._callback_url},
                "contentType": "application/json",
                "callbackData": request.client_ref,
            },
        }
        return VIBER_PATH, {"messages": [message]}

    @staticmethod
    def _viber_content(request: SendRequest) -> dict[str, Any]:
        """TEXT (optionally with a button) or IMAGE (optionally with text and a button), as Infobip's
        ViberOutboundTextContent / ViberOutboundImageContent define them."""
        content: dict[str, Any]
        if request.image_url:
            content = {"type": "IMAGE", "mediaUrl": request.image_url}
            if request.text:
                content["text"] = request.text
        else:
            content = {"type": "TEXT", "text": request.text}
        if request.button is not None:
            content["button"] = {"title": request.button.caption, "action": request.button.url}
        return content

    async def send(self, request: SendRequest) -> SendResult:
        """Hand one message to Infobip.

        A retried send is made safe here rather than by Infobip (which is not documented to de-duplicate by
        messageId): when the request may have reached Infobip (read/write timeout, dropped connection) we return
        `SendResult(unconfirmed=True)` instead of a retryable error, so the activity never sends it twice; the
        delivery report still finds the recipient through callbackData/messageId. Only failures that prove the
        request never arrived (connect errors, pool timeout) and explicit 429/5xx answers are retried.
        """
        refusal = channel_refusal(self, request)
        if refusal is not None:
            return refusal
        path, body = self.request_body(request)
        headers = {
            "Authorization": f"App {self._config.api_key.get_secret_value()}",
            "Accept": "application/json",
        }
        url = f"{self._config.base_url}{path}"
        try:
            response = await self._http.post(url, json=body, headers=headers)
        except _NOT_SENT_ERRORS as exc:
            raise ProviderUnavailable(f"{self.name}: Infobip unreachable ({type(exc).__name__})") from exc
        except AMBIGUOUS_ERRORS as exc:
            log.warning(
                "%s: no answer from Infobip for %s (%s); it may have been accepted, not retrying",
                self.name,
                request.channel.value,
                type(exc).__name__,
            )
            return SendResult(unconfirmed=True)
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.name}: Infobip request failed ({type(exc).__name__})") from exc
        return self._result(response)

    def _result(self, response: httpx.Response) -> SendResult:
        raise_if_worth_retrying(response, self.name, "Infobip", "api_key")
        code = response.status_code
        if code >= 400:
            return SendResult(rejected=f"{code}: {error_text(response)}")
        try:
            message = response.json()["messages"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            log.warning("%s: Infobip answered %s without a message list; treating as accepted", self.name, code)
            return SendResult(message_id=None)
        status = message.get("status") if isinstance(message, dict) else None
        if isinstance(status, dict) and _Status.model_validate(status).group == GROUP_REJECTED:
            return SendResult(rejected=f"{status.get('name', 'REJECTED')}: {status.get('description', '')}".strip())
        message_id = message.get("messageId") if isinstance(message, dict) else None
        return SendResult(message_id=str(message_id) if message_id else None)

    # --- reports -------------------------------------------------------------------------------------------

    def parse_webhook(self, request: WebhookRequest) -> list[ParsedReport]:
        """Authenticate (URL secret, optional source networks) and turn every result into a report."""
        self._authenticate(request)
        payload = load_json(request.body, "an Infobip report")
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise WebhookRejected(400, "not an Infobip report: no list of results")
        return batch_of(results, self._parse_item, "not an Infobip report")

    def _parse_item(self, item: Any) -> ParsedReport:
        """One result of the batch; a malformed one names its bad fields only (values may hold numbers)."""
        try:
            result = _Result.model_validate(item)
        except ValidationError as exc:
            raise WebhookRejected(400, f"not an Infobip report: bad {bad_fields(exc)}") from None
        return self._parse_result(result)

    def _authenticate(self, request: WebhookRequest) -> None:
        authenticate_by_url_secret(request, self._config.webhook_secret.get_secret_value(), self._config.allowed_ips)

    @staticmethod
    def _parse_result(result: _Result) -> ParsedReport:
        client_ref = result.callbackData or result.messageId
        if not client_ref:
            raise WebhookRejected(400, "report without callbackData or messageId")
        if result.status is None:
            if result.seenAt is None:
                raise WebhookRejected(400, "report without status or seenAt")
            return ParsedReport(client_ref, MessageStatus.READ, result.messageId, None, result.seenAt)
        at = result.doneAt or result.sentAt
        status = result.status
        group = status.group
        if (status.name or "").upper() == DELIVERED_TO_OPERATOR or group == GROUP_PENDING:
            return ParsedReport(client_ref, MessageStatus.SENT, result.messageId, None, at)
        if group == GROUP_DELIVERED:
            return ParsedReport(client_ref, MessageStatus.DELIVERED, result.messageId, None, at)
        if group in (GROUP_UNDELIVERABLE, GROUP_EXPIRED, GROUP_REJECTED):
            error = result.error
            reason = None
            if error is not None and error.groupId != 0 and (error.name or "").upper() != "NO_ERROR":
                reason = error.name or error.description
            reason = reason or status.description or status.groupName
            return ParsedReport(client_ref, MessageStatus.UNDELIVERED, result.messageId, f"{status.name}: {reason}", at)
        raise WebhookRejected(400, f"unknown Infobip status group {status.groupId} {status.groupName}")

    async def was_received(self, request: SendRequest) -> bool | None:
        """This provider offers no look-up by our reference: a send that may have reached it is not repeated."""
        return None
