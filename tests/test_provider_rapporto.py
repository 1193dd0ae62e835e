"""The Rapporto adapter against the local fake Rapporto over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from domain.models import SendRequest
from domain.spec import Button
from domain.status import Channel, MessageStatus
from gateway.app import webhook_request
from providers.accounts import AccountError
from providers.base import ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from providers.rapporto import RapportoAdapter, build, parse_date
from runtime.servers import free_port, running
from tests.fakes.rapporto import FakeRapportoState, create_fake

LOGIN, PASSWORD, SECRET = "partner", "pa55-word", "s3cret/+&="
WEBHOOK = "https://hooks.example.com/webhooks/rapporto-main"
NOTIFY = WEBHOOK + "?secret=s3cret%2F%2B%26%3D"
PHONE = "+79990001230"
IDLE_HTTP = httpx.AsyncClient()  # for adapters that only parse webhooks or fail to build: never sends


def account(base_url: str = "http://127.0.0.1:1", **extra: Any) -> dict[str, Any]:
    return {
        "type": "rapporto",
        "base_url": base_url,
        "login": LOGIN,
        "password": PASSWORD,
        "webhook_secret": SECRET,
    } | extra


def sms(phone: str = PHONE, ttl: timedelta = timedelta(minutes=30), ref: str | None = None) -> SendRequest:
    return SendRequest(
        client_ref=ref or f"m1/{phone}/1",
        provider="rapporto-main",
        channel=Channel.SMS,
        phone=phone,
        sender="Brand",
        text="Привет, SMS",
        ttl=ttl,
    )


def viber(
    text: str = "Привет, Viber",
    image_url: str | None = None,
    button: Button | None = None,
    ttl: timedelta = timedelta(minutes=5),
    phone: str = PHONE,
) -> SendRequest:
    return SendRequest(
        client_ref=f"m1/{phone}/0",
        provider="rapporto-main",
        channel=Channel.VIBER,
        phone=phone,
        sender="BrandViber",
        text=text,
        image_url=image_url,
        button=button,
        ttl=ttl,
    )


@dataclass
class Fake:
    adapter: RapportoAdapter
    state: FakeRapportoState
    base_url: str


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.5)) as client:
        yield client


@pytest.fixture
async def fake(http: httpx.AsyncClient) -> AsyncIterator[Fake]:
    # No notifyUrl receiver runs here: a long report delay keeps the fake from posting during these tests.
    app, state = create_fake(LOGIN, PASSWORD, report_delay=3600)
    async with running(app, "127.0.0.1", port := free_port()):
        base = f"http://127.0.0.1:{port}"
        yield Fake(build("rapporto-main", account(base), http, WEBHOOK), state, base)


def sent_body(fake: Fake) -> Any:
    assert len(fake.state.requests) == 1
    recorded = fake.state.requests[0]
    assert (recorded.method, recorded.path) == ("POST", "/send")
    assert recorded.headers["content-type"] == "application/json"
    return recorded.json


# --- sending ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "minutes"),
    [(timedelta(minutes=30), 30), (timedelta(seconds=90), 2), (timedelta(seconds=5), 1), (timedelta(hours=72), 2880)],
)
async def test_sms_request_is_exact_and_returns_mtnum(fake: Fake, ttl: timedelta, minutes: int) -> None:
    result = await fake.adapter.send(sms(ttl=ttl))
    assert sent_body(fake) == {
        "login": LOGIN,
        "password": PASSWORD,
        "id": f"m1/{PHONE}/1",
        "destAddr": "79990001230",
        "notifyUrl": NOTIFY,
        "message": {
            "type": "SMS",
            "data": {"text": "Привет, SMS", "serviceNumber": "Brand", "ttl": minutes, "ttlUnit": "MINUTES"},
        },
    }
    assert result.rejected is None
    assert result.message_id == fake.state.messages[f"m1/{PHONE}/1"].mt_num


BUTTON = Button(caption="Открыть", url="https://shop.example.com/a?b=1")
IMAGE = "https://cdn.example.com/promo.png"


@pytest.mark.parametrize(
    ("request_", "content"),
    [
        (viber(), {"type": "TEXT", "data": {"text": "Привет, Viber"}}),
        (viber(text="", image_url=IMAGE), {"type": "IMAGE_URL", "data": {"imageUrl": IMAGE}}),
        (
            viber(button=BUTTON),
            {"type": "BUTTON", "data": {"text": "Привет, Viber", "caption": "Открыть", "action": BUTTON.url}},
        ),
        (
            viber(image_url=IMAGE, button=BUTTON),
            {
                "type": "BUTTON",
                "data": {"text": "Привет, Viber", "caption": "Открыть", "action": BUTTON.url, "imageUrl": IMAGE},
            },
        ),
    ],
    ids=["text", "image", "text+button", "text+image+button"],
)
async def test_viber_request_is_exact_per_content_type(
    fake: Fake, request_: SendRequest, content: dict[str, Any]
) -> None:
    result = await fake.adapter.send(request_)
    assert sent_body(fake) == {
        "login": LOGIN,
        "password": PASSWORD,
        "id": f"m1/{PHONE}/0",
        "destAddr": "79990001230",
        "notifyUrl": NOTIFY,
        "message": {
            "type": "VIBER",
            "data": {"serviceNumber": "BrandViber", "ttl": 300, "instantContent": content},
        },
    }
    assert result.message_id == fake.state.messages[f"m1/{PHONE}/0"].mt_num


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(timedelta(seconds=10), 30), (timedelta(seconds=90.4), 91), (timedelta(hours=48), 86400)],
)
async def test_viber_ttl_is_seconds_rounded_up_and_clamped(fake: Fake, ttl: timedelta, seconds: int) -> None:
    await fake.adapter.send(viber(ttl=ttl))
    assert sent_body(fake)["message"]["data"]["ttl"] == seconds


async def test_viber_layout_rapporto_cannot_carry_is_rejected_without_a_request(fake: Fake) -> None:
    result = await fake.adapter.send(viber(image_url=IMAGE))  # text+image, no button
    assert result.rejected is not None and "viber content" in result.rejected
    assert fake.state.requests == []


async def test_retry_after_read_timeout_is_deduplicated(fake: Fake) -> None:
    fake.state.delay_next(1.0)  # longer than the client's 0.5 s read timeout; the fake still accepts it
    with pytest.raises(ProviderUnavailable) as excinfo:
        await fake.adapter.send(sms())
    assert "ReadTimeout" in str(excinfo.value)
    async with asyncio.timeout(5):
        first = (await fake.state.wait_accepted(f"m1/{PHONE}/1")).mt_num

    result = await fake.adapter.send(sms())
    assert result.message_id == first
    assert fake.state.delivered_count == 1
    assert fake.state.messages[f"m1/{PHONE}/1"].repeats == 1
    assert len(fake.state.requests) == 2


async def test_429_with_retry_after_seconds(fake: Fake) -> None:
    fake.state.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailable) as excinfo:
        await fake.adapter.send(sms())
    assert excinfo.value.retry_after == 7.0
    assert fake.state.messages == {}


async def test_503_with_retry_after_http_date(fake: Fake) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    fake.state.fail_next(503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(ProviderUnavailable) as excinfo:
        await fake.adapter.send(sms())
    assert excinfo.value.retry_after is not None and 100 < excinfo.value.retry_after <= 120


async def test_500_is_unavailable_and_a_later_send_succeeds(fake: Fake) -> None:
    fake.state.fail_next(500, count=2)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as excinfo:
            await fake.adapter.send(sms())
        assert excinfo.value.retry_after is None
    assert (await fake.adapter.send(sms())).message_id is not None
    assert fake.state.delivered_count == 1


async def test_wrong_credentials_are_unavailable_without_leaking(http: httpx.AsyncClient, fake: Fake) -> None:
    adapter = build("rapporto-main", account(fake.base_url, password="wrong-pass"), http, WEBHOOK)
    with pytest.raises(ProviderUnavailable) as excinfo:
        await adapter.send(sms())
    message = str(excinfo.value)
    assert "credentials refused" in message
    assert fake.state.requests[0].json["password"] == "wrong-pass"  # the fake's own 401, not an injected one
    for secret in ("wrong-pass", LOGIN, SECRET, "79990001230", "Привет"):
        assert secret not in message


async def test_403_is_unavailable(fake: Fake) -> None:
    fake.state.fail_next(403)
    with pytest.raises(ProviderUnavailable, match="credentials refused"):
        await fake.adapter.send(sms())


async def test_400_is_rejected_with_the_providers_reason(fake: Fake) -> None:
    fake.state.fail_next(400, body={"error": "unknown serviceNumber"})
    result = await fake.adapter.send(sms())
    assert result.message_id is None
    assert result.rejected == "400: unknown serviceNumber"


async def test_fake_refuses_invalid_destination_and_adapter_rejects(fake: Fake) -> None:
    result = await fake.adapter.send(sms(phone="+7999abc"))
    assert result.rejected == "400: invalid destAddr"


async def test_connection_refused_is_unavailable(http: httpx.AsyncClient) -> None:
    adapter = build("rapporto-main", account(f"http://127.0.0.1:{free_port()}"), http, WEBHOOK)
    with pytest.raises(ProviderUnavailable, match="ConnectError") as excinfo:
        await adapter.send(sms())
    assert "79990001230" not in str(excinfo.value)


# --- delivery reports -----------------------------------------------------------------------------------


def adapter_for(allowed_ips: list[str] | None = None) -> RapportoAdapter:
    extra: dict[str, Any] = {"allowed_ips": allowed_ips} if allowed_ips is not None else {}
    return build("rapporto-main", account(**extra), IDLE_HTTP, WEBHOOK)


def report(status: int | str, **changes: Any) -> dict[str, Any]:
    return {
        "id": f"m1/{PHONE}/0",
        "mtNum": "100200300",
        "status": status,
        "type": "VIBER",
        "doneDate": "2025-03-01 12:30:45",
        "submitDate": "2025-03-01 12:30:00",
        "sourceAddr": "BrandViber",
        "destAddr": "79990001230",
        "partCount": 1,
        "errorCode": 0,
        "mccMnc": "25001",
        "trafficType": "SERVICE",
    } | changes


def webhook(
    body: Any, query: str = "secret=s3cret%2F%2B%26%3D", client_ip: str | None = "198.51.100.7"
) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookRequest(body=raw, headers={"content-type": "application/json"}, query=query, client_ip=client_ip)


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        (0, MessageStatus.SENT, None),
        (2, MessageStatus.DELIVERED, None),
        (9, MessageStatus.READ, None),
        (5, MessageStatus.UNDELIVERED, "errorCode 1"),
    ],
)
def test_every_status_code_maps(code: int, status: MessageStatus, error: str | None) -> None:
    parsed = adapter_for().parse_webhook(webhook(report(code, errorCode=1 if code == 5 else 0)))
    assert parsed == [
        ParsedReport(
            client_ref=f"m1/{PHONE}/0",
            status=status,
            message_id="100200300",
            error=error,
            at=datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC),
        )
    ]


def test_unknown_status_code_is_acknowledged_and_ignored() -> None:
    assert adapter_for().parse_webhook(webhook(report(7))) == []


def test_a_list_of_reports_is_accepted() -> None:
    parsed = adapter_for().parse_webhook(webhook([report(2), report(9), report(42)]))
    assert [p.status for p in parsed] == [MessageStatus.DELIVERED, MessageStatus.READ]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'"text"', json.dumps(report(2, id="")).encode(), json.dumps(report("two")).encode()],
    ids=["not-json", "empty-object", "string", "empty-id", "non-numeric-status"],
)
def test_malformed_report_is_400(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as excinfo:
        adapter_for().parse_webhook(webhook(body))
    assert excinfo.value.status_code == 400
    assert "79990001230" not in excinfo.value.reason


@pytest.mark.parametrize("query", ["", "secret=", "secret=wrong", "other=s3cret%2F%2B%26%3D", "secret=s3cret"])
def test_missing_or_wrong_secret_is_401(query: str) -> None:
    with pytest.raises(WebhookRejected) as excinfo:
        adapter_for().parse_webhook(webhook(report(2), query=query))
    assert excinfo.value.status_code == 401
    assert SECRET not in excinfo.value.reason


@pytest.mark.parametrize(
    ("client_ip", "accepted"),
    [("203.0.113.77", True), ("192.0.2.10", True), ("203.0.114.1", False), (None, False), ("garbage", False)],
)
def test_ip_allow_list(client_ip: str | None, accepted: bool) -> None:
    adapter = adapter_for(["203.0.113.0/24", "192.0.2.10"])
    request = webhook(report(2), client_ip=client_ip)
    if accepted:
        assert len(adapter.parse_webhook(request)) == 1
    else:
        with pytest.raises(WebhookRejected) as excinfo:
            adapter.parse_webhook(request)
        assert excinfo.value.status_code == 401


def test_ip_allow_list_does_not_replace_the_secret() -> None:
    with pytest.raises(WebhookRejected):
        adapter_for(["203.0.113.0/24"]).parse_webhook(webhook(report(2), query="", client_ip="203.0.113.77"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-01 12:30:45", datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)),
        ("2025-03-01T12:30:45Z", datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)),
        ("2025-03-01T15:30:45+0300", datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)),
        ("2025-03-01T15:30:45.250+03:00", datetime(2025, 3, 1, 12, 30, 45, 250000, tzinfo=UTC)),
        ("01.03.2025 12:30:45", datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)),
        (1740832245, datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)),
        (1740832245000, datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_done_date_is_parsed_leniently(value: str | int | None, expected: datetime | None) -> None:
    assert parse_date(value) == expected


# --- configuration --------------------------------------------------------------------------------------


def account_error(raw: dict[str, Any]) -> str:
    with pytest.raises(AccountError) as excinfo:
        build("rapporto-main", raw, IDLE_HTTP, WEBHOOK)
    return str(excinfo.value)


def test_missing_fields_are_named() -> None:
    message = account_error({"type": "rapporto", "password": "hunter2-secret"})
    for name in ("base_url", "login", "webhook_secret"):
        assert f"rapporto-main.{name}: Field required" in message
    assert "hunter2-secret" not in message


def test_invalid_values_are_named_without_leaking_secrets() -> None:
    raw = account(base_url="ftp://x", allowed_ips=["10.0.0.0/8", "not-an-ip"], rate="fast", webhook_secret="")
    raw |= {"password": 12345678, "token": "top-secret-token"}
    message = account_error(raw)
    assert "rapporto-main.base_url: " in message
    assert "rapporto-main.allowed_ips: " in message and "not-an-ip" in message
    assert "rapporto-main.rate: " in message
    assert "rapporto-main.webhook_secret: " in message
    assert "rapporto-main.password: " in message
    assert "rapporto-main.token: Extra inputs are not permitted" in message
    for secret in ("12345678", "top-secret-token", PASSWORD):
        assert secret not in message


def test_valid_account_builds_a_named_adapter() -> None:
    adapter = build("rapporto-main", account(rate=20, allowed_ips=["203.0.113.0/24"]), IDLE_HTTP, WEBHOOK)
    assert adapter.name == "rapporto-main"


# --- the fake's delivery reports end to end -------------------------------------------------------------


@dataclass
class Receiver:
    adapter: RapportoAdapter | None = None
    parsed: list[ParsedReport] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)
    fail_first: int = 0


def receiver_app(receiver: Receiver) -> FastAPI:
    """A stand-in for the gateway: builds a WebhookRequest exactly as gateway/app.py does."""
    app = FastAPI()

    @app.post("/webhooks/rapporto-main")
    async def hook(request: Request) -> JSONResponse:
        if receiver.fail_first:
            receiver.fail_first -= 1
            return JSONResponse({"error": "try later"}, status_code=500)
        assert receiver.adapter is not None
        incoming = webhook_request(request, await request.body())
        try:
            reports = receiver.adapter.parse_webhook(incoming)
        except WebhookRejected as exc:
            receiver.refusals.append(exc.status_code)
            return JSONResponse({"error": exc.reason}, status_code=exc.status_code)
        receiver.parsed.extend(reports)
        return JSONResponse({"received": len(reports)})

    return app


async def test_fake_posts_reports_the_adapter_accepts(http: httpx.AsyncClient) -> None:
    receiver = Receiver(fail_first=1)  # the first report is refused once: the fake must retry it
    app, state = create_fake(LOGIN, PASSWORD, report_delay=0.05)
    async with (
        running(receiver_app(receiver), "127.0.0.1", hook_port := free_port()),
        running(app, "127.0.0.1", fake_port := free_port()),
    ):
        receiver.adapter = build(
            "rapporto-main",
            account(f"http://127.0.0.1:{fake_port}", allowed_ips=["127.0.0.0/8"]),
            http,
            f"http://127.0.0.1:{hook_port}/webhooks/rapporto-main",
        )
        viber_sent = await receiver.adapter.send(viber(phone="+79990001230", button=BUTTON))  # ends 0: read
        sms_sent = await receiver.adapter.send(sms(phone="+79990001239"))  # ends 9: undelivered
        async with asyncio.timeout(10):
            assert await state.wait_reports("m1/+79990001230/0", 2) == [2, 9]
            assert await state.wait_reports("m1/+79990001239/1", 1) == [5]

    assert receiver.refusals == []
    assert state.report_attempts == 4  # three reports, one of them retried
    by_ref = {(p.client_ref, p.status): p for p in receiver.parsed}
    assert set(by_ref) == {
        ("m1/+79990001230/0", MessageStatus.DELIVERED),
        ("m1/+79990001230/0", MessageStatus.READ),
        ("m1/+79990001239/1", MessageStatus.UNDELIVERED),
    }
    assert by_ref["m1/+79990001230/0", MessageStatus.READ].message_id == viber_sent.message_id
    undelivered = by_ref["m1/+79990001239/1", MessageStatus.UNDELIVERED]
    assert undelivered.message_id == sms_sent.message_id
    assert undelivered.error == "errorCode 1"
    assert undelivered.at is not None and abs((datetime.now(UTC) - undelivered.at).total_seconds()) < 60
