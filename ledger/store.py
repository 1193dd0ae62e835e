"""Writing to the ledger, idempotently: a retried activity, a repeated report or a replayed workflow writes
the same rows again and changes nothing (statuses only advance, as in the workflows; reports are keyed).

Synchronous SQLAlchemy Core: callers on an event loop run these methods on the ledger's own threads (`Ledger.run`).
SQLite (the embedded default) is opened in WAL mode and every writing transaction takes the write lock at
its start (`BEGIN IMMEDIATE`), so the worker and the gateway, two processes, never deadlock on an upgrade;
reads never block writes. PostgreSQL serialises the writers of one message by locking its row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from domain.models import ImportReport, MailingSummary, RecipientRecord, RecipientState
from domain.refs import ClientRef
from domain.spec import MailingSpec
from domain.status import MessageStatus, advance
from ledger.schema import (
    list_entries,
    mailing_statuses,
    mailings,
    messages,
    recipients,
    rejected_rows,
    reports,
    uploads,
)
from recipients.importer import StoredRecipient

MIGRATIONS = Path(__file__).parent / "migrations"
UPLOAD_CHUNK = 4 * 1024 * 1024  # an uploaded list is stored in pieces of this size, never held whole
INSERT_BATCH = 5_000
# A write waits this long for a lock (SQLite's write lock, a PostgreSQL statement), well inside the 30 s the
# workflows' record activities allow. Errors say which table, never which values (hide_parameters: the values
# are phone numbers and names).
LOCK_WAIT = timedelta(seconds=15)
THREADS = 4  # the ledger's own threads (see Ledger.run)
_MIGRATION_LOCK = 7_151_900  # any constant: PostgreSQL's advisory lock that makes one process migrate at a time


T = TypeVar("T")


TIMES = ("sent_at", "delivered_at", "read_at", "failed_at")
MESSAGE_FIELDS = ("channel", "account", "sender", "encoding", "parts")


class LedgerError(Exception):
    """The ledger cannot do what was asked (an unknown mailing, an id taken); the CLI prints it."""


def driver_url(url: str) -> str:
    """`postgresql://…` as people write it, with the driver kaskad ships (psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Change:
    """A status reported for one message, with what came with it."""

    status: MessageStatus
    at: datetime
    error: str | None = None
    message_id: str | None = None


class Ledger:
    """The ledger at `url` (created and migrated to the current schema on open)."""

    def __init__(self, url: str) -> None:
        self.url = driver_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        if self.dialect == "sqlite":
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            sqlite_args = {"check_same_thread": False, "timeout": LOCK_WAIT.total_seconds()}
            self._write = create_engine(self.url, connect_args=sqlite_args, hide_parameters=True)
            self._read = create_engine(self.url, connect_args=sqlite_args, hide_parameters=True)
            _sqlite_pragmas(self._write, immediate=True)
            _sqlite_pragmas(self._read, immediate=False)
        else:
            timeouts = {
                "connect_timeout": 10,
                "options": f"-c statement_timeout={int(LOCK_WAIT.total_seconds() * 1000)}",
            }
            self._write = self._read = create_engine(
                self.url, pool_pre_ping=True, hide_parameters=True, connect_args=timeouts
            )
        self._owners: dict[str, list[list[str]] | None] = {}  # mailing id → each step's accounts (failover order)
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="ledger")
        # PostgreSQL locks rows, so its writers need no turns; SQLite has one lock for the whole file.
        self._local_writer: AbstractContextManager[object] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext()
        )
        self._migrate()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._write.dispose()
        self._read.dispose()

    async def run(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a method of this ledger from an event loop, on the ledger's own threads: a slow database
        queues its own work, not the loop's default pool (DNS lookups, the import's parsing)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(method, *args, **kwargs))

    def _migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._writing() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction. On SQLite the threads of one process take turns here first: waiting on
        SQLite's own lock means its busy handler's sleeps (up to 100 ms each), which cost a third of the
        cascade's throughput when the gateway's and the worker's writes met."""
        with self._local_writer, self._write.begin() as conn:
            yield conn

    def reading(self) -> Connection:
        """A connection for reports and queries (never blocks the writers)."""
        return self._read.connect()

    def _insert(self, conn: Connection, table: Any) -> Any:
        """INSERT … ON CONFLICT DO NOTHING in the ledger's dialect."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    # --- mailings ---------------------------------------------------------------------------------------------

    def create_mailing(self, mailing_id: str, spec: MailingSpec, created_at: datetime, upload: Path | None) -> None:
        """Record a mailing about to be launched, with its recipients file (read by the import on any worker)."""
        digest, size = hashlib.sha256(), 0
        with self._writing() as conn:
            if conn.execute(select(mailings.c.id).where(mailings.c.id == mailing_id)).first():
                raise LedgerError(f"mailing {mailing_id} exists already; choose another --id")
            if upload is not None:
                with upload.open("rb") as file:
                    for seq, chunk in enumerate(iter(lambda: file.read(UPLOAD_CHUNK), b"")):
                        conn.execute(uploads.insert().values(mailing_id=mailing_id, seq=seq, data=chunk))
                        digest.update(chunk)
                        size += len(chunk)
            conn.execute(
                mailings.insert().values(
                    id=mailing_id,
                    name=spec.name,
                    spec=spec.model_dump_json(),
                    channels=",".join(step.channel.value for step in spec.steps),
                    status="new",
                    created_at=created_at,
                    start_at=spec.start_at,
                    end_at=spec.end_at,
                    list_name=None if upload is None else upload.name,
                    list_size=None if upload is None else size,
                    list_sha256=None if upload is None else digest.hexdigest(),
                    updated_at=created_at,
                )
            )
            conn.execute(
                self._insert(conn, mailing_statuses).values(mailing_id=mailing_id, status="new", at=created_at)
            )

    def discard_mailing(self, mailing_id: str) -> None:
        """Forget a mailing whose launch failed (its workflow never started)."""
        with self._writing() as conn:
            for table in (uploads, mailing_statuses):
                conn.execute(delete(table).where(table.c.mailing_id == mailing_id))
            conn.execute(delete(mailings).where(mailings.c.id == mailing_id))

    def has_upload(self, mailing_id: str) -> bool:
        with self.reading() as conn:
            return (
                conn.execute(select(uploads.c.seq).where(uploads.c.mailing_id == mailing_id).limit(1)).first()
                is not None
            )

    def read_upload(self, mailing_id: str, dest: Path) -> None:
        """Write the mailing's uploaded file to `dest`, a chunk at a time."""
        with self.reading() as conn, dest.open("wb") as out:
            seqs = conn.execute(
                select(uploads.c.seq).where(uploads.c.mailing_id == mailing_id).order_by(uploads.c.seq)
            ).scalars()
            for seq in list(seqs):
                data = conn.execute(
                    select(uploads.c.data).where(uploads.c.mailing_id == mailing_id, uploads.c.seq == seq)
                ).scalar_one()
                out.write(data)

    def record_status(self, mailing_id: str, status: str, at: datetime, error: str | None = None) -> None:
        """The mailing entered `status` at `at` (the same status at the same moment again changes nothing)."""
        with self._writing() as conn:
            conn.execute(self._insert(conn, mailing_statuses).values(mailing_id=mailing_id, status=status, at=at))
            values: dict[str, Any] = {"status": status, "updated_at": _now()}
            if status == "running":
                values["started_at"] = func.coalesce(mailings.c.started_at, at)
            if error is not None:
                values["error"] = error
            # a late retry of an older status never overwrites a newer one
            # `new` is stamped by the client's clock, the rest by the workflow's: compare like with like
            latest = (
                select(func.max(mailing_statuses.c.at))
                .where(mailing_statuses.c.mailing_id == mailing_id, mailing_statuses.c.status != "new")
                .scalar_subquery()
            )
            conn.execute(update(mailings).where(mailings.c.id == mailing_id, latest <= at).values(values))

    def record_import(
        self,
        mailing_id: str,
        report: ImportReport,
        entries: Iterable[tuple[int, StoredRecipient]],
        rejected: Iterable[tuple[int, str, str]],
    ) -> None:
        """The imported list (row, recipient) and the rejected rows (row, value, reason); replaces a previous
        attempt's, in one transaction."""
        with self._writing() as conn:
            for table in (list_entries, rejected_rows):
                conn.execute(delete(table).where(table.c.mailing_id == mailing_id))
            for batch in _batches(
                {
                    "mailing_id": mailing_id,
                    "position": r.position,
                    "phone": r.phone,
                    "variables": json.dumps(r.variables, ensure_ascii=False) if r.variables else None,
                    "zones": json.dumps(r.zones) if r.zones else None,
                    "row": row,
                }
                for row, r in entries
            ):
                conn.execute(list_entries.insert(), batch)
            for batch in _batches(
                {"mailing_id": mailing_id, "row": row, "value": value, "reason": reason}
                for row, value, reason in rejected
            ):
                conn.execute(self._insert(conn, rejected_rows), batch)
            conn.execute(
                update(mailings)
                .where(mailings.c.id == mailing_id)
                .values(
                    import_report=report.model_dump_json(exclude={"stored_list", "rejected_file"}),
                    rows=report.rows,
                    valid=report.valid,
                    invalid=report.invalid,
                    duplicates=report.duplicates,
                    updated_at=_now(),
                )
            )

    def has_list(self, mailing_id: str) -> bool:
        with self.reading() as conn:
            query = select(list_entries.c.position).where(list_entries.c.mailing_id == mailing_id).limit(1)
            return conn.execute(query).first() is not None

    def read_list(self, mailing_id: str, start: int, limit: int) -> list[StoredRecipient]:
        with self.reading() as conn:
            rows = conn.execute(
                select(list_entries.c.position, list_entries.c.phone, list_entries.c.variables, list_entries.c.zones)
                .where(list_entries.c.mailing_id == mailing_id, list_entries.c.position >= start)
                .order_by(list_entries.c.position)
                .limit(limit)
            )
            return [
                StoredRecipient(
                    position, phone, json.loads(variables) if variables else {}, json.loads(zones) if zones else None
                )
                for position, phone, variables, zones in rows
            ]

    def record_final(self, summary: MailingSummary, dispatched: int) -> None:
        """The mailing workflow's last word: its status, error, figures and times."""
        with self._writing() as conn:
            at = summary.finished_at or _now()
            conn.execute(
                self._insert(conn, mailing_statuses).values(mailing_id=summary.mailing_id, status=summary.status, at=at)
            )
            conn.execute(
                update(mailings)
                .where(mailings.c.id == summary.mailing_id)
                .values(
                    status=summary.status,
                    error=summary.error,
                    started_at=func.coalesce(mailings.c.started_at, summary.started_at),
                    finished_at=at,
                    dispatched=dispatched,
                    summary=summary.model_dump_json(),
                    updated_at=_now(),
                )
            )

    # --- messages ---------------------------------------------------------------------------------------------

    def record_send(self, ref: ClientRef, fields: dict[str, Any], *changes: Change) -> None:
        """A send activity's result: who carried the message and how (account, sender, parts…), and its status."""
        with self._writing() as conn:
            self._merge(conn, ref, fields, *changes)

    def record_recipient(self, record: RecipientRecord) -> None:
        """A recipient workflow's final state: its outcome, and every step it decided (timeouts, not sent)."""
        state, accounts, closed_at = record.state, record.accounts, record.closed_at
        with self._writing() as conn:
            for index, step in enumerate(state.steps):
                if step.status is MessageStatus.PENDING and not step.handed_over:
                    continue  # never reached
                ref = _step_ref(state, index, step.client_ref)
                fields: dict[str, Any] = {
                    "channel": step.channel.value,
                    "account": accounts[index] if index < len(accounts) else None,
                    "timed_out": step.timed_out,
                    "unconfirmed": step.unconfirmed,
                }
                send = record.sends[index] if index < len(record.sends) else None
                if send is not None:
                    fields |= {"sender": send.sender, "encoding": send.encoding, "parts": send.parts}
                changes = [
                    Change(MessageStatus.SENT, step.sent_at, message_id=step.message_id) if step.sent_at else None,
                    Change(MessageStatus.DELIVERED, step.delivered_at) if step.delivered_at else None,
                    Change(
                        step.status,
                        step.read_at or step.failed_at or step.delivered_at or step.sent_at or closed_at,
                        step.error,
                    ),
                ]
                self._merge(conn, ref, fields, *[c for c in changes if c is not None])
            values = {
                "status": state.status.value,
                "delivered_channel": state.delivered_channel.value if state.delivered_channel else None,
                "closed_at": closed_at,
            }
            dialect = postgresql if self.dialect == "postgresql" else sqlite
            conn.execute(
                dialect.insert(recipients)
                .values(mailing_id=state.mailing_id, phone=state.phone, **values)
                .on_conflict_do_update(index_elements=[recipients.c.mailing_id, recipients.c.phone], set_=values)
            )

    def record_report(
        self, ref: ClientRef, account: str, report: Change, *, reported_at: datetime | None, late: bool
    ) -> bool:
        # A report its workflow took (not late) reaches the message through the recipient's final record; only
        # a late one, which no workflow will record, changes the message here. One insert for the rest.
        """A provider's report, whatever became of its workflow. False when it is not recorded: the same report
        came before, or it is about no step of a mailing in the ledger.

        It changes its message only when `account` is the one the mailing's spec gave that step (as the
        recipient workflow checks); a report from another account is kept, marked `foreign`, and changes
        nothing. `report.at` is when the status applies (the provider's time, or the gateway's when it gave
        none); `reported_at` is the provider's own time, None when it gave none: the same report sent again
        is known by its content, not by when it came."""
        owners = self._step_owners(ref.mailing_id)
        if owners is None or ref.step >= len(owners) or ref.attempt >= len(owners[ref.step]):
            return False  # no such mailing, step or failover attempt
        sender = owners[ref.step][ref.attempt]  # the one account that may report on this attempt
        reported_at = _storable(reported_at)
        error, message_id = _clean(report.error), _clean(report.message_id)
        key = hashlib.sha256(
            json.dumps([str(ref), account, report.status.value, message_id, error, _iso(reported_at)]).encode()
        ).hexdigest()
        with self._writing() as conn:
            inserted = conn.execute(
                self._insert(conn, reports)
                .values(
                    key=key,
                    client_ref=str(ref),
                    mailing_id=ref.mailing_id,
                    account=account,
                    status=report.status.value,
                    message_id=message_id,
                    error=error,
                    at=reported_at,
                    received_at=_now(),
                    late=late,
                    foreign=account != sender,
                )
                .returning(reports.c.id)
            ).first()
            if inserted is None:
                return False
            if late and account == sender:
                self._merge(conn, ref, {"account": account}, report)
            return True

    def _step_owners(self, mailing_id: str) -> list[list[str]] | None:
        """The provider accounts of each step of a mailing (several with failover), from its spec in the ledger
        (None: not in it)."""
        if mailing_id not in self._owners:
            with self.reading() as conn:
                text = conn.execute(select(mailings.c.spec).where(mailings.c.id == mailing_id)).scalar()
            if text is None:
                return None  # not cached: the mailing may be recorded in a moment
            plan = MailingSpec.model_validate_json(text).cascade()
            self._owners[mailing_id] = [plan.providers_for(step) for step in plan.steps]
        return self._owners[mailing_id]

    def _merge(self, conn: Connection, ref: ClientRef, fields: dict[str, Any], *changes: Change) -> None:
        """Apply `changes` to the message's row (created if new): statuses only advance, first times stick,
        and a field already known (the account, the message id) is never overwritten."""
        now = _now()
        query = select(messages).where(messages.c.client_ref == str(ref))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).mappings().first()
        row: dict[str, Any] = dict(found) if found is not None else {
            "status": MessageStatus.PENDING.value, "unconfirmed": False, "timed_out": False, "error": None,
            "message_id": None, **dict.fromkeys(MESSAGE_FIELDS), **dict.fromkeys(TIMES),
        }  # fmt: skip
        values: dict[str, Any] = {}
        for name, value in fields.items():
            value = _clean(value) if isinstance(value, str) else value
            if value is None:
                continue
            if name in ("timed_out",):
                values[name] = bool(row[name]) or bool(value)
            elif name == "unconfirmed":
                values[name] = bool(value)
            elif row[name] is None:
                values[name] = value
        status = MessageStatus(row["status"])
        times = {name: row[name] for name in TIMES}
        error = row["error"]
        message_id = row["message_id"]
        for given in changes:
            at = _storable(given.at) or now
            change = Change(given.status, at, _clean(given.error), _clean(given.message_id))
            message_id = message_id or change.message_id
            new = advance(status, change.status)
            if change.status is MessageStatus.SENT:
                times["sent_at"] = times["sent_at"] or change.at
            if new is status:
                continue
            status = new
            if new is MessageStatus.DELIVERED:
                times["delivered_at"] = times["delivered_at"] or change.at
            elif new is MessageStatus.READ:
                times["read_at"] = times["read_at"] or change.at
                times["delivered_at"] = times["delivered_at"] or change.at
            elif new in (MessageStatus.UNDELIVERED, MessageStatus.NOT_SENT):
                times["failed_at"] = change.at
                error = change.error
        if status.rank > MessageStatus.SENT.rank and status is not MessageStatus.NOT_SENT:
            values["unconfirmed"] = False  # a report confirmed the hand-over
        values.update(times, status=status.value, error=error, message_id=message_id, updated_at=now)
        if found is not None:
            conn.execute(update(messages).where(messages.c.client_ref == str(ref)).values(values))
            return
        identity = {"client_ref": str(ref), "mailing_id": ref.mailing_id, "phone": ref.phone, "step": ref.step}
        defaults = {"unconfirmed": False, "timed_out": False}
        inserted = conn.execute(
            self._insert(conn, messages).values(defaults | values | identity).returning(messages.c.client_ref)
        ).first()
        if inserted is None:  # PostgreSQL: another writer created it meanwhile; merge into theirs
            self._merge(conn, ref, fields, *changes)


def _sqlite_pragmas(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun explicitly below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT.total_seconds() * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= INSERT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _step_ref(state: RecipientState, index: int, client_ref: str) -> ClientRef:
    """The reference a step's message went out under (with failover, its attempt's)."""
    try:
        ref = ClientRef.parse(client_ref)
    except ValueError:
        return ClientRef(state.mailing_id, state.phone, index)
    return (
        ref
        if (ref.mailing_id, ref.phone, ref.step) == (state.mailing_id, state.phone, index)
        else ClientRef(state.mailing_id, state.phone, index)
    )


def _clean(text: str | None) -> str | None:
    """Text as both databases store it: PostgreSQL refuses NUL characters."""
    return None if text is None else text.replace("\x00", "\ufffd")


def _storable(moment: datetime | None) -> datetime | None:
    """A moment both databases can hold in UTC, or None (a provider's year 1 or 9999 with an offset)."""
    if moment is None:
        return None
    try:
        moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return None
    return moment if 2000 <= moment.year <= 2200 else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _now() -> datetime:
    return datetime.now(UTC)
