"""Builds the configured provider adapters by name."""

from __future__ import annotations

import httpx

from providers.base import ProviderAdapter
from providers.sandbox import SandboxAdapter
from runtime.settings import Settings


def build_registry(settings: Settings, http: httpx.AsyncClient) -> dict[str, ProviderAdapter]:
    """Every adapter this deployment can send through, keyed by the name a spec uses."""
    webhook = f"{settings.webhook_base_url}/webhooks"
    secret = settings.webhook_secret.get_secret_value()
    return {
        "sandbox": SandboxAdapter(http, settings.sandbox_base_url, f"{webhook}/sandbox", secret),
    }
