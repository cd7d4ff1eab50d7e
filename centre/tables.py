"""The centre's tables, as SQLAlchemy Core sees them now.

The migrations (``migrations/versions``) create them; they are written out there on their
own so that an old migration never changes when this file does. A test checks that the
migrated store and these tables agree.

Times are Unix seconds (floats): ``*_at`` columns the centre's own clock, ``time`` the
origin hub's. JSON is JSON on SQLite and JSONB on PostgreSQL.
No foreign keys, on purpose: an event outlives its hub's enrolment, and the ingest never
waits on a parent row.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql

metadata = MetaData()

#: JSON, stored as JSONB on PostgreSQL.
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
#: An auto-incrementing key: BIGINT on PostgreSQL, SQLite's INTEGER rowid alias there.
Serial = BigInteger().with_variant(Integer(), "sqlite")

ID = 64  # ids of the contract: hubs 24, wards 32, events 64

#: The registry: every hub the centre believes, and what it last knew of it.
hubs = Table(
    "hubs", metadata,
    Column("id", String(ID), primary_key=True),
    Column("ward", String(ID), nullable=False, index=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("lat", Float),
    Column("lon", Float),
    #: ``ed25519:<base64url>`` once hubs sign (contract v2); None until then.
    Column("public_key", String(100)),
    Column("enrolled_at", Float, nullable=False),
    Column("enrolled_by", String(100), nullable=False, server_default=""),
    #: Its own reporting time (seconds), overriding its ward's and the default.
    Column("report_every", Float),
    # What the centre last heard (kept across restarts: the "last known state").
    Column("last_heard_at", Float),
    Column("last_direct_at", Float),
    Column("last_relayed_at", Float),
    Column("last_relayed_by", String(ID)),
    Column("online", Boolean),
    Column("status", Json),
    Column("status_at", Float),
    #: The hub's clock minus the centre's, from its last fresh status (seconds).
    Column("clock_skew", Float),
    #: The contract version it was last heard speaking (commands go to it in that version).
    Column("contract", Integer),
)

#: Every event stored once (``id`` unique), with the trust it was stored under.
events = Table(
    "events", metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("id", String(ID), nullable=False, unique=True),
    Column("hub", String(ID), nullable=False),
    Column("ward", String(ID), nullable=False),
    Column("type", String(64), nullable=False),
    Column("alert_id", String(ID)),
    Column("time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    #: signed | ward-attested | unsigned-v1
    Column("trust", String(16), nullable=False),
    Column("envelope", Json, nullable=False),
    Index("ix_events_hub_time", "hub", "time"),
    Index("ix_events_alert", "alert_id"),
    Index("ix_events_received", "received_at"),
)

#: Each alert's current state, applied by precedence whatever the order of its events.
alerts = Table(
    "alerts", metadata,
    Column("id", String(ID), primary_key=True),
    Column("hub", String(ID), nullable=False),
    Column("ward", String(ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("source", String(200), nullable=False),
    Column("zone", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("outcome", String(16)),
    Column("level", Integer, nullable=False),
    Column("silent", Boolean, nullable=False, server_default="0"),
    Column("severity", Integer),
    Column("raised_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("first_seen_at", Float, nullable=False),
    Column("changed_at", Float, nullable=False),
    #: The event whose ``alert`` object is the state shown, and the trust it came with.
    Column("event_id", String(ID), nullable=False),
    Column("trust", String(16), nullable=False),
    Column("alert", Json, nullable=False),
    Index("ix_alerts_state", "state"),
    Index("ix_alerts_hub", "hub"),
    Index("ix_alerts_ward", "ward"),
    Index("ix_alerts_raised", "raised_at"),
)

#: Which path carried which event: direct, relayed by a neighbour, or over the mesh.
paths = Table(
    "paths", metadata,
    Column("event_id", String(ID), primary_key=True),
    #: direct | relayed | mesh
    Column("path", String(16), primary_key=True),
    #: The relaying hub ("" for direct).
    Column("via", String(ID), primary_key=True, server_default=""),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("count", Integer, nullable=False, server_default="1"),
)

#: One receipt per stored event: pending (``sent_at`` None) until the broker has it.
receipts = Table(
    "receipts", metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("hub", String(ID), nullable=False),
    Column("ward", String(ID), nullable=False),
    #: The topic root the events came under (and the receipt goes back under).
    Column("root", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("sends", Integer, nullable=False, server_default="0"),
    Index("ix_receipts_pending", "sent_at"),
)

#: Messages refused, with why: shown and counted, never dropped silently.
quarantine = Table(
    "quarantine", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False),
    Column("topic", Text, nullable=False),
    #: Whose topic it was, when it parses (an unknown hub is listed for enrolment).
    Column("ward", String(ID)),
    Column("hub", String(ID)),
    #: A short code (too_large, bad_json, schema, unknown_hub, ...) and the reason in words.
    Column("code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("size", Integer, nullable=False),
    #: The payload as received, cut at ``QUARANTINE_KEEP`` bytes.
    Column("payload", LargeBinary, nullable=False),
    Column("retained", Boolean, nullable=False, server_default="0"),
    Index("ix_quarantine_hub", "hub"),
    Index("ix_quarantine_time", "received_at"),
)

#: Commands to hubs: who asked, when, and the reply matched by id.
commands = Table(
    "commands", metadata,
    Column("id", String(128), primary_key=True),
    Column("hub", String(ID), nullable=False),
    Column("ward", String(ID), nullable=False),
    Column("cmd", String(32), nullable=False),
    Column("args", Json, nullable=False),
    Column("by", String(100), nullable=False),
    Column("sent_at", Float, nullable=False),
    Column("timeout_at", Float, nullable=False),
    #: sent | replied | failed (the hub refused) | timeout
    Column("state", String(16), nullable=False),
    Column("reply", Json),
    Column("replied_at", Float),
    Index("ix_commands_hub", "hub"),
    Index("ix_commands_state", "state"),
)

#: Supervision: a hub silent, or heard only through a neighbour (path fault).
alarms = Table(
    "alarms", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("hub", String(ID), nullable=False),
    Column("ward", String(ID), nullable=False),
    #: hub_silent | path_fault | power_lost
    Column("kind", String(16), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("closed_at", Float),
    Column("reason", Text, nullable=False),
    #: The hub's last known state when the alarm opened.
    Column("detail", Json, nullable=False),
    Index("ix_alarms_open", "closed_at"),
    Index("ix_alarms_hub", "hub"),
)

#: Snapshots received (the JPEG is a file under the state directory; rows age out with it).
snapshots = Table(
    "snapshots", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("hub", String(ID), nullable=False),
    Column("alert_id", String(ID), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("path", name="uq_snapshots_path"),
    Index("ix_snapshots_alert", "alert_id"),
)

#: The centre's accounts: operators and supervisors change state, viewers look.
users = Table(
    "users", metadata,
    Column("name", String(32), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    #: Moves on every password change: ends the account's sessions.
    Column("epoch", Integer, nullable=False, server_default="0"),
)

#: Everything the live stream has said, by ``seq`` (a browser that reconnects resumes here).
feed = Table(
    "feed", metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    #: event | alert | alarm | command | quarantine | hub
    Column("kind", String(16), nullable=False),
    Column("body", Json, nullable=False),
)
