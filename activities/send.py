"""The provider send activity: one message through the adapter the step names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from domain.models import SendRequest, SendResult
from providers.base import ProviderAdapter, ProviderUnavailable


class SendActivities:
    def __init__(self, providers: Mapping[str, ProviderAdapter]) -> None:
        self._providers = providers

    @activity.defn(name="send_message")
    async def send(self, request: SendRequest) -> SendResult:
        """Send once; a retry carries the same client reference, so the provider recognises it."""
        adapter = self._providers.get(request.provider)
        if adapter is None:
            raise ApplicationError(f"provider {request.provider!r} is not configured", non_retryable=True)
        try:
            return await adapter.send(request)
        except ProviderUnavailable as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
            # BENIGN: an outage is expected and retried; it must not log a warning (with the workflow
            # id, i.e. the phone number) on every attempt.
            raise ApplicationError(
                str(exc),
                type="ProviderUnavailable",
                next_retry_delay=delay,
                category=ApplicationErrorCategory.BENIGN,
            ) from exc
