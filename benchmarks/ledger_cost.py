"""What the ledger costs the cascade: the full path with the ledger on against the same path with it off.

After one uncounted warm-up round, rounds alternate on / off, each on a fresh embedded stack (dev server,
sandbox, gateway, worker, and for "on" the SQLite ledger the reports and the closing recipients are written
to; "off" runs the same workflows, whose record activity then writes nothing). Each round is a mailing of N
one-step SMS recipients, timed from its start until visibility counts N completed recipient workflows.
Prints each round, the medians, the median of the per-pair ratios on/off with its spread, and the events
per recipient history (one sampled history of each).

    .venv/bin/python benchmarks/ledger_cost.py [-n 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from cascade import bench_settings, run_full
from temporalio.client import Client

from runtime.devstack import embedded_stack


async def events_per_recipient(client: Client) -> int:
    async for execution in client.list_workflows("WorkflowType = 'RecipientCascadeWorkflow'", limit=1):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        return len(history.events)
    raise RuntimeError("no recipient workflow found")


async def one_round(n: int, record: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as scratch:
        settings = bench_settings(Path(scratch))
        async with embedded_stack(settings, ui=False, record=record) as stack:
            rate = await run_full(stack.client, settings, n)
            return rate, await events_per_recipient(stack.client)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="pairs of rounds, on then off (alternating)")
    args = parser.parse_args()
    # The first stack of a process pays for imports and the workflow sandbox's first loads: not counted.
    await one_round(min(args.n, 100), True)
    on: list[float] = []
    off: list[float] = []
    events: dict[str, int] = {}
    for round_ in range(args.rounds):
        order = (True, False) if round_ % 2 == 0 else (False, True)  # neither side always goes first
        for record in order:
            rate, count = await one_round(args.n, record)
            (on if record else off).append(rate)
            events["on" if record else "off"] = count
            print(f"round {round_ + 1} ledger {'on ' if record else 'off'}: {rate:6.1f} recipients/s", flush=True)
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    print(f"N={args.n} rounds={args.rounds}")
    print(f"ledger on:  {statistics.median(on):6.1f} recipients/s (median; min {min(on):.1f}, max {max(on):.1f})")
    print(f"ledger off: {statistics.median(off):6.1f} recipients/s (median; min {min(off):.1f}, max {max(off):.1f})")
    print(
        f"on/off per pair: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}; goal >= 0.95)"
    )
    print(f"events per recipient history: on {events['on']}, off {events['off']}")


if __name__ == "__main__":
    asyncio.run(main())
