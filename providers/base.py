"""The adapter interface and the errors every adapter speaks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

import httpx

from domain.models import SendRequest, SendResult
from domain.status import Channel, MessageStatus

# Transport failures after which the request may have reached the provider (its answer was lost).
AMBIGUOUS_ERRORS = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


# What parsing a report may raise on a body nobody foresaw: JSON and pydantic errors (ValueError), overflowing
# numbers (ArithmeticError), nesting past the recursion limit, a value of an unexpected type or shape.
MALFORMED = (ValueError, ArithmeticError, RecursionError, TypeError, LookupError)


class ProviderUnavailable(Exception):
    """A temporary failure (timeout, 429, 5xx): the send activity retries with backoff.

    `may_have_arrived`: the provider may have created the message before failing (500, 502, 504 from a
    gateway whose backend went on): retried only where the provider de-duplicates."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        may_have_arrived: bool = False,
        account_refused: bool = False,
    ) -> None:
        """`account_refused`: the provider refused this account (401/403), not the message: a step with another
        account to fail over to goes there at once."""
        super().__init__(message)
        self.retry_after = retry_after
        self.may_have_arrived = may_have_arrived
        self.account_refused = account_refused


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


class ReportBatch(list[ParsedReport]):
    """The reports of a body that posts several (Infobip, Rapporto): those that parsed, and why each of the
    others was skipped. One malformed report must not cost the others: the gateway applies these and answers
    2xx; only a body with nothing usable in it is refused."""

    def __init__(self, reports: Iterable[ParsedReport] = (), skipped: Iterable[str] = ()) -> None:
        super().__init__(reports)
        self.skipped = list(skipped)


def batch_of(items: Iterable[Any], parse: Callable[[Any], ParsedReport | None], what: str) -> ReportBatch:
    """Each item parsed on its own: one that raises WebhookRejected(400) or a malformed-value error is skipped
    with its reason, one parsed as None is acknowledged and ignored. A batch whose every item is malformed is
    WebhookRejected(400) with the first reason: nothing in it can be used, and the provider should know."""
    batch = ReportBatch()
    count = 0
    for index, item in enumerate(items):
        count += 1
        try:
            report = parse(item)
        except WebhookRejected as exc:
            if exc.status_code != 400:
                raise
            batch.skipped.append(f"report {index + 1}: {exc.reason}")
        except MALFORMED as exc:
            batch.skipped.append(f"report {index + 1}: {what} ({type(exc).__name__})")
        else:
            if report is not None:
                batch.append(report)
    if batch.skipped and len(batch.skipped) == count:
        raise WebhookRejected(
            400, batch.skipped[0] if count == 1 else f"all {count} reports malformed: {batch.skipped[0]}"
        )
    return batch


class ProviderAdapter(Protocol):
    name: str  # the account's name, as a spec's `provider = "…"` names it
    # What the adapter is and what it sends, declared by its class: the launch checks refuse a step whose
    # account does not send its channel, and `send` refuses one that gets through (providers/common.py).
    provider_type: str  # `type` in the accounts file: sandbox, vonage, infobip, twilio, rapporto
    channels: frozenset[Channel]
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
