"""Reading the ledger: a mailing's figures, its per-recipient detail, the mailings list and the messages to one
number. The read side of issue 11; the writers are in ledger/store.py.

Every figure is derived from the `messages` rows, not from the outcome each recipient workflow decided
(`recipients.status`): the gateway records every report, late ones included, so a report that arrived after a
workflow closed still corrects the figures. The rules (Rapporto's statistics):

- a recipient is **delivered** if any of its messages reached delivered (or read) — undelivered only when no
  channel delivered. The delivering channel is the earliest step that reached the status it expected (`read`
  for a Viber step that expects it), else the earliest step delivered;
- else **undelivered** if any message was handed over to a provider (sent, refused at the send, or reported);
- else **not_sent**. While the mailing runs, a recipient whose workflow has not closed and that nothing
  delivered yet is **in_progress** (messages) or **pending** (none yet);
- a **wasted fallback**: a step was delivered and a later step was handed over too — the subscriber got both.
  Its cost is the cost of those later messages.

Everything streams: one pass over the list joined with its messages, in list order, a recipient at a time
(`stream_results`: a server-side cursor on PostgreSQL), so a million recipients take bounded memory.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Result, RowMapping, Select, and_, func, select, text

from domain.channels import known
from domain.models import MailingSummary
from domain.spec import MailingSpec
from ledger.schema import list_entries, mailings, messages, recipients, rejected_rows, reports
from providers.prices import PriceBook

FINISHED_STATUSES = frozenset({"completed", "completed_by_end_date", "aborted"})
OUTCOMES = ("delivered", "undelivered", "not_sent")  # final, as in MailingSummary.outcomes
LIVE_OUTCOMES = ("in_progress", "pending")  # only while the mailing runs
FUNNEL = ("sent", "delivered", "read", "undelivered", "not_sent")
HANDED_OVER = frozenset({"sent", "delivered", "read", "undelivered"})
DELIVERED = frozenset({"delivered", "read"})
STREAM_BATCH = 5_000

_MESSAGE_COLUMNS = (
    messages.c.step,
    messages.c.channel,
    messages.c.account,
    messages.c.parts,
    messages.c.status,
    messages.c.error,
    messages.c.sent_at,
    messages.c.delivered_at,
    messages.c.read_at,
    messages.c.failed_at,
)


class UnknownMailing(LookupError):
    """The ledger has no mailing by that id."""


class LedgerFigures(BaseModel):
    """A mailing's figures from the ledger. The first three fields are named and shaped as MailingSummary's."""

    outcomes: dict[str, int] = Field(default_factory=dict)
    delivered_by_channel: dict[str, int] = Field(default_factory=dict)
    channels: dict[str, dict[str, int]] = Field(default_factory=dict)  # sent, delivered, read, undelivered, not_sent
    recipients: int = 0  # counted: list entries (or phones with messages when the list is not in the ledger)
    wasted_fallbacks: int = 0  # recipients who got a later step although an earlier one was delivered
    wasted_messages: int = 0
    sms_parts: int = 0  # parts of the SMS handed over
    cost: dict[str, Decimal] = Field(default_factory=dict)  # per channel, of the messages handed over with a price
    unpriced: dict[str, int] = Field(default_factory=dict)  # per channel, messages handed over without a price
    wasted_cost: Decimal = Decimal(0)
    currency: str = "RUB"
    late_reports: int = 0  # reports that arrived after their recipient's workflow had closed

    @property
    def total_cost(self) -> Decimal:
        return sum(self.cost.values(), Decimal(0))


@dataclass(frozen=True)
class MailingRow:
    """The `mailings` row, with its spec parsed."""

    id: str
    name: str
    status: str
    error: str | None
    spec: MailingSpec
    channels: list[str]
    created_at: datetime
    start_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    rows: int | None
    valid: int | None
    invalid: int | None
    duplicates: int | None
    dispatched: int | None
    import_report: dict[str, Any] | None
    summary: MailingSummary | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES or self.summary is not None

    def expects(self) -> list[str]:
        return [step.expect.value for step in self.spec.steps]


@dataclass(frozen=True)
class Message:
    """One step's message as the Detail sheet shows it."""

    step: int
    channel: str | None
    account: str | None
    parts: int | None
    status: str
    error: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None

    @property
    def handed_over(self) -> bool:
        return self.status in HANDED_OVER or self.sent_at is not None

    @property
    def delivered(self) -> bool:
        return self.status in DELIVERED


@dataclass
class Recipient:
    """One recipient: the list entry (row and position if the list is in the ledger), its outcome, its messages."""

    phone: str
    row: int | None
    position: int | None
    status: str
    channel: str | None  # the delivering channel
    messages: list[Message] = field(default_factory=list)  # by step
    wasted: list[Message] = field(default_factory=list)  # handed over after an earlier step was delivered

    def step(self, index: int) -> Message | None:
        return next((m for m in self.messages if m.step == index), None)


def load_mailing(conn: Connection, mailing_id: str) -> MailingRow:
    row = conn.execute(select(mailings).where(mailings.c.id == mailing_id)).mappings().first()
    if row is None:
        raise UnknownMailing(mailing_id)
    return _mailing_row(row)


def _mailing_row(row: RowMapping) -> MailingRow:
    return MailingRow(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        error=row["error"],
        spec=MailingSpec.model_validate_json(row["spec"]),
        channels=[c for c in row["channels"].split(",") if c],
        created_at=row["created_at"],
        start_at=row["start_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rows=row["rows"],
        valid=row["valid"],
        invalid=row["invalid"],
        duplicates=row["duplicates"],
        dispatched=row["dispatched"],
        import_report=json.loads(row["import_report"]) if row["import_report"] else None,
        summary=MailingSummary.model_validate_json(row["summary"]) if row["summary"] else None,
    )


def _stream(conn: Connection, query: Select[Any]) -> Result[Any]:
    """`query`'s rows fetched a batch at a time (a server-side cursor on PostgreSQL).

    PostgreSQL plans a cursor for its first rows (`cursor_tuple_fraction` 0.1): with the statistics of a table
    just filled (autovacuum has not analysed it yet) that picks a nested loop rescanning the mailing's
    messages for every recipient — quadratic, hours for a million. These cursors are read to the end: they
    are planned for the whole result (hash joins, one sort)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL cursor_tuple_fraction = 1.0"))
    return conn.execute(query.execution_options(stream_results=True, yield_per=STREAM_BATCH))


def iter_recipients(conn: Connection, mailing: MailingRow) -> Iterator[Recipient]:
    """Every recipient of the mailing with its outcome and messages: in list order when the list is in the
    ledger, else (a mailing launched before the ledger stored lists) every number with a message, by number."""
    has_list = conn.execute(select(list_entries.c.position).where(list_entries.c.mailing_id == mailing.id).limit(1))
    if has_list.first() is not None:
        query = (
            select(
                list_entries.c.phone,
                list_entries.c.row,
                list_entries.c.position,
                recipients.c.status.label("closed"),
                *_MESSAGE_COLUMNS,
            )
            .select_from(
                list_entries.outerjoin(
                    messages,
                    and_(messages.c.mailing_id == list_entries.c.mailing_id, messages.c.phone == list_entries.c.phone),
                ).outerjoin(
                    recipients,
                    and_(
                        recipients.c.mailing_id == list_entries.c.mailing_id,
                        recipients.c.phone == list_entries.c.phone,
                    ),
                )
            )
            .where(list_entries.c.mailing_id == mailing.id)
            .order_by(list_entries.c.position)
        )
        key = "position"
    else:
        query = (
            select(
                messages.c.phone,
                recipients.c.status.label("closed"),
                *_MESSAGE_COLUMNS,
            )
            .select_from(
                messages.outerjoin(
                    recipients,
                    and_(recipients.c.mailing_id == messages.c.mailing_id, recipients.c.phone == messages.c.phone),
                )
            )
            .where(messages.c.mailing_id == mailing.id)
            .order_by(messages.c.phone)
        )
        key = "phone"
    expects = mailing.expects()
    result = _stream(conn, query).mappings()
    for _, group in itertools.groupby(result, key=lambda r: r[key]):
        rows = list(group)
        first = rows[0]
        found = sorted(
            (
                Message(
                    step=r["step"],
                    channel=r["channel"] or _spec_channel(mailing, r["step"]),
                    account=r["account"],
                    parts=r["parts"],
                    status=r["status"],
                    error=r["error"],
                    sent_at=r["sent_at"],
                    delivered_at=r["delivered_at"],
                    read_at=r["read_at"],
                    failed_at=r["failed_at"],
                )
                for r in rows
                if r["step"] is not None
            ),
            key=lambda m: m.step,
        )
        yield _decide(
            first["phone"],
            first.get("row"),
            first.get("position"),
            found,
            expects,
            final=mailing.finished or first["closed"] is not None,
        )


def _spec_channel(mailing: MailingRow, step: int) -> str | None:
    return mailing.spec.steps[step].channel.value if 0 <= step < len(mailing.spec.steps) else None


def _decide(
    phone: str, row: int | None, position: int | None, found: list[Message], expects: Sequence[str], *, final: bool
) -> Recipient:
    """The outcome of one recipient from its messages (see the module's docstring)."""
    delivered = [m for m in found if m.delivered]
    if delivered:
        expected = [
            m for m in delivered if m.status == "read" or (m.step < len(expects) and expects[m.step] == "delivered")
        ]
        channel = (expected or delivered)[0].channel
        first = delivered[0].step
        wasted = [m for m in found if m.step > first and m.handed_over]
        return Recipient(phone, row, position, "delivered", channel, found, wasted)
    if not final:
        status = "in_progress" if found else "pending"
    elif any(m.handed_over for m in found):
        status = "undelivered"
    else:
        status = "not_sent"
    return Recipient(phone, row, position, status, None, found)


class FiguresBuilder:
    """Folds recipients into LedgerFigures, one at a time (the report writes its Detail sheet in the same pass)."""

    def __init__(self, mailing: MailingRow, prices: PriceBook) -> None:
        self.prices = prices
        self.figures = LedgerFigures(currency=prices.currency)
        self.outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        self.by_channel: Counter[str] = Counter()
        channels = list(dict.fromkeys(mailing.channels or [s.channel.value for s in mailing.spec.steps]))
        self.funnel: dict[str, Counter[str]] = {c: Counter(dict.fromkeys(FUNNEL, 0)) for c in channels}
        self.cost: dict[str, Decimal] = {}
        self.unpriced: Counter[str] = Counter()

    def add(self, recipient: Recipient) -> None:
        f = self.figures
        f.recipients += 1
        self.outcomes[recipient.status] += 1
        if recipient.channel:
            self.by_channel[recipient.channel] += 1
        for m in recipient.messages:
            channel = m.channel or "unknown"
            counts = self.funnel.setdefault(channel, Counter(dict.fromkeys(FUNNEL, 0)))
            if m.handed_over:
                counts["sent"] += 1
                rules = known(m.channel)
                if rules is not None and rules.counts_parts:  # SMS parts (the only channel billed per part)
                    f.sms_parts += max(m.parts or 1, 1)
                cost = self.prices.cost(m.account, m.channel, m.parts)
                if cost is None:
                    self.unpriced[channel] += 1
                else:
                    self.cost[channel] = self.cost.get(channel, Decimal(0)) + cost
            if m.delivered:
                counts["delivered"] += 1
            if m.status in ("read", "undelivered", "not_sent"):
                counts[m.status] += 1
        if recipient.wasted:
            f.wasted_fallbacks += 1
            f.wasted_messages += len(recipient.wasted)
            for m in recipient.wasted:
                f.wasted_cost += self.prices.cost(m.account, m.channel, m.parts) or Decimal(0)

    def result(self, late_reports: int) -> LedgerFigures:
        f = self.figures
        f.outcomes = dict(self.outcomes)
        for live in LIVE_OUTCOMES:
            if not f.outcomes.get(live):
                f.outcomes.pop(live, None)
        f.delivered_by_channel = {c: self.by_channel.get(c, 0) for c in self.funnel} | dict(self.by_channel)
        f.channels = {c: dict(counts) for c, counts in self.funnel.items()}
        f.cost = {c: self.cost[c] for c in self.funnel if c in self.cost}
        f.unpriced = {c: n for c, n in self.unpriced.items() if n}
        f.late_reports = late_reports
        return f


def late_reports(conn: Connection, mailing_id: str) -> int:
    """Reports recorded after their workflow had closed (ids are letters, digits and '-': no LIKE wildcards)."""
    query = select(func.count()).where(reports.c.mailing_id == mailing_id, reports.c.late.is_(True))
    return int(conn.execute(query).scalar_one())


def mailing_figures(conn: Connection, mailing_id: str, prices: PriceBook) -> LedgerFigures:
    """The figures of one mailing, from the ledger (raises UnknownMailing)."""
    mailing = load_mailing(conn, mailing_id)
    builder = FiguresBuilder(mailing, prices)
    for recipient in iter_recipients(conn, mailing):
        builder.add(recipient)
    return builder.result(late_reports(conn, mailing_id))


def summary_from_ledger(mailing: MailingRow, figures: LedgerFigures) -> MailingSummary:
    """The mailing's summary as its workflow stored it (or as the ledger knows it, if it stored none), with the
    ledger's figures — late reports included."""
    base = mailing.summary
    if base is None:
        spec = mailing.spec
        report = mailing.import_report or {}
        base = MailingSummary(
            mailing_id=mailing.id,
            name=mailing.name,
            status=mailing.status,
            error=mailing.error,
            cascade=[step.channel for step in spec.steps],
            recipients={
                "total": mailing.rows or 0,
                "valid": mailing.valid or 0,
                "invalid": mailing.invalid or 0,
                "duplicates": mailing.duplicates or 0,
            },
            invalid_by_reason=report.get("invalid_by_reason", {}),
            zone_fallback=report.get("zone_fallback", 0),
            dispatched=mailing.dispatched or 0,
            schedule=spec.schedule.describe(),
            start_at=spec.start_at,
            end_at=spec.end_at,
            speed=str(spec.speed) if spec.speed else None,
            started_at=mailing.started_at,
            finished_at=mailing.finished_at,
        )
    return base.model_copy(
        update={
            "outcomes": figures.outcomes,
            "delivered_by_channel": figures.delivered_by_channel,
            "channels": figures.channels,
        }
    )


# --- the mailings list -------------------------------------------------------------------------------------------


class MailingListItem(BaseModel):
    id: str
    name: str
    status: str
    created_at: datetime
    start_at: datetime | None
    channels: list[str]
    valid: int | None
    dispatched: int | None
    finished: int  # recipients whose workflow closed


def list_mailings(
    conn: Connection, *, status: str | None = None, since: datetime | None = None, limit: int | None = None
) -> list[MailingListItem]:
    """Mailings newest first, optionally of one status and created at or after `since`."""
    closed = (
        select(func.count())
        .select_from(recipients)
        .where(recipients.c.mailing_id == mailings.c.id)
        .scalar_subquery()
        .label("finished")
    )
    query = select(
        mailings.c.id,
        mailings.c.name,
        mailings.c.status,
        mailings.c.created_at,
        mailings.c.start_at,
        mailings.c.channels,
        mailings.c.valid,
        mailings.c.dispatched,
        closed,
    ).order_by(mailings.c.created_at.desc(), mailings.c.id.desc())
    if status is not None:
        query = query.where(mailings.c.status == status)
    if since is not None:
        query = query.where(mailings.c.created_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [
        MailingListItem(
            id=r["id"],
            name=r["name"],
            status=r["status"],
            created_at=r["created_at"],
            start_at=r["start_at"],
            channels=[c for c in r["channels"].split(",") if c],
            valid=r["valid"],
            dispatched=r["dispatched"],
            finished=r["finished"],
        )
        for r in conn.execute(query).mappings()
    ]


# --- search by number --------------------------------------------------------------------------------------------


class FoundMessage(BaseModel):
    mailing_id: str
    mailing_name: str | None
    phone: str
    step: int  # 1-based, as people count steps
    channel: str | None
    account: str | None
    status: str
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None
    error: str | None


def search_messages(conn: Connection, phone: str, *, since: datetime | None = None) -> list[FoundMessage]:
    """Every message to `phone` (E.164) across mailings, newest first (by the time it was sent, else decided)."""
    moment = func.coalesce(messages.c.sent_at, messages.c.failed_at, messages.c.updated_at)
    query = (
        select(*_MESSAGE_COLUMNS, messages.c.mailing_id, messages.c.phone, mailings.c.name)
        .select_from(messages.outerjoin(mailings, mailings.c.id == messages.c.mailing_id))
        .where(messages.c.phone == phone)
        .order_by(moment.desc(), messages.c.mailing_id, messages.c.step.desc())
    )
    if since is not None:
        query = query.where(moment >= since)
    return [
        FoundMessage(
            mailing_id=r["mailing_id"],
            mailing_name=r["name"],
            phone=r["phone"],
            step=r["step"] + 1,
            channel=r["channel"],
            account=r["account"],
            status=r["status"],
            sent_at=r["sent_at"],
            delivered_at=r["delivered_at"],
            read_at=r["read_at"],
            failed_at=r["failed_at"],
            error=r["error"],
        )
        for r in conn.execute(query).mappings()
    ]


def rejected(conn: Connection, mailing_id: str) -> Iterator[tuple[int, str, str]]:
    """The mailing's rejected rows (row, value, reason), by row, streamed."""
    query = (
        select(rejected_rows.c.row, rejected_rows.c.value, rejected_rows.c.reason)
        .where(rejected_rows.c.mailing_id == mailing_id)
        .order_by(rejected_rows.c.row)
    )
    for found in _stream(conn, query):
        row, value, reason = tuple(found)
        yield int(row), str(value), str(reason)
