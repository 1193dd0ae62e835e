"""Provider accounts, configured outside the mailing spec: a TOML file named by KASKAD_PROVIDERS_FILE.

    [vonage-main]                     # the name a spec's `provider = "…"` uses
    type = "vonage"
    application_id = "…"
    private_key = "env:VONAGE_PRIVATE_KEY"   # "env:NAME" reads the value from the environment
    rate = 30                         # messages per second across all workers (optional)

Secrets stay in the worker and the gateway: workflows only ever see the account's name.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "env:"


class AccountError(ValueError):
    """A provider account that cannot be used; the message names the account and the field."""


def resolve_env(value: Any, where: str) -> Any:
    """`"env:NAME"` → the environment variable NAME (so secrets need not sit in the file)."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value.removeprefix(ENV_PREFIX)
        if name not in os.environ:
            raise AccountError(f"{where}: environment variable {name} is not set")
        return os.environ[name]
    return value


def load_accounts(path: Path) -> dict[str, dict[str, Any]]:
    """Every account table of the file, `env:` values resolved."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AccountError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AccountError(f"{path}: not valid TOML: {exc}") from exc
    accounts: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        if not isinstance(table, Mapping) or "type" not in table:
            raise AccountError(f"{path}: [{name}] needs a `type` (vonage, infobip, twilio, rapporto)")
        accounts[name] = {key: resolve_env(value, f"{name}.{key}") for key, value in table.items()}
    return accounts
