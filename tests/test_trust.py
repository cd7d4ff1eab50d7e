"""What the core believes of events heard from other hubs (hubd.ingest), and that nothing a
neighbour said, stored or not, can break the alert path (issue 15, items 1 and 2).

The attacks themselves, against running hubs over a real broker, are in
tests/system/test_attacks.py; these pin the rules underneath."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support import local_hub

from hubd import contract
from hubd.ingest import ATTESTED, SIGNED, RemoteIngest, RemoteRefused
from hubd.model import Alert, AlertKind, Event


def heard(hub: str, seq: int, event: str, state: str, t: float, *, level: int = 0,
          outcome: str | None = None, kind: str = "panic", zone: str = "Gate") -> dict[str, Any]:
    """A version 2 envelope of ``hub``'s alert ``<hub>:<seq>`` (unsigned: the core is told the
    trust by the link that checked it)."""
    alert = {"id": f"{hub}:{seq}", "hub": hub, "seq": seq, "kind": kind, "source": "gate", "zone": zone,
             "state": state, "outcome": outcome, "level": level, "silent": False, "raised_at": 1000.0,
             "updated_at": t, "severity": 1}
    return contract.event_envelope_v2(id=f"{hub}:{seq}:{event}:{level}", type=f"alert.{event}", time=t,
                                      ward="w", hub=hub, actor="gate", data={}, alert=alert)


def test_an_event_under_an_id_of_this_hub_is_refused_and_changes_nothing(tmp_path: Path, caplog) -> None:
    hub, store = local_hub(tmp_path, hub_id="hubA")
    hub.start()
    try:
        before = store.events(limit=1000)
        forged = [heard("hubA", 2, "raised", "raised", 1000.0),
                  {**heard("hubB", 2, "raised", "raised", 1000.0), "id": "hubA:e5"},
                  {**heard("hubB", 2, "raised", "raised", 1000.0), "hub": "hubA"},
                  {**heard("hubB", 2, "raised", "raised", 1000.0), "id": "hubB:e7",
                   "alert": heard("hubA", 2, "raised", "raised", 1000.0)["alert"]}]
        for env in forged:
            for trust in (SIGNED, ATTESTED):
                with caplog.at_level(logging.WARNING), pytest.raises(RemoteRefused):
                    hub.ingest_remote(env, via="mqtt", trust=trust)
        assert store.events(limit=1000) == before and store.alerts(remote=True) == []
        assert "refused an event heard via mqtt" in caplog.text
        alert = hub.raise_alert("gate", "panic")
        assert alert.id == "hubA:1" and store.has_event("hubA:1:raised:0")
    finally:
        hub.stop()
        store.close()


def test_what_a_neighbour_cannot_store_is_refused_and_logged(tmp_path: Path, caplog) -> None:
    hub, store = local_hub(tmp_path, hub_id="hubA")
    try:
        good = heard("hubB", 1, "raised", "raised", 1000.0)
        broken = [
            {k: v for k, v in good.items() if k != "time"},
            {**good, "alert": {**good["alert"], "kind": "meteor"}},
            {**good, "alert": {**good["alert"], "state": None}},
            {**good, "alert": {**good["alert"], "seq": 9}},
            {**good, "alert": "hubB:1"},
            {**good, "data": ["x"]},
            {**good, "id": "not an id"},
            {**good, "time": "yesterday"},
            {**good, "alert": {**good["alert"], "level": "high"}},
        ]
        for env in broken:
            with caplog.at_level(logging.WARNING), pytest.raises(RemoteRefused):
                hub.ingest_remote(env, via="mqtt", trust=SIGNED)
        assert store.events(limit=100) == [] and store.alerts() == []
        assert hub.ingest_remote(good, via="mqtt", trust=SIGNED)
    finally:
        hub.stop()
        store.close()


def plant(store: Any, hub: str) -> None:
    """Rows of the issue's attack, as a hubd before version 2 stored them: a remote alert and
    events under this hub's own ids."""
    forged = Alert(id=f"{hub}:2", hub=hub, seq=2, kind=AlertKind.PANIC, source="x", zone="", remote=True,
                   raised_at=1000.0, updated_at=1000.0, extra={"via": "mqtt"})
    with store.transaction():
        store.save_alert(forged)
        store.append_event(Event(id=f"{hub}:2:raised:0", type="alert.raised", time=1000.0, hub=hub,
                                 actor="x", alert_id=forged.id), {"id": f"{hub}:2:raised:0"})
        for n in range(1, 60):
            store.append_event(Event(id=f"{hub}:e{n}", type="siren.test", time=1000.0, hub=hub, actor="x"),
                               {"id": f"{hub}:e{n}"})
        store.append_event(Event(id=f"{hub}:1:acknowledged:0", type="alert.acknowledged", time=1000.0,
                                 hub=hub, actor="x"), {"id": f"{hub}:1:acknowledged:0"})


def test_rows_stored_under_this_hubs_ids_before_the_fix_break_nothing(tmp_path: Path) -> None:
    # The attack left such rows behind: the next press stored no alert, siren test and
    # silence failed with AssertionError, and `hubd run` could not start again.
    hub, store = local_hub(tmp_path, hub_id="hubA")
    plant(store, "hubA")
    hub.start()  # records hub.started: its routine id is taken; it takes the next free one
    try:
        assert store.get_alert("hubA:2") is None, "the forged remote alert under our id is gone"
        a = hub.raise_alert("gate", "panic")
        assert a.seq and a.id not in ("hubA:1", "hubA:2"), a  # ids with forged rows are skipped
        assert store.get_alert(a.id).state == "raised" and store.has_event(f"{a.id}:raised:0")
        hub.siren_test("cli:x")
        hub.silence("centre")
        hub.acknowledge(a.id, "cli:x")
        hub.resolve(a.id, "genuine", "cli:x")
        assert [e["type"] for e in store.events(alert_id=a.id)] == [
            "alert.raised", "alert.acknowledged", "alert.resolved"]
        ours = [e for e in store.events(limit=1000) if e["type"] in ("siren.test", "siren.silenced",
                                                                     "hub.started")]
        assert len(ours) == 59 + 3 and len({e["id"] for e in store.events(limit=1000)}) == \
            len(store.events(limit=1000))
    finally:
        hub.stop()
        store.close()
    hub, store = local_hub(tmp_path, hub_id="hubA")  # and a restart starts
    hub.start()
    hub.stop()
    store.close()


def test_signed_and_ward_attested(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path, hub_id="hubA")
    try:
        # Known only from the mesh: it follows the mesh, shown as ward-attested.
        assert hub.ingest_remote(heard("hubB", 1, "raised", "raised", 1000.0), via="mesh", trust=ATTESTED)
        assert store.get_alert("hubB:1").extra["trust"] == ATTESTED
        # The origin's signed copy of the same id replaces the attested one.
        assert hub.ingest_remote(heard("hubB", 1, "raised", "raised", 1000.0), via="mqtt", trust=SIGNED)
        assert store.get_alert("hubB:1").extra["trust"] == SIGNED
        assert store.heard_trust("hubB:1:raised:0") == (True, SIGNED)
        assert not hub.ingest_remote(heard("hubB", 1, "raised", "raised", 1000.0), via="mesh", trust=ATTESTED)
        # What hubB signed is never overridden by what is only ward-attested...
        assert hub.ingest_remote(heard("hubB", 1, "resolved", "resolved", 1010.0, outcome="false_alarm"),
                                 via="mesh", trust=ATTESTED)
        alert = store.get_alert("hubB:1")
        assert alert.state == "raised" and alert.extra["attested"]["state"] == "resolved"
        # ...but it may make it more alarmed (a higher level while raised).
        assert hub.ingest_remote(heard("hubB", 1, "escalated", "raised", 1020.0, level=1), via="mesh",
                                 trust=ATTESTED)
        assert store.get_alert("hubB:1").level == 1 and store.get_alert("hubB:1").extra["trust"] == SIGNED
        # A signed resolution closes it, and the attested copy of that id gives way to it.
        assert hub.ingest_remote(heard("hubB", 1, "resolved", "resolved", 1010.0, outcome="false_alarm"),
                                 via="mqtt", trust=SIGNED)
        assert store.get_alert("hubB:1").state == "resolved"
        assert store.heard_trust("hubB:1:resolved:0") == (True, SIGNED)
        # A signed event defines an alert that was only ward-attested, kind and zone included.
        hub.ingest_remote(heard("hubC", 4, "raised", "raised", 1000.0, zone="Forged"), via="mesh",
                          trust=ATTESTED)
        hub.ingest_remote(heard("hubC", 4, "raised", "raised", 1000.0, zone="Real"), via="mqtt", trust=SIGNED)
        assert store.get_alert("hubC:4").zone == "Real"
    finally:
        hub.stop()
        store.close()


def test_heard_events_have_a_bounded_share_of_the_store(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path, hub_id="hubA")
    try:
        ingest = RemoteIngest(store, "hubA", max_events=50)
        for seq in range(1, 121):
            with store.transaction():
                ingest.write(heard("hubB", seq, "raised", "raised", 1000.0 + seq), "mqtt", SIGNED)
        assert store.count_heard() <= 50
        assert store.has_event("hubB:120:raised:0") and not store.has_event("hubB:1:raised:0")
        # When nothing can make room (every heard event waits to be relayed), it is refused.
        full = RemoteIngest(store, "hubA", max_events=53)
        with store.transaction():
            for seq in range(121, 124):
                full.write(heard("hubC", seq, "raised", "raised", 2000.0), "mesh", ATTESTED, (("mqtt", 0),))
        store.evict_heard(1000)
        assert store.count_heard() == 3  # those wait in the outbox
        full = RemoteIngest(store, "hubA", max_events=3)
        with pytest.raises(RemoteRefused), store.transaction():
            full.write(heard("hubB", 200, "raised", "raised", 2000.0), "mqtt", SIGNED)
        assert not store.has_event("hubB:200:raised:0") and store.count_heard() == 3
    finally:
        hub.stop()
        store.close()


def test_hubd_keys_init_makes_the_key_once_and_show_prints_it(tmp_path: Path) -> None:
    import re
    import stat
    import subprocess

    from support import HUBD, REPO, hub_config

    cfg = hub_config(tmp_path, web=False)

    def hubd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*HUBD, "keys", *args, "-c", str(cfg)], capture_output=True, text=True,
                              timeout=60, cwd=REPO)

    assert hubd("show").returncode == 1 and "hubd keys init" in hubd("show").stderr
    made = hubd("init")
    assert made.returncode == 0, made.stderr
    public = re.search(r"ed25519:[A-Za-z0-9_-]{43}", made.stdout)
    assert public and "Enrol" in made.stdout
    key = tmp_path / "state" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    again = hubd("init")
    assert again.returncode == 1 and "never overwritten" in again.stderr  # an identity is not replaced
    assert hubd("show").stdout.strip() == public.group(0)
    assert json.loads(hubd("show", "--json").stdout)["public_key"] == public.group(0)
    key.chmod(0o644)
    assert hubd("show").returncode == 1 and "chmod 600" in hubd("show").stderr
