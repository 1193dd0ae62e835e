"""Placeholder until the vonage adapter lands (being written now)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from providers.base import ProviderAdapter


def build(name: str, raw: Mapping[str, Any], http: httpx.AsyncClient, webhook_url: str) -> ProviderAdapter:
    raise NotImplementedError("vonage adapter")
