"""The adapter interface and the errors every adapter speaks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl

import httpx

from domain.models import SendRequest, SendResult
from domain.status import MessageStatus

# Transport failures after which the request may have reached the provider (its answer was lost).
AMBIGUOUS_ERRORS = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class ProviderUnavailable(Exception):
    """A temporary failure (timeout, 429, 5xx): the send activity retries with backoff.

    `may_have_arrived`: the provider may have created the message before failing (500, 502, 504 from a
    gateway whose backend went on): retried only where the provider de-duplicates."""

    def __init__(self, message: str, retry_after: float | None = None, *, may_have_arrived: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.may_have_arrived = may_have_arrived


class WebhookRejected(Exception):
    """A webhook the gateway must refuse; `status_code` is 401 (authenticity) or 400 (format)."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class WebhookRequest:
    """A delivery-report request as the gateway received it.

    `query` is the raw query string: providers without signatures are authenticated by a secret in the
    callback URL, and Twilio signs the full URL. `client_ip` serves the optional IP allow-lists.
    """

    body: bytes
    headers: Mapping[str, str]  # keys in lower case
    query: str = ""
    client_ip: str | None = None

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


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
    # Whether the provider recognises a repeated request with the same client reference as the same message.
    # Only then may kaskad resend a message whose first request may have reached it (at-least-once);
    # otherwise it never does (at-most-once), see activities/send.py.
    deduplicates: bool

    async def send(self, request: SendRequest) -> SendResult:
        """Hand one message to the provider. Raise ProviderUnavailable for anything worth retrying;
        return `SendResult(rejected=…)` for a permanent refusal."""
        ...

    def parse_webhook(self, request: WebhookRequest) -> list[ParsedReport]:
        """Verify authenticity and parse a delivery-report request; raise WebhookRejected if bad."""
        ...

    async def was_received(self, request: SendRequest) -> bool | None:
        """Whether the provider holds a message with this request's client reference: True, False, or None
        when it cannot tell. Asked only after a send may have reached a provider that does not de-duplicate:
        False lets kaskad send it after all; None means it never will (at most once)."""
        ...
