"""One mailing per real adapter on the real dev server: each provider's fake runs on loopback, answers as the
provider documents, and posts its own (signed or URL-authenticated) reports to the gateway. Afterwards no
secret may appear in any workflow's history."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from domain.models import MailingInput, MailingSummary
from domain.refs import mailing_workflow_id
from domain.spec import MailingSpec
from runtime.devstack import Stack, embedded_stack, private_settings
from runtime.servers import free_port, running
from tests.fakes import infobip, rapporto, twilio, vonage
from workflows.mailing import MailingWorkflow

pytestmark = pytest.mark.e2e
TWILIO_SID = "AC" + "5" * 32
TEN_NUMBERS = [f"+7999000000{digit}" for digit in range(10)]  # last digits 0-9: every outcome of the fakes


@dataclass
class ProviderStack:
    stack: Stack
    secrets: list[str]  # every secret value configured: none may reach a workflow history
    vonage: vonage.FakeVonageState
    infobip: infobip.FakeInfobipState


def toml_string(value: str) -> str:
    return '"""' + value + '"""' if "\n" in value else f'"{value}"'


@pytest.fixture(scope="module")
async def providers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProviderStack]:
    folder = tmp_path_factory.mktemp("providers")
    private_pem, public_pem = vonage.rsa_key_pair()
    secret = {
        "vonage_signature": uuid.uuid4().hex + uuid.uuid4().hex,
        "infobip_key": "ib-" + uuid.uuid4().hex,
        "infobip_hook": "ibh-" + uuid.uuid4().hex,
        "twilio_token": uuid.uuid4().hex,
        "rapporto_password": "rp-" + uuid.uuid4().hex,
        "rapporto_hook": "rph-" + uuid.uuid4().hex,
    }
    ports = {name: free_port() for name in ("vonage", "infobip", "twilio", "rapporto")}
    vonage_app, vonage_state = vonage.create_fake(
        secret["vonage_signature"], public_key_pem=public_pem, report_delay=0.1
    )
    infobip_app, infobip_state = infobip.create_fake(secret["infobip_key"], report_delay=0.1)
    fakes = {
        "vonage": vonage_app,
        "infobip": infobip_app,
        "twilio": twilio.create_fake(TWILIO_SID, secret["twilio_token"], report_delay=0.1)[0],
        "rapporto": rapporto.create_fake("kaskad", secret["rapporto_password"], report_delay=0.1)[0],
    }
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    os.environ["KASKAD_TEST_VONAGE_KEY"] = private_pem  # the file names it: `env:` keeps the key out of files
    accounts = folder / "providers.toml"
    accounts.write_text(
        f"""
[vonage-test]
type = "vonage"
base_url = "{base["vonage"]}"
application_id = "app-{uuid.uuid4().hex[:8]}"
private_key = "env:KASKAD_TEST_VONAGE_KEY"
signature_secret = "{secret["vonage_signature"]}"
api_key = "abcd1234"

[infobip-test]
type = "infobip"
base_url = "{base["infobip"]}"
api_key = "{secret["infobip_key"]}"
webhook_secret = "{secret["infobip_hook"]}"
allowed_ips = ["127.0.0.0/8"]

[twilio-test]
type = "twilio"
base_url = "{base["twilio"]}"
account_sid = "{TWILIO_SID}"
auth_token = "{secret["twilio_token"]}"
from_number = "+15005550006"

[rapporto-test]
type = "rapporto"
base_url = "{base["rapporto"]}"
login = "kaskad"
password = "{secret["rapporto_password"]}"
webhook_secret = "{secret["rapporto_hook"]}"
rate = 50
""",
        encoding="utf-8",
    )
    settings = private_settings(
        folder,
        "providers",
        webhook_secret=SecretStr(uuid.uuid4().hex),
        providers_file=accounts,
    )
    try:
        async with contextlib.AsyncExitStack() as servers:
            for name, app in fakes.items():
                await servers.enter_async_context(running(app, "127.0.0.1", ports[name]))
            stack = await servers.enter_async_context(embedded_stack(settings, ui=False))
            pem_lines = [line for line in private_pem.splitlines() if line and not line.startswith("-----")]
            yield ProviderStack(stack, [*secret.values(), *pem_lines], vonage_state, infobip_state)
    finally:
        os.environ.pop("KASKAD_TEST_VONAGE_KEY", None)


async def run_mailing(
    providers: ProviderStack, account: str, steps: list[dict[str, Any]] | None = None
) -> tuple[str, MailingSummary]:
    spec = MailingSpec.model_validate(
        {
            "name": f"Through {account}",
            "numbers": TEN_NUMBERS,
            "late_reports": "1s",
            "schedule": {"hours": "00:00-24:00"},
            "steps": steps
            or [
                {"channel": "viber", "sender": "Shop", "text": "Hi {1}", "wait": "2s", "provider": account},
                {"channel": "sms", "sender": "Shop", "text": "Hi {1}", "wait": "2s", "provider": account},
            ],
        }
    )
    mailing_id = f"{account}-{uuid.uuid4().hex[:6]}"
    summary = await providers.stack.client.execute_workflow(
        MailingWorkflow.run,
        MailingInput(mailing_id=mailing_id, spec=spec),
        id=mailing_workflow_id(mailing_id),
        task_queue=providers.stack.settings.task_queue,
    )
    return mailing_id, summary


# The fakes follow the sandbox's table (sandbox/outcomes.py): Viber reaches 0-5, SMS all but 9.
VIBER_PROVIDERS: dict[str, Any] = {
    "delivered_by_channel": {"viber": 6, "sms": 3},
    "outcomes": {"delivered": 9, "undelivered": 1, "not_sent": 0},
}


@pytest.mark.parametrize("account", ["vonage-test", "infobip-test", "rapporto-test"])
async def test_a_viber_then_sms_mailing_through_a_real_adapter(providers: ProviderStack, account: str) -> None:
    mailing_id, summary = await run_mailing(providers, account)
    assert summary.status == "completed"
    assert summary.outcomes == VIBER_PROVIDERS["outcomes"]
    assert summary.delivered_by_channel == VIBER_PROVIDERS["delivered_by_channel"]
    await assert_no_secret_in_history(providers, mailing_id)


def three_steps(account: str) -> list[dict[str, Any]]:
    """Viber → WhatsApp → SMS on one account. Viber and WhatsApp expect `read`, so each of WhatsApp's outcomes
    (read, delivered unread, not a WhatsApp user, no report) is reached by some number."""
    return [
        {"channel": "viber", "sender": "Shop", "text": "Hi {1}", "wait": "3s", "expect": "read", "provider": account},
        {
            "channel": "whatsapp",
            "sender": "+15005550006",
            "template": {"name": "order_update", "language": "ru", "parameters": ["{name|friend}", "{1}"]},
            "wait": "3s",
            "expect": "read",
            "provider": account,
        },
        {"channel": "sms", "sender": "Shop", "text": "Hi {1}", "wait": "3s", "provider": account},
    ]


# The fakes report as the sandbox's table says (sandbox/outcomes.py, README "The sandbox provider"), by last
# digit: Viber reads 0-3 (4-5 delivered unread, 6-7 not Viber users, 8-9 no report); WhatsApp then reads 4
# (5-6 delivered unread, 7 not a WhatsApp user, 8-9 no report); SMS delivers 5-8, not 9.
THREE_STEPS: dict[str, Any] = {
    "outcomes": {"delivered": 9, "undelivered": 1, "not_sent": 0},
    "delivered_by_channel": {"viber": 4, "whatsapp": 1, "sms": 4},
    "channels": {
        "viber": {"sent": 10, "delivered": 6, "read": 4, "undelivered": 2},
        "whatsapp": {"sent": 6, "delivered": 3, "read": 1, "undelivered": 1},
        "sms": {"sent": 5, "delivered": 4, "read": 0, "undelivered": 1},
    },
}


def sent_references(providers: ProviderStack, account: str, mailing_id: str) -> dict[str, list[str]]:
    """Each client reference of this mailing that reached the account's fake → the channels of its requests."""
    sent: dict[str, list[str]] = {}
    if account == "vonage-test":
        for body in providers.vonage.messages.values():
            sent.setdefault(str(body.get("client_ref")), []).append(str(body["channel"]))
    else:
        for request in providers.infobip.requests:
            channel = request.path.split("/")[1]
            for message in (request.json or {}).get("messages", []):
                for destination in [message] if channel == "whatsapp" else message.get("destinations", []):
                    sent.setdefault(str(destination.get("messageId")), []).append(channel)
    return {ref: channels for ref, channels in sent.items() if ref.startswith(f"{mailing_id}/")}


@pytest.mark.parametrize("account", ["vonage-test", "infobip-test"])
async def test_viber_then_whatsapp_then_sms_through_a_real_adapter(providers: ProviderStack, account: str) -> None:
    """Issue 12's acceptance against the loopback fake of each adapter that offers WhatsApp."""
    mailing_id, summary = await run_mailing(providers, account, three_steps(account))
    assert summary.status == "completed", summary
    assert summary.outcomes == THREE_STEPS["outcomes"]
    assert summary.delivered_by_channel == THREE_STEPS["delivered_by_channel"]
    assert summary.channels == THREE_STEPS["channels"]

    sent = sent_references(providers, account, mailing_id)
    assert len(sent) == 21 and all(len(channels) == 1 for channels in sent.values()), sent  # nothing sent twice
    last_digits: dict[tuple[str, str], str] = {}  # (step from 0, channel as the provider names it) → digits
    for ref, channels in sent.items():
        key = (ref.rsplit("/", 1)[1], channels[0])
        last_digits[key] = "".join(sorted(last_digits.get(key, "") + ref.split("/")[1][-1]))
    viber = "viber_service" if account == "vonage-test" else "viber"
    assert last_digits == {("0", viber): "0123456789", ("1", "whatsapp"): "456789", ("2", "sms"): "56789"}
    await assert_no_secret_in_history(providers, mailing_id)


async def test_a_viber_step_on_twilio_is_refused_before_anything_is_sent(providers: ProviderStack) -> None:
    """Started without the CLI's checks, the mailing still fails in its import: Twilio sends no Viber."""
    _, summary = await run_mailing(providers, "twilio-test")
    assert summary.status == "aborted" and summary.error is not None, summary
    assert "steps.1.provider: 'twilio-test' (twilio) does not send viber (it sends: sms, whatsapp)" in summary.error
    assert summary.dispatched == 0 and summary.channels.get("viber", {}).get("sent", 0) == 0


def readable(history_json: str) -> str:
    """The history as text with every payload decoded (payload data is base64 in the JSON form)."""
    parts = [history_json]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                with contextlib.suppress(ValueError):
                    parts.append(base64.b64decode(node["data"]).decode("utf-8", errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(parts)


async def assert_no_secret_in_history(providers: ProviderStack, mailing_id: str) -> None:
    client = providers.stack.client
    ids = [mailing_workflow_id(mailing_id)]
    query = f"MailingId = '{mailing_id}' AND WorkflowType = 'RecipientCascadeWorkflow'"
    ids += [w.id async for w in client.list_workflows(query)]
    assert len(ids) == 11
    for workflow_id in ids:
        history = readable((await client.get_workflow_handle(workflow_id).fetch_history()).to_json())
        assert mailing_id.rsplit("-", 1)[0] in history  # the payloads were decoded: the account name is there
        leaked = [s[:6] + "…" for s in providers.secrets if s in history]
        assert leaked == [], f"{workflow_id} history holds secrets"
