"""Provider failover within a step (issue 12): a step naming two accounts goes to the second when the first is
down past `failover_after` (503s, then connections refused) or refuses the account (401) — sent once, by the
second, under that attempt's reference, and its report lands on the step. On the real dev server, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from domain.models import RecipientInput, RecipientState
from domain.refs import ClientRef, recipient_workflow_id
from domain.spec import MailingSpec, ProviderAccount
from domain.status import Channel
from providers.sandbox import SandboxAdapter
from runtime.devstack import Stack
from runtime.servers import free_port, running
from worker import running_workers
from workflows.recipient import RecipientCascadeWorkflow

pytestmark = pytest.mark.e2e
PHONE = "+79990002220"  # SMS ending in 0: the sandbox delivers it


class DownProvider:
    """A provider account that answers `status` to every message (503: down; 401: the account is refused),
    or `first` to the first one."""

    def __init__(self, status: int, enough: int, first: int | None = None) -> None:
        self.requests: list[str] = []
        self.seen = asyncio.Event()
        self.app = FastAPI()

        @self.app.post("/messages")
        async def send(request: Request) -> JSONResponse:
            self.requests.append((await request.json())["client_ref"])
            if len(self.requests) >= enough:
                self.seen.set()
            code = first if first is not None and len(self.requests) == 1 else status
            return JSONResponse({"error": "unavailable"}, status_code=code)


@contextlib.asynccontextmanager
async def workers(stack: Stack, down_url: str, *, deduplicates: bool = False) -> AsyncIterator[str]:
    """Workers on a queue of their own with two accounts: `down` (the stand-in) and the stack's sandbox."""
    settings = stack.settings.model_copy(update={"task_queue": f"failover-{uuid.uuid4().hex[:6]}"})
    hooks, key = f"{settings.webhook_base_url}/webhooks", settings.webhook_key()
    async with httpx.AsyncClient(timeout=10) as http:
        providers = {
            "down": SandboxAdapter(http, down_url, f"{hooks}/down", key, deduplicates=deduplicates),
            "sandbox": SandboxAdapter(http, settings.sandbox_base_url, f"{hooks}/sandbox", key),
        }
        async with running_workers(stack.client, settings, providers, None):
            yield settings.task_queue


def plan() -> MailingSpec:
    return MailingSpec.model_validate(
        {
            "name": "failover",
            "numbers": [PHONE],
            "provider": ["down", "sandbox"],
            "failover_after": "2s",
            "late_reports": "0s",
            "steps": [{"channel": "sms", "sender": "Shop", "text": "Hi", "wait": "30s"}],
        }
    )


async def sandbox_has(stack: Stack, ref: str) -> int:
    async with httpx.AsyncClient() as http:
        return len((await http.get(f"{stack.settings.sandbox_base_url}/messages", params={"client_ref": ref})).json())


@pytest.mark.parametrize("status", [503, 401], ids=["down-then-unreachable", "account-refused"])
async def test_a_step_fails_over_to_its_next_account_and_is_sent_once(stack: Stack, status: int) -> None:
    provider, port = DownProvider(status, enough=2 if status == 503 else 1), free_port()
    mailing_id = f"failover-{uuid.uuid4().hex[:6]}"
    async with workers(stack, f"http://127.0.0.1:{port}") as queue:
        async with running(provider.app, "127.0.0.1", port):
            handle = await stack.client.start_workflow(
                RecipientCascadeWorkflow.run,
                RecipientInput(mailing_id=mailing_id, phone=PHONE, plan=plan().cascade()),
                id=recipient_workflow_id(mailing_id, PHONE),
                task_queue=queue,
            )
            await asyncio.wait_for(provider.seen.wait(), timeout=30)
            if status == 401:  # refused: the step goes on at once, while the stand-in still answers
                state: RecipientState = await asyncio.wait_for(handle.result(), timeout=60)
        # From here the first account refuses connections (the stand-in is gone).
        state = await asyncio.wait_for(handle.result(), timeout=60)
    first, second = f"{mailing_id}/{PHONE}/0", f"{mailing_id}/{PHONE}/0.1"
    assert set(provider.requests) == {first}  # the first account only ever saw its own attempt
    # down: retried until `failover_after`; refused: asked once, never again
    assert len(provider.requests) >= 2 if status == 503 else len(provider.requests) == 1
    step = state.steps[0]
    assert (step.status.value, step.client_ref) == ("delivered", second)  # the report found the step
    assert state.status.value == "delivered"
    assert await sandbox_has(stack, second) == 1 and await sandbox_has(stack, first) == 0  # sent once, by #2


async def test_an_account_whose_answer_may_have_been_lost_is_never_failed_over_from(stack: Stack) -> None:
    """A de-duplicating account answered 502 (its backend may have taken the message), then refuses the
    account: repeating there is safe, another account's copy would be a second message. No failover."""
    provider, port = DownProvider(401, enough=3, first=502), free_port()
    mailing_id = f"failover-{uuid.uuid4().hex[:6]}"
    async with (
        workers(stack, f"http://127.0.0.1:{port}", deduplicates=True) as queue,
        running(provider.app, "127.0.0.1", port),
    ):
        handle = await stack.client.start_workflow(
            RecipientCascadeWorkflow.run,
            RecipientInput(mailing_id=mailing_id, phone=PHONE, plan=plan().cascade()),
            id=recipient_workflow_id(mailing_id, PHONE),
            task_queue=queue,
        )
        await asyncio.wait_for(provider.seen.wait(), timeout=30)  # retried past the 401, ...
        await asyncio.sleep(3)  # ... and past failover_after (2s)
        state: RecipientState = await handle.query(RecipientCascadeWorkflow.state)
        await handle.terminate("test finished")
    assert set(provider.requests) == {f"{mailing_id}/{PHONE}/0"} and len(provider.requests) >= 3
    assert state.steps[0].client_ref == f"{mailing_id}/{PHONE}/0"  # still on its first account
    assert await sandbox_has(stack, f"{mailing_id}/{PHONE}/0.1") == 0


def test_the_reference_of_a_later_attempt_round_trips_and_the_first_keeps_its_old_form() -> None:
    assert str(ClientRef("m", PHONE, 1)) == f"m/{PHONE}/1"
    assert ClientRef.parse(f"m/{PHONE}/1.2") == ClientRef("m", PHONE, 1, 2)
    with pytest.raises(ValueError):
        ClientRef.parse(f"m/{PHONE}/1.0")  # attempt 0 is written without a suffix


@pytest.mark.parametrize(
    ("provider", "reason"),
    [([], "1 to 5"), (["a", "a"], "each provider account once"), (["a", ""], "none empty")],
)
def test_a_failover_list_is_checked(provider: list[str], reason: str) -> None:
    raw = plan().model_dump() | {"provider": provider}
    with pytest.raises(ValidationError, match=reason):
        MailingSpec.model_validate(raw)


def test_every_account_of_a_failover_list_is_checked_at_launch() -> None:
    accounts = {"sandbox": ProviderAccount("sandbox", frozenset({Channel.SMS, Channel.VIBER}))}
    problems = plan().launch_problems(datetime.now(UTC), accounts)
    assert problems == ["steps.1.provider: 'down' is not a configured provider account (known: sandbox)"]
