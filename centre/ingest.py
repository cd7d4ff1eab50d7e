"""The ingest: the centre's MQTT subscriber, and the thread that commits what it hears.

One paho 2 client (MQTT v5, ``CallbackAPIVersion.VERSION2``) with a persistent session
(``clean_start=False`` and a Session Expiry) subscribes at QoS 1 to every ward's and hub's
events, status, snapshots and replies. With ``manual_ack=True`` paho does not acknowledge a
message to the broker when it arrives; the ingest does, with ``client.ack(mid, qos)``, only
after the message is committed (stored, or quarantined with its reason). So a centre killed
at any moment loses nothing: the broker sends again whatever was not acknowledged, and the
store's unique event ids make the second copy a duplicate.

Threads: paho's network thread classifies each message as it arrives (``messages``), tells
the supervisor the hub was heard, and queues it; the ``centre-ingest`` thread takes what is
queued in batches, records each batch in one transaction (``ledger``), then acknowledges it,
sends the receipts and feeds the live stream. A store that is down (PostgreSQL restarting,
SQLite busy or full) stalls the batch, which is retried until it commits: nothing is
acknowledged meanwhile, and supervision pauses, since the centre is the one not hearing.
"""

from __future__ import annotations

import collections
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hubd.centre import queries, receipts, registry, tables
from hubd.centre.clock import SYSTEM_CLOCK, Clock
from hubd.centre.commands import Commands
from hubd.centre.config import CentreConfig
from hubd.centre.ledger import Item, Ledger, Recorded
from hubd.centre.messages import (
    Classified,
    EventMessage,
    Received,
    Refused,
    ReplyMessage,
    SnapshotMessage,
    StatusMessage,
    classify,
)
from hubd.centre.registry import HubRecord
from hubd.centre.store import Store, is_transient
from hubd.centre.supervision import Supervisor
from hubd.contract import KeyLookup, dumps, topic_filter

log = logging.getLogger("hubd.centre.ingest")

#: The leaves the centre subscribes to under every ward and hub.
SUBSCRIPTIONS = ("events", "status", "reply", "snapshots/#")


class Samples:
    """The last ``size`` values of a measurement, for quantiles."""

    def __init__(self, size: int = 10_000):
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, values: list[float]) -> None:
        with self._lock:
            self._values.extend(values)

    def quantile(self, q: float) -> float | None:
        with self._lock:
            values = sorted(self._values)
        if not values:
            return None
        return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class IngestStats:
    """Counters since the start, for /metrics and the CLI."""

    received: collections.Counter[str] = field(default_factory=collections.Counter)
    stored: int = 0
    duplicates: int = 0
    quarantined: collections.Counter[str] = field(default_factory=collections.Counter)
    batches: int = 0
    receipts_sent: int = 0
    store_failures: int = 0
    #: Seconds from arrival to commit, and from the origin's event time to commit.
    lag: Samples = field(default_factory=Samples)
    delay: Samples = field(default_factory=Samples)
    #: (monotonic time, messages committed) of recent batches, for a rate.
    recent: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=1000))

    def rate(self, now: float, window: float = 10.0) -> float:
        """Messages committed per second over the last ``window`` seconds."""
        n = sum(count for t, count in list(self.recent) if now - t <= window)
        return n / window


class Ingest:
    """The subscriber and its committing thread."""

    BATCH = 500
    RETRY_MIN = 0.2
    RETRY_MAX = 5.0
    #: Receipts still pending are published again this often (seconds), besides every reconnect.
    RESEND_EVERY = 60.0
    RECONNECT_MIN = 1
    RECONNECT_MAX = 10

    def __init__(self, config: CentreConfig, store: Store, supervisor: Supervisor, commands: Commands,
                 key: Ed25519PrivateKey, *, clock: Clock = SYSTEM_CLOCK,
                 on_feed: Callable[[list[dict[str, Any]]], None] | None = None):
        self.config = config
        self.roots = config.roots
        self.key = key
        self.store = store
        self.supervisor = supervisor
        self.commands = commands
        self.clock = clock
        self.on_feed = on_feed or (lambda msgs: None)
        self.ledger = Ledger(store, config.snapshot_dir)
        self.hubs: dict[str, HubRecord] = {}
        self.key_of: KeyLookup = lambda hub: None
        #: Per hub, the ``connected_at`` of its newest version 2 status: a Will of an older
        #: connection is a replay.
        self._connected_at: dict[str, float] = {}
        self.stats = IngestStats()
        self.connected = False
        self._queue: queue.Queue[Item] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        #: mid -> event ids of a receipt awaiting its PUBACK (the writer thread's own).
        self._receipts_inflight: dict[int, list[str]] = {}
        #: PUBACKs as paho reports them, (mid, ok): drained by the writer thread.
        self._pubacks: collections.deque[tuple[int, bool]] = collections.deque()
        self._resend = threading.Event()
        self._store_down = False

    # -- lifecycle -------------------------------------------------------------------------

    def reload_registry(self) -> None:
        """Read the registry again (after an enrolment, and now and then)."""
        hubs = registry.all_hubs(self.store)
        # Each one assignment: the network thread sees the old value or the new.
        self.key_of = registry.key_lookup(hubs)
        self.hubs = hubs
        self.supervisor.load(hubs)
        for h in queries.hubs(self.store):
            connected_at = (h["status"] or {}).get("connected_at")
            if isinstance(connected_at, int | float) and h["id"] not in self._connected_at:
                self._connected_at[h["id"]] = float(connected_at)

    def start(self) -> None:
        self.reload_registry()
        self.supervisor.pause("the broker is not connected yet")
        self._client = self._make_client()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.mqtt.session_expiry
        props.ReceiveMaximum = self.config.mqtt.receive_maximum
        self._client.connect_async(self.config.mqtt.host, self.config.mqtt.port, self.config.mqtt.keepalive,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        self._resend.set()
        self._thread = threading.Thread(target=self._run, name="centre-ingest", daemon=True)
        self._thread.start()

    def _make_client(self) -> mqtt.Client:
        m = self.config.mqtt
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=m.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        client.reconnect_delay_set(self.RECONNECT_MIN, self.RECONNECT_MAX)
        client.max_inflight_messages_set(100)
        if m.username:
            client.username_pw_set(m.username, self.config.mqtt_password())
        if m.ca_file:
            client.tls_set(ca_certs=str(m.ca_file), certfile=str(m.certfile) if m.certfile else None,
                           keyfile=str(m.keyfile) if m.keyfile else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, then disconnect (what is not committed is not
        acknowledged, and comes again after the restart)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def backlog(self) -> int:
        """Messages received and not yet committed."""
        return self._queue.qsize()

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """QoS 1, not retained; queued by paho while the broker is away."""
        if self._client is None:
            raise RuntimeError("the ingest is not started")
        self._client.publish(topic, payload, qos=1, properties=properties)

    # -- paho's network thread ----------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("the broker refused the centre: %s", reason)
            return
        self.connected = True
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # Acknowledgements and receipts are small writes in a row: without this, Nagle's
            # algorithm holds each behind the last one's delayed ACK (about 40 ms a time).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("connected to %s:%s (session %s)", self.config.mqtt.host, self.config.mqtt.port,
                 "resumed" if flags.session_present else "new")
        client.subscribe([(topic_filter(root, leaf), 1) for root in self.roots for leaf in SUBSCRIPTIONS])
        self._resend.set()
        self.supervisor.resume("the broker is not connected yet")
        self.supervisor.resume("the broker link is down")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected = False
        if not self._stop.is_set():
            log.warning("lost the broker: %s; reconnecting", reason)
            self.supervisor.pause("the broker link is down")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._pubacks.append((mid, not reason.is_failure))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        r = Received(topic=msg.topic, payload=bytes(msg.payload), qos=msg.qos, mid=msg.mid,
                     retain=bool(msg.retain),
                     received_at=self.clock.time(), received_mono=self.clock.monotonic(),
                     correlation=getattr(props, "CorrelationData", None))
        try:
            m: Classified = classify(r, roots=self.roots, hubs=self.hubs, key_of=self.key_of,
                                     max_snapshot_bytes=self.config.mqtt.max_snapshot_bytes)
            m = self._replayed_will(m)
            self._heard(r, m)
        except Exception as e:  # a bug must quarantine the message, never stop the ingest
            log.exception("could not classify a message on %s", r.topic)
            m = Refused("internal", f"could not be classified: {type(e).__name__}: {e}")
        self.stats.received[type(m).__name__] += 1
        self._queue.put((r, m))

    def _replayed_will(self, m: Classified) -> Classified:
        """A version 2 Will of a connection older than the newest status's is a replay."""
        if not isinstance(m, StatusMessage) or m.connected_at is None:
            return m
        newest = self._connected_at.get(m.hub)
        if m.online:
            if newest is None or m.connected_at > newest:
                self._connected_at[m.hub] = m.connected_at
            return m
        if m.seq is None and newest is not None and m.connected_at < newest:
            return Refused("replayed", f"a Last Will of an earlier connection of {m.hub} (connected_at "
                                       f"{m.connected_at}, the newest is {newest})", m.ward, m.hub)
        return m

    def _heard(self, r: Received, m: Classified) -> None:
        if r.retain or isinstance(m, Refused):
            return
        if isinstance(m, EventMessage):
            self.supervisor.heard(m.carrier, r.received_mono)
            if m.via:
                self.supervisor.heard_relayed(m.origin, m.via, r.received_mono)
        elif isinstance(m, StatusMessage):
            if m.online:
                self.supervisor.heard(m.hub, r.received_mono)
            else:
                self.supervisor.went_offline(m.hub, r.received_mono)
        elif isinstance(m, ReplyMessage | SnapshotMessage):
            self.supervisor.heard(m.hub, r.received_mono)

    # -- the committing thread ----------------------------------------------------------------

    def _run(self) -> None:
        next_resend = self.clock.monotonic() + self.RESEND_EVERY
        while not self._stop.is_set():
            try:
                batch = self._take()
                if batch:
                    self._commit(batch)
                self._settle_receipts()
                if self._resend.is_set() or self.clock.monotonic() >= next_resend:
                    self._resend.clear()
                    next_resend = self.clock.monotonic() + self.RESEND_EVERY
                    self._resend_pending()
            except Exception:
                # Nothing of the batch was acknowledged; it comes again from the broker.
                log.exception("ingest step failed; going on")
                self._stop.wait(1.0)

    def _take(self) -> list[Item]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[Item]) -> None:
        recorded = self._record(batch)
        if recorded is None:
            return  # stopping with the store down: not acknowledged, so not lost
        client = self._client
        assert client is not None
        for r, _ in batch:
            if r.qos > 0:
                client.ack(r.mid, r.qos)
        self._after(batch, recorded)

    def _record(self, batch: list[Item]) -> Recorded | None:
        """Record the batch, waiting out a store that is down; a batch the store refuses
        for good is split so that only the culprit is quarantined."""
        delay = self.RETRY_MIN
        while True:
            try:
                recorded = self.ledger.record(batch, self.clock.time())
            except Exception as e:
                if not is_transient(e):
                    return self._record_one_by_one(batch, e)
                self.stats.store_failures += 1
                if not self._store_down:
                    log.error("the store is not answering (%s); holding %d messages, unacknowledged",
                              type(e).__name__, len(batch))
                    self._store_down = True
                    self.supervisor.pause("the store is down")
                if self._stop.wait(delay):
                    return None
                delay = min(self.RETRY_MAX, delay * 2)
                continue
            if self._store_down:
                log.info("the store is back")
                self._store_down = False
                self.supervisor.resume("the store is down")
            return recorded

    def _record_one_by_one(self, batch: list[Item], first: Exception) -> Recorded:
        log.error("the store refused a batch (%s: %s); recording its messages one at a time",
                  type(first).__name__, first)
        total = Recorded()
        for r, m in batch:
            try:
                one = self.ledger.record([(r, m)], self.clock.time())
            except Exception as e:
                log.exception("message on %s cannot be stored; quarantining it", r.topic)
                refused = Refused("internal", f"could not be stored: {type(e).__name__}: {e}")
                try:
                    one = self.ledger.record([(r, refused)], self.clock.time())
                except Exception:
                    log.exception("could not quarantine it either: payload %r", r.payload[:2000])
                    continue
            total.stored += one.stored
            total.duplicates += one.duplicates
            total.quarantined += one.quarantined
            total.replies += one.replies
            total.feed += one.feed
            for k, ids in one.receipts.items():
                total.receipts.setdefault(k, set()).update(ids)
        return total

    def _after(self, batch: list[Item], recorded: Recorded) -> None:
        now, mono = self.clock.time(), self.clock.monotonic()
        s = self.stats
        s.batches += 1
        s.stored += len(recorded.stored)
        s.duplicates += recorded.duplicates
        for _, m in batch:
            if isinstance(m, Refused):
                s.quarantined[m.code] += 1
                log.warning("quarantined %s: %s", m.code, m.reason)
        s.lag.add([now - r.received_at for r, _ in batch])
        s.delay.add([now - float(m.envelope["time"]) for m in recorded.stored])
        s.recent.append((mono, len(batch)))
        for (root, ward, hub), ids in recorded.receipts.items():
            self._send_receipts(root, ward, hub, ids)
        if recorded.replies:
            self.commands.replied(recorded.replies)
        if recorded.feed:
            self.on_feed(recorded.feed)

    # -- receipts -------------------------------------------------------------------------------

    def _send_receipts(self, root: str, ward: str, hub: str, ids: set[str] | list[str]) -> None:
        client = self._client
        assert client is not None
        topic = receipts.receipt_topic(root, ward, hub)
        for receipt in receipts.signed_receipts(hub, ids, self.clock.time(), self.key):
            info = client.publish(topic, dumps(receipt), qos=1)
            self._receipts_inflight[info.mid] = list(receipt["ids"])

    def _settle_receipts(self) -> None:
        """Mark the receipts the broker has acknowledged as sent."""
        sent: list[str] = []
        while self._pubacks:
            mid, ok = self._pubacks.popleft()
            ids = self._receipts_inflight.pop(mid, None)
            if ids and ok:
                sent += ids
        if not sent:
            return
        now = self.clock.time()
        rc = tables.receipts.c
        try:
            with self.store.write() as conn:
                for i in range(0, len(sent), 500):
                    conn.execute(tables.receipts.update().where(rc.event_id.in_(sent[i:i + 500]))
                                 .values(sent_at=now, sends=rc.sends + 1))
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("could not mark %d receipts sent (%s); they stay pending and go out again",
                        len(sent), type(e).__name__)
            return
        self.stats.receipts_sent += len(sent)

    def _resend_pending(self) -> None:
        """Publish every receipt still pending (after a restart or reconnect; receipts are
        idempotent, so one sent twice costs nothing)."""
        if not self.connected:
            self._resend.set()
            return
        rc = tables.receipts.c
        try:
            with self.store.read() as conn:
                rows = conn.execute(sa.select(rc.root, rc.ward, rc.hub, rc.event_id)
                                    .where(rc.sent_at.is_(None)).order_by(rc.created_at).limit(50_000)).all()
        except Exception as e:
            if not is_transient(e):
                raise
            self._resend.set()
            return
        self._receipts_inflight.clear()  # what was in flight is among the pending rows
        by_hub: dict[tuple[str, str, str], list[str]] = {}
        for root, ward, hub, event_id in rows:
            by_hub.setdefault((root, ward, hub), []).append(event_id)
        for (root, ward, hub), ids in by_hub.items():
            self._send_receipts(root, ward, hub, ids)
        if rows:
            log.info("sent %d pending receipts again", len(rows))


def pending_receipts(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(tables.receipts)
                                .where(tables.receipts.c.sent_at.is_(None))).scalar_one())

