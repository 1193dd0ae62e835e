"""Adapter for kaskad's built-in sandbox provider (see `sandbox/`): JSON over HTTP, HMAC-signed reports."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

import httpx
from pydantic import BaseModel, ValidationError

from domain.models import SendRequest, SendResult
from domain.status import Channel, MessageStatus
from providers.base import AMBIGUOUS_ERRORS, ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from providers.common import MAY_HAVE_ARRIVED, channel_refusal, load_json

SIGNATURE_HEADER = "X-Sandbox-Signature"


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: how the sandbox signs, and how the gateway checks."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SandboxReport(BaseModel):
    message_id: str
    client_ref: str
    status: MessageStatus
    error_code: str | None = None
    timestamp: datetime


class SandboxAdapter:
    name = "sandbox"
    provider_type = "sandbox"
    channels = frozenset(
        {Channel.VIBER, Channel.SMS, Channel.WHATSAPP}
    )  # sandbox/outcomes.py's CHANNELS (a test checks)

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        webhook_url: str,
        webhook_secret: str,
        *,
        deduplicates: bool = True,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._webhook_url = webhook_url
        self._secret = webhook_secret
        # The sandbox always de-duplicates; declared False, kaskad treats it like Twilio (at most once).
        self.deduplicates = deduplicates

    async def send(self, request: SendRequest) -> SendResult:
        refusal = channel_refusal(self, request)
        if refusal is not None:
            return refusal
        body = {
            "client_ref": request.client_ref,
            "channel": request.channel.value,
            "to": request.phone,
            "sender": request.sender,
            "text": request.text,
            "image_url": request.image_url,
            "button": request.button.model_dump() if request.button else None,
            "template": request.template.model_dump() if request.template else None,
            "ttl_seconds": int(request.ttl.total_seconds()),
            "callback_url": self._webhook_url,
        }
        try:
            response = await self._http.post(f"{self._base_url}/messages", json=body)
        except AMBIGUOUS_ERRORS as exc:
            if not self.deduplicates:
                return SendResult(unconfirmed=True)  # it may have arrived: never resend
            raise ProviderUnavailable(f"sandbox: no answer ({type(exc).__name__})", may_have_arrived=True) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"sandbox unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After")
            raise ProviderUnavailable(
                f"sandbox answered {response.status_code}",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
                may_have_arrived=response.status_code in MAY_HAVE_ARRIVED,
            )
        if response.status_code in (401, 403):  # the account, not the message: as real providers answer
            raise ProviderUnavailable(f"sandbox refused the account ({response.status_code})", account_refused=True)
        if response.status_code >= 400:
            return SendResult(rejected=f"{response.status_code}: {response.json().get('error', response.text)}")
        return SendResult(message_id=response.json()["message_id"])

    async def was_received(self, request: SendRequest) -> bool | None:
        """The sandbox lists what it accepted by client reference; None when it cannot be asked."""
        try:
            response = await self._http.get(f"{self._base_url}/messages", params={"client_ref": request.client_ref})
            response.raise_for_status()
            return bool(response.json())
        except (httpx.HTTPError, ValueError):
            return None

    def parse_webhook(self, request: WebhookRequest) -> list[ParsedReport]:
        body = request.body
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        if not hmac.compare_digest(signature.encode(), sign(self._secret, body).encode()):
            raise WebhookRejected(401, f"missing or wrong {SIGNATURE_HEADER}")
        try:
            report = SandboxReport.model_validate(load_json(body, "a sandbox report"))
        except (ValueError, ValidationError) as exc:
            raise WebhookRejected(400, f"not a sandbox report: {str(exc)[:200]}") from exc
        return [
            ParsedReport(
                client_ref=report.client_ref,
                status=report.status,
                message_id=report.message_id,
                error=report.error_code,
                at=report.timestamp,
            )
        ]
