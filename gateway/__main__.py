"""`python -m gateway`: run the webhook gateway on its own (production; the dev stack runs it in-process)."""

from __future__ import annotations

import asyncio

import httpx

from gateway.app import create_gateway
from ledger.store import Ledger
from providers.accounts import AccountError
from providers.registry import build_registry
from runtime.logs import configure_logging
from runtime.servers import serve
from runtime.settings import Settings, SettingsError
from runtime.temporal import connect


async def main() -> None:
    settings = Settings()
    settings.webhook_key()  # before anything connects: no secret, no gateway
    client = await connect(settings, lazy=True)
    async with httpx.AsyncClient() as http:
        app = create_gateway(client, build_registry(settings, http), Ledger(settings.ledger_url))
        await serve(app, settings.gateway_host, settings.gateway_port)


if __name__ == "__main__":
    configure_logging()
    try:
        asyncio.run(main())
    except (
        AccountError,
        SettingsError,
    ) as exc:  # a provider account that cannot be used: say which field, not a traceback
        raise SystemExit(f"error: {exc}") from None
