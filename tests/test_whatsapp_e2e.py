"""Issue 12's acceptance for WhatsApp: a Viber → WhatsApp → SMS cascade end to end on the dev stack against
the sandbox, with figures that follow the sandbox's rules (README, sandbox/outcomes.py)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from domain.models import MailingInput
from domain.refs import mailing_workflow_id
from domain.spec import MailingSpec
from runtime.devstack import Stack
from workflows.mailing import MailingWorkflow

pytestmark = pytest.mark.e2e
TEN_NUMBERS = [f"+7999000000{digit}" for digit in range(10)]


def three_steps(viber: str, whatsapp: str, sms: str) -> list[dict[str, Any]]:
    """Viber and WhatsApp expect `read`, so each of WhatsApp's outcomes (read, delivered unread, not a
    WhatsApp user, no report) is reached by some number; `{1}` is the number, `{name|friend}` has a default."""
    return [
        {"channel": "viber", "sender": "Shop", "text": "Hi {1}", "wait": "3s", "expect": "read", "provider": viber},
        {
            "channel": "whatsapp",
            "sender": "Shop",
            "template": {"name": "order_update", "language": "ru", "parameters": ["{name|friend}", "{1}"]},
            "wait": "3s",
            "expect": "read",
            "provider": whatsapp,
        },
        {"channel": "sms", "sender": "Shop", "text": "Hi {1}", "wait": "3s", "provider": sms},
    ]


# By last digit: Viber reads 0-3 (4-5 delivered unread, 6-7 not Viber users, 8-9 no report); WhatsApp then
# reads 4 (5-6 delivered unread, 7 not a WhatsApp user, 8-9 no report); SMS delivers 5-8, not 9.
OUTCOMES = {"delivered": 9, "undelivered": 1, "not_sent": 0}
DELIVERED_BY_CHANNEL = {"viber": 4, "whatsapp": 1, "sms": 4}
CHANNELS = {
    "viber": {"sent": 10, "delivered": 6, "read": 4, "undelivered": 2},
    "whatsapp": {"sent": 6, "delivered": 3, "read": 1, "undelivered": 1},
    "sms": {"sent": 5, "delivered": 4, "read": 0, "undelivered": 1},
}


async def test_viber_then_whatsapp_then_sms_on_the_sandbox(stack: Stack) -> None:
    spec = MailingSpec.model_validate(
        {
            "name": "Viber → WhatsApp → SMS",
            "numbers": TEN_NUMBERS,
            "late_reports": "2s",
            "schedule": {"hours": "00:00-24:00"},
            "steps": three_steps("sandbox", "sandbox", "sandbox"),
        }
    )
    mailing_id = f"whatsapp-{uuid.uuid4().hex[:6]}"
    summary = await stack.client.execute_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec),
        id=mailing_workflow_id(mailing_id),
        task_queue=stack.settings.task_queue,
    )
    assert summary.status == "completed"
    assert summary.outcomes == OUTCOMES
    assert summary.delivered_by_channel == DELIVERED_BY_CHANNEL
    assert summary.channels == CHANNELS

    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{stack.settings.sandbox_base_url}/messages")).json()
    messages = [m for m in listed if m["client_ref"].startswith(f"{mailing_id}/")]
    assert len(messages) == 21 and all(m["requests"] == 1 for m in messages)  # no step sent twice
    whatsapp = sorted((m for m in messages if m["channel"] == "whatsapp"), key=lambda m: m["to"])
    assert [m["to"][-1] for m in whatsapp] == list("456789")
    assert whatsapp[0]["template"] == {
        "name": "order_update",
        "language": "ru",
        "parameters": ["friend", "+79990000004"],
    }
    assert all(m["text"] == "" for m in whatsapp)
