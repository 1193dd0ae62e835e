"""Adapter for the Vonage Messages API v1: SMS, Viber Business Messages and WhatsApp template messages, signed
status webhooks.

Sending authenticates with an application JWT (RS256, the application's private key); status webhooks are
signed by Vonage with an HS256 JWT keyed by the account's signature secret, whose `payload_hash` claim binds
the token to the exact body. See `/work/shared/product/providers.md` for the API facts this follows.

Secrets, phone numbers and message texts never appear in exception messages: they end up in workflow
histories and logs.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from domain.models import SendRequest, SendResult
from domain.status import Channel, MessageStatus
from providers.accounts import AccountError
from providers.base import AMBIGUOUS_ERRORS, ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from providers.common import channel_refusal, load_json, raise_if_worth_retrying, unsupported_channel, validate_account

# SMS `ttl` (seconds): Vonage attempts delivery for 72 h by default and documents no lower bound for the
# Messages API; 20 s is the lower bound of its older SMS API, kept as a floor so a tiny wait is still sendable.
SMS_TTL_MIN, SMS_TTL_MAX = 20, 259_200
VIBER_TTL_MIN, VIBER_TTL_MAX = 30, 259_200  # documented range of viber_service.ttl
APP_TOKEN_LIFETIME = 300  # seconds an application JWT is valid (Vonage accepts up to 24 h)
FUTURE_SKEW = 60  # a webhook `iat` this far ahead of our clock is still accepted (clock drift)
ERROR_TEXT_MAX = 200

# Vonage status → ours (the mapping table of providers.md). `rejected` also covers an expired TTL.
STATUS_MAP: dict[str, MessageStatus] = {
    "submitted": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "rejected": MessageStatus.UNDELIVERED,
    "undeliverable": MessageStatus.UNDELIVERED,
}

# Failures where the request never left this machine: retrying cannot send the message twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class VonageConfig(BaseModel):
    """One Vonage account of the providers file."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["vonage"]
    rate: float | None = None
    application_id: str = Field(min_length=1)
    private_key: SecretStr  # PEM text of the application's RSA private key
    signature_secret: SecretStr = Field(min_length=1)
    api_key: str | None = None  # when set, a webhook JWT's `api_key` claim must equal it
    base_url: str = "https://api.nexmo.com"
    viber_category: Literal["transaction", "promotion"] = "transaction"
    max_token_age: int = Field(default=300, gt=0)  # seconds a webhook's `iat` may be old


def build(name: str, raw: Mapping[str, Any], http: httpx.AsyncClient, webhook_url: str) -> VonageAdapter:
    """The adapter of account `name`; AccountError names every bad field (never its value)."""
    config = validate_account(VonageConfig, name, raw)
    try:
        key = load_pem_private_key(config.private_key.get_secret_value().encode(), password=None)
    except (ValueError, TypeError):
        raise AccountError(f"{name}.private_key: not an unencrypted PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise AccountError(f"{name}.private_key: must be an RSA key (application tokens are RS256)")
    return VonageAdapter(name, config, key, http, webhook_url)


class VonageError(BaseModel):
    """Vonage's error object (RFC 7807 style); `title` is a number in status webhooks, text in API answers."""

    model_config = ConfigDict(extra="ignore")

    type: str | None = None
    title: str | int | None = None
    detail: str | None = None


class VonageStatusReport(BaseModel):
    """A v1 message status webhook; unknown fields (usage, destination, sms, …) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message_uuid: str | None = None
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    timestamp: datetime | None = None
    status: str
    channel: str | None = None
    client_ref: str | None = None
    error: VonageError | None = None


class VonageAdapter:
    """Sends through `POST {base_url}/v1/messages` and parses the signed status webhooks."""

    provider_type = "vonage"
    channels = frozenset({Channel.SMS, Channel.VIBER, Channel.WHATSAPP})
    deduplicates = False

    def __init__(
        self, name: str, config: VonageConfig, key: RSAPrivateKey, http: httpx.AsyncClient, webhook_url: str
    ) -> None:
        self.name = name
        self.config = config
        self._key = key
        self._http = http
        self._webhook_url = webhook_url
        self._url = f"{config.base_url.rstrip('/')}/v1/messages"

    # --- sending ---------------------------------------------------------------------------------------

    def application_token(self) -> str:
        """A fresh RS256 application JWT (a new `jti` per request, short-lived)."""
        now = int(time.time())
        claims = {
            "application_id": self.config.application_id,
            "iat": now,
            "exp": now + APP_TOKEN_LIFETIME,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm="RS256")

    def message_body(self, request: SendRequest) -> dict[str, Any]:
        """The JSON body of one message.

        Viber shapes: text only → `message_type: text`; text + button → `text` with `viber_service.action`;
        image (with or without text and button) → `message_type: image`, `image: {url, caption}` where the
        caption carries the text (omitted when empty), plus `viber_service.action` for the button. This is
        how Vonage's SDKs model the Viber text+image+button message: there is no separate "card" type.
        """
        ttl = int(request.ttl.total_seconds())
        body: dict[str, Any] = {
            "to": request.phone.removeprefix("+"),
            "from": request.sender,
            "client_ref": request.client_ref,
            "webhook_url": self._webhook_url,
            "webhook_version": "v1",
        }
        if request.channel is Channel.SMS:
            return body | {
                "channel": "sms",
                "message_type": "text",
                "text": request.text,
                "ttl": _clamp(ttl, SMS_TTL_MIN, SMS_TTL_MAX),
                "sms": {"encoding_type": "auto"},
            }
        if request.channel is Channel.WHATSAPP and request.template is not None:  # channel_refusal: never None
            # A template message (business-initiated WhatsApp): `from` is the account's WhatsApp number (the
            # step's sender); Vonage documents no per-message TTL for WhatsApp, the step's wait still applies.
            template = request.template
            return body | {
                "from": request.sender.removeprefix("+"),
                "channel": "whatsapp",
                "message_type": "template",
                "template": {"name": template.name, "parameters": list(template.parameters)},
                "whatsapp": {"policy": "deterministic", "locale": template.language},
            }
        if request.channel is not Channel.VIBER:
            raise unsupported_channel(self.provider_type, self.channels, request.channel)
        viber: dict[str, Any] = {
            "category": self.config.viber_category,
            "ttl": _clamp(ttl, VIBER_TTL_MIN, VIBER_TTL_MAX),
        }
        if request.button is not None:
            viber["action"] = {"url": request.button.url, "text": request.button.caption}
        body |= {"channel": "viber_service"}
        if request.image_url:
            image: dict[str, Any] = {"url": request.image_url}
            if request.text:
                image["caption"] = request.text
            body |= {"message_type": "image", "image": image}
        else:
            body |= {"message_type": "text", "text": request.text}
        return body | {"viber_service": viber}

    async def send(self, request: SendRequest) -> SendResult:
        """Hand one message to Vonage.

        Vonage does not de-duplicate by `client_ref`, so a retried send could become a second message. The
        adapter therefore raises ProviderUnavailable (retry) only when the request surely did not reach
        Vonage (connection refused, connect/pool timeout) or Vonage answered 429/5xx/401/403. When the
        request may have reached Vonage but the answer was lost (read/write timeout or error, broken
        response) it returns `SendResult(unconfirmed=True)`: the message counts as handed over, and its
        status webhook, which carries our `client_ref`, still finds the recipient.
        """
        refusal = channel_refusal(self, request)
        if refusal is not None:
            return refusal
        headers = {"Authorization": f"Bearer {self.application_token()}", "Accept": "application/json"}
        try:
            response = await self._http.post(self._url, json=self.message_body(request), headers=headers)
        except _NOT_SENT as exc:
            raise ProviderUnavailable(f"vonage unreachable: {type(exc).__name__}") from None
        except AMBIGUOUS_ERRORS:
            return SendResult(unconfirmed=True)  # may have been accepted: never resend (see docstring)
        except httpx.TransportError as exc:  # proxy/protocol set-up failures: nothing was sent
            raise ProviderUnavailable(f"vonage unreachable: {type(exc).__name__}") from None

        raise_if_worth_retrying(response, self.name, "vonage", "application_id and private_key")
        status = response.status_code
        if status >= 400:
            return SendResult(rejected=f"{status}: {_error_text(response, request.phone)}")
        try:
            message_uuid = response.json().get("message_uuid")
        except (ValueError, AttributeError):
            message_uuid = None
        # A 2xx without a readable id is still an acceptance: the webhook brings the id later.
        return SendResult(message_id=str(message_uuid) if message_uuid else None)

    # --- webhooks --------------------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> dict[str, Any]:
        """Check the signed-webhook JWT: HS256 signature, fresh `iat`, `payload_hash`, `api_key`."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WebhookRejected(401, "missing Authorization: Bearer token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token.strip(),
                self.config.signature_secret.get_secret_value(),
                algorithms=["HS256"],
                options={"require": ["iat", "payload_hash"], "verify_aud": False},
                leeway=FUTURE_SKEW,
            )
        except jwt.ImmatureSignatureError:
            raise WebhookRejected(401, "token issued in the future") from None
        except jwt.MissingRequiredClaimError as exc:
            raise WebhookRejected(401, f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidTokenError as exc:
            raise WebhookRejected(401, f"bad token: {type(exc).__name__}") from None
        age = time.time() - float(claims["iat"])
        if age > self.config.max_token_age:
            raise WebhookRejected(401, f"stale token: issued {int(age)}s ago")
        expected = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(str(claims["payload_hash"]).lower().encode(), expected.encode()):
            raise WebhookRejected(401, "payload_hash does not match the body")
        if self.config.api_key is not None and claims.get("api_key") != self.config.api_key:
            raise WebhookRejected(401, "token is for another api_key")
        return claims

    def parse_webhook(self, request: WebhookRequest) -> list[ParsedReport]:
        self.verify_webhook(request)
        try:
            report = VonageStatusReport.model_validate(load_json(request.body, "a Vonage status webhook"))
        except (ValueError, ValidationError) as exc:
            raise WebhookRejected(400, f"not a Vonage status webhook: {type(exc).__name__}") from None
        if not report.client_ref:
            raise WebhookRejected(400, "status webhook without client_ref")
        status = STATUS_MAP.get(report.status)
        if status is None:
            # A status this adapter does not know (Vonage adds some over time): acknowledge it so Vonage does
            # not retry it for 24 h, but record nothing, since guessing could move the step wrongly.
            return []
        error = _report_error(report.error) if status is MessageStatus.UNDELIVERED else None
        return [
            ParsedReport(
                client_ref=report.client_ref,
                status=status,
                message_id=report.message_uuid,
                error=error,
                at=report.timestamp,
            )
        ]

    async def was_received(self, request: SendRequest) -> bool | None:
        """This provider offers no look-up by our reference: a send that may have reached it is not repeated."""
        return None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _error_text(response: httpx.Response, phone: str) -> str:
    """`title: detail` of Vonage's error JSON (plus the invalid parameters' names), without the number."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return response.reason_phrase or "refused"
    parts = [str(data[key]) for key in ("title", "detail") if data.get(key)]
    invalid = data.get("invalid_parameters")
    if isinstance(invalid, list):
        names = [f"{p.get('name')} {p.get('reason', '')}".strip() for p in invalid if isinstance(p, dict)]
        if names:
            parts.append("invalid: " + ", ".join(names))
    text = ": ".join(parts) or response.reason_phrase or "refused"
    return _scrub(text, phone)[:ERROR_TEXT_MAX]


def _report_error(error: VonageError | None) -> str | None:
    """A short reason from a webhook's `error`: its code/title and detail (type URL's fragment as fallback)."""
    if error is None:
        return None
    title = error.title if error.title is not None else (error.type or "").rsplit("#", 1)[-1] or None
    parts = [str(part) for part in (title, error.detail) if part]
    return ": ".join(parts)[:ERROR_TEXT_MAX] or None


def _scrub(text: str, phone: str) -> str:
    digits = phone.removeprefix("+")
    return text.replace(digits, "***") if digits else text
