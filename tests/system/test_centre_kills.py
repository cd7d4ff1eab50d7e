"""The centre under things that kill: its own ``kill -9`` in the middle of a storm of alerts,
its PostgreSQL restarted in the middle of one, its broker restarted in the middle of one.

Real parts: a Mosquitto started here, the centre as a ``hubd centre run`` subprocess, three
real hubs (the hub's core and MQTT link, in this process) raising, acknowledging and
resolving alerts as fast as they can, and a PostgreSQL server of the test's own. After each,
the same checks: every event of every hub stored exactly once, every alert once and in its
final state, every receipt sent (and seen on the wire), nothing raised twice, and no
supervision alarm at all (no false "hub silent": the hubs were there all along).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
import sqlalchemy as sa
from centre_support import CentreProcess, PostgresServer, write_centre_config
from mqtt_support import CENTRAL, LocalHub, hub_key, local_hub, undelivered
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import Mosquitto, free_port, wait_for

from hubd import contract
from hubd.centre import registry, tables
from hubd.centre.registry import HubRecord
from hubd.centre.store import Store

HUBS = ("hub-1", "hub-2", "hub-3")
ALERTS_PER_HUB = 25
#: Short, so that a false "hub silent" would show: hubs report every 2 s.
REPORT_EVERY = 8
BROKER_CONF = CENTRAL + "autosave_interval 1\n"


class ReceiptWatch:
    """Every receipt the centre sends, as the hubs' side of the broker sees it (a persistent
    session, so a broker restart loses none)."""

    def __init__(self, port: int):
        self.ids: set[str] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"receipts-{port}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        ready = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe("safercom/+/+/+/receipt", 1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import json

        with self._lock:
            self.ids.update(json.loads(msg.payload)["ids"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Storm:
    """Each hub raises, acknowledges and resolves alerts as fast as it can, in its own thread."""

    def __init__(self, hubs: list[LocalHub], alerts: int):
        self.hubs = hubs
        self.alerts = alerts
        self.done = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(h,), daemon=True) for h in hubs]

    def start(self) -> Storm:
        for t in self.threads:
            t.start()
        return self

    def _run(self, h: LocalHub) -> None:
        for _ in range(self.alerts):
            a = h.hub.raise_alert("gate", "panic", "Market gate")
            h.hub.acknowledge(a.id, "test")
            h.hub.resolve(a.id, "genuine", "test")
            with self._lock:
                self.done += 1
            time.sleep(0.02)

    def join(self, timeout: float = 120) -> None:
        for t in self.threads:
            t.join(timeout)
        assert self.done == self.alerts * len(self.hubs)


class Scene:
    """A broker, three hubs, a receipt watcher and a centre (its store at ``url``)."""

    def __init__(self, tmp: Path, url: str):
        self.tmp = tmp
        self.url = url
        self.broker = Mosquitto(tmp / "broker", extra_conf=BROKER_CONF).start()
        store = Store.open(url)
        for hub in HUBS:
            # Enrolled with the key each hub signs with (contract v2): its events are believed.
            registry.enrol(store, HubRecord(id=hub, ward="ward-7",
                                            public_key=contract.public_key_text(hub_key(hub))), by="test")
        store.close()
        self.receipts = ReceiptWatch(self.broker.port)
        self.centre = CentreProcess(write_centre_config(tmp / "centre", port=self.broker.port, url=url,
                                                        client_id="centre-under-test",
                                                        report_every=REPORT_EVERY)).start()
        # The centre's session must exist before the hubs' first events (their start-up).
        wait_for(lambda: "connected to 127.0.0.1" in self.centre.log.read_text(), 30,
                 message=lambda: f"the centre connected ({self.centre.log.read_text()[-2000:]})")
        time.sleep(0.5)
        self.hubs: list[LocalHub] = []
        for hub in HUBS:
            h = local_hub(tmp / hub, self.broker.port, hub_id=hub, start=False)
            h.link.STATUS_INTERVAL = 2.0  # before it starts: its first timer reads it
            h.link.start()
            self.hubs.append(h)
        for h in self.hubs:
            wait_for(lambda h=h: h.link.status()["connected"], 15, message=f"{h.hub.hub_id} connected")
        self.store = Store(url)
        wait_for(lambda: self.events_stored() > 0 or self.statuses() == len(HUBS), 30,
                 message=lambda: f"the centre hearing the hubs ({self.centre.log.read_text()[-2000:]})")

    def events_stored(self) -> int:
        try:
            with self.store.read() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(tables.events)).scalar_one())
        except sa.exc.OperationalError:
            return 0

    def statuses(self) -> int:
        with self.store.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(tables.hubs)
                                    .where(tables.hubs.c.status.is_not(None))).scalar_one())

    def close(self) -> None:
        for h in self.hubs:
            try:
                h.stop()
            except Exception:
                pass
        self.centre.stop()
        self.receipts.close()
        self.store.close()
        self.broker.stop()

    def check(self) -> None:
        """Everything the hubs said, at the centre once; every receipt sent; no alarm, also
        after two reporting times more (a false "hub silent" would have opened by then)."""
        time.sleep(2 * REPORT_EVERY)
        for h in self.hubs:
            wait_for(lambda h=h: undelivered(h.store) == 0, 60,
                     message=f"{h.hub.hub_id} delivered everything")
        expected = {e["id"] for h in self.hubs for e in h.store.events(limit=100_000)}
        alerts = {a.id: a.state for h in self.hubs for a in h.store.alerts(limit=100_000)}
        assert len(alerts) == len(HUBS) * ALERTS_PER_HUB

        def stored() -> set[str]:
            with self.store.read() as conn:
                return set(conn.execute(sa.select(tables.events.c.id)).scalars())

        wait_for(lambda: stored() >= expected, 90,
                 message=lambda: f"{len(expected - stored())} events missing at the centre: "
                                 f"{sorted(expected - stored())[:10]}")
        with self.store.read() as conn:
            ids = list(conn.execute(sa.select(tables.events.c.id)).scalars())
            assert len(ids) == len(set(ids))
            assert set(ids) == expected, set(ids) - expected
            rows = conn.execute(sa.select(tables.alerts.c.id, tables.alerts.c.state)).all()
            assert {r.id: r.state for r in rows} == alerts
            raised = [f.body["alert"]["id"] for f in conn.execute(
                sa.select(tables.feed.c.body).where(tables.feed.c.kind == "alert")) if f.body["new"]]
            assert sorted(raised) == sorted(alerts), "an alert was raised at the centre twice (or never)"
            a = tables.alarms.c
            alarms = conn.execute(sa.select(a.hub, a.kind, a.reason)).all()
            assert alarms == [], f"false supervision alarms: {alarms}"

        def pending() -> int:
            with self.store.read() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(tables.receipts)
                                        .where(tables.receipts.c.sent_at.is_(None))).scalar_one())

        wait_for(lambda: pending() == 0, 60, message=lambda: f"{pending()} receipts pending")
        wait_for(lambda: self.receipts.ids >= expected, 30,
                 message=lambda: f"receipts for {len(expected - self.receipts.ids)} events not seen")


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    items: list[Any] = []
    yield items
    for item in reversed(items):
        try:
            item.close()
        except Exception:
            pass


@pytest.mark.timeout(600)
def test_the_centre_killed_mid_storm_and_restarted(tmp_path: Path, cleanup: list[Any]) -> None:
    scene = Scene(tmp_path, f"sqlite:///{tmp_path / 'centre.db'}")
    cleanup.append(scene)
    storm = Storm(scene.hubs, ALERTS_PER_HUB).start()
    wait_for(lambda: scene.events_stored() >= 40, 60, message="the storm reaching the centre")
    scene.centre.kill9()
    time.sleep(3)  # the hubs go on; the broker queues for the centre's session
    scene.centre.start()
    storm.join()
    scene.check()
    assert "hub silent" not in scene.centre.log.read_text()


@pytest.mark.timeout(600)
def test_postgresql_restarted_mid_storm(tmp_path: Path, cleanup: list[Any]) -> None:
    pg = PostgresServer(free_port()).start()
    cleanup.append(pg)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE centre")
    scene = Scene(tmp_path, pg.url.rsplit("/", 1)[0] + "/centre")
    cleanup.append(scene)
    storm = Storm(scene.hubs, ALERTS_PER_HUB).start()
    wait_for(lambda: scene.events_stored() >= 40, 60, message="the storm reaching the centre")
    scene.store.close()
    pg.stop("immediate")  # as a crash: the server recovers from its WAL
    time.sleep(3)
    pg.start()
    storm.join()
    scene.check()
    assert "the store is back" in scene.centre.log.read_text()


@pytest.mark.timeout(600)
def test_the_broker_restarted_mid_storm(tmp_path: Path, cleanup: list[Any]) -> None:
    scene = Scene(tmp_path, f"sqlite:///{tmp_path / 'centre.db'}")
    cleanup.append(scene)
    storm = Storm(scene.hubs, ALERTS_PER_HUB).start()
    wait_for(lambda: scene.events_stored() >= 40, 60, message="the storm reaching the centre")
    scene.broker.stop()
    time.sleep(2)
    scene.broker.start()
    storm.join()
    scene.check()
