"""kaskad command line: run the embedded stack, start mailings and follow them.

python starter.py dev                          # Temporal dev server + worker + gateway + sandbox
python starter.py demo                         # the stack, the example mailing, its summary, stop
python starter.py validate SPEC|FILE [--json] [--rejected rejected.xlsx]  # what the list holds, per row
python starter.py preview SPEC [--row N]       # each step's message for one recipient, SMS parts
python starter.py estimate SPEC [--json] [--history N]  # messages, SMS parts and cost per step, before launch
python starter.py start SPEC [--wait] [--json] # launch a mailing (needs a running stack or worker)
python starter.py status MAILING_ID [--json]   # live from Temporal; a finished mailing from the ledger
python starter.py pause|resume|cancel MAILING_ID
python starter.py list [--status S] [--since DATE] [--json]      # the mailings in the ledger, newest first
python starter.py report MAILING_ID --out FILE.xlsx|FILE.csv     # Summary + chart, Detail, Rejected
python starter.py search PHONE [--since DATE] [--json]           # every message to a number, newest first
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.progress import count_mailing
from domain.channels import definition
from domain.durations import format_duration, parse_duration
from domain.models import ImportReport, MailingInput, MailingSummary
from domain.phones import normalize_phone
from domain.refs import MAILING_ID_PATTERN, mailing_workflow_id
from domain.spec import MailingSpec, SpecError, load_spec
from domain.template import MissingVariableError, render
from ledger.estimate import DEFAULT_HISTORY, StepLoad, forecast, observed_outcomes, render_json, render_text
from ledger.queries import (
    LedgerFigures,
    MailingRow,
    UnknownMailing,
    list_mailings,
    load_mailing,
    mailing_figures,
    search_messages,
    summary_from_ledger,
)
from ledger.report import ReportError, write_report
from ledger.store import Ledger, LedgerError
from providers.accounts import AccountError
from providers.registry import launch_accounts, price_book
from recipients.importer import ListRules, ValidSink, open_source, rejected_writer, validate_rows
from recipients.reader import SUPPORTED_SUFFIXES, RecipientsError, Row, read_file
from runtime.devstack import StackError, embedded_stack
from runtime.logs import configure_logging
from runtime.settings import Settings, SettingsError
from runtime.temporal import connect, release_sdk_runtime
from workflows.mailing import FINISHED, MailingStatus, MailingWorkflow
from workflows.search_attributes import MAILING_ID, MAILING_STATUS

DEMO_SPEC = Path(__file__).resolve().parent / "examples" / "demo.toml"
NO_WORKER_HINT_AFTER = 10  # seconds a mailing may stay "new" before we suspect that no worker runs
PROGRESS_ABOVE_BYTES = 4 * 1024 * 1024  # files from this size get a progress bar (on a terminal)
RECONNECT_FOR = timedelta(minutes=10)  # how long `--wait` keeps following while Temporal is unreachable
RETRY_MAX_PAUSE = 5.0  # seconds between two tries while Temporal is unreachable (on top of the SDK's retries)


class CliError(Exception):
    """An error for the person at the terminal: printed without a traceback, exit code 1."""


def new_mailing_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:30].strip("-") or "mailing"
    return f"{slug}-{secrets.token_hex(3)}"


def ui_link(settings: Settings, mailing_id: str) -> str:
    query = quote(f"MailingId='{mailing_id}'")
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows?query={query}"


def checked_spec(path: Path, settings: Settings) -> MailingSpec:
    """Load the spec and check what a launch checks (`MailingSpec.launch_problems`: each step's provider
    account exists and sends its channel, the clock) and that its texts only use variables the recipients have.
    `validate`, `preview`, `estimate`, `start` and `demo` all begin here, so none of them lets such a spec by."""
    try:
        spec = load_spec(path)
        open_source(spec)
    except (SpecError, RecipientsError) as exc:
        raise CliError(str(exc)) from exc
    problems = spec.launch_problems(datetime.now(UTC), launch_accounts(settings))
    if problems:
        raise CliError(f"{path}:\n" + "\n".join(problems))
    return spec


async def client_for(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except RuntimeError as exc:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address} (is `python starter.py dev` running?): {exc}"
        ) from exc


async def start_mailing(
    client: Client, settings: Settings, ledger: Ledger, spec: MailingSpec, mailing_id: str
) -> WorkflowHandle[MailingWorkflow, MailingSummary]:
    """Record the mailing and its recipients file in the ledger (where every worker reads it), then start it."""
    if not MAILING_ID_PATTERN.match(mailing_id):
        raise CliError(f"--id {mailing_id!r}: use lowercase letters, digits and '-' (up to 48)")
    try:
        await ledger.run(ledger.create_mailing, mailing_id, spec, datetime.now(UTC), spec.recipients)
    except LedgerError as exc:
        raise CliError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise CliError(f"cannot record mailing {mailing_id} in the ledger: {type(exc).__name__}") from exc
    try:
        return await _start_workflow(client, settings, spec, mailing_id)
    except BaseException:
        if not await _workflow_exists(client, mailing_id):  # a start that may have happened keeps its record
            await ledger.run(ledger.discard_mailing, mailing_id)
        raise


async def _workflow_exists(client: Client, mailing_id: str) -> bool:
    """Whether the mailing's workflow was started; True when Temporal cannot say (keep the record)."""
    try:
        await client.get_workflow_handle(mailing_workflow_id(mailing_id)).describe()
    except RPCError as exc:
        return exc.status != RPCStatusCode.NOT_FOUND
    except Exception:
        return True
    return True


async def _start_workflow(
    client: Client, settings: Settings, spec: MailingSpec, mailing_id: str
) -> WorkflowHandle[MailingWorkflow, MailingSummary]:
    try:
        return await client.start_workflow(
            MailingWorkflow.run,
            MailingInput(mailing_id=mailing_id, spec=spec),
            id=mailing_workflow_id(mailing_id),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(MAILING_ID, mailing_id),
                    SearchAttributePair(MAILING_STATUS, MailingStatus.NEW.value),
                ]
            ),
        )
    except WorkflowAlreadyStartedError as exc:
        raise CliError(f"mailing {mailing_id} exists already; choose another --id") from exc
    except RPCError as exc:
        raise CliError(f"cannot start mailing {mailing_id}: {exc.message}") from exc


async def with_live_counts(client: Client, summary: MailingSummary) -> MailingSummary:
    """The summary with statistics counted now: while running, and after the end too, since late reports
    keep arriving after the mailing completed (the workflow stores the figures of its last moment)."""
    if not summary.dispatched:
        return summary
    counts = await count_mailing(client, summary.mailing_id, summary.cascade)
    if summary.not_started:  # never started, so not in visibility: not sent
        counts.outcomes["not_sent"] = counts.outcomes.get("not_sent", 0) + summary.not_started
    return summary.model_copy(update=counts.model_dump(exclude={"finished"}))


def outage_reason(exc: BaseException) -> str | None:
    """Why Temporal is unreachable, if `exc` says so (server killed or restarting, network down); else None.

    By the time such an error reaches us the SDK has already retried the call for ~10 s (`RetryConfig`):
    a refused connection is UNAVAILABLE "tcp connect error", a connection cut mid-call "transport error",
    a lazy client's first connect a RuntimeError."""
    if isinstance(exc, RPCError):
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED) or "transport" in exc.message:
            return exc.message or exc.status.name
    elif isinstance(exc, RuntimeError) and "connect" in str(exc):
        return str(exc).partition("\n")[0][:120]
    return None


class Outage:
    """A stretch of Temporal being unreachable while we follow a mailing. The mailing is durable on the
    server and resumes by itself when the server is back, so the follower rides an outage out too: it says
    so once (not on every retry), retries with a capped backoff, and gives up with a one-line error only
    after `limit`."""

    def __init__(self, limit: timedelta, what: str) -> None:
        self.limit, self.what = limit, what
        self.since: float | None = None
        self.failures = 0

    def failed(self, reason: str) -> float:
        """Note a failed call; return the pause before the next try, or raise CliError past the limit."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.failures = now, 0
            print(f"Temporal unreachable ({reason}); retrying", file=sys.stderr, flush=True)
        elif now - self.since >= self.limit.total_seconds():
            raise CliError(
                f"Temporal unreachable for {format_duration(timedelta(seconds=now - self.since))} ({reason});"
                f" stopped following {self.what}, which resumes when Temporal is back"
            )
        self.failures += 1
        return min(RETRY_MAX_PAUSE, 0.25 * 2.0**self.failures)

    def over(self) -> None:
        """A call got through: the outage (if any) is over."""
        if self.since is not None:
            print("Temporal reachable again", file=sys.stderr, flush=True)
            self.since = None

    async def ride_out(self, exc: Exception, probe: Callable[[], Awaitable[object]]) -> None:
        """Having caught `exc`: if it means Temporal is unreachable, pause and `probe()` until a call gets
        through; any other error becomes a one-line CliError (never a traceback for an RPCError)."""
        while (reason := outage_reason(exc)) is not None:
            await asyncio.sleep(self.failed(reason))
            try:
                await probe()
            except (RPCError, RuntimeError) as again:
                exc = again
            else:
                self.over()
                return
        if isinstance(exc, RPCError):
            raise CliError(f"cannot follow {self.what}: {exc.message}") from exc
        raise exc


async def follow(
    handle: WorkflowHandle[MailingWorkflow, MailingSummary], *, quiet: bool, reconnect_for: timedelta = RECONNECT_FOR
) -> MailingSummary:
    """Print progress (to stderr) until the mailing ends; return its final summary. A Temporal outage of up
    to `reconnect_for` does not end the following (see `Outage`): a restarted server picks the mailing up."""
    outage = Outage(reconnect_for, f"mailing workflow {handle.id}")
    result = asyncio.ensure_future(_final_summary(handle, outage))
    began = time.monotonic()
    while not result.done():
        await asyncio.wait([result], timeout=1)
        if result.done() or quiet:
            continue
        try:
            # The workflow's own figures (outcomes refreshed every few seconds): a dozen visibility
            # queries a second on top would only load the server the mailing runs on.
            summary = await handle.query(MailingWorkflow.summary)
        except (RPCError, RuntimeError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            if outage_reason(exc) is not None:  # the result task reports the outage and probes for its end
                continue
            if isinstance(exc, RuntimeError):
                raise
            # e.g. the query raced the workflow's end: just try again
            seconds = int(time.monotonic() - began)
            print(f"[{seconds:>4}s] (progress unavailable: {getattr(exc, 'message', exc)})", file=sys.stderr)
            continue
        outage.over()
        seconds = int(time.monotonic() - began)  # wall clock, taken now: a query may wait out the SDK's retries
        line = f"[{seconds:>4}s] {summary.status}"
        if summary.status == MailingStatus.WAITING and summary.start_at:
            line += f" for the start at {summary.start_at.isoformat()}"
        elif summary.status == MailingStatus.PAUSED_BY_SCHEDULE:
            line += f" ({summary.schedule}); {summary.dispatched}/{summary.recipients['valid']} started"
        elif summary.status in (MailingStatus.RUNNING, MailingStatus.PAUSED):
            outcome = ", ".join(f"{k} {v}" for k, v in summary.outcomes.items())
            line += f": {sum(summary.outcomes.values())}/{summary.recipients['valid']} finished ({outcome})"
        elif summary.status == MailingStatus.NEW and seconds >= NO_WORKER_HINT_AFTER:
            line += " — no worker has picked it up; is a worker (or `starter.py dev`) running?"
        print(line, file=sys.stderr, flush=True)
    return result.result()


async def _final_summary(handle: WorkflowHandle[MailingWorkflow, MailingSummary], outage: Outage) -> MailingSummary:
    """The workflow's result. Its long poll fails once the SDK's own retries give up on a dead server, and
    nothing re-issues it: we do, after a plain call (`describe`) shows the server answers again."""
    while True:
        try:
            return await handle.result()
        except WorkflowFailureError as exc:  # terminated, cancelled or timed out from the outside
            raise CliError(f"mailing workflow {handle.id} ended without a summary: {exc.cause or exc}") from exc
        except (RPCError, RuntimeError) as exc:
            await outage.ride_out(exc, handle.describe)


def print_summary(summary: MailingSummary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    r = summary.recipients
    print(f"mailing {summary.mailing_id} ({summary.name}): {summary.status}")
    if summary.error:
        print(f"  error: {summary.error}")
    print(
        f"  recipients: {r.get('total', 0)} rows, {r.get('valid', 0)} valid, {r.get('invalid', 0)} invalid,"
        f" {r.get('duplicates', 0)} duplicates"
    )
    for reason, count in summary.invalid_by_reason.items():
        print(f"    invalid, {reason}: {count}")
    timing = [f"schedule {summary.schedule}"]
    timing += [f"speed {summary.speed}"] if summary.speed else []
    timing += [f"start {summary.start_at.isoformat()}"] if summary.start_at else []
    timing += [f"end {summary.end_at.isoformat()}"] if summary.end_at else []
    print("  " + ", ".join(timing))
    extra = f", {summary.not_started} never started" if summary.not_started else ""
    print(f"  started: {summary.dispatched} of {r.get('valid', 0)}{extra}")
    if summary.zone_fallback:
        print(f"  sent in the fallback zone (their zones share no allowed window): {summary.zone_fallback}")
    if summary.outcomes:
        print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in summary.outcomes.items()))
        print("  delivered by: " + ", ".join(f"{k} {v}" for k, v in summary.delivered_by_channel.items()))
        for channel, counts in summary.channels.items():
            print(f"  {channel:6} " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def print_import_report(report: ImportReport, as_json: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        dump = report.model_dump(mode="json", exclude={"stored_list", "rejected_file"})
        print(json.dumps(dump, indent=2, ensure_ascii=False), file=out)
        return
    print(
        f"{report.rows} rows: {report.valid} valid, {report.invalid} invalid, {report.duplicates} duplicates",
        file=out,
    )
    for reason, count in report.invalid_by_reason.items():
        print(f"  invalid, {reason}: {count}", file=out)
    for row in report.rejected_sample:
        print(f"  row {row.row}: {row.value!r}: {row.reason}", file=out)


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    spec = checked_spec(args.spec, settings)
    report = await validate_list(spec, ListRules.of(spec), progress=args.progress)
    print_import_report(report, as_json=False, out=sys.stderr)
    if not report.valid:
        raise CliError("the recipients hold no valid number; nothing was started")
    client = await client_for(settings)
    mailing_id = args.id or new_mailing_id(spec.name)
    handle = await start_mailing(client, settings, open_ledger(settings), spec, mailing_id)
    print(f"started mailing {mailing_id}\n  {ui_link(settings, mailing_id)}", file=sys.stderr)
    if not args.wait:
        print(mailing_id)
        return 0
    summary = await follow(handle, quiet=args.json, reconnect_for=args.reconnect_for)
    print_summary(summary, args.json)
    return 0 if summary.status in (MailingStatus.COMPLETED, MailingStatus.COMPLETED_BY_END_DATE) else 1


def mailing_handle(client: Client, mailing_id: str) -> WorkflowHandle[MailingWorkflow, MailingSummary]:
    return client.get_workflow_handle_for(MailingWorkflow.run, mailing_workflow_id(mailing_id))


def open_ledger(settings: Settings) -> Ledger:
    try:
        return Ledger(settings.ledger_url)
    except SQLAlchemyError as exc:
        where = make_url(settings.ledger_url).render_as_string(hide_password=True)
        raise CliError(f"cannot open the ledger at {where}: {str(exc).partition(chr(10))[0]}") from exc


class LedgerAnswer:
    """A mailing's summary with the ledger's figures (late reports included)."""

    def __init__(self, summary: MailingSummary, figures: LedgerFigures) -> None:
        self.summary, self.figures = summary, figures


def ledger_mailing(settings: Settings, mailing_id: str) -> MailingRow | None:
    ledger = open_ledger(settings)
    try:
        with ledger.reading() as conn:
            return load_mailing(conn, mailing_id)
    except UnknownMailing:
        return None
    finally:
        ledger.close()


def ledger_answer(settings: Settings, mailing: MailingRow) -> LedgerAnswer:
    ledger = open_ledger(settings)
    try:
        with ledger.reading() as conn:
            figures = mailing_figures(conn, mailing.id, price_book(settings))
    finally:
        ledger.close()
    return LedgerAnswer(summary_from_ledger(mailing, figures), figures)


async def mailing_status(
    settings: Settings,
    mailing_id: str,
    connect_to: Callable[[Settings], Awaitable[Client]] = client_for,
) -> MailingSummary | LedgerAnswer:
    """A finished mailing from the ledger (whether Temporal still has it or not: the ledger has every report,
    late ones included); a running one from Temporal, or from the ledger when Temporal has forgotten it."""
    try:
        mailing = await asyncio.to_thread(ledger_mailing, settings, mailing_id)
    except CliError as exc:  # the ledger is down: Temporal may still answer
        print(f"warning: {exc}; asking Temporal only", file=sys.stderr)
        mailing = None
    if mailing is not None and mailing.finished:
        return await asyncio.to_thread(ledger_answer, settings, mailing)
    client = await connect_to(settings)
    try:
        return await with_live_counts(client, await mailing_handle(client, mailing_id).query(MailingWorkflow.summary))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise CliError(f"cannot read mailing {mailing_id}: {exc.message}") from exc
        if mailing is None:
            raise CliError(f"no mailing {mailing_id!r}") from exc
    return await asyncio.to_thread(ledger_answer, settings, mailing)


def money(value: Decimal) -> str:
    return f"{value:.2f}"


def print_ledger_answer(answer: LedgerAnswer, as_json: bool) -> None:
    figures = answer.figures
    shown = {"wasted_fallbacks", "wasted_messages", "sms_parts", "unpriced", "currency", "late_reports"}
    extra = figures.model_dump(mode="json", include=shown)
    if as_json:
        dump = answer.summary.model_dump(mode="json") | extra
        dump |= {"cost": {c: money(v) for c, v in figures.cost.items()}, "total_cost": money(figures.total_cost)}
        dump |= {"wasted_cost": money(figures.wasted_cost), "source": "ledger"}
        print(json.dumps(dump, indent=2, ensure_ascii=False))
        return
    print_summary(answer.summary, False)
    print(
        f"  wasted fallbacks: {figures.wasted_fallbacks} (got a later step after an earlier one was delivered:"
        f" {figures.wasted_messages} message{'s' * (figures.wasted_messages != 1)},"
        f" {money(figures.wasted_cost)} {figures.currency})"
    )
    print(f"  SMS parts: {figures.sms_parts}")
    costs = ", ".join(f"{c} {money(v)}" for c, v in figures.cost.items())
    cost = f"  cost: {costs + ', ' if costs else ''}total {money(figures.total_cost)} {figures.currency}"
    if figures.unpriced:
        cost += "; no price for " + ", ".join(f"{n} {c}" for c, n in figures.unpriced.items())
    print(cost)
    print(f"  late reports: {figures.late_reports} (after their recipient's workflow had closed)")
    print("  (figures from the ledger)")


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    answer = await mailing_status(settings, args.mailing_id)
    if isinstance(answer, LedgerAnswer):
        print_ledger_answer(answer, args.json)
    else:
        print_summary(answer, args.json)
    return 0


def moment_arg(text: str) -> datetime:
    """`--since`: a date or time (ISO; naive means UTC), or a duration back from now (`7d`, `12h`)."""
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a date (2026-03-01), a time (2026-03-01T09:30) or a duration back from now (7d)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def short_time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "-"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    def read() -> list[dict[str, object]]:
        ledger = open_ledger(settings)
        try:
            with ledger.reading() as conn:
                items = list_mailings(conn, status=args.status, since=args.since)
        finally:
            ledger.close()
        return [item.model_dump(mode="json") for item in items]

    items = await asyncio.to_thread(read)
    for item in items:
        done = item["dispatched"] if item["status"] in FINISHED and item["dispatched"] is not None else item["finished"]
        item["progress"] = None if item["valid"] is None else f"{done}/{item['valid']}"
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return 0
    if not items:
        print("no mailings" + (" match" if args.status or args.since else " in the ledger yet"), file=sys.stderr)
        return 0
    rows = [
        [
            str(i["id"]),
            str(i["name"])[:32],
            str(i["status"]),
            short_time(datetime.fromisoformat(str(i["created_at"]))),
            short_time(datetime.fromisoformat(str(i["start_at"]))) if i["start_at"] else "-",
            "→".join(str(c) for c in i["channels"]),  # type: ignore[attr-defined]
            str(i["progress"] or "-"),
        ]
        for i in items
    ]
    print_table(["ID", "NAME", "STATUS", "CREATED (UTC)", "START (UTC)", "CHANNELS", "PROGRESS"], rows)
    return 0


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    prices = price_book(settings)

    def write() -> int:
        ledger = open_ledger(settings)
        try:
            with ledger.reading() as conn:
                return write_report(conn, args.mailing_id, args.out, prices).recipients
        finally:
            ledger.close()

    try:
        count = await asyncio.to_thread(write)
    except ReportError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(f"report of mailing {args.mailing_id}: {count} recipients", file=sys.stderr)
    print(args.out)
    return 0


async def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    phone = normalize_phone(args.phone, args.region, allow_landline=True)
    if phone.e164 is None:
        raise CliError(f"{args.phone!r} is not a phone number ({phone.reason})")
    number = phone.e164

    def read() -> list[dict[str, object]]:
        ledger = open_ledger(settings)
        try:
            with ledger.reading() as conn:
                return [m.model_dump(mode="json") for m in search_messages(conn, number, since=args.since)]
        finally:
            ledger.close()

    found = await asyncio.to_thread(read)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"no message to {number} in the ledger" + (" since then" if args.since else ""), file=sys.stderr)
        return 0

    def when(value: object) -> str:
        return short_time(datetime.fromisoformat(str(value))) if value else "-"

    print(f"{len(found)} message{'s' * (len(found) != 1)} to {number}, newest first (times UTC)")
    rows = [
        [
            when(m["sent_at"] or m["failed_at"]),
            f"{m['mailing_id']} ({str(m['mailing_name'] or '?')[:24]})",
            str(m["step"]),
            str(m["channel"] or "?"),
            str(m["account"] or "-"),
            str(m["status"]),
            when(m["delivered_at"]),
            when(m["read_at"]),
            str(m["error"] or ""),
        ]
        for m in found
    ]
    print_table(["SENT", "MAILING", "STEP", "CHANNEL", "ACCOUNT", "STATUS", "DELIVERED", "READ", "ERROR"], rows)
    return 0


LIFECYCLE_UPDATES = {"pause": MailingWorkflow.pause, "resume": MailingWorkflow.resume, "cancel": MailingWorkflow.cancel}


async def cmd_lifecycle(args: argparse.Namespace, settings: Settings) -> int:
    """pause / resume / cancel: an update the mailing workflow answers; repeating one is harmless."""
    client = await client_for(settings)
    handle = mailing_handle(client, args.mailing_id)
    try:
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            summary = await handle.query(MailingWorkflow.summary)
            raise CliError(f"mailing {args.mailing_id} has finished ({summary.status}); nothing to {args.command}")
        answer = await handle.execute_update(LIFECYCLE_UPDATES[args.command])
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no mailing {args.mailing_id!r}") from exc
        raise CliError(f"cannot {args.command} mailing {args.mailing_id}: {exc.message}") from exc
    except WorkflowUpdateFailedError as exc:
        raise CliError(f"cannot {args.command} mailing {args.mailing_id}: {exc.cause or exc}") from exc
    print(f"mailing {args.mailing_id}: {answer}")
    return 0


class ProgressBar:
    """`[#####·····]  48%` on stderr, redrawn in place; silent unless switched on."""

    WIDTH = 30

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._shown = -1

    def __call__(self, fraction: float) -> None:
        percent = min(100, int(fraction * 100))
        if self.enabled and percent != self._shown:
            self._shown = percent
            done = self.WIDTH * percent // 100
            print(f"\rreading [{'#' * done}{'·' * (self.WIDTH - done)}] {percent:3}%", end="", file=sys.stderr)

    def close(self) -> None:
        if self.enabled and self._shown >= 0:
            print(file=sys.stderr, flush=True)


async def validate_list(
    source: MailingSpec | Path,
    rules: ListRules,
    *,
    progress: bool | None,
    rejected: Path | None = None,
    valid_out: ValidSink | None = None,
) -> ImportReport:
    """Read and classify every row (as the import will), optionally writing the rejected rows to a file and
    handing each valid recipient to `valid_out` (row, E.164, the variables the texts use, zones)."""
    path = source if isinstance(source, Path) else source.recipients
    if progress is None:  # by default: a bar for large files, when someone watches the terminal
        progress = sys.stderr.isatty() and path is not None and path.stat().st_size >= PROGRESS_ABOVE_BYTES
    bar = ProgressBar(progress)

    def run() -> ImportReport:
        table = open_source(source, bar) if isinstance(source, MailingSpec) else read_file(source, progress=bar)
        with rejected_writer(rejected) if rejected else nullcontext(None) as rejected_out:
            return validate_rows(table, rules, rejected_out, valid_out)

    try:
        return await asyncio.to_thread(run)
    except RecipientsError as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()


async def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    source: MailingSpec | Path
    if args.source.suffix.lower() in SUPPORTED_SUFFIXES:  # a bare list: default options
        if not args.source.is_file():
            raise CliError(f"{args.source}: file not found")
        source, rules = args.source, ListRules(region=args.region, keep_landlines=args.keep_landlines)
    else:
        source = checked_spec(args.source, settings)
        rules = ListRules.of(source)
    report = await validate_list(source, rules, progress=args.progress, rejected=args.rejected)
    print_import_report(report, args.json)
    if args.rejected and not args.json:
        print(f"rejected rows with their reasons: {args.rejected}", file=sys.stderr)
    return 0 if report.valid else 1


def preview_lines(spec: MailingSpec, row: Row) -> list[str]:
    """Each step's message as this recipient gets it, with what it costs (SMS parts) or weighs (Viber)."""
    phone = normalize_phone(row.phone, spec.region, allow_landline=spec.keep_landlines)
    shown = ", ".join(f"{k}={v}" for k, v in row.variables.items() if not k.isdigit() and v != row.phone.strip())
    number_note = phone.e164 or f"{row.phone.strip()!r} — invalid: {phone.reason}"
    lines = [f"recipient: row {row.number}, {number_note}" + (f" ({shown})" if shown else "")]
    for number, step in enumerate(spec.steps, start=1):
        lines.append(
            f"step {number} · {step.channel} · sender {step.sender} · wait {format_duration(step.wait)}"
            f" · expect {step.expect}"
        )
        try:
            text = render(step.text, row.variables)
            template = step.template.rendered(row.variables) if step.template else None
        except MissingVariableError as exc:
            lines.append(f"  error: {exc} in this row (it would be rejected)")
            continue
        if not template:
            lines.extend(f"  | {line}" for line in text.splitlines() or [""])
        lines.append("  " + definition(step.channel).preview(text, step.image_url, step.button, template))
    return lines


async def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    spec = checked_spec(args.spec, settings)
    try:
        for row in open_source(spec).rows:
            wanted = (
                row.number == args.row
                if args.row
                else normalize_phone(row.phone, spec.region, allow_landline=spec.keep_landlines).e164
            )
            if wanted:
                print("\n".join(preview_lines(spec, row)))
                return 0
    except RecipientsError as exc:
        raise CliError(str(exc)) from exc
    raise CliError(f"no row {args.row} in the recipients" if args.row else "no valid recipient to preview")


def step_loads(spec: MailingSpec) -> list[StepLoad]:
    """Each step's account and an empty count of its messages (checked_spec has checked the accounts)."""
    plan = spec.cascade()
    return [
        StepLoad(index, step.channel, plan.provider_for(step), step.expect) for index, step in enumerate(spec.steps)
    ]


def count_step_loads(spec: MailingSpec, loads: list[StepLoad]) -> ValidSink:
    """A sink for validate_rows: counts each valid recipient's message per step, rendering SMS texts to count
    their exact parts (one recipient at a time: the list is never held)."""

    def add(row: int, phone: str, variables: dict[str, str], zones: list[str] | None) -> None:
        for load, step in zip(loads, spec.steps, strict=True):
            load.messages += 1
            rules = definition(step.channel)
            if not rules.counts_parts:  # one message, one unit: no need to render it
                load.parts += 1
            else:
                size = rules.size(render(step.text, variables))
                assert size is not None
                load.parts += size.parts
                load.encodings[size.encoding.value] = load.encodings.get(size.encoding.value, 0) + 1

    return add


async def cmd_estimate(args: argparse.Namespace, settings: Settings) -> int:
    """What the mailing would send and cost: the list validated as `validate` does, the steps' volumes from the
    ledger's observed outcome rates (see ledger/estimate.py). Nothing is started or sent."""
    if args.history < 1:
        raise CliError("--history: give at least 1 mailing")
    spec = checked_spec(args.spec, settings)
    loads = step_loads(spec)
    prices = price_book(settings)
    try:
        report = await validate_list(
            spec, ListRules.of(spec), progress=args.progress, valid_out=count_step_loads(spec, loads)
        )
    except MissingVariableError as exc:  # validate_rows rejects such rows; kept as a one-line error regardless
        raise CliError(str(exc)) from exc
    if not report.valid:
        raise CliError("the recipients hold no valid number; nothing to estimate")
    ledger = open_ledger(settings)
    try:
        with ledger.reading() as conn:
            wanted = {(load.account, load.channel.value) for load in loads}
            history = await asyncio.to_thread(observed_outcomes, conn, wanted, args.history)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot read the ledger: {type(exc).__name__}") from exc
    finally:
        ledger.close()
    result = forecast(loads, history, prices, report.valid, args.history)
    figures = (spec.name, report.rows, report.invalid, report.duplicates)
    if args.json:
        print(json.dumps(render_json(result, *figures), indent=2, ensure_ascii=False))
    else:
        print("\n".join(render_text(result, *figures)))
    return 0


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    # The stack's worker, gateway and sandbox log here, through main's configure_logging: numbers masked.
    async with embedded_stack(settings):
        print(
            f"kaskad dev stack is up — Temporal {settings.temporal_address}, UI {settings.temporal_ui_url},"
            f" gateway {settings.webhook_base_url}, sandbox {settings.sandbox_base_url}. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping the dev stack…", file=sys.stderr, flush=True)
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    spec = checked_spec(args.spec, settings)
    async with embedded_stack(settings) as stack:
        mailing_id = new_mailing_id(spec.name)
        assert stack.ledger is not None
        handle = await start_mailing(stack.client, settings, stack.ledger, spec, mailing_id)
        print(f"demo mailing {mailing_id} started\n  {ui_link(settings, mailing_id)}", file=sys.stderr)
        summary = await follow(handle, quiet=args.json, reconnect_for=args.reconnect_for)
    print_summary(summary, args.json)
    return 0 if summary.status in (MailingStatus.COMPLETED, MailingStatus.COMPLETED_BY_END_DATE) else 1


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


SINCE_HELP = "only those {} at or after: a date, a time (naive = UTC) or a duration back from now, e.g. 30d"
RECONNECT_HELP = f"keep following while Temporal is unreachable this long (default {format_duration(RECONNECT_FOR)})"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="starter.py", description="kaskad: cascade mailings on Temporal")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the embedded stack in the foreground").set_defaults(run=cmd_dev)
    demo = commands.add_parser("demo", help="run the example mailing on the embedded stack, then stop")
    demo.add_argument("--spec", type=Path, default=DEMO_SPEC)
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--reconnect-for", type=duration, default=RECONNECT_FOR, metavar="DURATION", help=RECONNECT_HELP)
    demo.set_defaults(run=cmd_demo)
    start = commands.add_parser("start", help="launch a mailing")
    start.add_argument("spec", type=Path)
    start.add_argument("--id", help="mailing id (default: from the name plus a random suffix)")
    start.add_argument("--wait", action="store_true", help="follow progress until the mailing ends")
    start.add_argument("--json", action="store_true", help="print the final summary as JSON")
    start.add_argument(
        "--reconnect-for",
        type=duration,
        default=RECONNECT_FOR,
        metavar="DURATION",
        help="with --wait: " + RECONNECT_HELP,
    )
    start.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar while reading")
    start.set_defaults(run=cmd_start)
    status = commands.add_parser("status", help="show a mailing's status and statistics")
    status.add_argument("mailing_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)
    for command, what in (
        ("pause", "hold every send not yet made, fallbacks included"),
        ("resume", "continue a paused mailing at its speed"),
        ("cancel", "stop every pending send; the mailing ends as aborted"),
    ):
        lifecycle = commands.add_parser(command, help=what)
        lifecycle.add_argument("mailing_id")
        lifecycle.set_defaults(run=cmd_lifecycle)
    listing = commands.add_parser("list", help="the mailings in the ledger, newest first")
    listing.add_argument("--status", help="only mailings of this status, e.g. running, completed")
    listing.add_argument("--since", type=moment_arg, metavar="DATE", help=SINCE_HELP.format("created"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    report = commands.add_parser("report", help="write a mailing's report (.xlsx: summary, chart, detail, rejected)")
    report.add_argument("mailing_id")
    report.add_argument("--out", type=Path, required=True, metavar="FILE", help=".xlsx, or .csv for the detail only")
    report.set_defaults(run=cmd_report)
    search = commands.add_parser("search", help="every message to a phone number, across mailings")
    search.add_argument("phone", help="as you would type it: +7 999 123-45-67, 89991234567…")
    search.add_argument("--since", type=moment_arg, metavar="DATE", help=SINCE_HELP.format("sent"))
    search.add_argument("--region", default="RU", help="region of a national number (default RU)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(run=cmd_search)
    preview = commands.add_parser("preview", help="show each step's message for one recipient")
    preview.add_argument("spec", type=Path)
    preview.add_argument("--row", type=int, help="row number in the file (default: the first valid one)")
    preview.set_defaults(run=cmd_preview)
    estimate = commands.add_parser("estimate", help="messages, SMS parts and cost per step, before launch")
    estimate.add_argument("spec", type=Path)
    estimate.add_argument("--json", action="store_true")
    estimate.add_argument(
        "--history",
        type=int,
        default=DEFAULT_HISTORY,
        metavar="N",
        help=f"observed outcome rates over each account's last N finished mailings (default {DEFAULT_HISTORY})",
    )
    estimate.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar while reading")
    estimate.set_defaults(run=cmd_estimate)
    validate = commands.add_parser("validate", help="count a list's valid, invalid and duplicate numbers")
    validate.add_argument("source", type=Path, metavar="SPEC|FILE", help="a mailing spec, or a recipients file")
    validate.add_argument("--json", action="store_true")
    validate.add_argument("--rejected", type=Path, help="write the rejected rows with reasons (.csv or .xlsx)")
    validate.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar while reading")
    validate.add_argument("--region", default="RU", help="for a bare file: region of national numbers")
    validate.add_argument("--keep-landlines", action="store_true", help="for a bare file: accept fixed lines")
    validate.set_defaults(run=cmd_validate)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(logging.WARNING)  # every subcommand: whatever logs (SDK, core, ours) is masked
    try:
        code: int = asyncio.run(args.run(args, Settings()))
        return code
    except (CliError, StackError, OSError, AccountError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        release_sdk_runtime()


if __name__ == "__main__":
    sys.exit(main())
