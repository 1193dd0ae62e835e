"""The adapter interface and the errors every adapter speaks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.models import SendRequest, SendResult
from domain.status import MessageStatus


class ProviderUnavailable(Exception):
    """A temporary failure (timeout, 429, 5xx): the send activity retries with backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebhookRejected(Exception):
    """A webhook the gateway must refuse; `status_code` is 401 (authenticity) or 400 (format)."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class ParsedReport:
    """One delivery report in our terms; `client_ref` is the reference we gave the provider."""

    client_ref: str
    status: MessageStatus
    message_id: str | None = None
    error: str | None = None
    at: datetime | None = None


class ProviderAdapter(Protocol):
    name: str

    async def send(self, request: SendRequest) -> SendResult:
        """Hand one message to the provider. Raise ProviderUnavailable for anything worth retrying;
        return `SendResult(rejected=…)` for a permanent refusal."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[ParsedReport]:
        """Verify authenticity and parse a delivery-report request; raise WebhookRejected if bad."""
        ...
