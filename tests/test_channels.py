"""Channels as one definition each (domain/channels.py), and what each provider type declares it sends."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from domain.channels import DEFINITIONS, UnsupportedChannel, definition, known
from domain.models import SendRequest
from domain.sms import Encoding
from domain.spec import MailingSpec, ProviderAccount
from domain.status import Channel, MessageStatus
from providers.common import unsupported_channel
from providers.registry import ADAPTER_TYPES, CHANNELS_BY_TYPE, SANDBOX_ONLY
from providers.sandbox import SandboxAdapter
from sandbox.outcomes import CHANNELS as SANDBOX_RULES
from sandbox.outcomes import planned_reports


def test_every_channel_has_a_definition_and_nothing_else_does() -> None:
    assert set(DEFINITIONS) == set(Channel)
    assert definition("sms") is definition(Channel.SMS)
    with pytest.raises(UnsupportedChannel, match="'telegram' is not a supported channel"):
        definition("telegram")
    assert known("telegram") is None and known(None) is None and known("viber") is definition(Channel.VIBER)


def test_what_each_definition_says() -> None:
    viber, sms = definition(Channel.VIBER), definition(Channel.SMS)
    assert viber.expects == (MessageStatus.DELIVERED, MessageStatus.READ)
    assert sms.expects == (MessageStatus.DELIVERED,)
    assert (viber.size("Привет"), viber.parts("x" * 500)) == (None, 1)
    size = sms.size("Привет")
    assert size is not None and size.encoding is Encoding.UCS2 and sms.parts("x" * 161) == 2
    assert viber.wait_problem(timedelta(hours=73)) == "must be between 1s and 72h"
    assert sms.content_problem("", None, None) == "text: an sms step needs a text"
    assert viber.content_problem("", "https://e.com/a.png", None) is None
    assert sms.preview("Hi", None, None) == "GSM-7 · 2 chars · 1 part"
    assert viber.preview("Hi", "https://e.com/a.png", None) == "text 2/1000 chars · image https://e.com/a.png"


def test_every_provider_type_declares_its_channels() -> None:
    assert set(CHANNELS_BY_TYPE) == {*ADAPTER_TYPES, "sandbox"}
    assert CHANNELS_BY_TYPE["twilio"] == {Channel.SMS, Channel.WHATSAPP}
    assert all(channels <= set(DEFINITIONS) for channels in CHANNELS_BY_TYPE.values())
    assert SandboxAdapter.channels == SANDBOX_RULES  # the adapter declares what the sandbox has rules for
    assert {"sandbox": ProviderAccount("sandbox", SandboxAdapter.channels)} == SANDBOX_ONLY


def test_the_sandbox_refuses_a_channel_without_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox import outcomes

    monkeypatch.setattr(outcomes, "RULES", {Channel.SMS: outcomes.RULES[Channel.SMS]})
    with pytest.raises(UnsupportedChannel, match="the sandbox does not send viber"):
        planned_reports(Channel.VIBER, "+79990000001")  # not the SMS rules by default


async def test_an_adapter_refuses_a_channel_it_does_not_declare() -> None:
    """Without a request: a step past the launch checks (another client) is rejected, never sent as another."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: pytest.fail("no request"))) as http:
        adapter = SandboxAdapter(http, "http://sandbox", "http://gateway/webhooks/sandbox", "x")
        adapter.channels = frozenset({Channel.SMS})
        request = SendRequest(
            client_ref="m/+79990000001/1",
            provider="sandbox",
            channel=Channel.VIBER,
            phone="+79990000001",
            sender="Shop",
            text="Hi",
            ttl=timedelta(minutes=5),
        )
        result = await adapter.send(request)
    assert result.rejected == "sandbox does not send viber (it sends: sms)"
    assert str(unsupported_channel("twilio", frozenset({Channel.SMS}), Channel.VIBER)) == (
        "twilio does not send viber (it sends: sms)"
    )


def test_the_launch_check_names_each_step_one_based() -> None:
    spec = MailingSpec.model_validate(
        {
            "name": "T",
            "numbers": ["+79990000001"],
            "provider": "sms-only",
            "steps": [
                {"channel": "viber", "sender": "S", "text": "hi", "wait": "5m"},
                {"channel": "sms", "sender": "S", "text": "hi", "wait": "5m", "provider": "nope"},
                {"channel": "sms", "sender": "S", "text": "hi", "wait": "5m"},
            ],
        }
    )
    accounts = {"sms-only": ProviderAccount("twilio", frozenset({Channel.SMS}))}
    assert spec.provider_problems(accounts) == [
        "steps.1.provider: 'sms-only' (twilio) does not send viber (it sends: sms)",
        "steps.2.provider: 'nope' is not a configured provider account (known: sms-only)",
    ]
