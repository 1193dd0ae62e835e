"""The Twilio adapter against the local fake over real HTTP, and its status-callback verification."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote, urlencode

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from domain.models import SendRequest, SendResult
from domain.status import Channel, MessageStatus
from domain.whatsapp import WhatsAppTemplate
from gateway.app import webhook_request
from providers import twilio
from providers.accounts import AccountError
from providers.base import ParsedReport, ProviderUnavailable, WebhookRejected, WebhookRequest
from runtime.servers import free_port, running
from tests.fakes.twilio import FakeTwilioState, create_fake, signature

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "secret-auth-token-4f1c"
SENDER = "+15005550006"
REF = "spring/+79990002233/1"
WEBHOOK = "https://hooks.example.com/webhooks/twilio-main"


def account(base_url: str = "http://127.0.0.1:9", **overrides: object) -> dict[str, object]:
    return {
        "type": "twilio",
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": SENDER,
        "base_url": base_url,
    } | overrides


def sms(phone: str = "+79990002233", ttl: timedelta = timedelta(minutes=30), ref: str = REF) -> SendRequest:
    return SendRequest(
        client_ref=ref,
        provider="twilio-main",
        channel=Channel.SMS,
        phone=phone,
        sender="ignored",
        text="Код 1234",
        ttl=ttl,
    )


@dataclass
class Env:
    adapter: twilio.TwilioAdapter
    state: FakeTwilioState
    http: httpx.AsyncClient
    base_url: str


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    app, state = create_fake(SID, TOKEN, report_delay=3600)  # no callbacks during the send tests
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    async with running(app, "127.0.0.1", port), httpx.AsyncClient(timeout=5) as http:
        yield Env(twilio.build("twilio-main", account(base_url), http, WEBHOOK), state, http, base_url)


# --- sending ---------------------------------------------------------------------------------------------------


async def test_send_posts_exactly_the_documented_request(env: Env) -> None:
    result = await env.adapter.send(sms())

    assert result.rejected is None
    assert result.message_id is not None and result.message_id.startswith("SM") and len(result.message_id) == 34
    [request] = env.state.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "To": "+79990002233",
        "From": SENDER,
        "Body": "Код 1234",
        "StatusCallback": f"{WEBHOOK}?ref=spring%2F%2B79990002233%2F1",
        "ValidityPeriod": "1800",
    }
    assert env.state.messages[result.message_id].to == "+79990002233"


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (timedelta(0), "1"),
        (timedelta(milliseconds=300), "1"),
        (timedelta(hours=10), "36000"),
        (timedelta(days=2), "36000"),
    ],
)
async def test_validity_period_is_clamped(env: Env, ttl: timedelta, expected: str) -> None:
    await env.adapter.send(sms(ttl=ttl))
    assert env.state.requests[-1].form["ValidityPeriod"] == expected


async def test_messaging_service_variant(env: Env) -> None:
    service = "MG" + "f" * 32
    adapter = twilio.build(
        "twilio-main", account(env.base_url, from_number=None, messaging_service_sid=service), env.http, WEBHOOK
    )
    result = await adapter.send(sms())
    assert result.message_id is not None
    form = env.state.requests[-1].form
    assert form["MessagingServiceSid"] == service
    assert "From" not in form


async def test_viber_is_rejected_without_a_request(env: Env) -> None:
    result = await env.adapter.send(sms().model_copy(update={"channel": Channel.VIBER}))
    assert result == SendResult(rejected="twilio does not send viber (it sends: sms, whatsapp)")
    assert env.state.requests == []


async def test_429_honours_retry_after_seconds(env: Env) -> None:
    env.state.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailable) as caught:
        await env.adapter.send(sms())
    assert caught.value.retry_after == 7.0


async def test_503_honours_retry_after_http_date(env: Env) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    env.state.fail_next(503, headers={"Retry-After": later})
    with pytest.raises(ProviderUnavailable) as caught:
        await env.adapter.send(sms())
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120


async def test_500_is_unavailable(env: Env) -> None:
    env.state.fail_next(500)
    with pytest.raises(ProviderUnavailable) as caught:
        await env.adapter.send(sms())
    assert caught.value.retry_after is None
    assert "500" in str(caught.value)


async def test_wrong_credentials_are_unavailable_without_leaking(env: Env) -> None:
    adapter = twilio.build("twilio-main", account(env.base_url, auth_token="not-the-token"), env.http, WEBHOOK)
    with pytest.raises(ProviderUnavailable, match="credentials refused") as caught:
        await adapter.send(sms())
    assert env.state.requests[-1].path.endswith("/Messages.json")
    assert "not-the-token" not in str(caught.value) and "+79990002233" not in str(caught.value)


async def test_403_is_unavailable(env: Env) -> None:
    env.state.fail_next(403, body={"code": 20003, "message": "Permission Denied", "more_info": "", "status": 403})
    with pytest.raises(ProviderUnavailable, match="credentials refused"):
        await env.adapter.send(sms())


async def test_invalid_number_is_rejected_with_code_and_without_the_number(env: Env) -> None:
    result = await env.adapter.send(sms(phone="+7999"))
    assert result.message_id is None
    assert result.rejected is not None and result.rejected.startswith("21211: ")
    assert "7999" not in result.rejected


async def test_unsubscribed_recipient_is_rejected(env: Env) -> None:
    body = {
        "code": 21610,
        "message": "Attempt to send to unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }
    env.state.fail_next(400, body=body)
    assert await env.adapter.send(sms()) == SendResult(rejected="21610: Attempt to send to unsubscribed recipient")


async def test_read_timeout_counts_as_handed_over_and_is_not_retried(env: Env) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as http:
        adapter = twilio.build("twilio-main", account(env.base_url), http, WEBHOOK)
        env.state.delay_next(0.6)
        assert await adapter.send(sms()) == SendResult(unconfirmed=True)
    assert len(env.state.requests) == 1
    assert len(env.state.messages) == 1  # Twilio did create the message: a retry would have sent a second SMS


async def test_connection_refused_is_unavailable() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        adapter = twilio.build("twilio-main", account(f"http://127.0.0.1:{free_port()}"), http, WEBHOOK)
        with pytest.raises(ProviderUnavailable, match="ConnectError"):
            await adapter.send(sms())


# --- status callbacks ------------------------------------------------------------------------------------------


def callback(
    status: str,
    *,
    token: str = TOKEN,
    url: str = WEBHOOK,
    query: str = f"ref={quote(REF, safe='')}",
    extra: dict[str, str] | None = None,
) -> WebhookRequest:
    """A status callback as Twilio would post it to `url?query`, signed with `token`."""
    params = {
        "AccountSid": SID,
        "ApiVersion": "2010-04-01",
        "From": SENDER,
        "MessageSid": "SM" + "a" * 32,
        "MessageStatus": status,
        "SmsSid": "SM" + "a" * 32,
        "SmsStatus": status,
        "To": "+79990002233",
    } | (extra or {})
    signed = signature(token, f"{url}?{query}", params)
    return WebhookRequest(
        body=urlencode(params).encode(), headers={"x-twilio-signature": signed}, query=query, client_ip="127.0.0.1"
    )


UNUSED_HTTP = httpx.AsyncClient()  # parse_webhook and build never touch the network


def adapter_for(webhook_url: str = WEBHOOK) -> twilio.TwilioAdapter:
    return twilio.build("twilio-main", account(), UNUSED_HTTP, webhook_url)


@pytest.mark.parametrize(
    ("twilio_status", "ours"),
    [
        ("queued", MessageStatus.SENT),
        ("sending", MessageStatus.SENT),
        ("sent", MessageStatus.SENT),
        ("accepted", MessageStatus.SENT),
        ("scheduled", MessageStatus.SENT),
        ("delivered", MessageStatus.DELIVERED),
        ("read", MessageStatus.READ),
    ],
)
def test_callback_statuses(twilio_status: str, ours: MessageStatus) -> None:
    assert adapter_for().parse_webhook(callback(twilio_status)) == [
        ParsedReport(client_ref=REF, status=ours, message_id="SM" + "a" * 32)
    ]


@pytest.mark.parametrize("twilio_status", ["failed", "undelivered", "canceled"])
def test_failure_statuses_carry_the_error_code(twilio_status: str) -> None:
    [report] = adapter_for().parse_webhook(callback(twilio_status, extra={"ErrorCode": "30003"}))
    assert (report.status, report.error, report.client_ref) == (MessageStatus.UNDELIVERED, "ErrorCode 30003", REF)


def test_unknown_status_is_acknowledged_without_a_report() -> None:
    assert adapter_for().parse_webhook(callback("partially_delivered")) == []


def test_twilio_sdk_test_vector() -> None:
    """Twilio's own validator test vector (twilio-python tests/unit/test_request_validator.py): token `12345`."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    assert signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio.compute_signature("12345", url, params.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    with_port = url.replace(".com", ".com:443")
    assert twilio.compute_signature("12345", with_port, params.items()) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    assert twilio.url_variants(url) == [url, with_port]
    assert twilio.url_variants(with_port) == [url, with_port]


def test_twilio_sdk_vector_through_the_adapter() -> None:
    """The same vector through parse_webhook: the signature passes, so only the missing AccountSid refuses it."""
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212"}
    params["Caller"] = "+14158675309"
    adapter = twilio.build("t", account(auth_token="12345"), UNUSED_HTTP, "https://mycompany.com/myapp.php")
    request = WebhookRequest(
        body=urlencode(params).encode(),
        headers={"x-twilio-signature": "kvajT1Ptam85bY51eRf/AJRuM3w="},
        query="foo=1&bar=2",
    )
    with pytest.raises(WebhookRejected, match="another twilio account"):
        adapter.parse_webhook(request)
    wrong = WebhookRequest(request.body, {"x-twilio-signature": "RSOYDt4T1cUTdK1PDd93/VVr8B9="}, request.query)
    with pytest.raises(WebhookRejected, match="wrong X-Twilio-Signature"):
        adapter.parse_webhook(wrong)


def test_explicit_default_port_on_either_side_is_accepted() -> None:
    with_port = "https://hooks.example.com:443/webhooks/twilio-main"
    # Configured with :443, Twilio signed without it …
    assert adapter_for(with_port).parse_webhook(callback("delivered", url=WEBHOOK))
    # … and configured without, Twilio signed with it.
    assert adapter_for(WEBHOOK).parse_webhook(callback("delivered", url=with_port))
    # http and :80 likewise
    plain = "http://hooks.example.com/cb"
    assert adapter_for(plain).parse_webhook(callback("sent", url="http://hooks.example.com:80/cb"))


def test_query_in_configured_url_is_kept_in_order() -> None:
    adapter = adapter_for(f"{WEBHOOK}?k=1")
    callback_url = adapter.status_callback(REF)
    assert callback_url == f"{WEBHOOK}?k=1&ref=spring%2F%2B79990002233%2F1"
    [report] = adapter.parse_webhook(callback("delivered", query=callback_url.split("?", 1)[1]))
    assert report.client_ref == REF


@pytest.mark.parametrize(
    "request_",
    [
        callback("delivered", token="another-token"),
        WebhookRequest(b"", {}, f"ref={quote(REF, safe='')}"),
        WebhookRequest(callback("delivered").body, {}, callback("delivered").query),
        callback("delivered", extra={"AccountSid": "AC" + "9" * 32}),  # signed, but for another account
    ],
    ids=["wrong-token", "empty-unsigned", "missing-header", "other-account"],
)
def test_unauthentic_callbacks_are_401(request_: WebhookRequest) -> None:
    with pytest.raises(WebhookRejected) as caught:
        adapter_for().parse_webhook(request_)
    assert caught.value.status_code == 401


def test_tampered_body_is_401() -> None:
    good = callback("undelivered", extra={"ErrorCode": "30003"})
    tampered = WebhookRequest(good.body.replace(b"undelivered", b"delivered"), good.headers, good.query)
    with pytest.raises(WebhookRejected) as caught:
        adapter_for().parse_webhook(tampered)
    assert caught.value.status_code == 401


def test_tampered_reference_is_401() -> None:
    good = callback("delivered")
    moved = WebhookRequest(good.body, good.headers, "ref=" + quote("spring/+79990009999/1", safe=""))
    with pytest.raises(WebhookRejected) as caught:
        adapter_for().parse_webhook(moved)
    assert caught.value.status_code == 401


def test_missing_ref_is_400() -> None:
    with pytest.raises(WebhookRejected) as caught:
        adapter_for().parse_webhook(callback("delivered", query="other=1"))
    assert caught.value.status_code == 400


@pytest.mark.parametrize("body", [b"\xff\xfe=1", b"AccountSid&MessageStatus"], ids=["not-utf8", "not-a-form"])
def test_malformed_body_is_400(body: bytes) -> None:
    request = WebhookRequest(body, {"x-twilio-signature": "irrelevant"}, f"ref={quote(REF, safe='')}")
    with pytest.raises(WebhookRejected) as caught:
        adapter_for().parse_webhook(request)
    assert caught.value.status_code == 400


def test_signed_callback_without_message_fields_is_400() -> None:
    query = f"ref={quote(REF, safe='')}"
    params = {"AccountSid": SID, "MessageStatus": "delivered"}  # no MessageSid/SmsSid
    request = WebhookRequest(
        urlencode(params).encode(), {"x-twilio-signature": signature(TOKEN, f"{WEBHOOK}?{query}", params)}, query
    )
    with pytest.raises(WebhookRejected) as caught:
        adapter_for().parse_webhook(request)
    assert caught.value.status_code == 400


# --- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{"from_number": None}, {"messaging_service_sid": "MG" + "1" * 32}],
    ids=["neither", "both"],
)
def test_sender_must_be_exactly_one(overrides: dict[str, object]) -> None:
    raw = {k: v for k, v in (account() | overrides).items() if v is not None}
    with pytest.raises(AccountError) as caught:
        twilio.build("twilio-main", raw, UNUSED_HTTP, WEBHOOK)
    message = str(caught.value)
    assert message.startswith("twilio-main.")
    assert "from_number" in message and "messaging_service_sid" in message
    assert TOKEN not in message


def test_config_errors_name_each_field_and_hide_secrets() -> None:
    raw = {"type": "twilio", "auth_token": TOKEN, "from_number": SENDER, "rate": "fast", "sender": "x"}
    with pytest.raises(AccountError) as caught:
        twilio.build("twilio-main", raw, UNUSED_HTTP, WEBHOOK)
    message = str(caught.value)
    for field in ("twilio-main.account_sid:", "twilio-main.rate:", "twilio-main.sender:"):
        assert field in message
    assert TOKEN not in message and "fast" not in message


# --- the fake's callbacks end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize(("phone", "final"), [("+79990002233", "delivered"), ("+79990002239", "undelivered")])
async def test_fake_posts_signed_callbacks_the_adapter_accepts(phone: str, final: str) -> None:
    """Fake → receiver over HTTP → WebhookRequest → parse_webhook: the path an end-to-end mailing takes."""
    reports: list[ParsedReport] = []
    refusals: list[int] = []
    receiver_port = free_port()
    webhook_url = f"http://127.0.0.1:{receiver_port}/webhooks/twilio-main"
    receiver = FastAPI()
    adapters: list[twilio.TwilioAdapter] = []

    @receiver.post("/webhooks/twilio-main")
    async def receive(request: Request) -> Response:
        incoming = webhook_request(request, await request.body())
        try:
            reports.extend(adapters[0].parse_webhook(incoming))
        except WebhookRejected as exc:
            refusals.append(exc.status_code)
            return Response(status_code=exc.status_code)
        return Response(status_code=204)

    app, state = create_fake(SID, TOKEN, report_delay=0.05)
    fake_port = free_port()
    async with (
        running(app, "127.0.0.1", fake_port),
        running(receiver, "127.0.0.1", receiver_port),
        httpx.AsyncClient(timeout=5) as http,
    ):
        adapters.append(twilio.build("twilio-main", account(f"http://127.0.0.1:{fake_port}"), http, webhook_url))
        result = await adapters[0].send(sms(phone=phone, ref=f"spring/{phone}/2"))
        for _ in range(100):
            if len(reports) >= 2:
                break
            await asyncio.sleep(0.05)

    assert refusals == []
    expected_final = MessageStatus.DELIVERED if final == "delivered" else MessageStatus.UNDELIVERED
    assert [(r.client_ref, r.status, r.message_id) for r in reports] == [
        (f"spring/{phone}/2", MessageStatus.SENT, result.message_id),
        (f"spring/{phone}/2", expected_final, result.message_id),
    ]
    assert reports[1].error == (None if final == "delivered" else "ErrorCode 30003")
    assert result.message_id is not None
    assert state.messages[result.message_id].callbacks_sent == ["sent", final]
    assert [c.status_code for c in state.callbacks] == [204, 204]
    assert {c.url for c in state.callbacks} == {f"{webhook_url}?ref={quote(f'spring/{phone}/2', safe='')}"}


async def test_fake_retries_a_refused_callback() -> None:
    """A receiver that fails once gets the same signed callback again (as Twilio and the sandbox retry)."""
    seen: list[int] = []
    receiver = FastAPI()

    @receiver.post("/cb")
    async def receive() -> Response:
        seen.append(1)
        return Response(status_code=503 if len(seen) == 1 else 200)

    app, state = create_fake(SID, TOKEN, report_delay=0.01)
    fake_port, receiver_port = free_port(), free_port()
    async with (
        running(app, "127.0.0.1", fake_port),
        running(receiver, "127.0.0.1", receiver_port),
        httpx.AsyncClient(timeout=5) as http,
    ):
        adapter = twilio.build(
            "t", account(f"http://127.0.0.1:{fake_port}"), http, f"http://127.0.0.1:{receiver_port}/cb"
        )
        await adapter.send(sms())
        for _ in range(100):
            if len(state.callbacks) >= 3:
                break
            await asyncio.sleep(0.05)
    assert [c.status_code for c in state.callbacks[:3]] == [503, 200, 200]
    assert state.callbacks[0].params == state.callbacks[1].params
    assert state.callbacks[0].signature == state.callbacks[1].signature


# --- WhatsApp template messages --------------------------------------------------------------------------------

CONTENT_SID = "HX" + "0123456789abcdef" * 2
WA_SENDER = "+15005550006"


def whatsapp(
    phone: str = "+79990002233", name: str = "order_update", parameters: list[str] | None = None, ref: str = REF
) -> SendRequest:
    template = WhatsAppTemplate(
        name=name, language="ru", parameters=["Анна", "42"] if parameters is None else parameters
    )
    return SendRequest(
        client_ref=ref,
        provider="twilio-main",
        channel=Channel.WHATSAPP,
        phone=phone,
        sender=WA_SENDER,
        text="",
        template=template,
        ttl=timedelta(minutes=30),
    )


def wa_account(base_url: str) -> dict[str, object]:
    return account(base_url, whatsapp_templates={"order_update": CONTENT_SID})


async def test_whatsapp_template_posts_the_documented_request(env: Env) -> None:
    adapter = twilio.build("twilio-main", wa_account(env.base_url), env.http, WEBHOOK)
    result = await adapter.send(whatsapp())
    assert result.rejected is None and result.message_id is not None
    [request] = env.state.requests
    assert request.form == {
        "To": "whatsapp:+79990002233",
        "From": f"whatsapp:{WA_SENDER}",
        "ContentSid": CONTENT_SID,
        "ContentVariables": '{"1": "Анна", "2": "42"}',
        "StatusCallback": f"{WEBHOOK}?ref=spring%2F%2B79990002233%2F1",
        "ValidityPeriod": "1800",
    }
    message = env.state.messages[result.message_id]
    assert (message.content_sid, message.content_variables) == (CONTENT_SID, {"1": "Анна", "2": "42"})


async def test_whatsapp_template_without_parameters_sends_no_variables(env: Env) -> None:
    adapter = twilio.build("twilio-main", wa_account(env.base_url), env.http, WEBHOOK)
    assert (await adapter.send(whatsapp(parameters=[]))).message_id is not None
    assert "ContentVariables" not in env.state.requests[-1].form and "Body" not in env.state.requests[-1].form


async def test_whatsapp_template_not_mapped_is_refused_by_name_without_a_request(env: Env) -> None:
    adapter = twilio.build("twilio-main", wa_account(env.base_url), env.http, WEBHOOK)
    result = await adapter.send(whatsapp(name="spring_sale"))
    assert result.rejected is not None and "'spring_sale'" in result.rejected
    assert "whatsapp_templates" in result.rejected and "order_update" in result.rejected
    assert env.state.requests == []


async def test_the_fake_refuses_freeform_whatsapp_and_mixed_channels(env: Env) -> None:
    auth = (SID, TOKEN)
    url = f"{env.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    freeform = {"To": "whatsapp:+79990002233", "From": f"whatsapp:{WA_SENDER}", "Body": "Hi"}
    mixed = {"To": "whatsapp:+79990002233", "From": WA_SENDER, "ContentSid": CONTENT_SID}
    bad_variables = freeform | {"ContentSid": CONTENT_SID, "ContentVariables": "[1]"}
    codes = [(await env.http.post(url, data=form, auth=auth)).json()["code"] for form in (freeform, mixed)]
    codes.append((await env.http.post(url, data=bad_variables, auth=auth)).json()["code"])
    assert codes == [63016, 21910, 21656]


def test_content_sids_are_checked_in_the_config() -> None:
    with pytest.raises(AccountError) as caught:
        twilio.build("twilio-main", account(whatsapp_templates={"order_update": "nope"}), UNUSED_HTTP, WEBHOOK)
    assert "order_update" in str(caught.value)


def test_whatsapp_callback_with_channel_addresses_maps_read() -> None:
    extra = {"To": "whatsapp:+79990002233", "From": f"whatsapp:{WA_SENDER}", "ChannelPrefix": "whatsapp"}
    [report] = adapter_for().parse_webhook(callback("read", extra=extra))
    assert (report.status, report.client_ref) == (MessageStatus.READ, REF)


@pytest.mark.parametrize(
    ("phone", "statuses"),
    [
        ("+79990002233", ["sent", "delivered", "read"]),
        ("+79990002235", ["sent", "delivered"]),
        ("+79990002237", ["sent", "failed"]),
    ],
)
async def test_fake_whatsapp_callbacks_follow_the_sandbox_rules(phone: str, statuses: list[str]) -> None:
    """The fake reports WhatsApp as the sandbox table says (0-3 read, 5 delivered unread, 7 not a user)."""
    reports: list[ParsedReport] = []
    receiver_port = free_port()
    webhook_url = f"http://127.0.0.1:{receiver_port}/webhooks/twilio-main"
    receiver = FastAPI()
    adapters: list[twilio.TwilioAdapter] = []

    @receiver.post("/webhooks/twilio-main")
    async def receive(request: Request) -> Response:
        reports.extend(adapters[0].parse_webhook(webhook_request(request, await request.body())))
        return Response(status_code=204)

    app, state = create_fake(SID, TOKEN, report_delay=0.02)
    fake_port = free_port()
    async with (
        running(app, "127.0.0.1", fake_port),
        running(receiver, "127.0.0.1", receiver_port),
        httpx.AsyncClient(timeout=5) as http,
    ):
        adapters.append(twilio.build("twilio-main", wa_account(f"http://127.0.0.1:{fake_port}"), http, webhook_url))
        result = await adapters[0].send(whatsapp(phone=phone))
        for _ in range(100):
            if len(reports) >= len(statuses):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
    assert result.message_id is not None
    assert state.messages[result.message_id].callbacks_sent == statuses
    assert [c.params["ChannelToAddress"] for c in state.callbacks] == [phone] * len(statuses)
    assert all(c.params["To"] == f"whatsapp:{phone}" for c in state.callbacks)
    ours = {"sent": MessageStatus.SENT, "delivered": MessageStatus.DELIVERED, "read": MessageStatus.READ}
    assert [r.status for r in reports] == [ours.get(s, MessageStatus.UNDELIVERED) for s in statuses]
    if statuses[-1] == "failed":
        assert reports[-1].error == "ErrorCode 63024"
