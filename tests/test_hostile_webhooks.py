"""Issue 10, item 7: malformed but authentically signed webhooks are a 400, never a 5xx or a dropped connection.

Providers retry 5xx for hours, so a poisoned report must be refused for good. Each adapter's parser is fuzzed
(random bytes, random JSON, mutated valid reports — signed in the test so the parser is reached) and may only
return reports or raise WebhookRejected(400|401); the corpus of tests/hostile goes through the real gateway
over HTTP, where Temporal is a stub that serialises signals as the real client does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from gateway.app import create_gateway
from providers.base import ParsedReport, ProviderAdapter, WebhookRejected, WebhookRequest
from providers.sandbox import SandboxAdapter, sign
from runtime.servers import base_url, running
from tests import test_provider_infobip as infobip
from tests import test_provider_rapporto as rapporto
from tests import test_provider_twilio as twilio
from tests import test_provider_vonage as vonage
from tests.fakes.twilio import signature as twilio_signature
from tests.fakes.vonage import rsa_key_pair, sign_webhook
from tests.hostile import PROVIDER_BODIES, REF, webhook_bodies

SANDBOX_SECRET = "sandbox-secret"
_KEYS = vonage.Keys(*rsa_key_pair())

ADAPTERS: dict[str, ProviderAdapter] = {
    "sandbox": SandboxAdapter(httpx.AsyncClient(), "http://127.0.0.1:9", "http://hook", SANDBOX_SECRET),
    "rapporto": rapporto.adapter_for(),
    "infobip": infobip.parser(),
    "vonage": vonage.adapter_only(_KEYS),
    "twilio": twilio.adapter_for(),
}
QUERIES = {"rapporto": "secret=s3cret%2F%2B%26%3D", "infobip": f"secret={infobip.SECRET_IN_URL}"}
TWILIO_QUERY = f"ref={quote(REF, safe='')}"


def signed(provider: str, body: bytes) -> tuple[dict[str, str], str]:
    """Headers and query that authenticate `body` for `provider`: only the body can be wrong."""
    if provider == "sandbox":
        return {"x-sandbox-signature": sign(SANDBOX_SECRET, body)}, ""
    if provider == "vonage":
        return {"authorization": sign_webhook(body, vonage.SECRET, vonage.API_KEY)}, ""
    if provider == "twilio":
        try:
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            params = {}
        return {"x-twilio-signature": twilio_signature(twilio.TOKEN, f"{twilio.WEBHOOK}?{TWILIO_QUERY}", params)}, (
            TWILIO_QUERY
        )
    return {}, QUERIES[provider]


def parse(provider: str, body: bytes) -> list[ParsedReport]:
    headers, query = signed(provider, body)
    request = WebhookRequest(body=body, headers=headers, query=query, client_ip="198.51.100.7")
    return ADAPTERS[provider].parse_webhook(request)


def assert_clean(provider: str, body: bytes) -> None:
    """Reports, or WebhookRejected(400|401) — nothing else may escape a parser."""
    try:
        reports = parse(provider, body)
    except WebhookRejected as exc:
        assert exc.status_code in (400, 401), exc.reason
    else:
        assert all(isinstance(report, ParsedReport) for report in reports)


VALID: dict[str, Callable[[], dict[str, Any]]] = {
    "sandbox": lambda: {"message_id": "m", "client_ref": REF, "status": "delivered", "timestamp": "2026-01-01T00:00Z"},
    "rapporto": lambda: rapporto.report(2),
    "infobip": lambda: {"results": [infobip.result(REF, infobip.status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET"))]},
    "vonage": lambda: json.loads(vonage.status_body("delivered")),
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
PROVIDERS = ["sandbox", "rapporto", "infobip", "vonage"]


def _mutate(value: Any, path: list[int], replacement: Any) -> Any:
    """`value` with the element chosen by `path` (indices into sorted keys / list items) replaced."""
    if not path or not isinstance(value, dict | list) or not value:
        return replacement
    if isinstance(value, dict):
        key = sorted(value)[path[0] % len(value)]
        return value | {key: _mutate(value[key], path[1:], replacement)}
    index = path[0] % len(value)
    return [*value[:index], _mutate(value[index], path[1:], replacement), *value[index + 1 :]]


@pytest.mark.parametrize("provider", [*PROVIDERS, "twilio"])
@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300))
def test_random_bodies(provider: str, body: bytes) -> None:
    assert_clean(provider, body)


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=200, deadline=None)
@given(value=JSON)
def test_random_json(provider: str, value: Any) -> None:
    assert_clean(provider, json.dumps(value).encode())


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=200, deadline=None)
@given(path=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=5), replacement=JSON)
def test_mutated_valid_reports(provider: str, path: list[int], replacement: Any) -> None:
    assert_clean(provider, json.dumps(_mutate(VALID[provider](), path, replacement)).encode())


@settings(max_examples=200, deadline=None)
@given(
    form=st.dictionaries(st.sampled_from(["AccountSid", "MessageSid", "MessageStatus", "ErrorCode", "x"]), st.text())
)
def test_mutated_twilio_callbacks(form: dict[str, str]) -> None:
    assert_clean("twilio", urlencode({"AccountSid": twilio.SID} | form).encode())


@pytest.mark.parametrize(
    ("provider", "case"), [(provider, case) for provider in PROVIDER_BODIES for case in webhook_bodies(provider)]
)
def test_every_hostile_body_is_refused_or_parsed_by_the_adapter(provider: str, case: str) -> None:
    assert_clean(provider, webhook_bodies(provider)[case])


# Out-of-range dates in Rapporto reports: the adapter documents a lenient doneDate (unreadable → dropped).
LENIENT = {("rapporto", case) for case in PROVIDER_BODIES["rapporto"] if case.startswith("done_date_")}


class StubTemporal:
    """Just enough of a Temporal client: serialises the signal as the real one does, then finds no workflow."""

    def __init__(self) -> None:
        self.signals: list[Any] = []

    def get_workflow_handle(self, workflow_id: str) -> StubTemporal:
        return self

    async def signal(self, signal: Any, arg: Any) -> None:
        pydantic_data_converter.payload_converter.to_payloads([arg])
        self.signals.append(arg)
        raise RPCError("not found", RPCStatusCode.NOT_FOUND, b"")


async def test_the_gateway_answers_4xx_for_every_hostile_body_over_http() -> None:
    temporal = StubTemporal()
    app = create_gateway(cast(Client, temporal), ADAPTERS)
    answers: dict[tuple[str, str], int] = {}
    async with running(app, "127.0.0.1", 0) as server, httpx.AsyncClient(timeout=30) as http:
        for provider in PROVIDER_BODIES:
            for case, body in webhook_bodies(provider).items():
                headers, query = signed(provider, body)
                try:
                    response = await http.post(
                        f"{base_url(server)}/webhooks/{provider}?{query}", content=body, headers=headers
                    )
                    answers[provider, case] = response.status_code
                except httpx.HTTPError as exc:
                    answers[provider, case] = -1
                    print(provider, case, type(exc).__name__)
    wrong = {key: code for key, code in answers.items() if code != (200 if key in LENIENT else 400)}
    assert not wrong, wrong


RAW_VALUES = ["1e999", "-1e999", "NaN", "1e20", "-1e20", "1" + "0" * 30, "[" * 100_000 + "]" * 100_000]


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=200, deadline=None)
@given(path=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=5), raw=st.sampled_from(RAW_VALUES))
def test_valid_reports_with_a_value_json_allows_but_python_cannot_hold(
    provider: str, path: list[int], raw: str
) -> None:
    """NaN, ±1e999, numbers past any date, nesting past the recursion limit — placed anywhere in a valid report."""
    placeholder = "@raw@"
    body = json.dumps(_mutate(VALID[provider](), path, placeholder)).replace(json.dumps(placeholder), raw)
    assert_clean(provider, body.encode())


class AcceptingTemporal(StubTemporal):
    """A Temporal stub whose every workflow takes the signal."""

    async def signal(self, signal: Any, arg: Any) -> None:
        pydantic_data_converter.payload_converter.to_payloads([arg])
        self.signals.append(arg)


def ref(n: int) -> str:
    return f"batch/+7999000000{n}/0"


INFOBIP_DELIVERED = infobip.status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET")
BATCHES: dict[str, bytes] = {
    "infobip": json.dumps(
        {
            "results": [
                infobip.result(ref(1), INFOBIP_DELIVERED),
                {"messageId": ref(2)},  # neither status nor seenAt
                infobip.result(ref(3), INFOBIP_DELIVERED) | {"status": "not a status"},
                infobip.result(ref(4), INFOBIP_DELIVERED),
            ]
        }
    ).encode(),
    "rapporto": json.dumps(
        [rapporto.report(2, id=ref(1)), rapporto.report("two", id=ref(2)), {"status": 2}, rapporto.report(2, id=ref(4))]
    ).encode(),
}


async def post_to_gateway(temporal: StubTemporal, provider: str, body: bytes) -> httpx.Response:
    app = create_gateway(cast(Client, temporal), ADAPTERS)
    headers, query = signed(provider, body)
    async with running(app, "127.0.0.1", 0) as server, httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{base_url(server)}/webhooks/{provider}?{query}", content=body, headers=headers)


@pytest.mark.parametrize("provider", sorted(BATCHES))
async def test_a_malformed_report_in_a_batch_does_not_drop_the_others(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Infobip and Rapporto post several reports in one body: the good ones are applied, the malformed ones
    skipped, counted and logged, and the answer is 2xx so the provider neither retries nor drops them all."""
    temporal = AcceptingTemporal()
    with caplog.at_level(logging.WARNING, logger="kaskad.gateway"):
        response = await post_to_gateway(temporal, provider, BATCHES[provider])
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 2, "recorded": 2, "skipped": 2}
    assert sorted(signal.step for signal in temporal.signals) == [0, 0]
    assert [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"results": "x"}', b"[1, 2]", json.dumps({"results": [{"messageId": ref(2)}]}).encode()],
    ids=["not-json", "results-not-a-list", "a-list-of-numbers", "only-malformed"],
)
async def test_a_body_with_nothing_usable_is_still_400(body: bytes) -> None:
    for provider in BATCHES:
        assert (await post_to_gateway(AcceptingTemporal(), provider, body)).status_code == 400


FORGED = "\r\n2026-01-01 00:00:00,000 CRITICAL kaskad.gateway: forged line\x1b[2J\x00"


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        (
            "infobip",
            json.dumps({"results": [{"messageId": ref(1), "status": {"groupId": 99, "groupName": FORGED * 500}}]}),
        ),
        ("infobip", json.dumps({"results": [{"messageId": ref(1), "status": {"groupId": "x" + FORGED * 500}}]})),
        ("rapporto", json.dumps([{"id": ref(1), "status": FORGED * 500}])),
        ("infobip", json.dumps({"results": [infobip.result(ref(1), INFOBIP_DELIVERED), {FORGED * 500: 1}]})),
    ],
    ids=["infobip-status-group", "infobip-validation-error", "rapporto-status", "infobip-skipped-in-a-batch"],
)
async def test_a_rejected_report_cannot_forge_log_lines(
    provider: str, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A warning that echoes what a report held is one line, at most a few hundred characters, control
    characters escaped: a request cannot forge extra log lines or flood the log."""
    with caplog.at_level(logging.INFO, logger="kaskad.gateway"):
        await post_to_gateway(AcceptingTemporal(), provider, body.encode())
    lines = [record.getMessage() for record in caplog.records if record.name == "kaskad.gateway"]
    assert lines
    for line in lines:
        assert len(line) <= 400, len(line)
        assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in line), repr(line)
