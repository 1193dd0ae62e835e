"""`python -m sandbox`: run the sandbox provider on its own (the dev stack runs it in-process)."""

from __future__ import annotations

import asyncio

from runtime.logs import configure_logging
from runtime.servers import serve
from runtime.settings import Settings, SettingsError
from sandbox.app import SandboxConfig, create_app

if __name__ == "__main__":
    configure_logging()
    settings = Settings()
    try:
        config = SandboxConfig(settings.webhook_key(), settings.sandbox_report_delay)
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None
    asyncio.run(serve(create_app(config), settings.sandbox_host, settings.sandbox_port))
