"""Issue 10: no usable default webhook secret. Outside the embedded stack the processes refuse to start
without one; the embedded stack makes up its own per run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.devstack import Stack, private_settings
from runtime.servers import free_port
from runtime.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
OLD_PUBLIC_DEFAULT = "sandbox-webhook-secret"


@pytest.mark.parametrize("command", [["-m", "gateway"], [str(ROOT / "worker.py")], ["-m", "sandbox"]])
def test_a_process_without_the_secret_does_not_start_and_names_it(command: list[str], tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(ROOT),
        "KASKAD_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens: it must not matter
        "KASKAD_GATEWAY_PORT": str(free_port()),
        "KASKAD_SANDBOX_PORT": str(free_port()),
    }
    try:  # cwd without a .env: the secret cannot come from anywhere
        done = subprocess.run(
            [sys.executable, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} started without KASKAD_WEBHOOK_SECRET")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: KASKAD_WEBHOOK_SECRET is not set"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_an_empty_or_blank_secret_is_not_set(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASKAD_WEBHOOK_SECRET", value)
    settings = Settings(_env_file=None)
    with pytest.raises(SettingsError, match="KASKAD_WEBHOOK_SECRET is not set"):
        settings.webhook_key()
    assert "KASKAD_WEBHOOK_SECRET" not in settings.process_env()


def test_a_blank_secret_is_made_up_by_the_embedded_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASKAD_WEBHOOK_SECRET", "  ")
    assert len(private_settings(tmp_path, "q").webhook_key()) >= 32


def test_the_old_public_default_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASKAD_WEBHOOK_SECRET", OLD_PUBLIC_DEFAULT)
    with pytest.raises(SettingsError, match="KASKAD_WEBHOOK_SECRET is the old public default"):
        Settings(_env_file=None).webhook_key()


def test_a_gateway_with_a_blank_secret_does_not_start(tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(ROOT),
        "KASKAD_WEBHOOK_SECRET": " ",
        "KASKAD_GATEWAY_PORT": str(free_port()),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the gateway started with a blank KASKAD_WEBHOOK_SECRET")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: KASKAD_WEBHOOK_SECRET is not set"), done.stderr


def test_two_embedded_stacks_make_up_different_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KASKAD_WEBHOOK_SECRET", raising=False)
    first, second = (private_settings(tmp_path / name, name) for name in ("a", "b"))
    keys = {first.webhook_key(), second.webhook_key()}
    assert len(keys) == 2 and OLD_PUBLIC_DEFAULT not in keys
    assert first.process_env()["KASKAD_WEBHOOK_SECRET"] == first.webhook_key()  # CLI children get it


def test_a_set_secret_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASKAD_WEBHOOK_SECRET", "from-the-environment")
    assert private_settings(tmp_path, "q").webhook_key() == "from-the-environment"


@pytest.mark.e2e
def test_the_running_stack_uses_a_random_secret(stack: Stack) -> None:
    assert stack.settings.webhook_secret is not None
    assert len(stack.settings.webhook_key()) >= 32 and stack.settings.webhook_key() != OLD_PUBLIC_DEFAULT
