"""Builds the provider adapters by account name: the built-in sandbox, and the accounts of the providers file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from domain.spec import ProviderAccount
from domain.status import Channel
from providers import infobip, rapporto, twilio, vonage
from providers.accounts import AccountError, load_accounts
from providers.base import ProviderAdapter
from providers.prices import PriceBook, parse_prices
from providers.sandbox import SandboxAdapter
from runtime.settings import Settings

# type → build(account name, account table, http client, webhook URL) → adapter
ADAPTER_TYPES: dict[str, Callable[[str, Mapping[str, Any], httpx.AsyncClient, str], ProviderAdapter]] = {
    "vonage": vonage.build,
    "infobip": infobip.build,
    "twilio": twilio.build,
    "rapporto": rapporto.build,
}
# The accounts of a deployment without a providers file: the built-in sandbox only.
SANDBOX_ONLY = {"sandbox": ProviderAccount(SandboxAdapter.provider_type, SandboxAdapter.channels)}
# type → the channels its adapter class declares (what the launch checks read without building adapters)
CHANNELS_BY_TYPE: dict[str, frozenset[Channel]] = {
    SandboxAdapter.provider_type: SandboxAdapter.channels,
    vonage.VonageAdapter.provider_type: vonage.VonageAdapter.channels,
    infobip.InfobipAdapter.provider_type: infobip.InfobipAdapter.channels,
    twilio.TwilioAdapter.provider_type: twilio.TwilioAdapter.channels,
    rapporto.RapportoAdapter.provider_type: rapporto.RapportoAdapter.channels,
}


def build_registry(settings: Settings, http: httpx.AsyncClient) -> dict[str, ProviderAdapter]:
    """Every adapter this deployment can send through, keyed by the name a spec uses."""
    webhooks = f"{settings.webhook_base_url}/webhooks"
    registry: dict[str, ProviderAdapter] = {
        "sandbox": SandboxAdapter(
            http,
            settings.sandbox_base_url,
            f"{webhooks}/sandbox",
            settings.webhook_key(),
            deduplicates=settings.sandbox_deduplicates,
        ),
    }
    for name, account in accounts(settings).items():
        build = ADAPTER_TYPES.get(str(account["type"]))
        if build is None:
            raise AccountError(f"{name}.type: {account['type']!r} is not one of {', '.join(ADAPTER_TYPES)}")
        adapter_config = {key: value for key, value in account.items() if key != "price"}  # see price_book
        registry[name] = build(name, adapter_config, http, f"{webhooks}/{name}")
    return registry


def accounts(settings: Settings) -> dict[str, dict[str, Any]]:
    return load_accounts(settings.providers_file) if settings.providers_file else {}


def launch_accounts(settings: Settings) -> dict[str, ProviderAccount]:
    """Each account a spec may name (the sandbox always), with its type and channels: what the CLI's launch
    checks (`MailingSpec.launch_problems`) compare each step against."""
    found = dict(SANDBOX_ONLY)
    for name, account in accounts(settings).items():
        kind = str(account["type"])
        if kind not in ADAPTER_TYPES:
            raise AccountError(f"{name}.type: {account['type']!r} is not one of {', '.join(ADAPTER_TYPES)}")
        found[name] = ProviderAccount(kind, CHANNELS_BY_TYPE[kind])
    return found


def registry_accounts(providers: Mapping[str, ProviderAdapter]) -> dict[str, ProviderAccount]:
    """The same, from the adapters a worker built: what its import activity checks a mailing against."""
    return {name: ProviderAccount(adapter.provider_type, adapter.channels) for name, adapter in providers.items()}


def price_book(settings: Settings) -> PriceBook:
    """Every configured price: each account's `price` table, and the sandbox's from KASKAD_SANDBOX_PRICES."""
    prices = {"sandbox": parse_prices(settings.sandbox_prices, "KASKAD_SANDBOX_PRICES")}
    for name, account in accounts(settings).items():
        if account.get("price") is not None:
            prices[name] = parse_prices(account["price"], f"{name}.price")
    return PriceBook(prices, settings.currency)


def provider_rates(settings: Settings) -> dict[str, float]:
    """Messages per second per account: the account's `rate`, else KASKAD_PROVIDER_RATES, else the default."""
    rates = {name: float(a["rate"]) for name, a in accounts(settings).items() if a.get("rate") is not None}
    return rates | settings.provider_rates  # the environment overrides the file
