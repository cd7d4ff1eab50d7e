"""The centre's store: SQLite by default (a file, no server), PostgreSQL by URL.

``Store.open(url)`` connects and brings the schema to the code's migration head with
Alembic (the scripts in ``migrations/``, run in-process), and refuses a store that a newer
hubd has migrated beyond what this code knows. Everything else talks to the database
through ``write()`` (one transaction, committed when the block ends) and ``read()``.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed event survives a power
cut. Its write transactions begin IMMEDIATE and are serialised in this process, so two of
the centre's threads never deadlock on the upgrade from a read lock, and another process
(the CLI) waits up to ``busy_timeout`` instead of failing. PostgreSQL goes through
psycopg 3, with connections checked before use so that a restarted server costs one
retry, not a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

log = logging.getLogger("hubd.centre.store")

MIGRATIONS = Path(__file__).with_name("migrations")
#: How long a writer waits for another process's SQLite write lock (milliseconds).
BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    """The store cannot be used as it is (says what to do)."""


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def is_transient(e: BaseException) -> bool:
    """Whether a database error may go away by itself (server restarting, connection lost,
    SQLite busy or disk full): the caller waits and tries again, rather than give up."""
    if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
        return True
    return isinstance(e, exc.OperationalError | exc.InterfaceError | exc.DisconnectionError
                      | exc.TimeoutError)


class Store:
    """One database, its engine(s), and its migrations."""

    def __init__(self, url: str | URL, *, password: str | None = None):
        u = make_url(url)
        if u.drivername in ("postgresql", "postgres"):
            u = u.set(drivername="postgresql+psycopg")
        if password is not None:
            u = u.set(password=password)
        self.url = u
        self.dialect = u.get_backend_name()
        if self.dialect == "sqlite":
            self._prepare_sqlite_file(u)
            self.engine = self._sqlite_engine(u, immediate=True)
            self.reader = self._sqlite_engine(u, immediate=False)
            self._write_lock: contextlib.AbstractContextManager[Any] = threading.Lock()
        elif self.dialect == "postgresql":
            self.engine = create_engine(u, pool_pre_ping=True, pool_size=4, max_overflow=8,
                                        pool_timeout=10, connect_args={"connect_timeout": 5})
            self.reader = self.engine
            self._write_lock = contextlib.nullcontext()
        else:
            raise StoreError(f"store URL {u.render_as_string(hide_password=True)!r}: only sqlite:/// and "
                             "postgresql:// are supported")

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | URL, *, password: str | None = None) -> Store:
        """Connect and migrate to the code's head; StoreError if that cannot be done."""
        store = cls(url, password=password)
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def where(self) -> str:
        """The URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    @staticmethod
    def _prepare_sqlite_file(u: URL) -> None:
        if not u.database or u.database == ":memory:":
            raise StoreError("an in-memory SQLite store would lose everything: give a file")
        path = Path(u.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                # Password hashes live here: private from the first byte.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as e:
            raise StoreError(f"cannot create the store {path}: {e.strerror}; check the directory "
                             "exists and is writable by this user") from None

    @staticmethod
    def _sqlite_engine(u: URL, *, immediate: bool) -> Engine:
        engine = create_engine(u, pool_size=4, max_overflow=8,
                               connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi: Any, _record: Any) -> None:
            # Take transactions into our own hands (pysqlite's own begin is deferred and
            # late); see the "begin" hook below.
            dbapi.isolation_level = None
            cur = dbapi.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def _alembic(self, conn: Connection | None = None) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        if conn is not None:
            cfg.attributes["connection"] = conn
        return cfg

    def head(self) -> str:
        """The newest migration this code knows."""
        head = ScriptDirectory.from_config(self._alembic()).get_current_head()
        assert head is not None, "no migrations in the package"
        return head

    def revision(self) -> str | None:
        """The store's migration (None: empty)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self) -> None:
        """Upgrade to the head; StoreError for a store newer than this code."""
        script = ScriptDirectory.from_config(self._alembic())
        known = {s.revision for s in script.walk_revisions()}
        try:
            with self._write_lock, self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
                if current is not None and current not in known:
                    raise StoreError(
                        f"the store at {self.where} is at migration {current}, which this hubd does not "
                        f"know (its newest is {script.get_current_head()}): a newer hubd has used it. "
                        "Install that version again, or point [store] url at another database.")
                if current != script.get_current_head():
                    log.info("migrating the store at %s from %s to %s", self.where, current or "empty",
                             script.get_current_head())
                    command.upgrade(self._alembic(conn), "head")
                    conn.commit()
        except exc.OperationalError as e:
            raise StoreError(f"cannot open the store at {self.where}: {e.orig}") from None

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading (on SQLite, one that never blocks the writer)."""
        with self.reader.connect() as conn:
            yield conn

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT for ``table``, with ``on_conflict_do_nothing`` and
        ``on_conflict_do_update`` (SQLite and PostgreSQL spell them alike)."""
        return (postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table))

    def close(self) -> None:
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()
