"""The Infobip adapter against the local fake Infobip over real HTTP on loopback, and documented report payloads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from domain.models import SendRequest
from domain.spec import Button
from domain.status import Channel, MessageStatus
from domain.whatsapp import WhatsAppTemplate
from gateway.app import webhook_request as received_request
from providers.accounts import AccountError
from providers.base import ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from providers.common import retry_after as retry_after_seconds
from providers.infobip import InfobipAdapter, build, validity_minutes
from runtime.servers import free_port, running
from tests.fakes.infobip import FakeInfobipState, create_fake

API_KEY = "test-api-key-123"
SECRET = "s3cret/with&odd=chars"
SECRET_IN_URL = "s3cret%2Fwith%26odd%3Dchars"
WEBHOOK = "https://kaskad.example/webhooks/infobip-main"


def account(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "infobip", "base_url": base_url, "api_key": API_KEY, "webhook_secret": SECRET, **extra}


def sms(phone: str = "+79990000001", **changes: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "client_ref": f"m1/{phone}/1",
        "provider": "infobip-main",
        "channel": Channel.SMS,
        "phone": phone,
        "sender": "Brand",
        "text": "Привет, SMS",
        "ttl": timedelta(minutes=30),
    }
    return SendRequest(**(fields | changes))


def viber(phone: str = "+79990000000", **changes: Any) -> SendRequest:
    fields: dict[str, Any] = {"client_ref": f"m1/{phone}/0", "channel": Channel.VIBER, "text": "Привет, Viber"}
    return sms(phone, **(fields | changes))


@dataclass
class Fake:
    state: FakeInfobipState
    url: str
    http: httpx.AsyncClient

    def adapter(self, webhook_url: str = WEBHOOK, **extra: Any) -> InfobipAdapter:
        return build("infobip-main", account(self.url, **extra), self.http, webhook_url)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    app, state = create_fake(API_KEY, report_delay=0.05)
    port = free_port()
    async with running(app, "127.0.0.1", port), httpx.AsyncClient(timeout=5) as http:
        yield Fake(state, f"http://127.0.0.1:{port}", http)


# --- requests ------------------------------------------------------------------------------------------------


async def test_sms_request_is_exactly_the_documented_one(fake: Fake) -> None:
    result = await fake.adapter().send(sms())

    assert result.message_id == "m1/+79990000001/1" and result.rejected is None
    [seen] = fake.state.requests
    assert (seen.method, seen.path) == ("POST", "/sms/3/messages")
    assert seen.headers["authorization"] == f"App {API_KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json == {
        "messages": [
            {
                "sender": "Brand",
                "destinations": [{"to": "79990000001", "messageId": "m1/+79990000001/1"}],
                "content": {"text": "Привет, SMS"},
                "options": {"validityPeriod": {"amount": 30, "timeUnit": "MINUTES"}},
                "webhooks": {
                    "delivery": {"url": f"{WEBHOOK}?secret={SECRET_IN_URL}", "intermediateReport": False},
                    "contentType": "application/json",
                    "callbackData": "m1/+79990000001/1",
                },
            }
        ]
    }


async def test_viber_text_with_button_request(fake: Fake) -> None:
    request = viber(button=Button(caption="Open", url="https://shop.example/x"), ttl=timedelta(seconds=90))
    result = await fake.adapter(viber_label="PROMOTIONAL").send(request)

    assert result.message_id == "m1/+79990000000/0"
    [seen] = fake.state.requests
    assert (seen.method, seen.path) == ("POST", "/viber/2/messages")
    assert seen.headers["authorization"] == f"App {API_KEY}"
    callback = f"{WEBHOOK}?secret={SECRET_IN_URL}"
    assert seen.json == {
        "messages": [
            {
                "sender": "Brand",
                "destinations": [{"to": "79990000000", "messageId": "m1/+79990000000/0"}],
                "content": {
                    "type": "TEXT",
                    "text": "Привет, Viber",
                    "button": {"title": "Open", "action": "https://shop.example/x"},
                },
                "options": {"validityPeriod": {"amount": 2, "timeUnit": "MINUTES"}, "label": "PROMOTIONAL"},
                "webhooks": {
                    "delivery": {"url": callback, "intermediateReport": False},
                    "seen": {"url": callback},
                    "contentType": "application/json",
                    "callbackData": "m1/+79990000000/0",
                },
            }
        ]
    }


async def test_viber_image_content(fake: Fake) -> None:
    image = "https://cdn.example/a.png"
    await fake.adapter().send(viber(image_url=image, button=Button(caption="Buy", url="https://shop.example")))
    await fake.adapter().send(viber(image_url=image, text=""))

    with_button, image_only = (r.json["messages"][0] for r in fake.state.requests)
    assert with_button["content"] == {
        "type": "IMAGE",
        "mediaUrl": image,
        "text": "Привет, Viber",
        "button": {"title": "Buy", "action": "https://shop.example"},
    }
    assert with_button["options"]["label"] == "TRANSACTIONAL"
    assert image_only["content"] == {"type": "IMAGE", "mediaUrl": image}


def test_validity_is_whole_minutes_within_infobip_limits() -> None:
    assert validity_minutes(1) == 1
    assert validity_minutes(0) == 1
    assert validity_minutes(60) == 1
    assert validity_minutes(61) == 2
    assert validity_minutes(24 * 3600) == 1440
    assert validity_minutes(7 * 24 * 3600) == 48 * 60


# --- answers -------------------------------------------------------------------------------------------------


async def test_per_message_rejected_status_is_a_rejection(fake: Fake) -> None:
    result = await fake.adapter().send(sms("+12", client_ref="m1/+12/1"))
    assert result.message_id is None
    assert result.rejected == "REJECTED_DESTINATION: Invalid destination address"


async def test_429_with_retry_after_is_unavailable(fake: Fake) -> None:
    fake.state.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailable) as caught:
        await fake.adapter().send(sms())
    assert caught.value.retry_after == 7.0
    assert "79990000001" not in str(caught.value) and API_KEY not in str(caught.value)


def test_retry_after_as_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


async def test_500_is_unavailable(fake: Fake) -> None:
    fake.state.fail_next(500)
    with pytest.raises(ProviderUnavailable) as caught:
        await fake.adapter().send(sms())
    assert caught.value.retry_after is None
    assert "500" in str(caught.value)


async def test_wrong_api_key_is_unavailable_not_rejected(fake: Fake) -> None:
    adapter = build("infobip-main", account(fake.url, api_key="wrong-key"), fake.http, WEBHOOK)
    with pytest.raises(ProviderUnavailable, match="credentials refused") as caught:
        await adapter.send(sms())
    assert "wrong-key" not in str(caught.value)
    assert fake.state.requests[0].headers["authorization"] == "App wrong-key"


async def test_400_is_rejected_with_the_service_exception_text(fake: Fake) -> None:
    result = await fake.adapter().send(sms(text=""))
    assert result.rejected == "400: Invalid request: content.text is required"
    assert result.message_id is None


async def test_read_timeout_is_not_retried_and_sent_once(fake: Fake) -> None:
    fake.state.delay_next(1.0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as http:
        adapter = build("infobip-main", account(fake.url), http, WEBHOOK)
        result = await adapter.send(sms())
    assert result.message_id is None and result.rejected is None and result.unconfirmed
    assert len(fake.state.requests) == 1


async def test_connection_refused_is_unavailable() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        adapter = build("infobip-main", account(f"http://127.0.0.1:{free_port()}"), http, WEBHOOK)
        with pytest.raises(ProviderUnavailable, match="unreachable"):
            await adapter.send(sms())


# --- reports -------------------------------------------------------------------------------------------------


def status(group_id: int, group: str, id_: int, name: str, description: str = "") -> dict[str, Any]:
    return {"groupId": group_id, "groupName": group, "id": id_, "name": name, "description": description}


NO_ERROR = {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR", "description": "No Error", "permanent": False}
ABSENT = {
    "groupId": 1,
    "groupName": "HANDSET_ERRORS",
    "id": 27,
    "name": "EC_ABSENT_SUBSCRIBER",
    "description": "Absent Subscriber",
    "permanent": False,
}


def result(ref: str, st: dict[str, Any], error: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """One delivery report as Infobip documents it."""
    return {
        "bulkId": "bulk-1",
        "messageId": ref,
        "to": "79990000001",
        "sender": "Brand",
        "sentAt": "2025-03-01T10:00:00.000+0000",
        "doneAt": "2025-03-01T10:00:05.123+0000",
        "messageCount": 1,
        "mccMnc": "25001",
        "price": {"pricePerMessage": 0.01, "currency": "EUR"},
        "status": st,
        "error": error or NO_ERROR,
        "callbackData": ref,
        **extra,
    }


def webhook_request(
    body: Any, query: str = f"secret={SECRET_IN_URL}", client_ip: str | None = "10.0.0.5"
) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookRequest(body=raw, headers={"content-type": "application/json"}, query=query, client_ip=client_ip)


def parser(**extra: Any) -> InfobipAdapter:
    return build("infobip-main", account("https://xyz.api.infobip.com", **extra), httpx.AsyncClient(), WEBHOOK)


@pytest.mark.parametrize(
    ("st", "error", "expected", "reason"),
    [
        (status(1, "PENDING", 26, "PENDING_ACCEPTED"), None, MessageStatus.SENT, None),
        (status(1, "PENDING", 7, "PENDING_ENROUTE"), None, MessageStatus.SENT, None),
        (status(3, "DELIVERED", 2, "DELIVERED_TO_OPERATOR"), None, MessageStatus.SENT, None),
        (status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET"), None, MessageStatus.DELIVERED, None),
        (
            status(2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED"),
            ABSENT,
            MessageStatus.UNDELIVERED,
            "UNDELIVERABLE_NOT_DELIVERED: EC_ABSENT_SUBSCRIBER",
        ),
        (
            status(4, "EXPIRED", 15, "EXPIRED_EXPIRED", "Message expired"),
            None,
            MessageStatus.UNDELIVERED,
            "EXPIRED_EXPIRED: Message expired",
        ),
        (
            status(5, "REJECTED", 6, "REJECTED_NETWORK", "Network is forbidden"),
            None,
            MessageStatus.UNDELIVERED,
            "REJECTED_NETWORK: Network is forbidden",
        ),
    ],
)
def test_every_status_group_maps(
    st: dict[str, Any], error: dict[str, Any] | None, expected: MessageStatus, reason: str | None
) -> None:
    [report] = parser().parse_webhook(webhook_request({"results": [result("m1/+79990000001/1", st, error)]}))
    assert report == ParsedReport(
        client_ref="m1/+79990000001/1",
        status=expected,
        message_id="m1/+79990000001/1",
        error=reason,
        at=datetime(2025, 3, 1, 10, 0, 5, 123000, tzinfo=UTC),
    )


def test_delivered_to_operator_is_not_delivered() -> None:
    st = status(3, "DELIVERED", 2, "DELIVERED_TO_OPERATOR")
    [report] = parser().parse_webhook(webhook_request({"results": [result("m1/+79990000001/1", st)]}))
    assert report.status is MessageStatus.SENT
    assert not report.status.reached(MessageStatus.DELIVERED)


def test_several_results_in_one_request_and_callback_data_wins() -> None:
    body = {
        "results": [
            result("m1/+79990000001/1", status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET")),
            result("m1/+79990000002/1", status(2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED"), ABSENT),
            result("infobip-id-3", status(1, "PENDING", 26, "PENDING_ACCEPTED"), callbackData="m1/+79990000003/1"),
        ]
    }
    reports = parser().parse_webhook(webhook_request(body))
    assert [(r.client_ref, r.status, r.message_id) for r in reports] == [
        ("m1/+79990000001/1", MessageStatus.DELIVERED, "m1/+79990000001/1"),
        ("m1/+79990000002/1", MessageStatus.UNDELIVERED, "m1/+79990000002/1"),
        ("m1/+79990000003/1", MessageStatus.SENT, "infobip-id-3"),
    ]


def test_viber_seen_report_is_read() -> None:
    seen = {
        "messageId": "m1/+79990000000/0",
        "from": "79990000000",
        "to": "Brand",
        "sentAt": "2025-03-01T10:00:00.000+0000",
        "seenAt": "2025-03-01T10:02:00.000+0000",
    }
    [report] = parser().parse_webhook(webhook_request({"results": [seen]}))
    assert report == ParsedReport(
        client_ref="m1/+79990000000/0",
        status=MessageStatus.READ,
        message_id="m1/+79990000000/0",
        at=datetime(2025, 3, 1, 10, 2, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"results": "x"}',
        b'{"results": [{"status": {"groupId": 3, "groupName": "DELIVERED"}}]}',  # no reference
        b'{"results": [{"messageId": "m1/+79990000001/1"}]}',  # neither status nor seenAt
        b'{"results": [{"messageId": "m1/+79990000001/1", "status": {"groupId": 9, "groupName": "ODD"}}]}',
    ],
)
def test_malformed_report_is_400(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parser().parse_webhook(webhook_request(body))
    assert caught.value.status_code == 400


@pytest.mark.parametrize("query", ["", "secret=", "secret=wrong", f"other={SECRET_IN_URL}", "secret=s3cret"])
def test_missing_or_wrong_secret_is_401(query: str) -> None:
    body = {"results": [result("m1/+79990000001/1", status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET"))]}
    with pytest.raises(WebhookRejected) as caught:
        parser().parse_webhook(webhook_request(body, query=query))
    assert caught.value.status_code == 401
    assert SECRET not in caught.value.reason


@pytest.mark.parametrize(
    ("client_ip", "allowed"),
    [
        ("193.105.74.10", True),
        ("193.105.74.255", True),
        ("62.140.31.7", True),
        ("::ffff:193.105.74.3", True),
        ("193.105.75.1", False),
        ("10.0.0.5", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_ip_allow_list(client_ip: str | None, allowed: bool) -> None:
    adapter = parser(allowed_ips=["193.105.74.0/24", "62.140.31.7"])
    body = {"results": [result("m1/+79990000001/1", status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET"))]}
    if allowed:
        assert len(adapter.parse_webhook(webhook_request(body, client_ip=client_ip))) == 1
    else:
        with pytest.raises(WebhookRejected) as caught:
            adapter.parse_webhook(webhook_request(body, client_ip=client_ip))
        assert caught.value.status_code == 401


def test_no_allow_list_accepts_any_source() -> None:
    body = {"results": [result("m1/+79990000001/1", status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET"))]}
    assert len(parser().parse_webhook(webhook_request(body, client_ip=None))) == 1


# --- configuration -------------------------------------------------------------------------------------------


def test_config_errors_name_the_field_without_leaking_secrets() -> None:
    raw = {
        "type": "infobip",
        "base_url": "xyz.api.infobip.com",
        "api_key": "",
        "webhook_secret": "top-secret-value",
        "allowed_ips": ["10.0.0.0/8", "nope"],
        "viber_label": "LOUD",
        "api_secret": "leaked-if-echoed",
    }
    with pytest.raises(AccountError) as caught:
        build("ib", raw, httpx.AsyncClient(), WEBHOOK)
    message = str(caught.value)
    for field in ("ib.base_url", "ib.api_key", "ib.allowed_ips", "ib.viber_label", "ib.api_secret"):
        assert field in message
    assert "top-secret-value" not in message and "leaked-if-echoed" not in message


def test_config_requires_secrets() -> None:
    with pytest.raises(AccountError) as caught:
        build("ib", {"type": "infobip", "base_url": "https://x.api.infobip.com"}, httpx.AsyncClient(), WEBHOOK)
    assert "ib.api_key: Field required" in str(caught.value)
    assert "ib.webhook_secret: Field required" in str(caught.value)


def test_valid_config_builds_named_adapter() -> None:
    adapter = build("ib", account("https://x.api.infobip.com/", rate=20), httpx.AsyncClient(), WEBHOOK)
    assert adapter.name == "ib"


# --- the fake's reports reach parse_webhook ------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    reports: list[ParsedReport]
    answers: list[int]


def receiver_app(adapter: InfobipAdapter, receiver: Receiver, fail_first: int = 0) -> FastAPI:
    """A tiny gateway: builds a WebhookRequest from the incoming request and calls parse_webhook."""
    app = FastAPI()

    @app.post("/webhooks/infobip-main")
    async def webhook(request: Request) -> Response:
        if len(receiver.answers) < fail_first:
            receiver.answers.append(503)
            return Response(status_code=503)
        incoming = received_request(request, await request.body())
        try:
            receiver.reports.extend(adapter.parse_webhook(incoming))
        except WebhookRejected as exc:
            receiver.answers.append(exc.status_code)
            return Response(exc.reason, status_code=exc.status_code)
        receiver.answers.append(200)
        return Response(status_code=200)

    return app


async def wait_for(condition: Any, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the receiver exposes only a list
            await asyncio.sleep(0.02)


async def test_fake_reports_are_accepted_by_parse_webhook(fake: Fake) -> None:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/webhooks/infobip-main", [], [])
    adapter = fake.adapter(webhook_url=receiver.url, allowed_ips=["127.0.0.0/8"])
    async with running(receiver_app(adapter, receiver, fail_first=1), "127.0.0.1", port):
        delivered = await adapter.send(sms("+79990000001"))
        failed = await adapter.send(sms("+79990000009", client_ref="m1/+79990000009/1"))
        read = await adapter.send(viber("+79990000000"))
        assert delivered.message_id and failed.message_id and read.message_id
        await wait_for(lambda: len(receiver.reports) == 5)
        await fake.state.drain()

    by_ref: dict[str, list[MessageStatus]] = {}
    for report in receiver.reports:
        by_ref.setdefault(report.client_ref, []).append(report.status)
        assert report.at is not None and report.message_id == report.client_ref
    assert by_ref == {
        "m1/+79990000001/1": [MessageStatus.SENT, MessageStatus.DELIVERED],  # operator first, then handset
        "m1/+79990000009/1": [MessageStatus.UNDELIVERED],
        "m1/+79990000000/0": [MessageStatus.DELIVERED, MessageStatus.READ],
    }
    [undelivered] = [r for r in receiver.reports if r.status is MessageStatus.UNDELIVERED]
    assert undelivered.error == "UNDELIVERABLE_NOT_DELIVERED: EC_ABSENT_SUBSCRIBER"
    assert receiver.answers.count(503) == 1 and receiver.answers.count(200) == 5  # one retried after a 503
    assert all(posted.status_code == 200 for posted in fake.state.reports)
    assert all(posted.url.endswith(f"?secret={SECRET_IN_URL}") for posted in fake.state.reports)


# --- WhatsApp ------------------------------------------------------------------------------------------------


def whatsapp(phone: str = "+79990000000", **changes: Any) -> SendRequest:
    template = WhatsAppTemplate(name="order_update", language="ru", parameters=["Анна", "A1"])
    fields: dict[str, Any] = {
        "client_ref": f"m1/{phone}/1",
        "channel": Channel.WHATSAPP,
        "sender": "+74950000000",
        "text": "",
        "template": template,
    }
    return sms(phone, **(fields | changes))


async def test_whatsapp_template_request_is_exactly_the_documented_one(fake: Fake) -> None:
    result = await fake.adapter().send(whatsapp(ttl=timedelta(days=7)))

    assert result.message_id == "m1/+79990000000/1" and result.rejected is None
    [seen] = fake.state.requests
    assert (seen.method, seen.path) == ("POST", "/whatsapp/1/message/template")
    assert seen.headers["authorization"] == f"App {API_KEY}"
    assert seen.json == {
        "messages": [
            {
                "from": "74950000000",
                "to": "79990000000",
                "messageId": "m1/+79990000000/1",
                "content": {
                    "templateName": "order_update",
                    "templateData": {"body": {"placeholders": ["Анна", "A1"]}},
                    "language": "ru",
                },
                "callbackData": "m1/+79990000000/1",
                "notifyUrl": f"{WEBHOOK}?secret={SECRET_IN_URL}",
            }
        ]
    }


async def test_whatsapp_reports_from_the_fake_are_mapped(fake: Fake) -> None:
    """Read (0), delivered unread (5), not a WhatsApp user (7), no report (8): every report on the one notifyUrl."""
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/webhooks/infobip-main", [], [])
    adapter = fake.adapter(webhook_url=receiver.url)
    async with running(receiver_app(adapter, receiver), "127.0.0.1", port):
        for digit in "0578":
            assert (await adapter.send(whatsapp(f"+7999000000{digit}"))).message_id
        await wait_for(lambda: len(receiver.reports) == 4)
        await fake.state.drain()

    by_ref: dict[str, list[MessageStatus]] = {}
    for report in receiver.reports:
        by_ref.setdefault(report.client_ref, []).append(report.status)
        assert report.at is not None and report.message_id == report.client_ref
    assert by_ref == {
        "m1/+79990000000/1": [MessageStatus.DELIVERED, MessageStatus.READ],
        "m1/+79990000005/1": [MessageStatus.DELIVERED],
        "m1/+79990000007/1": [MessageStatus.UNDELIVERED],
    }
    [undelivered] = [r for r in receiver.reports if r.status is MessageStatus.UNDELIVERED]
    assert undelivered.error == "UNDELIVERABLE_NOT_DELIVERED: EC_NOT_WHATSAPP_USER"
    seen = [p.body["results"][0] for p in fake.state.reports if "seenAt" in p.body["results"][0]]
    assert len(seen) == 1 and "callbackData" not in seen[0]  # a seen report finds its step by messageId
