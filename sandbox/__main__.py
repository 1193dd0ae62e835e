"""`python -m sandbox`: run the sandbox provider on its own (the dev stack runs it in-process)."""

from __future__ import annotations

import asyncio

from runtime.servers import serve
from runtime.settings import Settings
from sandbox.app import SandboxConfig, create_app

if __name__ == "__main__":
    settings = Settings()
    config = SandboxConfig(settings.webhook_secret.get_secret_value(), settings.sandbox_report_delay)
    asyncio.run(serve(create_app(config), settings.sandbox_host, settings.sandbox_port))
