"""The one place for configuration: environment variables prefixed `KASKAD_` (or a `.env` file)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The default this setting had before it had none: public, so anyone could sign reports with it.
OLD_PUBLIC_SECRET = "sandbox-webhook-secret"


class SettingsError(ValueError):
    """A setting kaskad cannot run without is missing; entry points print it as one `error:` line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KASKAD_", env_file=".env", extra="ignore")

    # Temporal: the embedded dev server by default; a cluster or Temporal Cloud by address + namespace + key.
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    temporal_ui_url: str = "http://localhost:8233"
    task_queue: str = "kaskad"

    # Where imported recipient lists are stored; every worker must see the same folder.
    data_dir: Path = Path(".kaskad/data")

    # Webhook gateway: where it listens, and the URL providers are told to post reports to.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_public_url: str | None = None
    # No default: a default in the code is public, and would let anyone forge the sandbox's delivery reports.
    # The embedded stack (runtime.devstack) makes up a random one per run when none is set.
    webhook_secret: SecretStr | None = None

    # Provider accounts (Vonage, Infobip, Twilio, Rapporto): a TOML file, see providers/accounts.py.
    providers_file: Path | None = None

    # Per-provider throughput caps, messages per second across all workers (enforced by the Temporal server on
    # each provider's send task queue), e.g. KASKAD_PROVIDER_RATES='{"sandbox": 100}'.
    provider_rates: dict[str, float] = {}
    default_provider_rate: float = 100.0

    # Built-in sandbox provider.
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = 8090
    sandbox_url: str | None = None
    sandbox_report_delay: float = 0.2
    # Whether kaskad may count on the sandbox de-duplicating a retried send by its client reference (it does).
    # False makes kaskad treat it like Twilio or Vonage — at most once, never a resend it cannot prove safe —
    # which is how benchmarks/chaos.py measures that path.
    sandbox_deduplicates: bool = True

    # Prices (optional): the sandbox's per channel (SMS per part), e.g. '{"sms": 2.35, "viber": 0.95}'; other
    # accounts' in the providers file. Reports and `estimate` show costs in this currency.
    sandbox_prices: dict[str, float] = {}
    currency: str = "RUB"

    # The ledger: the record of every mailing and message. Default: a SQLite file in data_dir; production: a
    # PostgreSQL URL, e.g. postgresql://kaskad@db/kaskad.
    database_url: str | None = None

    # Embedded dev server.
    dev_db_file: Path = Path(".kaskad/temporal.db")
    dev_ui_port: int = 8233

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty or blank secret is no secret (an HMAC with an empty key is forgeable): treated as unset."""
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    def webhook_key(self) -> str:
        """The secret that signs the sandbox's reports; the worker, gateway and sandbox refuse to start without."""
        if self.webhook_secret is None:
            raise SettingsError("KASKAD_WEBHOOK_SECRET is not set: the secret that authenticates delivery reports")
        key = self.webhook_secret.get_secret_value()
        if key == OLD_PUBLIC_SECRET:
            raise SettingsError(
                f"KASKAD_WEBHOOK_SECRET is the old public default {OLD_PUBLIC_SECRET!r}: anyone could forge delivery "
                "reports with it; set a random one (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return key

    def process_env(self) -> dict[str, str]:
        """Environment that points another kaskad process (a CLI, a second worker) at this stack."""
        secret = {"KASKAD_WEBHOOK_SECRET": self.webhook_secret.get_secret_value()} if self.webhook_secret else {}
        return secret | {
            "KASKAD_TEMPORAL_ADDRESS": self.temporal_address,
            "KASKAD_TASK_QUEUE": self.task_queue,
            "KASKAD_DATA_DIR": str(self.data_dir),
            "KASKAD_DATABASE_URL": self.ledger_url,
            "KASKAD_GATEWAY_PORT": str(self.gateway_port),
            "KASKAD_SANDBOX_PORT": str(self.sandbox_port),
            "KASKAD_PROVIDER_RATES": json.dumps(self.provider_rates),
            "KASKAD_SANDBOX_DEDUPLICATES": str(self.sandbox_deduplicates).lower(),
        }

    @property
    def ledger_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ledger.sqlite3').resolve()}"

    @property
    def webhook_base_url(self) -> str:
        return (self.gateway_public_url or f"http://{self.gateway_host}:{self.gateway_port}").rstrip("/")

    @property
    def sandbox_base_url(self) -> str:
        return (self.sandbox_url or f"http://{self.sandbox_host}:{self.sandbox_port}").rstrip("/")
