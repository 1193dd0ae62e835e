"""At most once, proven with a real crash: `worker.py` is SIGKILLed while its request is at a provider that does
not de-duplicate, and the restarted worker must not send that message again (issue 9.4).

The provider is a loopback stand-in speaking the sandbox's protocol: it records every request, holds the first
one unanswered (so the kill lands after the provider has it), and answers `GET /messages?client_ref=` — or
refuses to, to play a provider that offers no look-up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from domain.models import RecipientInput, RecipientState
from domain.refs import recipient_workflow_id
from runtime.devstack import Stack
from runtime.servers import free_port, running
from tests.test_cascade import plan
from workflows.recipient import RecipientCascadeWorkflow

ROOT = Path(__file__).resolve().parents[1]


class HoldingProvider:
    """Accepts every message, but holds the first request's answer until the test lets go."""

    def __init__(self, lookup: bool) -> None:
        self.requests: list[str] = []
        self.release = asyncio.Event()
        self.app = FastAPI()

        @self.app.post("/messages")
        async def send(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body["client_ref"])
            if len(self.requests) == 1:
                await self.release.wait()
            return JSONResponse({"message_id": f"m-{len(self.requests)}"})

        @self.app.get("/messages")
        async def find(client_ref: str) -> JSONResponse:
            if not lookup:
                return JSONResponse({"error": "no such endpoint"}, status_code=404)
            return JSONResponse([{"client_ref": ref} for ref in self.requests if ref == client_ref])


@asynccontextmanager
async def worker_process(stack: Stack, task_queue: str, provider_url: str, log: Path) -> AsyncIterator[None]:
    """`python worker.py` for its own task queue, sending to `provider_url` as a non-deduplicating sandbox."""
    env = {
        **os.environ,
        **stack.settings.process_env(),
        "KASKAD_TASK_QUEUE": task_queue,
        "KASKAD_SANDBOX_URL": provider_url,
        "KASKAD_SANDBOX_DEDUPLICATES": "false",
    }
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "worker.py", cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    for _ in range(int(within * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within}s: {what}")


@pytest.mark.e2e
@pytest.mark.parametrize("lookup", [True, False], ids=["provider-can-be-asked", "provider-cannot-be-asked"])
async def test_a_worker_killed_mid_request_never_sends_twice(stack: Stack, tmp_path: Path, lookup: bool) -> None:
    provider = HoldingProvider(lookup)
    port, queue = free_port(), f"crash-{uuid.uuid4().hex[:6]}"
    mailing_id = f"crash-{uuid.uuid4().hex[:6]}"
    async with running(provider.app, "127.0.0.1", port):
        url = f"http://127.0.0.1:{port}"
        async with worker_process(stack, queue, url, tmp_path / "worker-1.log"):
            handle = await stack.client.start_workflow(
                RecipientCascadeWorkflow.run,
                RecipientInput(mailing_id=mailing_id, phone="+79990000001", variables={"name": "A"}, plan=plan()),
                id=recipient_workflow_id(mailing_id, "+79990000001"),
                task_queue=queue,
            )

            async def provider_has_it() -> bool:
                return len(provider.requests) == 1

            await eventually(provider_has_it, 30, "the first request reached the provider")
        # The worker is dead (SIGKILL) with its request unanswered; the provider answers from now on.
        provider.release.set()
        async with worker_process(stack, queue, url, tmp_path / "worker-2.log"):

            async def step_decided() -> bool:
                state: RecipientState = await handle.query(RecipientCascadeWorkflow.state)
                return state.steps[0].handed_over

            # The heartbeat timeout (10 s) notices the dead worker; before the fix, start-to-close (30 s) did.
            await eventually(step_decided, 60, "the first step was decided after the crash")
            state = await handle.query(RecipientCascadeWorkflow.state)
            await handle.terminate("test finished")
    assert provider.requests == [f"{mailing_id}/+79990000001/0"]  # sent once, never again
    viber = state.steps[0]
    assert viber.status is viber.status.SENT
    assert viber.unconfirmed is not lookup  # asked, the provider proved it has it; else only a report can tell
