"""`starter.py report` on a large mailing: wall time and peak RSS of the .xlsx and the .csv report.

Fills a SQLite ledger (once per --dir and N) with a finished 2-step mailing, viber → sms, of N recipients in a
realistic mix, by bulk inserts: the list, the rejected rows (1%), one message per step decided, the recipients
and the late reports. Then runs `starter.py report ID --out FILE` as a subprocess for each format and reads its
peak RSS from the kernel (`os.wait4`'s rusage: ru_maxrss of that child alone). Goal: ≤ 300 MB at 1M.

    .venv/bin/python benchmarks/report.py [--recipients 1000000] [--dir DIR] [--database-url URL]

The mix (per recipient): 55% viber delivered (a third of them read); 22% viber silent → SMS (90% delivered);
12% viber undelivered → SMS (92% delivered); 3% viber silent → SMS delivered, then viber's delivery reported late
(a wasted fallback); 6% viber refused at the send → SMS; 2% not sent on either channel.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from domain.models import MailingSummary
from domain.spec import MailingSpec, Step
from domain.status import Channel
from ledger.schema import list_entries, mailings, messages, recipients, rejected_rows, reports
from ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[1]
MAILING = "bench-report"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BATCH = 20_000
GOAL_MB = 300


def spec() -> MailingSpec:
    return MailingSpec(
        name="Report benchmark",
        numbers=["+79990000000"],
        steps=[
            Step(channel=Channel.VIBER, sender="Shop", text="Hello {name}", wait=timedelta(minutes=10)),
            Step(channel=Channel.SMS, sender="Shop", text="Hello {name}, 20% off today", wait=timedelta(hours=1)),
        ],
    )


def message(phone: str, step: int, status: str, at: datetime, **times: Any) -> dict[str, Any]:
    channel = "viber" if step == 0 else "sms"
    return {
        "client_ref": f"{MAILING}/{phone}/{step}",
        "mailing_id": MAILING,
        "phone": phone,
        "step": step,
        "channel": channel,
        "account": "sandbox",
        "sender": "Shop",
        "encoding": "UCS-2" if step else None,
        "parts": 2 if step else None,
        "message_id": f"m-{phone[2:]}-{step}" if status != "not_sent" else None,
        "status": status,
        "error": {"undelivered": "expired", "not_sent": "provider unavailable"}.get(status),
        "unconfirmed": False,
        "timed_out": bool(times.pop("timed_out", False)),
        "sent_at": at if status != "not_sent" else None,
        "delivered_at": times.get("delivered_at"),
        "read_at": times.get("read_at"),
        "failed_at": times.get("failed_at"),
        "updated_at": at,
    }


def recipient_rows(n: int, seed: int = 11) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]:
    """(list entry, messages, recipient) for each of n recipients, deterministic."""
    rng = random.Random(seed)
    for position in range(n):
        phone = f"+7999{position:07d}"
        at = T0 + timedelta(milliseconds=position * 3)
        entry = {
            "mailing_id": MAILING,
            "position": position,
            "phone": phone,
            "variables": '{"name": "Anna"}',
            "row": position + 2,
        }
        draw = rng.random()
        msgs: list[dict[str, Any]] = []
        channel: str | None
        sms_at = at + timedelta(minutes=10)
        if draw < 0.55:
            read = rng.random() < 1 / 3
            delivered = at + timedelta(seconds=rng.randint(2, 60))
            msgs.append(message(phone, 0, "read" if read else "delivered", at, delivered_at=delivered,
                                read_at=delivered + timedelta(minutes=3) if read else None))  # fmt: skip
            outcome, channel = "delivered", "viber"
        elif draw < 0.98:
            if draw < 0.77:
                msgs.append(message(phone, 0, "sent", at, timed_out=True))
            elif draw < 0.89:
                msgs.append(message(phone, 0, "undelivered", at, failed_at=at + timedelta(minutes=2)))
                sms_at = at + timedelta(minutes=2)
            elif draw < 0.92:  # wasted: viber's delivery reported after the SMS went out
                msgs.append(message(phone, 0, "delivered", at, timed_out=True, delivered_at=at + timedelta(minutes=25)))
            else:
                msgs.append(message(phone, 0, "undelivered", at, failed_at=at))
                sms_at = at
            ok = rng.random() < 0.91
            done = sms_at + timedelta(seconds=rng.randint(3, 90))
            msgs.append(message(phone, 1, "delivered" if ok else "undelivered", sms_at,
                                delivered_at=done if ok else None, failed_at=None if ok else done))  # fmt: skip
            viber_late = 0.89 <= draw < 0.92
            outcome = "delivered" if ok or viber_late else "undelivered"
            channel = "sms" if ok else None
        else:
            msgs += [message(phone, 0, "not_sent", at, failed_at=at), message(phone, 1, "not_sent", at, failed_at=at)]
            outcome, channel = "not_sent", None
        closed = at + timedelta(minutes=20)
        recipient = {"mailing_id": MAILING, "phone": phone, "status": outcome, "delivered_channel": channel,
                     "closed_at": closed}  # fmt: skip
        yield entry, msgs, recipient


def fill(url: str, n: int) -> None:
    ledger = Ledger(url)
    try:
        with ledger.reading() as conn:
            if conn.execute(select(mailings.c.id).where(mailings.c.id == MAILING)).first():
                return  # filled by an earlier run
        print(f"filling the ledger with {n:,} recipients…", file=sys.stderr, flush=True)
        started = time.perf_counter()
        ledger.create_mailing(MAILING, spec(), T0 - timedelta(minutes=5), None)
        with ledger._write.begin() as conn:
            entries: list[dict[str, Any]] = []
            msgs: list[dict[str, Any]] = []
            closed: list[dict[str, Any]] = []
            late: list[dict[str, Any]] = []

            def flush() -> None:
                for table, rows in ((list_entries, entries), (messages, msgs), (recipients, closed), (reports, late)):
                    if rows:
                        conn.execute(insert(table), rows)
                        rows.clear()

            for entry, sent, recipient in recipient_rows(n):
                entries.append(entry)
                msgs += sent
                closed.append(recipient)
                first = sent[0]
                if first["timed_out"] and first["status"] == "delivered":
                    at = first["delivered_at"]
                    ref = first["client_ref"]
                    late.append({"key": ref[-64:], "client_ref": ref, "mailing_id": MAILING, "account": "sandbox",
                                 "status": "delivered", "at": at, "received_at": at, "late": True})  # fmt: skip
                if len(entries) >= BATCH:
                    flush()
            flush()
            bad = [{"mailing_id": MAILING, "row": n + 2 + i, "value": f"8999{i:05d}", "reason": "too short"}
                   for i in range(n // 100)]  # fmt: skip
            for i in range(0, len(bad), BATCH):
                conn.execute(insert(rejected_rows), bad[i : i + BATCH])
        summary = MailingSummary(
            mailing_id=MAILING,
            name="Report benchmark",
            status="completed",
            cascade=[Channel.VIBER, Channel.SMS],
            recipients={"total": n + n // 100, "valid": n, "invalid": n // 100, "duplicates": 0},
            dispatched=n,
            started_at=T0,
            finished_at=T0 + timedelta(hours=2),
        )
        ledger.record_final(summary, dispatched=n)
        print(f"  filled in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    finally:
        ledger.close()


def run_report(url: str, out: Path, data_dir: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of `starter.py report` writing `out`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASKAD_")} | {
        "KASKAD_DATABASE_URL": url,
        "KASKAD_DATA_DIR": str(data_dir),
        "KASKAD_SANDBOX_PRICES": '{"viber": 0.95, "sms": 2.35}',
    }
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "starter.py"), "report", MAILING, "--out", str(out)], env=env, cwd=ROOT
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, child.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=ROOT / ".kaskad" / "bench-report")
    parser.add_argument("--database-url", help="default: a SQLite file in --dir")
    args = parser.parse_args()
    folder = args.dir / str(args.recipients)
    folder.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{folder / 'ledger.sqlite3'}"
    fill(url, args.recipients)
    print(f"{'format':8} {'recipients':>11} {'seconds':>8} {'rec/s':>9} {'peak RSS':>9} {'file':>9}")
    worst = 0.0
    for suffix in (".csv", ".xlsx"):
        out = folder / f"report{suffix}"
        seconds, rss, code = run_report(url, out, folder)
        if code != 0:
            print(f"starter.py report failed ({code})", file=sys.stderr)
            return 1
        worst = max(worst, rss)
        size = out.stat().st_size / 1e6
        rate = args.recipients / seconds
        print(f"{suffix[1:]:8} {args.recipients:>11,} {seconds:>8.1f} {rate:>9,.0f} {rss:>6.0f} MB {size:>6.0f} MB")
    verdict = "within" if worst <= GOAL_MB else "OVER"
    print(f"peak RSS {worst:.0f} MB: {verdict} the {GOAL_MB} MB goal")
    return 0 if worst <= GOAL_MB else 1


if __name__ == "__main__":
    sys.exit(main())
