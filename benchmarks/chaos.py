"""Chaos: under crashes, kaskad sends nothing twice, loses nobody and sends nothing after a cancel.

Every part runs as its own OS process on 127.0.0.1 (free ports, files in a temp folder that is kept, with one
log per process start): the Temporal dev server (SQLite file with the WAL pragmas and kaskad's search
attributes, as `starter.py dev` runs it), the sandbox provider, the webhook gateway and one `worker.py`.
All of them get `Settings.process_env()` and `KASKAD_SANDBOX_DEDUPLICATES=false`: the worker must treat the
sandbox like a provider that does not de-duplicate (the at-most-once path), while the sandbox itself still
de-duplicates and counts the requests per client reference.

Two mailings are started with `starter.py start SPEC --json`, both a Viber → SMS cascade with short waits:

* main:   `--recipients` numbers (last digits 0-9 in turn), as fast as the server goes;
* cancel: `--cancel-recipients` numbers at `--cancel-speed`, cancelled with `starter.py cancel` once the
          sandbox has seen a random 25-50 % of its first messages.

Meanwhile the worker is SIGKILLed `--kills` times and restarted after a short random delay, and the dev server
is SIGKILLed once and restarted on the same file and port — each at a random point (seeded: `--seed`) of the
main mailing's progress, (recipients started + recipients decided) / 2N, so the kills land in dispatch, sends
and waits alike. When both mailings have ended and every recipient workflow has closed, it checks:

* lost:          recipients of the main mailing whose outcome (cascade status, delivering channel) differs
                 from the sandbox's rule for their number (sandbox/outcomes.py), or whose workflow is
                 missing, or who lack a send the rule calls for (e.g. the SMS fallback);
* duplicates:    extra POSTs per client reference the sandbox counted (requests - 1), plus second messages
                 the rule forbids (an SMS although the sandbox got the Viber message and it delivers), in
                 both mailings;
* after cancel:  messages of the cancelled mailing the sandbox accepted after `starter.py cancel` returned
                 (no slack; those accepted while the command ran are shown as in flight).

Prints a table, writes the figures as JSON (`--out`), exits 0 when lost, duplicates and after-cancel are all
0, else 1 (also when the run itself fails or times out).

    .venv/bin/python benchmarks/chaos.py [--recipients 1000] [--kills 10] [--seed 1] [--out .kaskad/chaos.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import SecretStr
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from domain.refs import mailing_workflow_id, recipient_workflow_id
from domain.status import Channel, MessageStatus
from runtime.devstack import SQLITE_PRAGMAS, private_settings, temporal_binary
from runtime.servers import free_port
from runtime.settings import Settings
from sandbox.outcomes import planned_reports
from workflows import search_attributes

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# The cascade both mailings use: (channel, expected status), in order.
CASCADE = ((Channel.VIBER, MessageStatus.DELIVERED), (Channel.SMS, MessageStatus.DELIVERED))
RECIPIENT_WORKFLOW = "RecipientCascadeWorkflow"


# The packages and scripts a (re)started worker imports: if they change during the run, workers started
# later run other code than the first ones (other engineers editing the same tree), and the figures mix both.
SOURCES = ("activities", "domain", "gateway", "providers", "runtime", "sandbox", "workflows", "worker.py")


class ChaosError(RuntimeError):
    """The run itself could not be completed (a process did not come up, a wait timed out)."""


def now() -> float:
    return time.time()


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        path = ROOT / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


async def connect_quietly(address: str, namespace: str, runtime: Runtime) -> Client:
    """This script's own client: the SDK core logs every retry while the server is down (to stdout); the
    script retries by itself, so it runs without core logging."""
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter, runtime=runtime)


# --- the expected outcome -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    status: str  # cascade status: delivered | undelivered
    channel: str | None  # the delivering channel
    sends: frozenset[int]  # the steps that must be sent


def expected_outcome(phone: str) -> Expected:
    """What the cascade must end in for `phone`, from the sandbox's rule: each step is sent in turn until one's
    planned reports reach the status it expects."""
    sends: set[int] = set()
    for index, (channel, expect) in enumerate(CASCADE):
        sends.add(index)
        if any(report.reached(expect) for report in planned_reports(channel, phone)):
            return Expected("delivered", channel.value, frozenset(sends))
    return Expected("undelivered", None, frozenset(sends))


def numbers(count: int, base: int) -> list[str]:
    """Russian mobile numbers whose last digit runs 0-9 in turn (the sandbox's outcome depends on it)."""
    return [f"+7999{base + i:07d}" for i in range(count)]


def write_spec(folder: Path, name: str, phones: list[str], args: argparse.Namespace, speed: str | None) -> Path:
    (folder / f"{name}.txt").write_text("\n".join(phones) + "\n", encoding="utf-8")
    spec = folder / f"{name}.toml"
    speed_line = f'speed = "{speed}"\n' if speed else ""
    spec.write_text(
        f'name = "Chaos {name}"\nrecipients = "{name}.txt"\nlate_reports = "{args.late_reports}"\n{speed_line}'
        '[schedule]\nhours = "00:00-24:00"\n'
        f'[[steps]]\nchannel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "{args.viber_wait}"\n'
        'expect = "delivered"\n'
        f'[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "{args.sms_wait}"\n',
        encoding="utf-8",
    )
    return spec


# --- processes ------------------------------------------------------------------------------------------------


class Process:
    """One supervised OS process in a session of its own (so killing its group kills all of it), one log per
    start in the run's folder."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.argv, self.env, self.logs = name, argv, env, logs
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.down_on_purpose = False  # between a deliberate kill and the restart
        self.unplanned_exits: list[dict[str, Any]] = []
        self.log_files: list[Path] = []
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        self.starts += 1
        path = self.logs / f"{self.name}-{self.starts:02d}.log"
        self.log_files.append(path)
        if self._log is not None:
            self._log.close()
        self._log = path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.down_on_purpose = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        self.down_on_purpose = True
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def search_attribute_args() -> list[str]:
    """`--search-attribute Name=Type` for each of kaskad's attributes, as the dev server wants them."""
    args: list[str] = []
    for key in search_attributes.ALL:
        raw = IndexedValueType.Name(IndexedValueType.ValueType(key.indexed_value_type)).removeprefix(
            "INDEXED_VALUE_TYPE_"
        )
        args += ["--search-attribute", f"{key.name}={''.join(part.title() for part in raw.split('_'))}"]
    return args


def temporal_argv(settings: Settings) -> list[str]:
    host, _, port = settings.temporal_address.rpartition(":")
    return [
        temporal_binary(),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        host,
        "--port",
        port,
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--db-filename",
        str(settings.dev_db_file),
        "--log-format",
        "pretty",
        "--log-level",
        "warn",
        *search_attribute_args(),
        *SQLITE_PRAGMAS,
    ]


def child_env(settings: Settings, report_delay: float) -> dict[str, str]:
    """The environment of every child: no KASKAD_* or proxy variables of ours, the stack's settings, the
    sandbox declared non-deduplicating, and no proxy between the processes."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KASKAD_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    return (
        base
        | settings.process_env()
        | {
            "KASKAD_SANDBOX_DEDUPLICATES": "false",
            "KASKAD_SANDBOX_REPORT_DELAY": str(report_delay),
            "KASKAD_SANDBOX_HOST": "127.0.0.1",
            "KASKAD_GATEWAY_HOST": "127.0.0.1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )


async def eventually(what: str, check: Callable[[], Awaitable[bool]], limit: float, every: float = 0.25) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if await check():
                return
        except Exception:  # not up yet: any failure means try again
            pass
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def rpc(what: str, call: Callable[[], Awaitable[T]], limit: float = 180) -> T:
    """A Temporal call, retried while the server is away (it is restarted mid-run)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await call()
        except (RPCError, RuntimeError) as exc:
            if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
                raise
            if time.monotonic() > deadline:
                raise ChaosError(f"{what}: Temporal unavailable for {limit:.0f}s: {exc}") from exc
            await asyncio.sleep(1)


async def cli(env: dict[str, str], *args: str, limit: float = 120) -> tuple[int, str, str]:
    """Run `starter.py ARGS` as a user would; (exit code, stdout, stderr); 124 on timeout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "starter.py"),
        *args,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return 124, "", f"timed out after {limit:.0f}s"
    return process.returncode or 0, out.decode(), err.decode()


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    settings: Settings
    env: dict[str, str]
    folder: Path
    rng: random.Random
    http: httpx.AsyncClient
    server: Process
    worker: Process
    others: list[Process]
    runtime: Runtime = field(default_factory=lambda: Runtime(telemetry=TelemetryConfig(logging=None)))
    client: Client | None = None
    main_id: str = ""
    cancel_id: str = ""
    began: float = 0.0  # wall clock: the main mailing was started
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel: dict[str, Any] = field(default_factory=dict)
    closed_at: dict[str, float] = field(default_factory=dict)

    def log(self, message: str) -> None:
        stamp = f"{now() - self.began:7.1f}s" if self.began else "  setup"
        print(f"[{stamp}] {message}", file=sys.stderr, flush=True)

    @property
    def temporal(self) -> Client:
        assert self.client is not None
        return self.client

    async def sandbox_messages(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.settings.sandbox_base_url}/messages")
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()
        return messages

    async def server_up(self) -> None:
        async def healthy() -> bool:
            return await self.temporal.service_client.check_health()

        await eventually("the Temporal dev server", healthy, 120)

    async def bring_up(self) -> None:
        await self.server.start()
        port = self.settings.temporal_address.rpartition(":")[2]

        async def connected() -> bool:
            self.client = await connect_quietly(
                self.settings.temporal_address, self.settings.temporal_namespace, self.runtime
            )
            return True

        await eventually(f"the Temporal dev server on port {port}", connected, 120)
        await eventually(  # the search attributes are registered once a query on them is answered
            "kaskad's search attributes",
            lambda: self._counts("MailingId = 'none'"),
            60,
        )
        for process in self.others:
            await process.start()
        for name, url in (
            ("sandbox", self.settings.sandbox_base_url),
            ("gateway", self.settings.webhook_base_url),
        ):

            async def up(url: str = url) -> bool:
                return (await self.http.get(f"{url}/healthz")).status_code == 200

            await eventually(f"the {name}", up, 60)
        await self.worker.start()

    async def _counts(self, query: str) -> bool:
        await self.temporal.count_workflows(query)
        return True

    async def start_mailing(self, spec: Path, mailing_id: str) -> None:
        code, out, err = await cli(self.env, "start", str(spec), "--id", mailing_id, "--json")
        if code != 0 or out.strip() != mailing_id:
            raise ChaosError(f"starter.py start {spec.name} exited {code}: {err.strip()[-500:]}")

    # --- chaos ---------------------------------------------------------------------------------------------

    async def progress(self) -> float | None:
        """How far the main mailing is, 0..1: (recipients started + recipients decided) / (2 x recipients).
        None while visibility cannot be asked (the server is restarting)."""
        base = f"MailingId = '{self.main_id}' AND WorkflowType = '{RECIPIENT_WORKFLOW}'"
        decided = " OR ".join(f"CascadeStatus = '{s}'" for s in ("delivered", "undelivered", "not_sent"))
        try:
            started = (await self.temporal.count_workflows(base)).count
            finished = (await self.temporal.count_workflows(f"{base} AND ({decided})")).count
        except (RPCError, RuntimeError):
            return None
        return (started + finished) / (2 * int(self.args.recipients))

    async def chaos(self) -> None:
        """SIGKILL the worker `--kills` times, and the dev server once, at random points of the main mailing's
        progress (so the kills hit dispatch, sends and waits alike), never sooner than `--min-gap` seconds
        after the previous restart; kills left when the mailing has ended follow at that gap."""
        args, rng = self.args, self.rng
        points = sorted(rng.uniform(0.02, 0.95) for _ in range(args.kills))
        server_point = rng.uniform(0.2, 0.8)
        plan = [("worker", p) for p in points] + [("server", server_point)]
        plan.sort(key=lambda item: item[1])
        kills = 0
        for what, point in plan:
            await asyncio.sleep(args.min_gap)
            while self.main_id not in self.closed_at:
                reached = await self.progress()
                if reached is not None and reached >= point:
                    break
                await asyncio.sleep(0.5)
            at = now() - self.began
            if what == "worker":
                kills += 1
                await self.worker.kill()
                down = rng.uniform(0.2, 2.0)
                self.log(f"worker SIGKILL #{kills} at progress {point:.0%}; restart in {down:.1f}s")
                await asyncio.sleep(down)
                await self.worker.start()
                self.events.append({"what": "worker SIGKILL", "n": kills, "at": at, "progress": point, "down_s": down})
            else:
                await self.server.kill()
                pause = rng.uniform(0.5, 2.0)
                self.log(f"Temporal dev server SIGKILL at progress {point:.0%}; restart in {pause:.1f}s")
                await asyncio.sleep(pause)
                await self.server.start()
                await self.server_up()
                down = now() - self.began - at
                self.events.append({"what": "server SIGKILL", "at": at, "progress": point, "down_s": down})
                self.log(f"Temporal dev server back after {down:.1f}s")

    async def supervise(self) -> None:
        """Restart anything that died without being killed on purpose (and record it)."""
        while True:
            await asyncio.sleep(0.5)
            for process in (self.worker, self.server, *self.others):
                if process.process is None or process.alive or process.down_on_purpose:
                    continue
                code = process.process.returncode
                process.unplanned_exits.append(
                    {"at": now() - self.began, "code": code, "log": str(process.log_files[-1])}
                )
                self.log(f"{process.name} exited by itself (code {code}); restarting it")
                await process.start()

    # --- cancel --------------------------------------------------------------------------------------------

    async def cancel_midway(self) -> None:
        target = max(1, int(self.rng.uniform(0.25, 0.5) * self.args.cancel_recipients))
        prefix = f"{self.cancel_id}/"

        async def enough_sent() -> bool:
            sent: int = sum(str(m["client_ref"]).startswith(prefix) for m in await self.sandbox_messages())
            return sent >= target

        await eventually(f"{target} sends of the mailing to cancel", enough_sent, self.args.timeout)
        issued = now()
        attempts: list[dict[str, Any]] = []
        deadline = time.monotonic() + 300
        while True:
            code, out, err = await cli(self.env, "cancel", self.cancel_id)
            attempts.append({"code": code, "out": out.strip(), "err": err.strip()[-300:]})
            if code == 0:
                break
            if time.monotonic() > deadline:
                raise ChaosError(f"starter.py cancel kept failing: {attempts[-1]}")
            await asyncio.sleep(1)
        returned = now()
        self.cancel = {"target_sends": target, "issued": issued, "returned": returned, "attempts": attempts}
        self.log(f"cancelled {self.cancel_id} after {target}+ sends: {out.strip()} ({returned - issued:.1f}s)")

    # --- following -----------------------------------------------------------------------------------------

    async def wait_closed(self, mailing_id: str) -> None:
        handle = self.temporal.get_workflow_handle(mailing_workflow_id(mailing_id))
        deadline = time.monotonic() + self.args.timeout
        last_print = 0.0
        while time.monotonic() < deadline:
            try:
                description = await handle.describe()
                if description.status != WorkflowExecutionStatus.RUNNING:
                    self.closed_at[mailing_id] = now()
                    self.log(f"mailing {mailing_id} closed: {description.status.name if description.status else '?'}")
                    return
                if mailing_id == self.main_id and time.monotonic() - last_print > 10:
                    last_print = time.monotonic()
                    summary = await handle.query("summary")
                    self.log(
                        f"{mailing_id}: {summary['status']}, {summary['dispatched']} started,"
                        f" outcomes {summary['outcomes']}"
                    )
            except (RPCError, RuntimeError):
                pass  # server restarting or no worker right now
            await asyncio.sleep(2)
        raise ChaosError(f"mailing {mailing_id} did not end within {self.args.timeout:.0f}s")

    async def settle(self) -> None:
        """Every recipient workflow closed and every report the sandbox planned posted (bounded)."""
        for mailing_id in (self.main_id, self.cancel_id):
            query = (
                f"MailingId = '{mailing_id}' AND WorkflowType = '{RECIPIENT_WORKFLOW}' AND ExecutionStatus = 'Running'"
            )

            async def none_running(query: str = query) -> bool:
                return (await self.temporal.count_workflows(query)).count == 0

            await eventually(f"the recipient workflows of {mailing_id} to close", none_running, 300, every=1)

        async def reported() -> bool:
            return all(
                len(m["reports_sent"]) >= len(planned_reports(Channel(m["channel"]), m["to"]))
                for m in await self.sandbox_messages()
            )

        await eventually("the sandbox's reports", reported, 120, every=1)

    async def states(self, mailing_id: str, phones: list[str]) -> dict[str, dict[str, Any] | None]:
        """Each recipient's final state (its result, or the `state` query while it runs); None: no workflow."""
        semaphore = asyncio.Semaphore(16)

        async def one(phone: str) -> tuple[str, dict[str, Any] | None]:
            handle: WorkflowHandle[Any, Any] = self.temporal.get_workflow_handle(
                recipient_workflow_id(mailing_id, phone)
            )
            async with semaphore:
                try:
                    description = await rpc("describe", handle.describe)
                except RPCError:  # NOT_FOUND
                    return phone, None
                try:
                    if description.status == WorkflowExecutionStatus.COMPLETED:
                        state: dict[str, Any] = await rpc("result", handle.result)
                    else:
                        state = await rpc("query", lambda: handle.query("state"))
                        state["workflow_status"] = description.status.name if description.status else None
                except Exception as exc:  # failed, terminated, or a query that cannot replay: no state
                    status = description.status.name if description.status else "?"
                    return phone, {"status": f"{status} ({type(exc).__name__})", "steps": []}
                return phone, state

        return dict(await asyncio.gather(*(one(phone) for phone in phones)))


# --- the figures ----------------------------------------------------------------------------------------------


def step_counts(states: dict[str, dict[str, Any] | None]) -> dict[str, int]:
    """How every step ended, e.g. `1 viber: delivered` (1-based), plus time-outs and errors by kind."""
    counts: Counter[str] = Counter()
    for state in states.values():
        if state is None:
            counts["no workflow"] += 1
            continue
        for number, step in enumerate(state.get("steps", []), start=1):
            counts[f"{number} {step.get('channel')}: {step.get('status')}"] += 1
            if step.get("timed_out"):
                counts[f"{number} {step.get('channel')}: timed out"] += 1
            if step.get("error"):
                counts[f"{number} {step.get('channel')}: error {str(step['error'])[:60]}"] += 1
    return dict(sorted(counts.items()))


def check(
    main: dict[str, dict[str, Any] | None],
    cancelled: dict[str, dict[str, Any] | None],
    messages: list[dict[str, Any]],
    run: Run,
) -> dict[str, Any]:
    by_ref = {m["client_ref"]: m for m in messages}
    lost: list[dict[str, Any]] = []
    outcome_differs = missing_sends = 0
    for phone, state in main.items():
        want = expected_outcome(phone)
        sent = {i for i in range(len(CASCADE)) if f"{run.main_id}/{phone}/{i}" in by_ref}
        actual = (state or {}).get("status"), (state or {}).get("delivered_channel")
        missing = want.sends - sent
        missing_sends += len(missing)
        differs = state is None or actual != (want.status, want.channel)
        outcome_differs += differs
        if differs or missing:
            lost.append(
                {
                    "phone": phone,
                    "expected": [want.status, want.channel],
                    "actual": list(actual) if state else None,
                    "sends_missing": sorted(missing),
                    "steps": [
                        {k: step.get(k) for k in ("channel", "status", "error", "timed_out", "handed_over", "reports")}
                        for step in (state or {}).get("steps", [])
                    ],
                }
            )
    # A second message to someone the first one reached: a later step sent although an earlier step, which the
    # sandbox did receive, reaches its expected status by the rule. (If that earlier message never reached the
    # sandbox, the fallback is no duplicate: the missing send counts as lost above.)
    unwarranted: list[dict[str, Any]] = []
    for ref in by_ref:
        mailing_id, phone, step = ref.rsplit("/", 2)
        reaching = [
            i
            for i, (channel, expect) in enumerate(CASCADE[: int(step)])
            if any(r.reached(expect) for r in planned_reports(channel, phone)) and f"{mailing_id}/{phone}/{i}" in by_ref
        ]
        if reaching:
            state = (main if mailing_id == run.main_id else cancelled).get(phone) or {}
            earlier = (state.get("steps") or [{}] * len(CASCADE))[reaching[0]]
            unwarranted.append(
                {"client_ref": ref, "earlier_timed_out": earlier.get("timed_out"), "earlier": earlier.get("status")}
            )
    repeated = [m for m in messages if m["requests"] > 1]
    extra_requests = sum(m["requests"] - 1 for m in repeated)

    prefix = f"{run.cancel_id}/"
    cancel_msgs = [
        datetime.fromisoformat(m["accepted_at"]).timestamp() for m in messages if m["client_ref"].startswith(prefix)
    ]
    issued, returned = run.cancel.get("issued", float("inf")), run.cancel.get("returned", float("inf"))
    after_cancel = sum(t > returned for t in cancel_msgs)
    cancel_summary = Counter(str((s or {}).get("status", "no workflow")) for s in cancelled.values())
    main_closed = run.closed_at.get(run.main_id, now())
    wall = main_closed - run.began
    worker_kills = [e for e in run.events if e["what"] == "worker SIGKILL"]
    return {
        "recipients": len(main),
        "lost": len(lost),
        "duplicates": extra_requests + len(unwarranted),
        "after_cancel": after_cancel,
        "lost_outcome_differs": outcome_differs,
        "lost_send_missing_only": len(lost) - outcome_differs,
        "lost_detail": lost[:20],
        "missing_sends": missing_sends,
        "repeated_client_refs": len(repeated),
        "extra_requests": extra_requests,
        "repeated_sample": [{k: m[k] for k in ("client_ref", "requests")} for m in repeated[:20]],
        "unwarranted_sends": len(unwarranted),
        "unwarranted_after_timeout": sum(bool(u["earlier_timed_out"]) for u in unwarranted),
        "unwarranted_sample": unwarranted[:20],
        "cancel": {
            "mailing_id": run.cancel_id,
            "recipients": len(cancelled),
            "cancel_after_sends": run.cancel.get("target_sends"),
            "command_seconds": returned - issued,
            "accepted_before_command": sum(t < issued for t in cancel_msgs),
            "accepted_while_command_ran": sum(issued <= t <= returned for t in cancel_msgs),
            "accepted_after_command_returned": after_cancel,
            "last_accept_after_return_s": max((t - returned for t in cancel_msgs), default=None),
            "recipient_outcomes": dict(cancel_summary),
            "attempts": run.cancel.get("attempts", []),
        },
        "worker_kills": len(worker_kills),
        "worker_kills_while_main_ran": sum(e["at"] < wall for e in worker_kills),
        "server_restarts": sum(e["what"] == "server SIGKILL" for e in run.events),
        "events": run.events,
        "main_mailing_seconds": wall,
        "recipients_per_second": len(main) / wall if wall > 0 else None,
        "main_outcomes": dict(Counter(str((s or {}).get("status", "no workflow")) for s in main.values())),
        "main_step_statuses": step_counts(main),
        "cancel_step_statuses": step_counts(cancelled),
        "sandbox_messages": len(messages),
    }


def log_findings(processes: list[Process]) -> dict[str, Any]:
    """Per log file: how many tracebacks and ERROR lines it holds; and unplanned exits per process."""
    files: dict[str, dict[str, int]] = {}
    for process in processes:
        for path in process.log_files:
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            found = {"tracebacks": text.count("Traceback (most recent call last)"), "error_lines": 0}
            found["error_lines"] = sum(" ERROR " in line or "level=ERROR" in line for line in text.splitlines())
            if any(found.values()):
                files[path.name] = found
    return {
        "with_errors": files,
        "unplanned_exits": {p.name: p.unplanned_exits for p in processes if p.unplanned_exits},
    }


def print_table(result: dict[str, Any]) -> None:
    c = result.get("cancel", {})
    rows = [
        ("lost recipients", result.get("lost")),
        ("  outcome differs from the rule", result.get("lost_outcome_differs")),
        ("  outcome right, a send never arrived", result.get("lost_send_missing_only")),
        ("  sends the rule calls for, missing", result.get("missing_sends")),
        ("duplicate provider sends", result.get("duplicates")),
        ("  client refs POSTed more than once", result.get("repeated_client_refs")),
        ("  extra POSTs (requests - 1)", result.get("extra_requests")),
        ("  fallbacks the rule forbids", result.get("unwarranted_sends")),
        ("    of which after the wait ran out", result.get("unwarranted_after_timeout")),
        ("sends after cancel returned", result.get("after_cancel")),
        ("  in flight while cancel ran", c.get("accepted_while_command_ran")),
        ("  sent before cancel", c.get("accepted_before_command")),
        ("  cancel command took (s)", _num(c.get("command_seconds"))),
        (
            "worker SIGKILLs (while main ran)",
            f"{result.get('worker_kills')} ({result.get('worker_kills_while_main_ran')})",
        ),
        ("dev server restarts", result.get("server_restarts")),
        ("recipients", result.get("recipients")),
        ("main mailing wall time (s)", _num(result.get("main_mailing_seconds"))),
        ("recipients/s", _num(result.get("recipients_per_second"))),
        ("whole run (s)", _num(result.get("run_seconds"))),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"kaskad chaos — seed {result.get('seed')}, folder {result.get('folder')}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for title, key in (("main outcomes", "main_outcomes"), ("main steps", "main_step_statuses")):
        print(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in result.get(key, {}).items()))
    print("  cancelled mailing outcomes: " + ", ".join(f"{k} {v}" for k, v in c.get("recipient_outcomes", {}).items()))
    print(
        "  cancelled mailing steps: " + ", ".join(f"{k} {v}" for k, v in result.get("cancel_step_statuses", {}).items())
    )
    logs = result.get("logs", {})
    for name, found in logs.get("with_errors", {}).items():
        print(f"  log {name}: {found['tracebacks']} tracebacks, {found['error_lines']} ERROR lines")
    for name, exits in logs.get("unplanned_exits", {}).items():
        print(f"  {name} exited by itself {len(exits)}x: {exits}")
    if result.get("warning"):
        print(f"  WARNING: {result['warning']}")
    if result.get("error"):
        print(f"  RUN FAILED: {result['error']}")
    print(f"  verdict: {'PASS' if result.get('passed') else 'FAIL'} (lost, duplicates, after cancel must all be 0)")


def _num(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


# --- main -----------------------------------------------------------------------------------------------------


async def chaos_run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    settings = private_settings(
        folder,
        "chaos",
        webhook_secret=SecretStr(uuid.uuid4().hex),
        sandbox_report_delay=args.report_delay,
        sandbox_deduplicates=False,
    )
    env = child_env(settings, args.report_delay)
    logs = folder / "logs"
    logs.mkdir()
    python = sys.executable
    server = Process("temporal", temporal_argv(settings), env, logs)
    worker = Process("worker", [python, str(ROOT / "worker.py")], env, logs)
    others = [
        Process("sandbox", [python, "-m", "sandbox"], env, logs),
        Process("gateway", [python, "-m", "gateway"], env, logs),
    ]
    processes = [server, worker, *others]
    main_phones = numbers(args.recipients, 1_000_000)
    cancel_phones = numbers(args.cancel_recipients, 5_000_000)
    result: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        run = Run(args, settings, env, folder, random.Random(args.seed), http, server, worker, others)
        supervisor: asyncio.Task[None] | None = None
        try:
            await run.bring_up()
            supervisor = asyncio.create_task(run.supervise())
            suffix = uuid.uuid4().hex[:6]
            run.main_id, run.cancel_id = f"chaos-main-{suffix}", f"chaos-cancel-{suffix}"
            main_spec = write_spec(folder, "main", main_phones, args, None)
            cancel_spec = write_spec(folder, "cancel", cancel_phones, args, args.cancel_speed)
            run.began = now()
            await run.start_mailing(main_spec, run.main_id)
            await run.start_mailing(cancel_spec, run.cancel_id)
            run.log(f"started {run.main_id} ({args.recipients}) and {run.cancel_id} ({args.cancel_recipients})")
            await asyncio.gather(
                run.chaos(),
                run.cancel_midway(),
                run.wait_closed(run.main_id),
                run.wait_closed(run.cancel_id),
            )
            run.log("settling: recipient workflows closing, sandbox reports going out")
            await run.settle()
            main_states = await run.states(run.main_id, main_phones)
            cancel_states = await run.states(run.cancel_id, cancel_phones)
            messages = await run.sandbox_messages()
            result = check(main_states, cancel_states, messages, run)
            for mailing_id, key in ((run.main_id, "main_summary"), (run.cancel_id, "cancel_summary")):
                handle = run.temporal.get_workflow_handle(mailing_workflow_id(mailing_id))
                summary = await rpc("mailing result", handle.result)
                result[key] = {k: summary.get(k) for k in ("status", "error", "outcomes", "dispatched", "not_started")}
        except (ChaosError, RPCError, OSError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            result.setdefault("events", run.events)
        finally:
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            for process in reversed(processes):
                await process.kill()
                process.close()
        result["logs"] = log_findings(processes)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=1000, help="recipients of the main mailing")
    parser.add_argument("--kills", type=int, default=10, help="worker SIGKILLs (the dev server is killed once)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill moments and delays")
    parser.add_argument("--cancel-recipients", type=int, default=300, help="recipients of the mailing cancelled")
    parser.add_argument("--cancel-speed", default="600/min", help="speed of the mailing cancelled")
    parser.add_argument("--viber-wait", default="20s", help="wait of the Viber step (above a server restart)")
    parser.add_argument("--sms-wait", default="20s")
    parser.add_argument("--late-reports", default="5s")
    parser.add_argument("--report-delay", type=float, default=0.5, help="sandbox seconds per report")
    parser.add_argument("--min-gap", type=float, default=3.0, help="seconds from a restart to the next kill")
    parser.add_argument("--timeout", type=float, default=1200.0, help="longest wait for a mailing to end")
    parser.add_argument("--out", type=Path, default=Path(".kaskad/chaos.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kaskad-chaos-"))
    print(f"chaos run in {folder} (logs in {folder / 'logs'})", file=sys.stderr, flush=True)
    began, fingerprint = time.monotonic(), source_fingerprint()
    result = asyncio.run(chaos_run(args, folder))
    gc.collect()  # the SDK runtime's threads end while the interpreter is whole (see runtime/temporal.py)
    if source_fingerprint() != fingerprint:
        result["warning"] = "the kaskad sources changed during the run: restarted workers ran other code"
    passed = "error" not in result and result.get("lost") == result.get("duplicates") == result.get("after_cancel") == 0
    result |= {
        "passed": passed,
        "seed": args.seed,
        "folder": str(folder),
        "run_seconds": time.monotonic() - began,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print_table(result)
    print(f"  figures: {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
