"""What several adapters need alike: account validation, Retry-After, URL-secret webhooks, IP allow-lists."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from domain.channels import UnsupportedChannel, definition
from domain.models import SendRequest, SendResult
from domain.status import Channel
from providers.accounts import AccountError
from providers.base import ProviderAdapter, ProviderUnavailable, WebhookRejected, WebhookRequest
from runtime.logs import log_safe

Config = TypeVar("Config", bound=BaseModel)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def validate_account(model: type[Config], name: str, raw: Mapping[str, Any], whole: str = "account") -> Config:
    """The account table as `model`; AccountError names every bad `account.field`, never its value (a secret,
    perhaps). `whole` names a rule about several fields (a model-level validator)."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [
            f"{name}.{'.'.join(str(part) for part in error['loc']) or whole}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise AccountError("; ".join(problems)) from None


def unsupported_channel(provider_type: str, channels: frozenset[Channel], channel: Channel) -> UnsupportedChannel:
    """The error for a channel an adapter has no message shape for (never sent as another channel)."""
    sends = ", ".join(sorted(c.value for c in channels))
    return UnsupportedChannel(f"{provider_type} does not send {channel.value} (it sends: {sends})")


def channel_refusal(adapter: ProviderAdapter, request: SendRequest) -> SendResult | None:
    """A permanent refusal when the adapter does not send the request's channel, else None. The launch checks
    refuse such a step; a mailing started past them (another client) still never sends it as something else."""
    if request.channel in adapter.channels:
        if definition(request.channel).takes_template and request.template is None:  # the spec requires one
            return SendResult(rejected=f"a {request.channel.value} message needs its approved template")
        return None
    return SendResult(rejected=str(unsupported_channel(adapter.provider_type, adapter.channels, request.channel)))


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def check_networks(values: list[str]) -> list[str]:
    """A pydantic validator for `allowed_ips`: every entry an IP address or a CIDR network."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return values


def ip_allowed(client_ip: str | None, networks: Sequence[Network]) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def with_secret(url: str, secret: str) -> str:
    """The callback URL with `secret=…` in its query: how providers that do not sign reports are authenticated."""
    return f"{url}{'&' if '?' in url else '?'}secret={quote(secret, safe='')}"


def authenticate_by_url_secret(request: WebhookRequest, secret: str, allowed_ips: Sequence[str]) -> None:
    """The `secret` query parameter (compared in constant time) and, when configured, the source address."""
    given = request.query_params().get("secret", "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise WebhookRejected(401, "missing or wrong secret")
    networks = [ipaddress.ip_network(value, strict=False) for value in allowed_ips]
    if networks and not ip_allowed(request.client_ip, networks):
        raise WebhookRejected(401, "source address not in allowed_ips")


def bad_fields(exc: ValidationError) -> str:
    """The fields a validation error names (not their values, which may hold phone numbers), bounded."""
    fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
    return log_safe(", ".join(fields) or "body", 100)


def load_json(body: bytes, what: str) -> Any:
    """The body as JSON, or WebhookRejected(400): not JSON, not UTF-8, or nested past the recursion limit.

    RecursionError is no ValueError; left alone, a 100,000-deep array became a 500 the provider retried."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WebhookRejected(400, f"not {what}: body is not JSON ({type(exc).__name__})") from None


# Server errors after which the message may exist all the same; 429 and 503 say it was not taken.
MAY_HAVE_ARRIVED = frozenset({500, 502, 504})


def raise_if_worth_retrying(response: httpx.Response, account: str, provider: str, credentials: str) -> None:
    """429 and 5xx: the provider is busy or down, retry after `Retry-After`. 401/403: a configuration problem
    (`credentials` names what to check) — retried too, so sending resumes once it is fixed."""
    code = response.status_code
    if code == 429 or code >= 500:
        raise ProviderUnavailable(
            f"{account}: {provider} answered {code}",
            retry_after(response.headers.get("Retry-After")),
            may_have_arrived=code in MAY_HAVE_ARRIVED,
        )
    if code in (401, 403):
        raise ProviderUnavailable(
            f"{account}: credentials refused by {provider} ({code}); check {credentials}", account_refused=True
        )
