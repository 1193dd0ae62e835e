"""The provider send activity: one message through the adapter the step names, never twice where the provider
cannot tell a repeat from a new message.

Why outage retries live in here and not in Temporal's retry policy: a retried attempt scheduled by the server
can be cancelled (pause, cancel) while it waits, and the workflow then cannot learn whether an earlier
attempt's request reached the provider. So the activity runs once (the workflow sets `maximum_attempts=1`
and `retries_inside`) and retries definite failures — the provider refused the connection or answered
429/503 — itself, with backoff, for up to SEND_GIVE_UP_AFTER of provider failure (time queued behind the
rate cap does not count). Before its first request it records `SendProgress(posting=True)` on the server and
waits for the record; from then on every heartbeat says so. If the worker dies, the workflow sees that in the
heartbeat timeout's details and does not resend to a provider that does not de-duplicate, unless the provider
can be asked and has no such message (`SendResult(unconfirmed=True)` otherwise). A cancel that arrives while
a request is in flight lets the exchange finish and reports what happened; one that arrives before stops the
send with nothing sent. A worker shutting down (a deploy) hands a send it has not made back for another worker.

Guarantee per provider: at most once where the adapter says `deduplicates = False` (Twilio, Vonage, Infobip,
the sandbox when so declared); at least once, de-duplicated by the provider, where it says True (Rapporto,
the sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
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
RETRY_AFTER_MAX = timedelta(minutes=10)  # a provider's own Retry-After is honoured up to this
# One HTTP exchange, all phases together (httpx's timeout is per phase): well inside the activity's limits,
# so an answer is never abandoned by Temporal half-way.
EXCHANGE_BUDGET = timedelta(seconds=20)
# The workflow's heartbeat timeout: a worker that dies mid-send is noticed within this.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
HEARTBEAT_EVERY = timedelta(seconds=2)
RECORD_TIMEOUT = timedelta(seconds=5)  # the awaited heartbeat that records a request is about to leave

# ApplicationError types the workflow tells apart.
END_DATE_REACHED = "EndDateReached"  # nothing was sent: the end date came first
NOT_SENT_RETRY_SAFE = "NotSentRetrySafe"  # nothing of this send reached the provider; sending again is safe
PROVIDER_GAVE_UP = "ProviderGaveUp"  # the provider stayed unavailable for SEND_GIVE_UP_AFTER
ACCOUNT_REFUSED = "AccountRefused"  # the provider refused the account (401/403) and the step can fail over
# Gave up, but a request of this send may be at the provider: the step must not fail over to another account.
PROVIDER_GAVE_UP_MAYBE_SENT = "ProviderGaveUpMaybeSent"


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
        sender = _Sender(adapter, request)
        try:
            return await sender.send_until_answered()
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            if details is not None and details.worker_shutdown and not sender.in_request:
                # A deploy: nothing of this send is at the provider, so another worker may make it.
                raise ApplicationError(
                    "worker shut down", type=NOT_SENT_RETRY_SAFE, category=ApplicationErrorCategory.BENIGN
                ) from None
            raise
        finally:
            sender.stop_heartbeats()


class _Sender:
    """One send: its requests, its heartbeats, and whether a request is out right now."""

    def __init__(self, adapter: ProviderAdapter, request: SendRequest) -> None:
        self.adapter, self.request = adapter, request
        self.in_request = False
        # A request of this send may be at a provider that de-duplicates (its answer was lost): repeating it
        # there is safe, handing the message to another account is not.
        self.maybe_sent = False
        self._progress = SendProgress()
        self._beats: asyncio.Task[None] | None = None

    async def send_until_answered(self) -> SendResult:
        failing_since: datetime | None = None
        delay = BACKOFF_FIRST
        while True:
            self._refuse_past_end_date()
            await self._record_posting()
            self._refuse_past_end_date()  # recording can take a moment on a busy server
            try:
                self.in_request = True
                return await _exchange(self.adapter, self.request)
            except ProviderUnavailable as exc:
                if not self.request.retries_inside:  # a workflow started before retries moved in here
                    await self._record(SendProgress(posting=False))
                    raise _retry_by_temporal(exc) from exc
                self.maybe_sent = self.maybe_sent or exc.may_have_arrived
                fail_over = self.request.fail_over and not self.maybe_sent
                if exc.account_refused and fail_over:
                    raise ApplicationError(str(exc), type=ACCOUNT_REFUSED, non_retryable=True) from exc
                failing_since = failing_since or _now()
                give_up_after = (self.request.give_up_after if fail_over else None) or SEND_GIVE_UP_AFTER
                if _now() - failing_since >= give_up_after:
                    raise ApplicationError(
                        f"{exc} (unavailable for {format_duration(give_up_after)})",
                        type=PROVIDER_GAVE_UP if fail_over or not self.maybe_sent else PROVIDER_GAVE_UP_MAYBE_SENT,
                        non_retryable=True,
                    ) from exc
                pause = min(timedelta(seconds=exc.retry_after), RETRY_AFTER_MAX) if exc.retry_after else delay
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                self.in_request = False
            await asyncio.sleep(pause.total_seconds())  # a cancel here finds nothing in flight

    def _refuse_past_end_date(self) -> None:
        if self.request.not_after is not None and _now() >= self.request.not_after:
            raise ApplicationError(
                "end date reached", type=END_DATE_REACHED, non_retryable=True, category=ApplicationErrorCategory.BENIGN
            )

    async def _record_posting(self) -> None:
        """Before the first request: record on the server that one may be out from now on. It is never
        recorded back to False (on the new path): a late, older heartbeat could otherwise overtake it."""
        if self._progress.posting:
            return
        await self._record(SendProgress(posting=True))
        if self._beats is None:
            self._beats = asyncio.create_task(self._beat())

    async def _record(self, progress: SendProgress) -> None:
        self._progress = progress
        details = progress.model_dump()
        activity.heartbeat(details)  # the SDK's own heartbeats and its failure report carry the same details
        handle = activity.client().get_async_activity_handle(task_token=activity.info().task_token)
        try:
            await handle.heartbeat(details, rpc_timeout=RECORD_TIMEOUT)
        except AsyncActivityCancelledError:
            # Paused or cancelled before any request: wait for the SDK's cancel (it comes with a heartbeat).
            await asyncio.sleep(HEARTBEAT_TIMEOUT.total_seconds())
            raise ApplicationError(
                "cancel requested", type=NOT_SENT_RETRY_SAFE, category=ApplicationErrorCategory.BENIGN
            ) from None
        except Exception as exc:  # Temporal unreachable: that a request may leave cannot be recorded
            raise ApplicationError(
                f"cannot record the send's progress: {type(exc).__name__}",
                type=NOT_SENT_RETRY_SAFE,
                category=ApplicationErrorCategory.BENIGN,
            ) from exc

    async def _beat(self) -> None:
        """Heartbeat while the send runs: a dead worker is noticed within HEARTBEAT_TIMEOUT, a cancel arrives."""
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())
            activity.heartbeat(self._progress.model_dump())

    def stop_heartbeats(self) -> None:
        if self._beats is not None:
            self._beats.cancel()


async def _exchange(adapter: ProviderAdapter, request: SendRequest) -> SendResult:
    """One request with its whole exchange bounded by EXCHANGE_BUDGET. A cancel that arrives meanwhile waits
    for the answer: the message may be leaving, so we report what happened rather than abandon it half-way."""
    exchange = asyncio.ensure_future(asyncio.wait_for(adapter.send(request), EXCHANGE_BUDGET.total_seconds()))
    while not exchange.done():
        with contextlib.suppress(asyncio.CancelledError):  # asyncio.wait never cancels what it waits for
            await asyncio.wait({exchange})
    try:
        return exchange.result()
    except TimeoutError as exc:  # no answer in time: the request may have reached the provider
        if adapter.deduplicates:
            raise ProviderUnavailable(
                f"{adapter.name}: no answer within {EXCHANGE_BUDGET.seconds}s", may_have_arrived=True
            ) from exc
        return SendResult(unconfirmed=True)
    except ProviderUnavailable as exc:
        if exc.may_have_arrived and not adapter.deduplicates:
            return SendResult(unconfirmed=True)  # e.g. a 502 whose backend took the message all the same
        if activity.is_cancelled():
            raise asyncio.CancelledError from exc  # paused or cancelled during the outage: nothing sent
        raise
    except Exception as exc:  # an adapter bug or an answer it could not read, after the request went out
        log.exception("%s: send failed after the request may have left", adapter.name)
        if adapter.deduplicates:
            raise ProviderUnavailable(f"{adapter.name}: {type(exc).__name__}", may_have_arrived=True) from exc
        return SendResult(unconfirmed=True)


def _retry_by_temporal(exc: ProviderUnavailable) -> ApplicationError:
    """The error that makes Temporal retry the send, as workflows started before issue 9 expect."""
    delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
    # BENIGN: an outage is expected and retried; it must not log a warning (with the workflow id, i.e. the
    # phone number) on every attempt.
    return ApplicationError(
        str(exc), type="ProviderUnavailable", next_retry_delay=delay, category=ApplicationErrorCategory.BENIGN
    )


async def _was_received(adapter: ProviderAdapter, request: SendRequest) -> bool | None:
    """Ask the provider whether it has the message; None when it cannot tell or does not answer in time."""
    try:
        return await asyncio.wait_for(adapter.was_received(request), EXCHANGE_BUDGET.total_seconds())
    except Exception:
        log.warning("%s: could not ask whether a message arrived", adapter.name, exc_info=True)
        return None


def _may_have_arrived_before(request: SendRequest) -> bool:
    """The workflow says so, or a server-side retry of this activity (workflows started before issue 9) finds
    that the attempt before it may have had a request out when it died."""
    details = activity.info().heartbeat_details
    return request.after_ambiguous or bool(details and SendProgress.model_validate(details[0]).posting)


def _now() -> datetime:
    return datetime.now(UTC)
