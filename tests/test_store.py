"""The store: durability settings, forward migrations, refusal of newer stores, outbox order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support import local_hub

from hubd.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreVersionError


def test_new_store_is_wal_full_sync_and_current(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.version == SCHEMA_VERSION
    assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert store.query("PRAGMA synchronous")[0]["synchronous"] == 2  # FULL
    assert {"alerts", "events", "outbox", "counters", "snapshots", "users", "commands"} <= set(
        store.db.table_names())


def test_forward_migration_keeps_data(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    alert = hub.raise_alert("gate", "panic")
    path = store.path
    store.close()

    def v2(db) -> None:
        db["alerts"].add_column("assigned_to", str)

    migrated = Store(path, migrations=[*MIGRATIONS, v2])
    assert migrated.version == SCHEMA_VERSION + 1
    row = migrated.query("SELECT id, assigned_to FROM alerts")[0]
    assert row == {"id": alert.id, "assigned_to": None}
    migrated.close()
    # Re-opening at the same version runs nothing again.
    again = Store(path, migrations=[*MIGRATIONS, v2])
    assert again.version == SCHEMA_VERSION + 1


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()

    def broken(db) -> None:
        db["alerts"].add_column("x", str)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        Store(tmp_path / "s.db", migrations=[*MIGRATIONS, broken])
    store = Store(tmp_path / "s.db")
    assert store.version == SCHEMA_VERSION
    assert "x" not in store.db["alerts"].columns_dict


def test_store_from_a_newer_hubd_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreVersionError, match="schema version 99, but this hubd knows only up to"):
        Store(tmp_path / "s.db")


def test_sequence_survives_reopen(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    assert hub.raise_alert("a", "panic").id == "h1:1"
    store.close()
    hub, store = local_hub(tmp_path)
    assert hub.raise_alert("a", "panic").id == "h1:2"


def test_outbox_alerts_first_then_event_order(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path, extra={"mqtt": {"host": "x"}})
    hub.record("component.ok", actor="camera")
    a = hub.raise_alert("gate", "panic")
    hub.record("component.fault", actor="camera")
    hub.acknowledge(a.id, "x")
    types = [i.type for i in store.pending("mqtt")]
    assert types == ["alert.raised", "alert.acknowledged", "component.ok", "component.fault"]
    first = store.pending("mqtt")[0]
    store.mark_failed(first.id, "refused", retry_at=1e12)
    assert store.pending("mqtt")[0].type == "alert.acknowledged"
    store.mark_delivered([i.id for i in store.pending("mqtt")])
    assert store.pending("mqtt") == []
    assert store.outbox_stats()["mqtt"]["depth"] == 1  # the failed row waits for its retry time


def test_prune_keeps_open_alerts_and_undelivered_events(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path, extra={"mqtt": {"host": "x"}})
    old = hub.raise_alert("gate", "panic")
    closed = hub.raise_alert("gate", "panic")
    hub.resolve(closed.id, "genuine", "x")
    store.mark_delivered([i.id for i in store.pending("mqtt") if i.envelope["alert"]["id"] == closed.id])
    store.prune(older_than=9e12)
    assert store.get_alert(old.id) is not None
    assert store.get_alert(closed.id) is None
    assert len(store.events(alert_id=old.id)) == 1
    assert store.events(alert_id=closed.id) == []
