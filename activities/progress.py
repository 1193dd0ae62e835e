"""Mailing statistics counted from Temporal visibility, and the activity that waits for the last recipient.

Counting through visibility (the search attributes the recipient workflows upsert) keeps per-recipient
state in one place — the recipient's own workflow — and costs the mailing nothing per recipient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client

from domain.models import MailingCounts, ProgressRequest
from domain.status import FINAL_CASCADE_STATUSES, Channel

CHANNEL_MILESTONES = ("sent", "delivered", "read", "undelivered")
POLL_EVERY = timedelta(seconds=1)
# The mailing's query shows figures at most this old while nothing changes (one history loop each).
REPORT_AT_LEAST_EVERY = timedelta(seconds=30)


async def count_mailing(client: Client, mailing_id: str, cascade: Sequence[Channel]) -> MailingCounts:
    """Outcomes, delivering channels and per-channel message counts of one mailing (`cascade`: the
    channel of each step, in order)."""
    base = _recipients_of(mailing_id)

    async def count(condition: str) -> int:
        return (await client.count_workflows(f"{base} AND {condition}")).count

    channels = sorted({channel.value for channel in cascade})
    outcome_queries = {s.value: f"CascadeStatus = '{s.value}'" for s in FINAL_CASCADE_STATUSES}
    channel_queries = {c: f"DeliveredChannel = '{c}'" for c in channels}
    milestone_queries = {
        (channel.value, name): f"StepMilestones = '{number}:{channel.value}:{name}'"
        for number, channel in enumerate(cascade, start=1)
        for name in CHANNEL_MILESTONES
    }
    queries = [*outcome_queries.values(), *channel_queries.values(), *milestone_queries.values()]
    results = iter(await asyncio.gather(*(count(q) for q in queries)))
    outcomes = {name: next(results) for name in outcome_queries}
    delivered_by_channel = {name: next(results) for name in channel_queries}
    per_channel = {c: dict.fromkeys(CHANNEL_MILESTONES, 0) for c in channels}
    for (channel, name), _ in milestone_queries.items():
        per_channel[channel][name] += next(results)
    return MailingCounts(outcomes=outcomes, delivered_by_channel=delivered_by_channel, channels=per_channel)


class ProgressActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="await_progress")
    async def await_progress(self, request: ProgressRequest) -> MailingCounts:
        """Poll (one cheap count query a second) until the number of finished recipients differs from what
        the workflow last saw, or every recipient finished, or REPORT_AT_LEAST_EVERY passed; then count
        it all, so the mailing's query shows live figures."""
        final = ", ".join(f"'{s.value}'" for s in FINAL_CASCADE_STATUSES)
        # A recipient workflow closed by hand (terminated in the UI) counts as finished too.
        query = f"{_recipients_of(request.mailing_id)} AND (CascadeStatus IN ({final}) OR ExecutionStatus != 'Running')"
        polls = int(REPORT_AT_LEAST_EVERY / POLL_EVERY)
        for _ in range(polls):
            finished = (await self._client.count_workflows(query)).count
            activity.heartbeat(finished)
            if finished != request.last_finished or finished >= request.expected:
                break
            await asyncio.sleep(POLL_EVERY.total_seconds())
        counts = await count_mailing(self._client, request.mailing_id, request.cascade)
        return counts.model_copy(update={"finished": finished})


def _recipients_of(mailing_id: str) -> str:
    return f"MailingId = '{mailing_id}' AND WorkflowType = 'RecipientCascadeWorkflow'"
