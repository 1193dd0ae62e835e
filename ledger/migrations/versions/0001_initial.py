"""the ledger: mailings, statuses, uploads, lists, rejected rows, recipients, messages, reports

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "list_entries",
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("variables", sa.Text(), nullable=True),
        sa.Column("zones", sa.Text(), nullable=True),
        sa.Column("row", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("mailing_id", "position"),
    )
    with op.batch_alter_table("list_entries", schema=None) as batch_op:
        batch_op.create_index("ix_list_entries_phone", ["mailing_id", "phone"], unique=False)

    op.create_table(
        "mailing_statuses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailing_id", "status", "at", name="uq_mailing_statuses_once"),
    )
    op.create_table(
        "mailings",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("channels", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("list_name", sa.Text(), nullable=True),
        sa.Column("list_size", sa.Integer(), nullable=True),
        sa.Column("list_sha256", sa.String(length=64), nullable=True),
        sa.Column("import_report", sa.Text(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("valid", sa.Integer(), nullable=True),
        sa.Column("invalid", sa.Integer(), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=True),
        sa.Column("dispatched", sa.Integer(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mailings", schema=None) as batch_op:
        batch_op.create_index("ix_mailings_created_at", ["created_at"], unique=False)

    op.create_table(
        "messages",
        sa.Column("client_ref", sa.String(length=80), nullable=False),
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("account", sa.Text(), nullable=True),
        sa.Column("sender", sa.String(length=64), nullable=True),
        sa.Column("encoding", sa.String(length=8), nullable=True),
        sa.Column("parts", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("unconfirmed", sa.Boolean(), nullable=False),
        sa.Column("timed_out", sa.Boolean(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_ref"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_mailing", ["mailing_id", "phone"], unique=False)
        batch_op.create_index("ix_messages_phone", ["phone", "sent_at"], unique=False)

    op.create_table(
        "recipients",
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("delivered_channel", sa.String(length=16), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailing_id", "phone"),
    )
    op.create_table(
        "rejected_rows",
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailing_id", "row"),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("client_ref", sa.String(length=80), nullable=False),
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("foreign", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.create_index("ix_reports_client_ref", ["client_ref"], unique=False)
        batch_op.create_index("ix_reports_mailing", ["mailing_id", "late"], unique=False)

    op.create_table(
        "uploads",
        sa.Column("mailing_id", sa.String(length=48), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("mailing_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("uploads")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_mailing")
        batch_op.drop_index("ix_reports_client_ref")

    op.drop_table("reports")
    op.drop_table("rejected_rows")
    op.drop_table("recipients")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_phone")
        batch_op.drop_index("ix_messages_mailing")

    op.drop_table("messages")
    with op.batch_alter_table("mailings", schema=None) as batch_op:
        batch_op.drop_index("ix_mailings_created_at")

    op.drop_table("mailings")
    op.drop_table("mailing_statuses")
    with op.batch_alter_table("list_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_list_entries_phone")

    op.drop_table("list_entries")
