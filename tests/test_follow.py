"""`starter.py start --wait` rides out a Temporal outage: the chaos case where the dev server is killed and
restarted on its SQLite file while the CLI follows a mailing.

The end-to-end test runs every piece as a real process (dev server, worker, sandbox, gateway, CLI) so the
server can be SIGKILLed as in production. Its outage lasts longer than the SDK's own retries of a call
(`temporalio.service.RetryConfig`: ~10 s): a shorter one is absorbed inside the SDK and tests nothing here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import cast

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

import starter
from domain.models import MailingSummary
from runtime.devstack import SQLITE_PRAGMAS, private_settings, temporal_binary
from runtime.settings import Settings
from runtime.temporal import connect
from workflows import search_attributes
from workflows.mailing import MailingWorkflow

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = [f"+799900000{i:02d}" for i in range(20)]  # the two ending in 9: SMS undelivered
OUTAGE = 13.0  # seconds the server stays down: past the SDK's ~10 s of retries, so `follow` must cope
SUMMARY = MailingSummary(mailing_id="m", name="M", status="completed", recipients={"valid": 1})
Handle = WorkflowHandle[MailingWorkflow, MailingSummary]


def unavailable() -> RPCError:
    return RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b"")


class FlakyHandle:
    """A workflow handle whose calls fail as the SDK's do while the server is down for `down` calls."""

    def __init__(self, down: int, error: RPCError | None = None) -> None:
        self.down, self.error, self.calls = down, error or unavailable(), 0
        self.id = "mailing-m"

    async def _call(self) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise self.error

    async def result(self) -> MailingSummary:
        await self._call()
        await asyncio.sleep(0.3)  # a few progress ticks
        return SUMMARY

    async def describe(self) -> None:
        await self._call()

    async def query(self, _query: object) -> MailingSummary:
        await self._call()
        return SUMMARY.model_copy(update={"status": "running"})


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starter, "RETRY_MAX_PAUSE", 0.01)


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("quiet", [True, False])
async def test_follow_reissues_the_result_wait_after_an_outage_and_says_so_once(
    quiet: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = FlakyHandle(down=4)
    assert await starter.follow(cast(Handle, handle), quiet=quiet) == SUMMARY
    err = capsys.readouterr().err
    assert err.count("Temporal unreachable (tcp connect error); retrying") == 1, err
    assert err.count("Temporal reachable again") == 1, err
    assert "progress unavailable" not in err


@pytest.mark.usefixtures("quick_retries")
async def test_follow_gives_up_after_the_limit_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(starter.CliError, match=r"^Temporal unreachable for 0s \(tcp connect error\); stopped"):
        await starter.follow(cast(Handle, FlakyHandle(down=10**6)), quiet=True, reconnect_for=timedelta(0))
    assert capsys.readouterr().err.count("Temporal unreachable") == 1


@pytest.mark.usefixtures("quick_retries")
async def test_follow_turns_other_rpc_errors_into_one_line() -> None:
    gone = RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
    with pytest.raises(starter.CliError, match=r"^cannot follow mailing workflow mailing-m: workflow not found$"):
        await starter.follow(cast(Handle, FlakyHandle(down=1, error=gone)), quiet=True)


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


class DevServer:
    """`temporal server start-dev` on a SQLite file, as `runtime.devstack` runs it, but as a process of our own
    so that it can be killed (no graceful shutdown) and started again on the same file and port."""

    def __init__(self, settings: Settings, log: Path) -> None:
        host, _, port = settings.temporal_address.rpartition(":")
        self.settings, self.log = settings, log
        attributes = [f"{key.name}={key._metadata_type}" for key in search_attributes.ALL]
        self.args = [
            *("server", "start-dev", "--headless", "--ip", host, "--port", port, "--log-level", "warn"),
            *("--namespace", settings.temporal_namespace, "--db-filename", str(settings.dev_db_file)),
            *(arg for attribute in attributes for arg in ("--search-attribute", attribute)),
            *SQLITE_PRAGMAS,
        ]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(temporal_binary(), *self.args, stdout=out, stderr=out)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), timeout=10)

    async def ready(self, within: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            assert self.process is not None and self.process.returncode is None, log_text(self.log)
            try:
                await connect(self.settings)
                return
            except RuntimeError:
                assert asyncio.get_running_loop().time() < deadline, "no Temporal:\n" + log_text(self.log)
                await asyncio.sleep(0.2)


async def until_healthy(url: str, process: asyncio.subprocess.Process, log: Path, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            assert process.returncode is None, log_text(log)
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"{url} did not answer\n" + log_text(log)
            await asyncio.sleep(0.2)


@asynccontextmanager
async def stack(folder: Path) -> AsyncIterator[tuple[DevServer, dict[str, str]]]:
    """Dev server, worker, sandbox and gateway as separate processes; all stopped at the end, whatever happens."""
    settings = private_settings(folder, f"kaskad-follow-{uuid.uuid4().hex[:6]}", webhook_secret=SecretStr("s"))
    env = {"PATH": str(Path(sys.executable).parent), **settings.process_env()}
    server = DevServer(settings, folder / "temporal.log")
    started: list[asyncio.subprocess.Process] = []
    try:
        await server.start()
        await server.ready()
        processes = {"worker": ["worker.py"], "sandbox": ["-m", "sandbox"], "gateway": ["-m", "gateway"]}
        for name, command in processes.items():
            with (folder / f"{name}.log").open("ab") as out:
                started.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, *command, cwd=ROOT, env=env, stdout=out, stderr=out
                    )
                )
        await until_healthy(f"{settings.sandbox_base_url}/healthz", started[1], folder / "sandbox.log")
        await until_healthy(f"{settings.webhook_base_url}/healthz", started[2], folder / "gateway.log")
        yield server, env
    finally:
        for process in started:
            if process.returncode is None:
                process.kill()
            await process.wait()
        await server.kill()


@pytest.mark.e2e
async def test_start_wait_follows_the_mailing_across_a_server_restart(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'name = "Restart"\nnumbers = {json.dumps(NUMBERS)}\nspeed = "2/s"\nlate_reports = "1s"\n'
        '[schedule]\nhours = "00:00-24:00"\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "3s"\n',
        encoding="utf-8",
    )
    mailing_id = f"follow-{uuid.uuid4().hex[:6]}"
    async with stack(tmp_path) as (server, env):
        cli = await asyncio.create_subprocess_exec(
            *(sys.executable, str(ROOT / "starter.py"), "start", str(spec), "--id", mailing_id, "--wait"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert cli.stdout is not None and cli.stderr is not None
        err_lines: list[str] = []
        running = asyncio.Event()

        async def read_stderr(stream: asyncio.StreamReader) -> None:
            while line := (await stream.readline()).decode():
                err_lines.append(line)
                if " running: " in line:
                    running.set()

        reader = asyncio.create_task(read_stderr(cli.stderr))
        out = asyncio.create_task(cli.stdout.read())
        try:
            # Kill the server while the mailing runs: recipients are being started and sent to.
            await asyncio.wait([asyncio.create_task(running.wait()), reader], timeout=60, return_when="FIRST_COMPLETED")
            assert running.is_set(), "the mailing did not run:\n" + "".join(err_lines)
            await server.kill()
            killed_at = len(err_lines)
            await asyncio.sleep(OUTAGE)
            await server.start()
            try:
                await asyncio.wait_for(cli.wait(), timeout=90)
            except TimeoutError:
                raise AssertionError("the CLI did not end:\n" + "".join(err_lines)) from None
            await reader
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
        stderr, stdout = "".join(err_lines), (await out).decode()

    assert "Traceback" not in stderr, stderr
    assert cli.returncode == 0, stderr
    assert f"mailing {mailing_id} (Restart): completed" in stdout, stdout + stderr
    assert "started: 20 of 20" in stdout, stdout
    after = err_lines[killed_at:]
    down = [i for i, line in enumerate(after) if line.startswith("Temporal unreachable (")]
    assert len(down) == 1, stderr  # once per outage, not on every retry
    assert any(" running: " in line or " completed" in line for line in after[down[0] :]), stderr  # progress again
