"""The ledger's tables (SQLAlchemy Core). Alembic migrations in ledger/migrations create them; a test checks
that the migrations and these definitions agree on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored in UTC and read back timezone-aware on both dialects (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Time = UtcDateTime()

mailings = Table(
    "mailings",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("name", Text, nullable=False),
    Column("spec", Text, nullable=False),  # the MailingSpec as launched (JSON)
    Column("channels", String(200), nullable=False),  # the cascade, e.g. "viber,sms"
    Column("status", String(32), nullable=False),
    Column("error", Text),
    Column("created_at", Time, nullable=False),
    Column("start_at", Time),
    Column("end_at", Time),
    Column("started_at", Time),
    Column("finished_at", Time),
    Column("list_name", Text),  # the uploaded file's name, as the user knows it
    Column("list_size", Integer),
    Column("list_sha256", String(64)),
    Column("import_report", Text),  # ImportReport (JSON) once imported
    Column("rows", Integer),
    Column("valid", Integer),
    Column("invalid", Integer),
    Column("duplicates", Integer),
    Column("dispatched", Integer),
    Column("summary", Text),  # the mailing workflow's final MailingSummary (JSON)
    Column("updated_at", Time, nullable=False),
)
Index("ix_mailings_created_at", mailings.c.created_at)

# Each status the mailing went through, with its time (the workflow's clock).
mailing_statuses = Table(
    "mailing_statuses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mailing_id", String(48), nullable=False),
    Column("status", String(32), nullable=False),
    Column("at", Time, nullable=False),
    UniqueConstraint("mailing_id", "status", "at", name="uq_mailing_statuses_once"),
)

# The uploaded recipients file, in chunks: the import reads it on whichever worker runs it.
uploads = Table(
    "uploads",
    metadata,
    Column("mailing_id", String(48), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# The imported list: what the dispatch starts, position by position.
list_entries = Table(
    "list_entries",
    metadata,
    Column("mailing_id", String(48), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("phone", String(16), nullable=False),
    Column("variables", Text),  # JSON object, only the variables the texts use
    Column("zones", Text),  # JSON list of candidate zones (schedule in the subscriber's local time)
    Column("row", Integer),  # the row in the uploaded file
)
Index("ix_list_entries_phone", list_entries.c.mailing_id, list_entries.c.phone)

rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("mailing_id", String(48), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("value", Text, nullable=False),
    Column("reason", Text, nullable=False),
)

# One row per recipient whose cascade workflow closed: its outcome as the workflow decided it.
recipients = Table(
    "recipients",
    metadata,
    Column("mailing_id", String(48), primary_key=True),
    Column("phone", String(16), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("delivered_channel", String(16)),
    Column("closed_at", Time, nullable=False),
)

# One row per cascade step of a recipient that was sent or decided: the message and its latest status.
messages = Table(
    "messages",
    metadata,
    Column("client_ref", String(80), primary_key=True),  # <mailing>/<E.164>/<step index>
    Column("mailing_id", String(48), nullable=False),
    Column("phone", String(16), nullable=False),
    Column("step", Integer, nullable=False),  # 0-based, as in the client reference
    Column("channel", String(16)),  # unknown only while a report came before its send was recorded
    Column("account", Text),  # the provider account that carried it
    Column("sender", String(64)),
    Column("encoding", String(8)),  # SMS: GSM-7 or UCS-2
    Column("parts", Integer),  # SMS parts billed
    Column("message_id", String(200)),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("unconfirmed", Boolean, nullable=False, default=False),
    Column("timed_out", Boolean, nullable=False, default=False),
    Column("sent_at", Time),
    Column("delivered_at", Time),
    Column("read_at", Time),
    Column("failed_at", Time),
    Column("updated_at", Time, nullable=False),
)
Index("ix_messages_mailing", messages.c.mailing_id, messages.c.phone)
Index("ix_messages_phone", messages.c.phone, messages.c.sent_at)

# Every delivery report the gateway accepted, whatever became of its workflow.
reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),  # the same report again is not recorded twice
    Column("client_ref", String(80), nullable=False),
    Column("mailing_id", String(48), nullable=False),
    Column("account", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("message_id", String(200)),
    Column("error", Text),
    Column("at", Time),  # the provider's time, when it gives one
    Column("received_at", Time, nullable=False),
    Column("late", Boolean, nullable=False, default=False),  # its workflow had closed: only the ledger has it
    # from an account that did not send that step: kept as received, changes no message
    Column("foreign", Boolean, nullable=False, default=False),
)
Index("ix_reports_client_ref", reports.c.client_ref)
Index("ix_reports_mailing", reports.c.mailing_id, reports.c.late)
