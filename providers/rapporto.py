"""Adapter for Rapporto (the seed platform's provider): JSON REST, partner `id` de-duplication, unsigned reports.

Account table (see providers/accounts.py):

    [rapporto-main]
    type = "rapporto"
    base_url = "https://…"            # the account's send endpoint base; the adapter POSTs to `{base_url}/send`
    login = "…"
    password = "env:RAPPORTO_PASSWORD"
    webhook_secret = "env:RAPPORTO_WEBHOOK_SECRET"   # goes into the report URL as `?secret=…`
    allowed_ips = ["203.0.113.0/24"]  # optional: report source addresses (IPs or CIDR networks)

What follows providers.md and what is assumed (no public Rapporto reference was reachable from here):
- Send: `POST {base_url}/send` — the path is an assumption; an account whose endpoint differs sets `base_url`
  so that `{base_url}/send` is the endpoint (no official default URL is known, hence `base_url` is required).
- `destAddr` is the E.164 number without "+" (digits only, the usual Russian-provider form; unverified).
- Viber `instantContent.data` field names are assumed: TEXT `{"text"}`, IMAGE_URL `{"imageUrl"}`,
  BUTTON `{"text", "caption", "action", "imageUrl"?}` (caption = button label, action = button URL).
- Reports: one JSON object per request as documented; a JSON list of such objects is accepted too, in case
  the platform batches. `doneDate` is parsed leniently (ISO 8601 or "YYYY-MM-DD HH:MM:SS", naive = UTC).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
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

log = logging.getLogger("kaskad.providers.rapporto")

SEND_PATH = "/send"
SMS_TTL_MINUTES = (1, 2880)  # Rapporto's SMS validity range, in minutes
VIBER_TTL_SECONDS = (30, 86400)  # Rapporto's Viber ttl range, in seconds

# Rapporto status codes → ours (providers.md, status mapping table).
STATUS_CODES: dict[int, MessageStatus] = {
    0: MessageStatus.SENT,
    2: MessageStatus.DELIVERED,
    9: MessageStatus.READ,
    5: MessageStatus.UNDELIVERED,
}

# Errors where the request may or may not have reached Rapporto: safe to retry only because Rapporto
# de-duplicates by the partner `id` (our client_ref), so the retry never becomes a second message.
_RETRYABLE = (httpx.TransportError,)


class RapportoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["rapporto"]
    rate: float | None = None
    base_url: str = Field(min_length=1)
    login: str = Field(min_length=1)
    password: SecretStr
    webhook_secret: SecretStr
    allowed_ips: Annotated[list[str], AfterValidator(check_networks)] = []

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("webhook_secret")
    @classmethod
    def _secret_not_empty(cls, secret: SecretStr) -> SecretStr:
        if not secret.get_secret_value():
            raise ValueError("must not be empty (it authenticates the delivery reports)")
        return secret


def build(name: str, raw: Mapping[str, Any], http: httpx.AsyncClient, webhook_url: str) -> RapportoAdapter:
    """Validate the account table; errors name `account.field` and never echo a value (it may be a secret)."""
    return RapportoAdapter(name, validate_account(RapportoConfig, name, raw), http, webhook_url)


class RapportoReport(BaseModel):
    """One delivery report as Rapporto posts it; fields we do not use are optional and extra ones ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    mtNum: str | None = None
    status: int
    type: str | None = None
    doneDate: str | int | float | None = None
    submitDate: str | int | float | None = None
    errorCode: int | str | None = None

    @field_validator("id", "mtNum", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RapportoAdapter:
    provider_type = "rapporto"
    channels = frozenset({Channel.SMS, Channel.VIBER})
    deduplicates = True  # by the partner message `id`, which is our client reference

    def __init__(self, name: str, config: RapportoConfig, http: httpx.AsyncClient, webhook_url: str) -> None:
        self.name = name
        self._config = config
        self._http = http
        self._endpoint = f"{config.base_url}{SEND_PATH}"
        self._notify_url = with_secret(webhook_url, config.webhook_secret.get_secret_value())

    async def send(self, request: SendRequest) -> SendResult:
        """POST one message. Transport errors, even ambiguous ones (read timeout after the request went out),
        raise ProviderUnavailable: the retry carries the same `id`, which Rapporto de-duplicates."""
        refusal = channel_refusal(self, request)
        if refusal is not None:
            return refusal
        message = self._message(request)
        if isinstance(message, SendResult):
            return message
        body = {
            "login": self._config.login,
            "password": self._config.password.get_secret_value(),
            "id": request.client_ref,
            "destAddr": request.phone.removeprefix("+"),
            "notifyUrl": self._notify_url,
            "message": message,
        }
        try:
            response = await self._http.post(self._endpoint, json=body)
        except _RETRYABLE as exc:
            arrived = isinstance(exc, AMBIGUOUS_ERRORS)  # the request may have left: safe to repeat (same id) here
            raise ProviderUnavailable(
                f"{self.name}: rapporto unreachable ({type(exc).__name__})", may_have_arrived=arrived
            ) from exc
        raise_if_worth_retrying(response, self.name, "rapporto", "login/password")
        code = response.status_code
        if code >= 400:
            return SendResult(rejected=f"{code}: {_error_text(response)}")
        try:
            mt_num = response.json()["mtNum"]
        except (ValueError, KeyError, TypeError) as exc:
            # Accepted (2xx) but unreadable: retrying with the same id is safe and recovers the mtNum.
            raise ProviderUnavailable(
                f"{self.name}: rapporto answered {code} without an mtNum", may_have_arrived=True
            ) from exc
        return SendResult(message_id=str(mt_num))

    def _message(self, request: SendRequest) -> dict[str, Any] | SendResult:
        """The `message` object for the channel, or a rejection for Viber content Rapporto cannot carry."""
        if request.channel is Channel.SMS:
            minutes = math.ceil(request.ttl.total_seconds() / 60)
            return {
                "type": "SMS",
                "data": {
                    "text": request.text,
                    "serviceNumber": request.sender,
                    "ttl": _clamp(minutes, SMS_TTL_MINUTES),
                    "ttlUnit": "MINUTES",
                },
            }
        if request.channel is not Channel.VIBER:
            raise unsupported_channel(self.provider_type, self.channels, request.channel)
        content = _viber_content(request)
        if content is None:
            return SendResult(rejected="viber content must be text, image, text+button or text+image+button")
        return {
            "type": "VIBER",
            "data": {
                "serviceNumber": request.sender,
                "ttl": _clamp(math.ceil(request.ttl.total_seconds()), VIBER_TTL_SECONDS),
                "instantContent": content,
            },
        }

    def parse_webhook(self, request: WebhookRequest) -> list[ParsedReport]:
        """Reports are unsigned: the secret in our notifyUrl and the optional IP allow-list authenticate them."""
        authenticate_by_url_secret(request, self._config.webhook_secret.get_secret_value(), self._config.allowed_ips)
        payload = load_json(request.body, "a rapporto report")
        return batch_of(payload if isinstance(payload, list) else [payload], self._parse_item, "not a rapporto report")

    def _parse_item(self, item: Any) -> ParsedReport | None:
        """One report of the batch (None: a status code we do not know, acknowledged and ignored)."""
        try:
            report = RapportoReport.model_validate(item)
        except ValidationError as exc:  # name the fields only: values may hold phone numbers
            raise WebhookRejected(400, f"not a rapporto report: bad {bad_fields(exc)}") from None
        status = STATUS_CODES.get(report.status)
        if status is None:
            # A code we do not know (the platform may add intermediate ones): acknowledge so Rapporto stops
            # retrying, and leave the step alone — a later known code or the step's timeout settles it.
            log.warning("%s: ignoring report with unknown status code %s", self.name, report.status)
            return None
        error = f"errorCode {report.errorCode}" if status is MessageStatus.UNDELIVERED else None
        return ParsedReport(
            client_ref=report.id, status=status, message_id=report.mtNum, error=error, at=parse_date(report.doneDate)
        )

    async def was_received(self, request: SendRequest) -> bool | None:
        """This provider offers no look-up by our reference: a send that may have reached it is not repeated."""
        return None


def _viber_content(request: SendRequest) -> dict[str, Any] | None:
    """Viber's four layouts (spec-validated upstream); anything else is None."""
    text, image, button = request.text, request.image_url, request.button
    if button is not None and text:
        data: dict[str, Any] = {"text": text, "caption": button.caption, "action": button.url}
        if image:
            data["imageUrl"] = image
        return {"type": "BUTTON", "data": data}
    if button is None and text and not image:
        return {"type": "TEXT", "data": {"text": text}}
    if button is None and image and not text:
        return {"type": "IMAGE_URL", "data": {"imageUrl": image}}
    return None


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def _error_text(response: httpx.Response) -> str:
    """The provider's reason from a JSON error body (`error`/`message`/`description`), else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message", "description", "errorMessage"):
            if body.get(key):
                return str(body[key])[:200]
    return json.dumps(body)[:200]


def parse_date(value: str | int | float | None) -> datetime | None:
    """Lenient `doneDate`: ISO 8601 (with or without offset), "YYYY-MM-DD HH:MM:SS", or epoch (s or ms).

    Naive times are taken as UTC. An unreadable date is dropped (None) rather than refusing the report.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):  # NaN and ±inf: JSON's 1e999 and NaN are valid for Python's json
            return None
        seconds = value / 1000 if value > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):  # 1e20, 10**30, -1e20: beyond what a datetime holds
            return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit() and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"  # "+0300" → "+03:00" (fromisoformat in 3.11 handles both, be safe)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.strptime(text, "%d.%m.%Y %H:%M:%S")
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
