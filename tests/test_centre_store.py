"""The centre's store on SQLite and PostgreSQL: migrated at open, in step with the tables
the code uses, refused when a newer hubd has migrated it, durable on SQLite."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from centre_support import store_url

from hubd.centre import tables
from hubd.centre.store import Store, StoreError


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as u:
        yield u


def test_open_migrates_an_empty_store_to_the_head(url: str) -> None:
    store = Store.open(url)
    try:
        assert store.revision() == store.head()
        with store.read() as conn:
            names = set(sa.inspect(conn).get_table_names())
        assert {t.name for t in tables.metadata.sorted_tables} <= names
        # Opening again changes nothing.
        Store.open(url).close()
        assert store.revision() == store.head()
    finally:
        store.close()


def test_the_migrated_store_matches_the_tables_the_code_uses(url: str) -> None:
    store = Store.open(url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), tables.metadata)
        assert diff == [], diff
    finally:
        store.close()


def test_a_store_newer_than_the_code_is_refused(url: str) -> None:
    store = Store.open(url)
    with store.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(StoreError, match="migration 9999, which this hubd does not know"):
        Store.open(url)


def test_writes_commit_or_roll_back_as_one(url: str) -> None:
    store = Store.open(url)
    try:
        row = {"name": "ann", "role": "viewer", "password_hash": "x", "created_at": 1.0}
        with pytest.raises(RuntimeError), store.write() as conn:
            conn.execute(tables.users.insert().values(**row))
            raise RuntimeError("half way")
        with store.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables.users)).scalar() == 0
        with store.write() as conn:
            conn.execute(tables.users.insert().values(**row))
            conn.execute(store.insert(tables.users).values(**row).on_conflict_do_nothing())
        with store.read() as conn:
            assert conn.execute(sa.select(tables.users.c.name)).scalars().all() == ["ann"]
    finally:
        store.close()


def test_sqlite_is_private_durable_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "centre.db"
    store = Store.open(f"sqlite:///{path}")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with store.write() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        store.close()


def test_bad_urls_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="only sqlite:/// and postgresql://"):
        Store("mysql://x@localhost/db")
    with pytest.raises(StoreError, match="in-memory"):
        Store("sqlite://")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store.open("postgresql://nobody@127.0.0.1:1/none")
