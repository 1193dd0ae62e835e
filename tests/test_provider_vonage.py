"""The Vonage adapter against the local fake over real HTTP, and its webhook verification with real JWTs."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response
from jwt.warnings import InsecureKeyLengthWarning

from domain.models import SendRequest
from domain.spec import Button
from domain.status import Channel, MessageStatus
from domain.whatsapp import WhatsAppTemplate
from gateway.app import webhook_request
from providers.accounts import AccountError
from providers.base import ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from providers.vonage import VonageAdapter, build
from runtime.servers import free_port, running
from tests.fakes.vonage import FakeVonageState, create_fake, rsa_key_pair, sign_webhook

SECRET = "s3cr3t-signature-secret-of-32-bytes!"
API_KEY = "abcd1234"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
PHONE = "+79990002230"
HOOK = "https://kaskad.example/webhooks/vonage-main"
REF = "m1/+79990002230/0"


@dataclass(frozen=True)
class Keys:
    private_pem: str
    public_pem: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(*rsa_key_pair())


def account(keys: Keys, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "vonage",
        "application_id": APP_ID,
        "private_key": keys.private_pem,
        "signature_secret": SECRET,
        "api_key": API_KEY,
    } | overrides


@dataclass
class Fake:
    url: str
    state: FakeVonageState
    http: httpx.AsyncClient

    def adapter(self, keys: Keys, webhook_url: str = HOOK, **overrides: Any) -> VonageAdapter:
        return build("vonage-main", account(keys, base_url=self.url, **overrides), self.http, webhook_url)


@pytest.fixture
async def fake(keys: Keys) -> AsyncIterator[Fake]:
    app, state = create_fake(SECRET, API_KEY, public_key_pem=keys.public_pem, report_delay=0.02)
    async with running(app, "127.0.0.1", port := free_port()), httpx.AsyncClient(timeout=2) as http:
        yield Fake(f"http://127.0.0.1:{port}", state, http)


def sms(**overrides: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "client_ref": REF,
        "provider": "vonage-main",
        "channel": Channel.SMS,
        "phone": PHONE,
        "sender": "Shop",
        "text": "Скидка 10%",
        "ttl": timedelta(minutes=30),
    }
    return SendRequest(**(fields | overrides))


def viber(**overrides: Any) -> SendRequest:
    return sms(channel=Channel.VIBER, **overrides)


# --- sending -------------------------------------------------------------------------------------------


async def test_sms_request_is_exactly_as_documented(fake: Fake, keys: Keys) -> None:
    result = await fake.adapter(keys).send(sms())
    [seen] = fake.state.requests
    assert result.message_id in fake.state.messages and result.rejected is None
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.json == {
        "to": "79990002230",
        "from": "Shop",
        "channel": "sms",
        "message_type": "text",
        "text": "Скидка 10%",
        "client_ref": REF,
        "ttl": 1800,
        "webhook_url": HOOK,
        "webhook_version": "v1",
        "sms": {"encoding_type": "auto"},
    }
    scheme, token = seen.headers["authorization"].split(" ")
    claims = jwt.decode(token, keys.public_pem, algorithms=["RS256"])
    assert scheme == "Bearer" and jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["application_id"] == APP_ID
    assert abs(claims["iat"] - time.time()) < 5 and 0 < claims["exp"] - claims["iat"] <= 600
    assert len(claims["jti"]) == 36


async def test_each_request_gets_a_fresh_token(fake: Fake, keys: Keys) -> None:
    adapter = fake.adapter(keys)
    await adapter.send(sms())
    await adapter.send(sms(client_ref="m1/+79990002230/1"))
    jtis = [
        jwt.decode(r.headers["authorization"][7:], keys.public_pem, algorithms=["RS256"])["jti"]
        for r in fake.state.requests
    ]
    assert len(set(jtis)) == 2


async def test_viber_text_with_button(fake: Fake, keys: Keys) -> None:
    button = Button(caption="Открыть", url="https://shop.example/sale")
    result = await fake.adapter(keys, viber_category="promotion").send(viber(button=button, ttl=timedelta(hours=1)))
    assert result.message_id is not None
    assert fake.state.requests[0].json == {
        "to": "79990002230",
        "from": "Shop",
        "channel": "viber_service",
        "message_type": "text",
        "text": "Скидка 10%",
        "client_ref": REF,
        "webhook_url": HOOK,
        "webhook_version": "v1",
        "viber_service": {
            "category": "promotion",
            "ttl": 3600,
            "action": {"url": "https://shop.example/sale", "text": "Открыть"},
        },
    }


async def test_viber_image_text_and_button(fake: Fake, keys: Keys) -> None:
    button = Button(caption="Buy", url="https://shop.example/b")
    request = viber(image_url="https://cdn.example/a.png", button=button)
    assert (await fake.adapter(keys).send(request)).message_id is not None
    assert fake.state.requests[0].json == {
        "to": "79990002230",
        "from": "Shop",
        "channel": "viber_service",
        "message_type": "image",
        "image": {"url": "https://cdn.example/a.png", "caption": "Скидка 10%"},
        "client_ref": REF,
        "webhook_url": HOOK,
        "webhook_version": "v1",
        "viber_service": {
            "category": "transaction",
            "ttl": 1800,
            "action": {"url": "https://shop.example/b", "text": "Buy"},
        },
    }


async def test_viber_image_alone_has_no_caption_and_no_action(fake: Fake, keys: Keys) -> None:
    await fake.adapter(keys).send(viber(text="", image_url="https://cdn.example/a.png"))
    body = fake.state.requests[0].json
    assert body["message_type"] == "image" and body["image"] == {"url": "https://cdn.example/a.png"}
    assert body["viber_service"] == {"category": "transaction", "ttl": 1800}


@pytest.mark.parametrize(
    ("channel", "wait", "ttl"),
    [
        (Channel.VIBER, timedelta(seconds=5), 30),
        (Channel.VIBER, timedelta(days=5), 259_200),
        (Channel.SMS, timedelta(seconds=1), 20),
        (Channel.SMS, timedelta(days=5), 259_200),
    ],
)
async def test_ttl_is_clamped_to_vonage_limits(
    fake: Fake, keys: Keys, channel: Channel, wait: timedelta, ttl: int
) -> None:
    await fake.adapter(keys).send(sms(channel=channel, ttl=wait))
    body = fake.state.requests[0].json
    assert (body["viber_service"]["ttl"] if channel is Channel.VIBER else body["ttl"]) == ttl


async def test_429_honours_retry_after_seconds(fake: Fake, keys: Keys) -> None:
    fake.state.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailable) as caught:
        await fake.adapter(keys).send(sms())
    assert caught.value.retry_after == 7.0 and "429" in str(caught.value)


async def test_503_honours_retry_after_http_date(fake: Fake, keys: Keys) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake.state.fail_next(503, headers={"Retry-After": when})
    with pytest.raises(ProviderUnavailable) as caught:
        await fake.adapter(keys).send(sms())
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120


async def test_500_is_unavailable_then_a_retry_succeeds(fake: Fake, keys: Keys) -> None:
    adapter = fake.adapter(keys)
    fake.state.fail_next(500)
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.send(sms())
    assert caught.value.retry_after is None
    assert (await adapter.send(sms())).message_id is not None
    assert len(fake.state.requests) == 2


async def test_refused_credentials_are_unavailable(fake: Fake, keys: Keys) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ProviderUnavailable, match="credentials refused") as caught:
        await fake.adapter(keys, private_key=wrong_pem).send(sms())
    assert "79990002230" not in str(caught.value) and "PRIVATE" not in str(caught.value)
    assert fake.state.messages == {}


async def test_invalid_params_are_a_rejection(fake: Fake, keys: Keys) -> None:
    result = await fake.adapter(keys).send(sms(sender=""))  # the fake's real 422 for a missing `from`
    assert result.message_id is None
    assert (
        result.rejected
        == "422: Invalid params: The value of one or more parameters is invalid.: invalid: from is required"
    )


async def test_a_400_is_a_rejection_with_vonage_title_and_detail(fake: Fake, keys: Keys) -> None:
    body = {
        "type": "https://developer.vonage.com/api-errors/messages#1150",
        "title": "Invalid sender",
        "detail": "The `from` parameter is invalid for +79990002230",
    }
    fake.state.fail_next(400, body=body)
    result = await fake.adapter(keys).send(sms())
    assert result.rejected == "400: Invalid sender: The `from` parameter is invalid for +***"


async def test_read_timeout_is_handed_over_without_retry(fake: Fake, keys: Keys) -> None:
    """The request reached Vonage and the answer was lost: not retried (Vonage would send it twice)."""
    fake.state.delay_next(1.0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as http:
        adapter = build("vonage-main", account(keys, base_url=fake.url), http, HOOK)
        result = await adapter.send(sms())
    assert result.message_id is None and result.rejected is None and result.unconfirmed
    assert len(fake.state.requests) == 1 and len(fake.state.messages) == 1


async def test_connection_refused_is_unavailable(keys: Keys) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        adapter = build("vonage-main", account(keys, base_url=f"http://127.0.0.1:{free_port()}"), http, HOOK)
        with pytest.raises(ProviderUnavailable, match="unreachable: ConnectError") as caught:
            await adapter.send(sms())
    assert caught.value.retry_after is None and "7999" not in str(caught.value)


# --- webhooks ------------------------------------------------------------------------------------------


UNUSED_HTTP = httpx.AsyncClient()  # webhook parsing never sends


def adapter_only(keys: Keys, **overrides: Any) -> VonageAdapter:
    return build("vonage-main", account(keys, **overrides), UNUSED_HTTP, HOOK)


def status_body(status: str, **extra: Any) -> bytes:
    body = {
        "message_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "to": "79990002230",
        "from": "Shop",
        "timestamp": "2025-02-03T12:14:25.010Z",
        "status": status,
        "channel": "viber_service",
        "client_ref": REF,
    }
    return json.dumps(body | extra).encode()


def signed(body: bytes, secret: str = SECRET, api_key: str = API_KEY, iat: int | None = None) -> WebhookRequest:
    return WebhookRequest(body=body, headers={"authorization": sign_webhook(body, secret, api_key, iat)})


AT = datetime(2025, 2, 3, 12, 14, 25, 10_000, tzinfo=UTC)
ERROR = {
    "type": "https://developer.vonage.com/api-errors/messages#1300",
    "title": 1300,
    "detail": "Not part of the provider network",
}


@pytest.mark.parametrize(
    ("status", "extra", "expected", "error"),
    [
        ("submitted", {"usage": {"currency": "EUR", "price": "0.0333"}}, MessageStatus.SENT, None),
        ("delivered", {}, MessageStatus.DELIVERED, None),
        ("read", {}, MessageStatus.READ, None),
        ("rejected", {"error": ERROR}, MessageStatus.UNDELIVERED, "1300: Not part of the provider network"),
        (
            "undeliverable",
            {
                "error": {
                    "type": "https://developer.vonage.com/api-errors/messages#1260",
                    "detail": "Destination unreachable",
                }
            },
            MessageStatus.UNDELIVERED,
            "1260: Destination unreachable",
        ),
    ],
)
def test_documented_statuses_are_mapped(
    keys: Keys, status: str, extra: dict[str, Any], expected: MessageStatus, error: str | None
) -> None:
    reports = adapter_only(keys).parse_webhook(signed(status_body(status, **extra)))
    assert reports == [
        ParsedReport(
            client_ref=REF, status=expected, message_id="aaaaaaaa-bbbb-cccc-dddd-0123456789ab", error=error, at=AT
        )
    ]


def test_unknown_status_is_acknowledged_but_ignored(keys: Keys) -> None:
    assert adapter_only(keys).parse_webhook(signed(status_body("clicked"))) == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"status": "delivered", "message_uuid": "x"}).encode(),
        json.dumps({"client_ref": "x"}).encode(),
    ],
)
def test_malformed_or_unreferenced_report_is_400(keys: Keys, body: bytes) -> None:
    with pytest.raises(WebhookRejected) as caught:
        adapter_only(keys).parse_webhook(signed(body))
    assert caught.value.status_code == 400


def test_webhook_without_api_key_configured_accepts_any_api_key(keys: Keys) -> None:
    adapter = build("v", {k: v for k, v in account(keys).items() if k != "api_key"}, UNUSED_HTTP, HOOK)
    assert len(adapter.parse_webhook(signed(status_body("delivered"), api_key="other"))) == 1


def hs(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # HS512 wants a 64-byte key; the test secret is shorter on purpose
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return "Bearer " + jwt.encode(claims, secret, algorithm=algorithm)


BODY = status_body("delivered")
GOOD = {"iat": int(time.time()), "api_key": API_KEY, "payload_hash": hashlib.sha256(BODY).hexdigest()}


OTHER_SECRET = "another-secret-of-sufficient-length!"
TAMPERED = BODY.replace(b"delivered", b"read")


@pytest.mark.parametrize(
    ("make_headers", "body", "reason"),
    [
        (lambda: {}, BODY, "missing"),
        (lambda: {"authorization": "Basic dXNlcjpwYXNz"}, BODY, "missing"),
        (
            lambda: {"authorization": sign_webhook(BODY, "another-secret-of-sufficient-length!", API_KEY)},
            BODY,
            "bad token",
        ),
        (lambda: {"authorization": sign_webhook(BODY, SECRET, API_KEY)}, TAMPERED, "payload_hash"),
        (lambda: {"authorization": sign_webhook(BODY, SECRET, API_KEY, iat=int(time.time()) - 3600)}, BODY, "stale"),
        (lambda: {"authorization": sign_webhook(BODY, SECRET, API_KEY, iat=int(time.time()) + 600)}, BODY, "future"),
        (lambda: {"authorization": sign_webhook(BODY, SECRET, "someone-else")}, BODY, "api_key"),
        (lambda: {"authorization": hs({k: v for k, v in GOOD.items() if k != "iat"})}, BODY, "iat"),
        (lambda: {"authorization": hs({k: v for k, v in GOOD.items() if k != "payload_hash"})}, BODY, "payload_hash"),
        (lambda: {"authorization": hs(GOOD, algorithm="HS512")}, BODY, "bad token"),
        (lambda: {"authorization": "Bearer " + jwt.encode(GOOD, "", algorithm="none")}, BODY, "bad token"),
    ],
    ids=[
        "no-header",
        "basic",
        "wrong-secret",
        "tampered-body",
        "stale-iat",
        "future-iat",
        "wrong-api-key",
        "no-iat",
        "no-payload-hash",
        "wrong-algorithm",
        "unsigned",
    ],
)
def test_bad_signatures_are_401(
    keys: Keys, make_headers: Callable[[], dict[str, str]], body: bytes, reason: str
) -> None:
    """The headers are signed here, not at collection: a token made minutes earlier would be stale."""
    with pytest.raises(WebhookRejected) as caught:
        adapter_only(keys).parse_webhook(WebhookRequest(body=body, headers=make_headers()))
    assert caught.value.status_code == 401 and reason in caught.value.reason


def test_slightly_future_iat_is_tolerated(keys: Keys) -> None:
    request = signed(BODY, iat=int(time.time()) + 30)
    assert adapter_only(keys).parse_webhook(request)[0].status is MessageStatus.DELIVERED


# --- configuration -------------------------------------------------------------------------------------


def test_config_errors_name_the_fields_without_secrets(keys: Keys) -> None:
    raw = account(keys, viber_category="spam", colour="red")
    del raw["application_id"]
    with pytest.raises(AccountError) as caught:
        build("vonage-main", raw, UNUSED_HTTP, HOOK)
    message = str(caught.value)
    assert "vonage-main.application_id: Field required" in message
    assert "vonage-main.viber_category:" in message and "vonage-main.colour:" in message
    assert SECRET not in message and "PRIVATE KEY" not in message


def test_a_broken_private_key_is_named_not_shown(keys: Keys) -> None:
    with pytest.raises(AccountError) as caught:
        build("vonage-main", account(keys, private_key="-----BEGIN PRIVATE KEY-----\nnot-a-key\n"), UNUSED_HTTP, HOOK)
    assert str(caught.value) == "vonage-main.private_key: not an unencrypted PEM private key"


def test_a_wrongly_typed_secret_is_named_without_its_value(keys: Keys) -> None:
    with pytest.raises(AccountError) as caught:
        build("acct", account(keys, signature_secret=12345678901), UNUSED_HTTP, HOOK)
    assert str(caught.value).startswith("acct.signature_secret:") and "12345678901" not in str(caught.value)


# --- the fake's webhooks reach the adapter -------------------------------------------------------------


class Receiver:
    """A stand-in for the gateway's webhook route, verifying with the adapter; down for the first N calls."""

    def __init__(self, fail_first: int = 0) -> None:
        self.adapter: VonageAdapter | None = None
        self.fail_first = fail_first
        self.parsed: list[ParsedReport] = []
        self.app = FastAPI()

        @self.app.post("/webhooks/vonage-main")
        async def hook(request: Request) -> Response:
            if self.fail_first > 0:
                self.fail_first -= 1
                return Response(status_code=503)
            assert self.adapter is not None
            webhook = webhook_request(request, await request.body())
            try:
                self.parsed.extend(self.adapter.parse_webhook(webhook))
            except WebhookRejected as exc:
                return Response(exc.reason, status_code=exc.status_code)
            return Response(status_code=200)


@pytest.mark.parametrize(
    ("channel", "phone", "statuses", "ours"),
    [
        (Channel.VIBER, "+79990002230", ["submitted", "delivered", "read"], ["sent", "delivered", "read"]),
        (Channel.VIBER, "+79990002236", ["submitted", "rejected"], ["sent", "undelivered"]),
        (Channel.SMS, "+79990002239", ["submitted", "undeliverable"], ["sent", "undelivered"]),
    ],
)
async def test_fake_posts_signed_reports_the_adapter_accepts(
    fake: Fake, keys: Keys, channel: Channel, phone: str, statuses: list[str], ours: list[str]
) -> None:
    receiver = Receiver(fail_first=1)  # the first attempt fails: the fake retries
    port = free_port()
    async with running(receiver.app, "127.0.0.1", port):
        receiver.adapter = fake.adapter(keys, webhook_url=f"http://127.0.0.1:{port}/webhooks/vonage-main")
        ref = f"m1/{phone}/0"
        result = await receiver.adapter.send(sms(channel=channel, phone=phone, client_ref=ref))
        delivered = await fake.state.wait_reports(len(statuses))
    assert [r.body["status"] for r in delivered] == statuses
    assert [r.status.value for r in receiver.parsed] == ours
    assert {(r.client_ref, r.message_id) for r in receiver.parsed} == {(ref, result.message_id)}
    assert delivered[0].attempts == 2 and all(r.at is not None for r in receiver.parsed)
    assert (receiver.parsed[-1].error is not None) == (ours[-1] == "undelivered")


async def test_a_lost_answer_is_still_reported_by_client_ref(fake: Fake, keys: Keys) -> None:
    """The send that timed out still gets its reports: the cascade learns the message id from them."""
    receiver = Receiver()
    port = free_port()
    fake.state.delay_next(1.0)
    async with running(receiver.app, "127.0.0.1", port), httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as http:
        receiver.adapter = build(
            "vonage-main", account(keys, base_url=fake.url), http, f"http://127.0.0.1:{port}/webhooks/vonage-main"
        )
        assert (await receiver.adapter.send(viber())).message_id is None
        await fake.state.wait_reports(3)
    [message_uuid] = fake.state.messages
    assert [(r.client_ref, r.message_id, r.status) for r in receiver.parsed] == [
        (REF, message_uuid, MessageStatus.SENT),
        (REF, message_uuid, MessageStatus.DELIVERED),
        (REF, message_uuid, MessageStatus.READ),
    ]


# --- WhatsApp ------------------------------------------------------------------------------------------


def whatsapp(**overrides: Any) -> SendRequest:
    template = WhatsAppTemplate(name="order_update", language="ru", parameters=["Анна", "A1"])
    fields: dict[str, Any] = {"channel": Channel.WHATSAPP, "sender": "+74950000000", "text": "", "template": template}
    return sms(**(fields | overrides))


async def test_whatsapp_template_request_is_exactly_as_documented(fake: Fake, keys: Keys) -> None:
    result = await fake.adapter(keys).send(whatsapp(ttl=timedelta(days=7)))
    [seen] = fake.state.requests
    assert result.message_id in fake.state.messages and result.rejected is None
    assert seen.json == {
        "to": "79990002230",
        "from": "74950000000",
        "channel": "whatsapp",
        "message_type": "template",
        "template": {"name": "order_update", "parameters": ["Анна", "A1"]},
        "whatsapp": {"policy": "deterministic", "locale": "ru"},
        "client_ref": REF,
        "webhook_url": HOOK,
        "webhook_version": "v1",
    }


async def test_a_whatsapp_message_without_its_template_is_refused_unsent(fake: Fake, keys: Keys) -> None:
    result = await fake.adapter(keys).send(whatsapp(template=None))
    assert result.rejected == "a whatsapp message needs its approved template" and fake.state.requests == []


@pytest.mark.parametrize(
    ("phone", "statuses", "ours"),
    [
        ("+79990002230", ["submitted", "delivered", "read"], ["sent", "delivered", "read"]),
        ("+79990002235", ["submitted", "delivered"], ["sent", "delivered"]),
        ("+79990002237", ["submitted", "rejected"], ["sent", "undelivered"]),
        ("+79990002238", ["submitted"], ["sent"]),
    ],
)
async def test_whatsapp_statuses_from_the_fake_are_mapped(
    fake: Fake, keys: Keys, phone: str, statuses: list[str], ours: list[str]
) -> None:
    receiver = Receiver()
    port = free_port()
    async with running(receiver.app, "127.0.0.1", port):
        receiver.adapter = fake.adapter(keys, webhook_url=f"http://127.0.0.1:{port}/webhooks/vonage-main")
        ref = f"m1/{phone}/1"
        result = await receiver.adapter.send(whatsapp(phone=phone, client_ref=ref))
        delivered = await fake.state.wait_reports(len(statuses))
    assert [r.body["status"] for r in delivered] == statuses
    assert all(r.body["channel"] == "whatsapp" for r in delivered)
    assert [r.status.value for r in receiver.parsed] == ours
    assert {(r.client_ref, r.message_id) for r in receiver.parsed} == {(ref, result.message_id)}
    if ours[-1] == "undelivered":
        assert receiver.parsed[-1].error == "1300: Not part of the provider network"
