"""The centre's first store: registry, events, alerts, paths, receipts, quarantine,
commands, supervision alarms, snapshots, accounts and the live feed.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ID = 64


def upgrade() -> None:
    op.create_table(
        "hubs",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("ward", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("public_key", sa.String(100)),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("enrolled_by", sa.String(100), nullable=False, server_default=""),
        sa.Column("report_every", sa.Float),
        sa.Column("last_heard_at", sa.Float),
        sa.Column("last_direct_at", sa.Float),
        sa.Column("last_relayed_at", sa.Float),
        sa.Column("last_relayed_by", sa.String(ID)),
        sa.Column("online", sa.Boolean),
        sa.Column("status", Json),
        sa.Column("status_at", sa.Float),
        sa.Column("clock_skew", sa.Float),
        sa.Column("contract", sa.Integer),
    )
    op.create_index("ix_hubs_ward", "hubs", ["ward"])

    op.create_table(
        "events",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(ID), nullable=False, unique=True),
        sa.Column("hub", sa.String(ID), nullable=False),
        sa.Column("ward", sa.String(ID), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("alert_id", sa.String(ID)),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("trust", sa.String(16), nullable=False),
        sa.Column("envelope", Json, nullable=False),
    )
    op.create_index("ix_events_hub_time", "events", ["hub", "time"])
    op.create_index("ix_events_alert", "events", ["alert_id"])
    op.create_index("ix_events_received", "events", ["received_at"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("hub", sa.String(ID), nullable=False),
        sa.Column("ward", sa.String(ID), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("zone", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("silent", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("severity", sa.Integer),
        sa.Column("raised_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("trust", sa.String(16), nullable=False),
        sa.Column("alert", Json, nullable=False),
    )
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_index("ix_alerts_hub", "alerts", ["hub"])
    op.create_index("ix_alerts_ward", "alerts", ["ward"])
    op.create_index("ix_alerts_raised", "alerts", ["raised_at"])

    op.create_table(
        "paths",
        sa.Column("event_id", sa.String(ID), primary_key=True),
        sa.Column("path", sa.String(16), primary_key=True),
        sa.Column("via", sa.String(ID), primary_key=True, server_default=""),
        sa.Column("first_at", sa.Float, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    )

    op.create_table(
        "receipts",
        sa.Column("event_id", sa.String(ID), primary_key=True),
        sa.Column("hub", sa.String(ID), nullable=False),
        sa.Column("ward", sa.String(ID), nullable=False),
        sa.Column("root", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_receipts_pending", "receipts", ["sent_at"])

    op.create_table(
        "quarantine",
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("ward", sa.String(ID)),
        sa.Column("hub", sa.String(ID)),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("retained", sa.Boolean, nullable=False, server_default="0"),
    )
    op.create_index("ix_quarantine_hub", "quarantine", ["hub"])
    op.create_index("ix_quarantine_time", "quarantine", ["received_at"])

    op.create_table(
        "commands",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("hub", sa.String(ID), nullable=False),
        sa.Column("ward", sa.String(ID), nullable=False),
        sa.Column("cmd", sa.String(32), nullable=False),
        sa.Column("args", Json, nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("sent_at", sa.Float, nullable=False),
        sa.Column("timeout_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reply", Json),
        sa.Column("replied_at", sa.Float),
    )
    op.create_index("ix_commands_hub", "commands", ["hub"])
    op.create_index("ix_commands_state", "commands", ["state"])

    op.create_table(
        "alarms",
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("hub", sa.String(ID), nullable=False),
        sa.Column("ward", sa.String(ID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", Json, nullable=False),
    )
    op.create_index("ix_alarms_open", "alarms", ["closed_at"])
    op.create_index("ix_alarms_hub", "alarms", ["hub"])

    op.create_table(
        "snapshots",
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column("hub", sa.String(ID), nullable=False),
        sa.Column("alert_id", sa.String(ID), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.UniqueConstraint("path", name="uq_snapshots_path"),
    )
    op.create_index("ix_snapshots_alert", "snapshots", ["alert_id"])

    op.create_table(
        "users",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    )

    op.create_table(
        "feed",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", Json, nullable=False),
    )


def downgrade() -> None:
    for table in ("feed", "users", "snapshots", "alarms", "commands", "quarantine", "receipts", "paths",
                  "alerts", "events", "hubs"):
        op.drop_table(table)
