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
# The mailing's query shows figures at most this old while nothing changes (one history loop each), and
# recounts them all at most this often while recipients finish (a full count is a dozen visibility queries).
REPORT_AT_LEAST_EVERY = timedelta(seconds=30)
REPORT_AT_MOST_EVERY = timedelta(seconds=2)


async def count_mailing(
    client: Client, mailing_id: str, cascade: Sequence[Channel], *, outcomes_only: bool = False
) -> MailingCounts:
    """Outcomes, delivering channels and per-channel message counts of one mailing (`cascade`: the
    channel of each step, in order). `outcomes_only` makes three queries instead of a dozen."""
    base = _recipients_of(mailing_id)

    async def count(condition: str) -> int:
        return (await client.count_workflows(f"{base} AND {condition}")).count

    channels = [] if outcomes_only else sorted({channel.value for channel in cascade})
    outcome_queries = {s.value: f"CascadeStatus = '{s.value}'" for s in FINAL_CASCADE_STATUSES}
    channel_queries = {c: f"DeliveredChannel = '{c}'" for c in channels}
    milestone_queries = {
        (channel.value, name): f"StepMilestones = '{number}:{channel.value}:{name}'"
        for number, channel in enumerate(cascade, start=1)
        for name in CHANNEL_MILESTONES
        if not outcomes_only
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
        """Poll (one cheap count query a second) until every recipient finished, or the number of finished
        ones changed since the workflow last saw it (at most every REPORT_AT_MOST_EVERY), or
        REPORT_AT_LEAST_EVERY passed. Then it counts the outcomes (live in the mailing's query), and every
        figure once all are finished.

        `until_closed` (asked once every cascade is decided) polls the recipient workflows that have closed
        instead: each stays open for late reports, which can still change the outcomes, so the final
        figures are only final once the last one closed."""
        final = ", ".join(f"'{s.value}'" for s in FINAL_CASCADE_STATUSES)
        # A recipient workflow closed by hand (terminated in the UI) counts as finished too.
        closed = "ExecutionStatus != 'Running'"
        recipients = _recipients_of(request.mailing_id)
        if request.until_closed:
            query, last = f"{recipients} AND {closed}", request.last_closed
        else:
            query, last = f"{recipients} AND (CascadeStatus IN ({final}) OR {closed})", request.last_finished
        for poll in range(int(REPORT_AT_LEAST_EVERY / POLL_EVERY)):
            seen = (await self._client.count_workflows(query)).count
            activity.heartbeat(seen)
            changed = seen != last and poll * POLL_EVERY >= REPORT_AT_MOST_EVERY
            if changed or seen >= request.expected:
                break
            await asyncio.sleep(POLL_EVERY.total_seconds())
        done = seen >= request.expected
        counts = await count_mailing(self._client, request.mailing_id, request.cascade, outcomes_only=not done)
        if request.until_closed:  # asked only once every cascade was decided: `finished` stays what it was
            return counts.model_copy(update={"finished": request.last_finished, "closed": seen})
        return counts.model_copy(update={"finished": seen})


def _recipients_of(mailing_id: str) -> str:
    return f"MailingId = '{mailing_id}' AND WorkflowType = 'RecipientCascadeWorkflow'"
