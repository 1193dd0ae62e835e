"""Schedule windows, computed in an activity: `ZoneInfo` misbehaves in the workflow sandbox.

Run as a local activity: no task queue round trip, the answer is recorded in the workflow's history.
"""

from __future__ import annotations

from temporalio import activity

from domain.models import WindowRequest
from domain.schedule import Window, next_window


@activity.defn(name="next_window")
async def next_send_window(request: WindowRequest) -> Window | None:
    """The allowed window `request.at` is in, or the next one; None when none opens before the end date.

    Pure computation taking well under a millisecond: it runs on the worker's event loop.
    """
    return next_window(request.schedule, request.zones, request.at, request.end_at)
