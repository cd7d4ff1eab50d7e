"""The durable store: alerts, the append-only event log and the per-destination outbox.

One SQLite connection, owned here behind a lock (sqlite-utils' ``Database`` is not
thread-safe).  The schema version lives in ``PRAGMA user_version`` and moves forward by
migrations; a store written by a newer hubd is refused rather than guessed at.

Durability: WAL, and every transaction is fsync'd before ``transaction()`` returns, as
with ``synchronous=FULL``.  The fsync is ours (``sync()``, on the WAL file) rather than
SQLite's so that one caller may announce first and sync after: a new alert leaves for the
centre while its own fsync runs, instead of waiting a flash card's fsync before it may
leave.  Until that fsync, the alert survives a crash of hubd (it is in the page cache)
but not a power cut; its id must then never be given out again, for the centre would
take the next alert with that id for a duplicate.  So after a power cut (hubd did not
close the store, and the machine has booted since) every id counter skips ahead.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from hubd.clock import SYSTEM_CLOCK, Clock
from hubd.model import Alert, Event
from hubd.private import private_dir, private_file

log = logging.getLogger("hubd.store")

#: After a power cut every id counter skips this far ahead: more than the ids that can be
#: announced while their fsync is still running (one per committing thread).
ID_SKIP_AFTER_POWER_CUT = 100
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_boot_id() -> str:
    """The kernel's id of this boot ("" where unknown: every unclean stop then counts as a
    power cut)."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


class StoreError(Exception):
    """The store cannot be opened or written."""


class StoreVersionError(StoreError):
    pass


@dataclass(frozen=True)
class OutboxItem:
    """One pending delivery of one event to one destination."""

    id: int
    destination: str
    event_id: str
    event_seq: int
    type: str
    priority: int
    attempts: int
    created_at: float
    envelope: dict[str, Any]


def _v1(db: sqlite_utils.Database) -> None:
    db.table("counters").create({"name": str, "value": int}, pk="name")
    db.table("alerts").create({
        "id": str, "hub": str, "seq": int, "kind": str, "source": str, "zone": str, "state": str,
        "outcome": str, "level": int, "silent": int, "raised_at": float, "updated_at": float,
        "remote": int, "relayed_by": str, "extra": str,
    }, pk="id", not_null={"hub", "seq", "kind", "state", "level", "raised_at", "updated_at"})
    db.table("alerts").create_index(["state"])
    db.table("alerts").create_index(["raised_at"])
    # events.seq is the rowid: the local order of everything that happened, never wall time.
    db.table("events").create({
        "seq": int, "id": str, "type": str, "time": float, "hub": str, "actor": str,
        "alert_id": str, "data": str, "envelope": str, "clock_synced": int,
    }, pk="seq", not_null={"id", "type", "time", "hub", "actor", "envelope"})
    db.table("events").create_index(["id"], unique=True)
    db.table("events").create_index(["alert_id"])
    db.table("events").create_index(["time"])
    db.table("outbox").create({
        "id": int, "event_seq": int, "destination": str, "priority": int, "created_at": float,
        "attempts": int, "next_attempt_at": float, "delivered_at": float, "last_error": str,
    }, pk="id", not_null={"event_seq", "destination", "priority", "created_at", "attempts"},
        foreign_keys=[("event_seq", "events", "seq")])
    db.execute("CREATE INDEX outbox_pending ON outbox(destination, priority, id) "
               "WHERE delivered_at IS NULL")
    db.table("snapshots").create({"id": int, "alert_id": str, "path": str, "time": float, "size": int},
                           pk="id")
    db.table("snapshots").create_index(["alert_id"])
    db.table("users").create({"name": str, "role": str, "password_hash": str, "created_at": float},
                       pk="name", not_null={"role", "password_hash"})
    db.table("commands").create({"id": str, "time": float, "reply": str}, pk="id")


def _v2(db: sqlite_utils.Database) -> None:
    # "session:<pid>:<token>" -> boot id: one row per Store open in some process.
    db.table("meta").create({"key": str, "value": str}, pk="key")


def _v3_trust(db: sqlite_utils.Database) -> None:
    # Contract version 2 (issue 15). How far a heard event is believed: NULL for this hub's own,
    # else 'signed' (by its origin) or 'ward-attested' (rebuilt from a mesh frame).
    db.execute("ALTER TABLE events ADD COLUMN trust TEXT")
    db.execute("CREATE INDEX events_remote ON events(seq) WHERE trust IS NOT NULL")
    # The centre's time of an accepted command: what its replay window is kept by.
    db.execute("ALTER TABLE commands ADD COLUMN sent REAL")
    # Moved to end every page session of an account (logout, a new password).
    db.execute("ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0")
    # Authentic mesh frames heard lately (their tags), so a replay is refused after a restart too.
    db.execute("CREATE TABLE mesh_seen (node INTEGER NOT NULL, tag BLOB NOT NULL, time INTEGER NOT NULL, "
               "PRIMARY KEY (node, tag))")


#: Forward migrations; index i brings a store from version i to i + 1.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3_trust]
SCHEMA_VERSION = len(MIGRATIONS)


def read_schema_version(path: Path, *, timeout: float = 5.0) -> int:
    """The schema version of a store file, read-only: no session, no migration (``hubd doctor``).

    Raises ``sqlite3.Error`` if the file cannot be read."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def _where(conditions: list[tuple[str | None, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the conditions whose value is not None (a fragment without '?' is
    included when it is not None itself)."""
    clauses, params = [], []
    for clause, value in conditions:
        if clause is None:
            continue
        if "?" in clause:
            if value is None:
                continue
            params.append(value)
        clauses.append(clause)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _rowid(cur: sqlite3.Cursor) -> int:
    """The rowid an INSERT just gave (it always gives one)."""
    assert cur.lastrowid is not None
    return cur.lastrowid


class Store:
    """Thread-safe access to the hub's SQLite file."""

    def __init__(self, path: str | Path, *, migrations: list[Callable[..., None]] | None = None,
                 clock: Clock = SYSTEM_CLOCK):
        self.path = Path(path)
        self._clock = clock
        self.wal_path = Path(f"{self.path}-wal")
        self._migrations = MIGRATIONS if migrations is None else migrations
        self._lock = threading.RLock()
        #: count_alerts_by_state's answer until the alerts table is written again (None: count).
        self._alert_counts: dict[str, int] | None = None
        if not self.path.parent.exists():
            private_dir(self.path.parent)
        # Password hashes, commands, the whole log: the owner's alone, whatever the umask (SQLite
        # gives its -wal and -shm files the database file's mode).
        private_file(self.path)
        for extra in (self.wal_path, Path(f"{self.path}-shm")):
            private_file(extra, create=False)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # Commits write the WAL; sync() fsyncs it (see the module's docstring).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store {self.path}: {e}") from e
        self.db = sqlite_utils.Database(self._conn)
        self._migrate()
        self._session = f"session:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._open_session(current_boot_id())
        self._sync_dir()

    # --- housekeeping --------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        target = len(self._migrations)
        with self._lock:
            current = self.version
            if current > target:
                raise StoreVersionError(
                    f"store {self.path} has schema version {current}, but this hubd knows only up to "
                    f"{target}: it was written by a newer hubd. Install that version again, or move "
                    f"the file aside to start an empty store.")
            for version in range(current, target):
                with self.transaction():
                    self._migrations[version](self.db)
                    self._conn.execute(f"PRAGMA user_version = {version + 1}")

    def _open_session(self, boot_id: str) -> None:
        with self.transaction() as conn:
            lost = False
            sessions = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'session:%'").fetchall()
            for key, boot in sessions:
                if boot_id and boot == boot_id and _alive(int(key.split(":")[1])):
                    continue  # another process of this boot has the store open (the CLI, say)
                # Not closed: killed in this boot (the page cache kept its writes; nothing
                # lost), or open when the machine stopped: a power cut or a kernel crash,
                # which may have taken ids that were already announced.
                lost = lost or not boot_id or boot != boot_id
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            if lost:
                conn.execute("UPDATE counters SET value = value + ?", (ID_SKIP_AFTER_POWER_CUT,))
                log.warning("store %s was open when the machine stopped (a power cut?): alert and "
                            "event numbers skip %d ahead so that none announced just before is "
                            "used twice", self.path, ID_SKIP_AFTER_POWER_CUT)
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (self._session, boot_id))

    def _sync_dir(self) -> None:
        # The WAL file may be new: its directory entry must survive a power cut too.
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Make every committed transaction survive a power cut (fsync the WAL file).

        ``transaction()`` calls this itself unless told ``sync=False``.  A failed fsync
        is logged, not raised: the transaction is committed (a crash of hubd cannot lose
        it) and its caller has already acted on it; a failing disk shows in the next
        write, which then takes the store-failure path."""
        try:
            fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # nothing written since the last connection closed
        except OSError as e:
            log.error("store: cannot open %s to fsync it: %s", self.wal_path, e)
            return
        try:
            os.fdatasync(fd)  # as SQLite does: the WAL's data (and size), not its mtime
        except OSError as e:
            log.error("store: fsync of %s failed: %s; the last writes may not survive a power cut",
                      self.wal_path, e)
        finally:
            os.close(fd)

    @contextmanager
    def transaction(self, *, sync: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, fsync'd before this returns unless ``sync=False`` (the
        caller then calls ``sync()`` itself).  Nested calls join the outer one."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, I/O error) may leave the transaction open, and the next
                # caller would silently join it: never commit half of something later.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        if sync:
            self.sync()

    def close(self) -> None:
        """Close the store, saying it was closed (so the next start is not taken for a
        start after a power cut)."""
        with self._lock:
            try:
                with self.transaction() as conn:
                    conn.execute("DELETE FROM meta WHERE key = ?", (self._session,))
            except sqlite3.Error as e:
                log.warning("store: could not record a clean close: %s", e)
            self._conn.close()

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the store answers a read within ``timeout`` seconds (for the watchdog)."""
        if not self._lock.acquire(timeout=timeout):
            log.error("store: not free within %.0f s (a write stuck on the SD card?)", timeout)
            return False
        try:
            self._conn.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error as e:
            log.error("store: cannot read %s: %s", self.path, e)
            return False
        finally:
            self._lock.release()

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            cols = [c[0] for c in cur.description or ()]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def reserve(self, name: str, n: int) -> int:
        """Move a persistent counter ``n`` ahead and return its new value: the numbers from
        ``value - n + 1`` to ``value`` are the caller's (never given out again, used or not)."""
        with self.transaction() as conn:
            return conn.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) "
                                "DO UPDATE SET value = value + excluded.value RETURNING value",
                                (name, n)).fetchone()[0]

    def next_value(self, name: str) -> int:
        """Increment and return a persistent counter (inside the caller's transaction)."""
        with self.transaction() as conn:
            return conn.execute("INSERT INTO counters(name, value) VALUES (?, 1) "
                                "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
                                (name,)).fetchone()[0]

    # --- alerts ---------------------------------------------------------------------------

    def save_alert(self, alert: Alert) -> None:
        row = alert.to_dict()
        row.pop("severity")
        row["extra"] = json.dumps(row["extra"])
        row["silent"] = int(row["silent"])
        row["remote"] = int(row["remote"])
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self.transaction() as conn:
            self._alert_counts = None
            conn.execute(f"INSERT OR REPLACE INTO alerts({cols}) VALUES ({marks})", row)

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = self.query("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return Alert.from_row(rows[0]) if rows else None

    def alerts(self, *, open_only: bool = False, remote: bool | None = None, limit: int = 200,
               kind: str | None = None, state: str | None = None, source: str | None = None,
               since: float | None = None, until: float | None = None) -> list[Alert]:
        where, params = _where([
            ("state IN ('raised', 'acknowledged')" if open_only else None, None),
            ("remote = ?", None if remote is None else int(remote)), ("kind = ?", kind),
            ("state = ?", state), ("source = ?", source), ("raised_at >= ?", since),
            ("raised_at <= ?", until)])
        sql = "SELECT * FROM alerts" + where + " ORDER BY raised_at DESC, seq DESC LIMIT ?"
        params.append(limit)
        return [Alert.from_row(r) for r in self.query(sql, tuple(params))]

    def count_alerts_by_state(self) -> dict[str, int]:
        """Local alerts by state.  Counting reads every stored alert, and every status asks
        (the page, the MQTT heartbeat, /metrics): the answer is kept until the alerts table
        is written again (``save_alert``, ``prune``), so it costs a scan once per change."""
        with self._lock:
            counts = self._alert_counts
            if counts is None:
                counts = {r["state"]: r["n"] for r in self.query(
                    "SELECT state, count(*) AS n FROM alerts WHERE remote = 0 GROUP BY state")}
                if not self._conn.in_transaction:  # never keep what a rollback may undo
                    self._alert_counts = counts
            return dict(counts)

    # --- events and outbox ----------------------------------------------------------------

    def append_event(self, event: Event, envelope: dict[str, Any],
                     destinations: tuple[tuple[str, int], ...] = (), *,
                     clock_synced: bool = True, trust: str | None = None) -> Event | None:
        """Append an event and its outbox rows.  Returns None if its id is already stored
        (a duplicate heard again), so callers can deduplicate by id.  ``trust`` is None for
        this hub's own events, else how far a heard one is believed ('signed', 'ward-attested')."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO events(id, type, time, hub, actor, alert_id, data, envelope, "
                "clock_synced, trust) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (event.id, event.type, event.time, event.hub, event.actor, event.alert_id,
                 json.dumps(event.data), json.dumps(envelope, separators=(",", ":")),
                 int(clock_synced), trust))
            if cur.rowcount == 0:
                return None
            seq = _rowid(cur)
            now = self._clock.time()
            outbox = tuple((d, _rowid(conn.execute(
                "INSERT INTO outbox(event_seq, destination, priority, created_at, attempts) "
                "VALUES (?,?,?,?,0)", (seq, d, p, now))), p) for d, p in destinations)
        return Event(id=event.id, type=event.type, time=event.time, hub=event.hub, actor=event.actor,
                     alert_id=event.alert_id, data=event.data, seq=seq, outbox=outbox)

    def has_event(self, event_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM events WHERE id = ?", (event_id,)))

    def ids_taken(self, alert_id: str) -> bool:
        """Whether an alert id, or any event id derived from it, is stored already (a new
        local alert must not take it: a row heard before hubd refused such ids may hold it)."""
        with self._lock:
            return self._conn.execute(
                "SELECT EXISTS(SELECT 1 FROM alerts WHERE id = ?) OR EXISTS(SELECT 1 FROM events "
                "WHERE id >= ? AND id < ?)", (alert_id, f"{alert_id}:", f"{alert_id};")).fetchone()[0] == 1

    def events(self, *, alert_id: str | None = None, after_seq: int | None = None,
               since: float | None = None, until: float | None = None, type_prefix: str | None = None,
               limit: int = 500, newest_first: bool = False) -> list[dict[str, Any]]:
        where, params = _where([
            ("alert_id = ?", alert_id), ("seq > ?", after_seq), ("time >= ?", since),
            ("time <= ?", until), ("type LIKE ?", type_prefix + "%" if type_prefix else None)])
        sql = "SELECT * FROM events" + where + f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(limit)
        rows = self.query(sql, tuple(params))
        for r in rows:
            r["data"] = json.loads(r["data"] or "{}")
            r["envelope"] = json.loads(r["envelope"])
        return rows

    @staticmethod
    def _pending_rows(destination: str, now: float, exclude: set[int] | frozenset[int],
                      join: str = "") -> tuple[str, list[Any]]:
        """FROM/WHERE/ORDER BY of the pending rows (outbox aliased ``o``): one definition of
        what is pending and in which order, for ``pending`` and ``first_pending`` alike."""
        skip = f"AND o.id NOT IN ({','.join('?' * len(exclude))}) " if exclude else ""
        return (f"FROM outbox o {join}WHERE o.destination = ? AND o.delivered_at IS NULL "
                "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?) " + skip +
                "ORDER BY o.priority, o.id LIMIT ?"), [destination, now, *exclude]

    def pending(self, destination: str, *, limit: int = 100, now: float | None = None,
                exclude: set[int] | frozenset[int] = frozenset()) -> list[OutboxItem]:
        """Undelivered rows for a destination, alerts first, then in event order.

        ``exclude`` names rows a link has in flight (or delivered but not yet recorded)."""
        now = self._clock.time() if now is None else now
        rows_sql, params = self._pending_rows(destination, now, exclude,
                                              join="JOIN events e ON e.seq = o.event_seq ")
        with self._lock:
            rows = self._conn.execute(
                "SELECT o.id, o.destination, e.id, e.seq, e.type, o.priority, o.attempts, o.created_at, "
                "e.envelope " + rows_sql, (*params, limit)).fetchall()
        # Positional: this is on the path of every alert to the centre.
        return [OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8])) for r in rows]

    def first_pending(self, destination: str, *,
                      exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The id of the row ``pending(destination)`` would give first, or None."""
        rows_sql, params = self._pending_rows(destination, self._clock.time(), exclude)
        with self._lock:
            row = self._conn.execute("SELECT o.id " + rows_sql, (*params, 1)).fetchone()
        return None if row is None else row[0]

    def mark_delivered(self, outbox_ids: list[int], when: float | None = None) -> None:
        when = self._clock.time() if when is None else when
        with self.transaction() as conn:
            conn.executemany("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                             [(when, i) for i in outbox_ids])

    def mark_failed(self, outbox_id: int, error: str, retry_at: float) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                         "WHERE id = ?", (error, retry_at, outbox_id))

    def add_outbox(self, event_seq: int, destination: str, priority: int) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO outbox(event_seq, destination, priority, created_at, attempts) "
                         "VALUES (?,?,?,?,0)", (event_seq, destination, priority, self._clock.time()))

    def outbox_stats(self) -> dict[str, dict[str, Any]]:
        """Per destination: pending depth and age in seconds of the oldest pending row."""
        now = self._clock.time()
        out = {}
        for r in self.query("SELECT destination, count(*) AS depth, min(created_at) AS oldest "
                            "FROM outbox WHERE delivered_at IS NULL GROUP BY destination"):
            out[r["destination"]] = {"depth": r["depth"],
                                     "oldest_age": round(now - r["oldest"], 3) if r["oldest"] else None}
        return out

    # --- commands: the centre's, accepted once (contract version 2's replay window) ---------

    def command_seen(self, command_id: str) -> bool:
        """Whether a command with this id was accepted before."""
        return bool(self.query("SELECT 1 FROM commands WHERE id = ?", (command_id,)))

    def note_command(self, command_id: str, sent: float) -> None:
        """Remember an accepted command (``sent``: the centre's time in it) before it runs, and
        keep the newest such time (``newest_command``)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO commands(id, time, sent) VALUES (?,?,?)",
                         (command_id, self._clock.time(), sent))
            conn.execute("INSERT INTO meta(key, value) VALUES ('command_newest', ?) ON CONFLICT(key) DO "
                         "UPDATE SET value = max(CAST(value AS REAL), CAST(excluded.value AS REAL))",
                         (str(sent),))

    def newest_command(self) -> float | None:
        """The centre's time of the newest command accepted (None before the first)."""
        rows = self.query("SELECT value FROM meta WHERE key = 'command_newest'")
        return float(rows[0]["value"]) if rows else None

    def command_reply(self, command_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT reply FROM commands WHERE id = ?", (command_id,))
        return json.loads(rows[0]["reply"]) if rows and rows[0]["reply"] else None

    def save_command_reply(self, command_id: str, reply: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO commands(id, time, reply) VALUES (?,?,?) ON CONFLICT(id) DO UPDATE "
                         "SET reply = excluded.reply", (command_id, self._clock.time(), json.dumps(reply)))

    # --- retention ------------------------------------------------------------------------

    def prune(self, older_than: float, *, commands_horizon: float = float("-inf")) -> int:
        """Delete closed alerts, their delivered events and old command replies before a time.

        Events still waiting in an outbox are kept whatever their age, and commands the centre
        sent at or after ``commands_horizon`` (``contract.command_horizon``: those a replay could
        still pass the freshness check with)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND created_at < ?",
                         (older_than,))
            cur = conn.execute(
                "DELETE FROM events WHERE time < ? AND seq NOT IN (SELECT event_seq FROM outbox) "
                "AND (alert_id IS NULL OR alert_id NOT IN "
                "(SELECT id FROM alerts WHERE state IN ('raised', 'acknowledged')))", (older_than,))
            n = cur.rowcount
            self._alert_counts = None
            conn.execute("DELETE FROM alerts WHERE state NOT IN ('raised', 'acknowledged') "
                         "AND updated_at < ?", (older_than,))
            conn.execute("DELETE FROM commands WHERE time < ? AND (sent IS NULL OR sent < ?)",
                         (older_than, commands_horizon))
        return n

    # --- snapshots (files live in the state directory; rows tie them to alerts) -----------

    def add_snapshot(self, alert_id: str, path: str, taken_at: float, size: int) -> int:
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO snapshots(alert_id, path, time, size) VALUES (?,?,?,?)",
                               (alert_id, path, taken_at, size))
            return _rowid(cur)

    def snapshots(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        if alert_id is None:
            return self.query("SELECT * FROM snapshots ORDER BY time")
        return self.query("SELECT * FROM snapshots WHERE alert_id = ? ORDER BY time", (alert_id,))

    def delete_snapshot(self, snapshot_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))

    # --- events heard from other hubs (hubd.ingest) ------------------------------------------

    def heard_trust(self, event_id: str) -> tuple[bool, str | None]:
        """(stored, trust) of an event id: whether it is stored, and how far it is believed
        (None for this hub's own)."""
        rows = self.query("SELECT trust FROM events WHERE id = ?", (event_id,))
        return (True, rows[0]["trust"]) if rows else (False, None)

    def replace_heard(self, event: Event, envelope: dict[str, Any], trust: str) -> int | None:
        """Replace a heard event's copy by a better-believed one of the same id (an origin's
        signed copy of what was ward-attested); its seq, or None if it is not stored."""
        with self.transaction() as conn:
            row = conn.execute("SELECT seq FROM events WHERE id = ? AND trust IS NOT NULL",
                               (event.id,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE events SET type = ?, time = ?, actor = ?, alert_id = ?, data = ?, "
                         "envelope = ?, trust = ? WHERE seq = ?",
                         (event.type, event.time, event.actor, event.alert_id, json.dumps(event.data),
                          json.dumps(envelope, separators=(",", ":")), trust, row[0]))
            return row[0]

    def count_heard(self) -> int:
        """Events heard from other hubs that are stored."""
        return self.query("SELECT count(*) AS n FROM events WHERE trust IS NOT NULL")[0]["n"]

    def evict_heard(self, n: int) -> int:
        """Delete the oldest ``n`` heard events that wait in no outbox, oldest first, and the
        closed remote alerts left without events; returns how many events went."""
        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS evicted (seq INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM evicted")
            conn.execute("INSERT INTO evicted SELECT seq FROM events WHERE trust IS NOT NULL AND seq NOT IN "
                         "(SELECT event_seq FROM outbox WHERE delivered_at IS NULL) ORDER BY seq LIMIT ?",
                         (n,))
            conn.execute("DELETE FROM outbox WHERE event_seq IN (SELECT seq FROM evicted)")
            cur = conn.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM evicted)")
            conn.execute("DELETE FROM evicted")
            conn.execute("DELETE FROM alerts WHERE remote = 1 AND state NOT IN ('raised', 'acknowledged') "
                         "AND id NOT IN (SELECT alert_id FROM events WHERE alert_id IS NOT NULL)")
            return cur.rowcount

    def drop_forged_alerts(self, hub: str) -> int:
        """Delete remote alert rows that claim this hub's ids (heard before hubd refused them:
        no other hub can speak for this one); returns how many."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM alerts WHERE remote = 1 AND (hub = ? OR (id >= ? AND id < ?))",
                                (hub, f"{hub}:", f"{hub};")).rowcount

    # --- for the MQTT link ------------------------------------------------------------------

    def outbox_attempts(self, outbox_id: int) -> int:
        """How often a row has been tried (0 for a row that is gone)."""
        rows = self.query("SELECT attempts FROM outbox WHERE id = ?", (outbox_id,))
        return rows[0]["attempts"] if rows else 0

    # --- for the mesh link ------------------------------------------------------------------

    def recent_alert_events(self, since: float, max_alerts: int,
                            not_pending_for: str) -> list[tuple[int, str]]:
        """``(seq, type)`` of the events of the ``max_alerts`` alerts updated most recently
        at or after ``since``, in event order, leaving out those already waiting in the
        ``not_pending_for`` outbox: what a neighbour that was away may have missed."""
        rows = self.query(
            "SELECT e.seq, e.type FROM events e WHERE e.alert_id IN (SELECT id FROM alerts WHERE "
            "updated_at >= ? ORDER BY updated_at DESC LIMIT ?) AND NOT EXISTS (SELECT 1 FROM outbox o "
            "WHERE o.event_seq = e.seq AND o.destination = ? AND o.delivered_at IS NULL) ORDER BY e.seq",
            (since, max_alerts, not_pending_for))
        return [(r["seq"], r["type"]) for r in rows]

    def note_mesh_frame(self, node: int, tag: bytes, time: int, window: float) -> None:
        """Remember an authentic frame heard from radio node ``node`` (its tag and time), and
        forget that node's frames more than ``window`` seconds older than its newest."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO mesh_seen(node, tag, time) VALUES (?,?,?)", (node, tag, time))
            conn.execute("DELETE FROM mesh_seen WHERE node = ? AND time < (SELECT max(time) FROM mesh_seen "
                         "WHERE node = ?) - ?", (node, node, window))

    def mesh_frames_seen(self) -> list[tuple[int, bytes, int]]:
        """(node, tag, time) of every frame remembered by ``note_mesh_frame``, oldest first."""
        with self._lock:
            return [(r[0], bytes(r[1]), r[2]) for r in
                    self._conn.execute("SELECT node, tag, time FROM mesh_seen ORDER BY time").fetchall()]

    # --- accounts (users) and the web page --------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str) -> bool:
        """Add an account; False if the name is taken."""
        with self.transaction() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO users(name, role, password_hash, created_at) "
                               "VALUES (?,?,?,?)", (name, role, password_hash, self._clock.time()))
            return cur.rowcount == 1

    def set_password_hash(self, name: str, password_hash: str) -> bool:
        """Change an account's password hash; False if there is no such account."""
        with self.transaction() as conn:
            return conn.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                                (password_hash, name)).rowcount == 1

    def remove_user(self, name: str) -> bool:
        """Remove an account; False if there is no such account."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def get_user(self, name: str) -> dict[str, Any] | None:
        """An account's name, role, password_hash, created_at and session_epoch, or None."""
        rows = self.query("SELECT name, role, password_hash, created_at, session_epoch FROM users "
                          "WHERE name = ?", (name,))
        return rows[0] if rows else None

    def bump_session_epoch(self, name: str) -> bool:
        """Move an account's session epoch (every page session of it ends); False if there is
        no such account."""
        with self.transaction() as conn:
            return conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE name = ?",
                                (name,)).rowcount == 1

    def users(self) -> list[dict[str, Any]]:
        """Every account's name, role and created_at (no hashes), by name."""
        return self.query("SELECT name, role, created_at FROM users ORDER BY name")

    # --- metrics ----------------------------------------------------------------------------

    def last_button_activity(self) -> dict[str, float]:
        """When each button last raised or re-pressed an alert: button name -> epoch seconds."""
        rows = self.query("SELECT actor, max(time) AS t FROM events WHERE actor LIKE 'button:%' "
                          "GROUP BY actor")
        return {r["actor"].split(":", 1)[1]: r["t"] for r in rows}

    # --- power (the orderly shutdown) -------------------------------------------------------

    #: The meta key of the record an orderly power-down leaves for the next start.
    POWER_DOWN_KEY = "power:down"

    def delivered(self, outbox_ids: list[int]) -> bool:
        """Whether every one of these outbox rows has been delivered (a row that is gone was)."""
        if not outbox_ids:
            return True
        marks = ",".join("?" * len(outbox_ids))
        return not self.query(f"SELECT 1 FROM outbox WHERE id IN ({marks}) AND delivered_at IS NULL LIMIT 1",
                              tuple(outbox_ids))

    def save_power_down(self, record: dict[str, Any]) -> None:
        """Keep the record of an orderly power-down (time, battery, reason) for the next start."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value", (self.POWER_DOWN_KEY, json.dumps(record)))

    def take_power_down(self) -> dict[str, Any] | None:
        """The record of the last orderly power-down, removed as it is read (None if there is none)."""
        with self.transaction() as conn:
            row = conn.execute("DELETE FROM meta WHERE key = ? RETURNING value",
                               (self.POWER_DOWN_KEY,)).fetchone()
        return json.loads(row[0]) if row else None

    def flush(self) -> None:
        """Write everything into the database file itself (a WAL checkpoint, fsync'd), so that
        the file alone is complete: before the machine powers down."""
        with self._lock:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("store: another reader kept the checkpoint from completing; the WAL is fsync'd")
        self.sync()
        self._sync_dir()
