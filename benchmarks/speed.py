"""Mailing speed: does dispatch hold the configured rate, evenly, across two worker processes?

Runs the embedded stack (dev server with the WAL pragmas, sandbox, gateway, one worker in this process) and
a second `worker.py` process on the same task queues, then a mailing of (rate x minutes) recipients, one SMS
step, at `--speed`. The sandbox records when each message arrived; from the first-step arrivals it prints:

* achieved / configured rate (goal ≥ 0.98), measured from the first to the last arrival;
* the largest number of arrivals in any 60 s window / the configured per-minute rate (goal ≤ 1.0, plus
  one message of burst);
* the p50 / p99 / max error of the gaps between consecutive arrivals against the configured interval.

    .venv/bin/python benchmarks/speed.py [--speed 600/min] [--minutes 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from pydantic import SecretStr

from domain.models import MailingInput
from domain.refs import mailing_workflow_id
from domain.schedule import Speed
from domain.spec import load_spec
from runtime.devstack import embedded_stack, private_settings
from workflows.mailing import MailingWorkflow

ROOT = Path(__file__).resolve().parents[1]


def write_spec(folder: Path, speed: str, count: int) -> Path:
    numbers = "\n".join(f"+7999{i:07d}" for i in range(count))  # last digit 0-9: all delivered by SMS but 9
    (folder / "list.txt").write_text(numbers + "\n", encoding="utf-8")
    spec = folder / "speed.toml"
    spec.write_text(
        f'name = "Speed"\nrecipients = "list.txt"\nspeed = "{speed}"\nlate_reports = "1s"\n'
        '[schedule]\nhours = "00:00-24:00"\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "10s"\n',
        encoding="utf-8",
    )
    return spec


def figures(arrivals: list[float], speed: Speed) -> dict[str, float]:
    per_minute = speed.count * 60 / speed.seconds
    interval = speed.interval.total_seconds()
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60
    busiest = max(bisect.bisect_left(arrivals, t + 60) - i for i, t in enumerate(arrivals))
    errors = sorted(abs((b - a) - interval) for a, b in itertools.pairwise(arrivals))
    return {
        "messages": len(arrivals),
        "configured_per_min": per_minute,
        "achieved_per_min": achieved,
        "rate_ratio": achieved / per_minute,
        "max_in_60s": busiest,
        "max_in_60s_ratio": busiest / per_minute,
        "gap_error_p50_ms": statistics.median(errors) * 1000,
        "gap_error_p99_ms": errors[int(len(errors) * 0.99)] * 1000,
        "gap_error_max_ms": errors[-1] * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", default="600/min")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (this one included)")
    args = parser.parse_args()
    speed = Speed.model_validate(args.speed)
    count = int(speed.count * 60 / speed.seconds * args.minutes)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        settings = private_settings(folder, "speed", webhook_secret=SecretStr(uuid.uuid4().hex))
        async with embedded_stack(settings, ui=False) as stack:
            others = [
                await asyncio.create_subprocess_exec(
                    sys.executable, str(ROOT / "worker.py"), env=settings.process_env() | {"PATH": ""}, cwd=ROOT
                )
                for _ in range(args.workers - 1)
            ]
            try:
                await asyncio.sleep(3)  # let the other workers connect and poll
                spec = load_spec(write_spec(folder, args.speed, count))
                mailing_id = f"speed-{uuid.uuid4().hex[:6]}"
                began = time.monotonic()
                summary = await stack.client.execute_workflow(
                    MailingWorkflow.run,
                    MailingInput(mailing_id=mailing_id, spec=spec),
                    id=mailing_workflow_id(mailing_id),
                    task_queue=settings.task_queue,
                )
                took = time.monotonic() - began
                async with httpx.AsyncClient() as http:
                    messages = (await http.get(f"{settings.sandbox_base_url}/messages")).json()
            finally:
                for process in others:
                    process.terminate()
                    await process.wait()
    arrivals = sorted(
        datetime.fromisoformat(m["accepted_at"]).timestamp() for m in messages if m["client_ref"].endswith("/0")
    )
    result = figures(arrivals, speed) | {"mailing_status": summary.status, "mailing_seconds": took}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
