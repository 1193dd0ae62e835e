"""Posting a report until the receiver takes it: what the sandbox (and the test fakes of real providers) do,
as providers do — retry a failed delivery with backoff instead of losing it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx

log = logging.getLogger("kaskad.sandbox")

FIRST_DELAY = 0.2
MAX_DELAY = 10.0


async def post_until_accepted(
    post: Callable[[], Awaitable[httpx.Response]],
    retry_for: float,
    on_answer: Callable[[int | None], None] | None = None,
) -> bool:
    """Call `post` (one attempt) until it answers 2xx, waiting 0.2 s doubling to 10 s between attempts, for
    `retry_for` seconds at most. `on_answer` sees each attempt's status code (None: unreachable)."""
    delay, waited = FIRST_DELAY, 0.0
    while True:
        status_code: int | None = None
        try:
            status_code = (await post()).status_code
        except httpx.TransportError as exc:
            log.warning("report receiver unreachable (%s); retrying in %.1fs", type(exc).__name__, delay)
        else:
            if 200 <= status_code < 300:
                if on_answer is not None:
                    on_answer(status_code)
                return True
            log.warning("report receiver answered %s; retrying in %.1fs", status_code, delay)
        if on_answer is not None:
            on_answer(status_code)
        if waited >= retry_for:
            log.error("giving up on a report after %.0fs", waited)
            return False
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, MAX_DELAY)


class Reporter:
    """The background tasks that post reports, and their HTTP client; `lifespan` closes both with the app."""

    def __init__(self, tasks: set[asyncio.Task[None]] | None = None) -> None:
        self.http = httpx.AsyncClient(timeout=10)
        self.tasks: set[asyncio.Task[None]] = set() if tasks is None else tasks

    def spawn(self, report: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(report)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @asynccontextmanager
    async def lifespan(self, _app: object) -> AsyncIterator[None]:
        yield
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.aclose()
