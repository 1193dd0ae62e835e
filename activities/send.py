"""The provider send activity: one message through the adapter the step names, never twice where the provider
cannot tell a repeat from a new message.

Why outage retries live in here and not in Temporal's retry policy: a retried attempt scheduled by the server
can be cancelled (pause, cancel) while it waits, and the workflow then cannot learn whether an earlier
attempt's request reached the provider. So the activity runs once (the workflow sets `maximum_attempts=1`)
and retries definite failures — the provider refused the connection or answered 429/5xx — itself, with
backoff, for up to SEND_GIVE_UP_AFTER of provider failure (time queued behind the rate cap does not count).
Before each request it records `SendProgress(posting=True)` on the server and waits for the answer, so if
the worker dies mid-request the workflow sees that in the heartbeat timeout's details and does not resend to
a provider that does not de-duplicate (`SendResult(unconfirmed=True)` instead). A cancel that arrives while a
request is in flight lets the exchange finish and reports what happened; one that arrives before stops the
send with nothing sent.

Guarantee per provider: at most once where the adapter says `deduplicates = False` (Twilio, Vonage, Infobip,
the sandbox when so declared); at least once, de-duplicated by the provider, where it says True (Rapporto,
the sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import AsyncActivityCancelledError
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from domain.durations import format_duration
from domain.models import SendProgress, SendRequest, SendResult
from providers.base import ProviderAdapter, ProviderUnavailable

log = logging.getLogger("kaskad.send")

# A provider outage is retried with backoff for this long; then the step counts as not sent and the cascade
# moves on, so one dead provider cannot hold a recipient forever.
SEND_GIVE_UP_AFTER = timedelta(hours=1)
BACKOFF_FIRST, BACKOFF_MAX = timedelta(seconds=1), timedelta(minutes=1)
# One HTTP exchange, all phases together (httpx's timeout is per phase): well under HEARTBEAT_TIMEOUT's
# multiple the workflow allows, so an answer is never abandoned by Temporal half-way.
EXCHANGE_BUDGET = timedelta(seconds=20)
# The workflow's heartbeat timeout: a worker that dies mid-send is noticed within this.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
HEARTBEAT_EVERY = timedelta(seconds=2)

# ApplicationError types the workflow tells apart.
END_DATE_REACHED = "EndDateReached"  # nothing was sent: the end date came first
NOT_SENT_RETRY_SAFE = "NotSentRetrySafe"  # this attempt failed, and sending again cannot duplicate the message
PROVIDER_GAVE_UP = "ProviderGaveUp"  # the provider stayed unavailable for SEND_GIVE_UP_AFTER


class SendActivities:
    def __init__(self, providers: Mapping[str, ProviderAdapter]) -> None:
        self._providers = providers

    @activity.defn(name="send_message")
    async def send(self, request: SendRequest) -> SendResult:
        """Hand one message to its provider; retry an outage; never resend what may already be there."""
        adapter = self._providers.get(request.provider)
        if adapter is None:
            raise ApplicationError(f"provider {request.provider!r} is not configured", non_retryable=True)
        if _may_have_arrived_before(request) and not adapter.deduplicates:
            received = await _was_received(adapter, request)
            if received is None:
                return SendResult(unconfirmed=True)  # an earlier request may have arrived: the report decides
            if received:
                return SendResult()  # it did arrive: handed over, and its report brings the message id
        async with _heartbeats() as record:
            return await _send_until_answered(adapter, request, record)


async def _send_until_answered(adapter: ProviderAdapter, request: SendRequest, record: _Recorder) -> SendResult:
    failing_since: datetime | None = None
    delay = BACKOFF_FIRST
    while True:
        if request.not_after is not None and _now() >= request.not_after:
            raise ApplicationError(
                "end date reached", type=END_DATE_REACHED, non_retryable=True, category=ApplicationErrorCategory.BENIGN
            )
        await record(SendProgress(posting=True))
        try:
            return await _exchange(adapter, request)
        except ProviderUnavailable as exc:
            await record(SendProgress(posting=False))
            if activity.is_cancelled():
                raise asyncio.CancelledError from exc  # paused or cancelled during the outage: nothing sent
            failing_since = failing_since or _now()
            if _now() - failing_since >= SEND_GIVE_UP_AFTER:
                raise ApplicationError(
                    f"{exc} (unavailable for {format_duration(SEND_GIVE_UP_AFTER)})",
                    type=PROVIDER_GAVE_UP,
                    non_retryable=True,
                ) from exc
            pause = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else delay
            await asyncio.sleep(min(pause, BACKOFF_MAX).total_seconds())  # a cancel here finds nothing in flight
            delay = min(delay * 2, BACKOFF_MAX)


async def _exchange(adapter: ProviderAdapter, request: SendRequest) -> SendResult:
    """One request with its whole exchange bounded by EXCHANGE_BUDGET. A cancel that arrives meanwhile waits
    for the answer: the message may be leaving, so we report what happened rather than abandon it half-way."""
    exchange = asyncio.ensure_future(asyncio.wait_for(adapter.send(request), EXCHANGE_BUDGET.total_seconds()))
    while not exchange.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(exchange)
    try:
        return exchange.result()
    except TimeoutError as exc:  # no answer in time: the request may have reached the provider
        if adapter.deduplicates:
            raise ProviderUnavailable(f"{adapter.name}: no answer within {EXCHANGE_BUDGET.seconds}s") from exc
        return SendResult(unconfirmed=True)
    except ProviderUnavailable:
        raise
    except Exception as exc:  # an adapter bug or an answer it could not read, after the request went out
        log.exception("%s: send failed after the request may have left", adapter.name)
        if adapter.deduplicates:
            raise ApplicationError(f"{adapter.name}: {type(exc).__name__}", type=NOT_SENT_RETRY_SAFE) from exc
        return SendResult(unconfirmed=True)


class _Recorder:
    """Records the send's progress on the Temporal server and waits until it is stored (see the module doc)."""

    def __init__(self) -> None:
        self.progress = SendProgress()

    async def __call__(self, progress: SendProgress) -> None:
        self.progress = progress
        details = progress.model_dump()
        activity.heartbeat(details)  # the SDK's own heartbeats and its failure report carry the same details
        info = activity.info()
        try:
            await activity.client().get_async_activity_handle(task_token=info.task_token).heartbeat(details)
        except AsyncActivityCancelledError:
            if progress.posting:  # paused or cancelled before the request: wait for the SDK's cancel
                await asyncio.sleep(HEARTBEAT_TIMEOUT.total_seconds())
                raise ApplicationError(
                    "cancel requested", type=NOT_SENT_RETRY_SAFE, category=ApplicationErrorCategory.BENIGN
                ) from None
        except Exception as exc:  # Temporal unreachable: whether the request is safe cannot be recorded
            if progress.posting:
                raise ApplicationError(
                    f"cannot record the send's progress: {type(exc).__name__}",
                    type=NOT_SENT_RETRY_SAFE,
                    category=ApplicationErrorCategory.BENIGN,
                ) from exc


@contextlib.asynccontextmanager
async def _heartbeats() -> AsyncIterator[_Recorder]:
    """Heartbeat every HEARTBEAT_EVERY while the send runs: a dead worker is noticed, a cancel arrives."""
    record = _Recorder()

    async def beat() -> None:
        while True:
            activity.heartbeat(record.progress.model_dump())
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())

    task = asyncio.create_task(beat())
    try:
        yield record
    finally:
        task.cancel()


async def _was_received(adapter: ProviderAdapter, request: SendRequest) -> bool | None:
    """Ask the provider whether it has the message; None when it cannot tell or does not answer in time."""
    try:
        return await asyncio.wait_for(adapter.was_received(request), EXCHANGE_BUDGET.total_seconds())
    except Exception:
        log.warning("%s: could not ask whether a message arrived", adapter.name, exc_info=True)
        return None


def _may_have_arrived_before(request: SendRequest) -> bool:
    """The workflow says so, or a server-side retry of this activity (scheduled by workflows started before
    retries moved in here) finds that the attempt before it was mid-request when it died."""
    details = activity.info().heartbeat_details
    return request.after_ambiguous or bool(details and SendProgress.model_validate(details[0]).posting)


def _now() -> datetime:
    return datetime.now(UTC)
