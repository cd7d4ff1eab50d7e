"""The store: durability settings, forward migrations, refusal of newer stores, outbox order."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import local_hub

from hubd.store import ID_SKIP_AFTER_POWER_CUT, MIGRATIONS, SCHEMA_VERSION, Store, StoreVersionError


def test_new_store_is_wal_full_sync_and_current(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.version == SCHEMA_VERSION
    assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    # NORMAL: SQLite writes the WAL at COMMIT and Store.sync() fsyncs it (tested below).
    assert store.query("PRAGMA synchronous")[0]["synchronous"] == 1
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
    hub, store = local_hub(tmp_path, extra={"mqtt": {"host": "127.0.0.1"}})
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
    hub, store = local_hub(tmp_path, extra={"mqtt": {"host": "127.0.0.1"}})
    old = hub.raise_alert("gate", "panic")
    closed = hub.raise_alert("gate", "panic")
    hub.resolve(closed.id, "genuine", "x")
    store.mark_delivered([i.id for i in store.pending("mqtt") if i.envelope["alert"]["id"] == closed.id])
    store.prune(older_than=9e12)
    assert store.get_alert(old.id) is not None
    assert store.get_alert(closed.id) is None
    assert len(store.events(alert_id=old.id)) == 1
    assert store.events(alert_id=closed.id) == []


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files fdatasync'd, in order (the real fdatasync still runs)."""
    seen: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    return seen


def test_every_transaction_is_fsynced_before_it_returns(tmp_path: Path, fdatasyncs: list[str]) -> None:
    hub, store = local_hub(tmp_path)
    fdatasyncs.clear()
    hub.record("component.ok", actor="camera")
    assert fdatasyncs == [str(store.wal_path)]
    with store.transaction():
        store.next_value("x")
        with store.transaction():  # a nested transaction joins the outer one: one fsync at the end
            store.next_value("y")
        assert len(fdatasyncs) == 1
    assert len(fdatasyncs) == 2


def test_a_new_alert_is_announced_before_its_fsync_and_synced_before_raise_returns(
        tmp_path: Path, fdatasyncs: list[str]) -> None:
    hub, store = local_hub(tmp_path)
    heard: list[tuple[str, int]] = []
    hub.subscribe(lambda event, env: heard.append((event.type, len(fdatasyncs))))
    fdatasyncs.clear()
    alert = hub.raise_alert("gate", "panic")
    # The listener (the MQTT link, say) heard it while no fsync had been done...
    assert heard == [("alert.raised", 0)]
    # ...yet it was committed (another connection reads it) and it was on disk on return.
    other = sqlite3.connect(store.path)
    assert other.execute("SELECT state FROM alerts WHERE id = ?", (alert.id,)).fetchone() == ("raised",)
    assert fdatasyncs == [str(store.wal_path)]


_RAISE_AND_DIE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from support import local_hub
import hubd.store
hubd.store.current_boot_id = lambda: {boot!r}
hub, store = local_hub(__import__("pathlib").Path({tmp!r}))
print(hub.raise_alert("gate", "panic").id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _raise_and_die(tmp: Path, boot: str) -> str:
    """In another process on boot ``boot``: raise an alert, then die by SIGKILL (no close)."""
    code = _RAISE_AND_DIE.format(tests=str(Path(__file__).parent), boot=boot, tmp=str(tmp))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.strip()


def _next_alert_id(tmp: Path, boot: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("hubd.store.current_boot_id", lambda: boot)
    hub, store = local_hub(tmp)
    alert_id = hub.raise_alert("gate", "panic").id
    store.close()
    return alert_id


def test_numbers_skip_ahead_after_a_power_cut_but_not_after_a_kill(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # kill -9 of hubd: the machine kept running, its page cache kept every write: no gap.
    assert _raise_and_die(tmp_path, "boot-A") == "h1:1"
    assert _next_alert_id(tmp_path, "boot-A", monkeypatch) == "h1:2"
    # A clean stop, then a reboot: no gap either.
    assert _next_alert_id(tmp_path, "boot-B", monkeypatch) == "h1:3"
    # hubd had the store open when the machine went down (a power cut): what it announced
    # just before may not have reached the disk, so numbers skip past anything it could
    # have given out; none is used twice.
    assert _raise_and_die(tmp_path, "boot-B") == "h1:4"
    with caplog.at_level("WARNING", logger="hubd.store"):
        assert _next_alert_id(tmp_path, "boot-C", monkeypatch) == f"h1:{5 + ID_SKIP_AFTER_POWER_CUT}"
    assert "was open when the machine stopped" in caplog.text
    # Once: the next start after that is an ordinary one.
    assert _next_alert_id(tmp_path, "boot-C", monkeypatch) == f"h1:{6 + ID_SKIP_AFTER_POWER_CUT}"


def test_a_second_opener_does_not_hide_the_daemon_from_the_power_cut_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon (here: a process that dies) and a CLI command both open the store in one
    # boot; the CLI closes cleanly, which must not count for the daemon.
    monkeypatch.setattr("hubd.store.current_boot_id", lambda: "boot-A")
    cli = Store(tmp_path / "hubd.db")
    assert _raise_and_die(tmp_path, "boot-A") == "h1:1"
    cli.close()
    assert _next_alert_id(tmp_path, "boot-B", monkeypatch) == f"h1:{2 + ID_SKIP_AFTER_POWER_CUT}"
