"""The MQTT link: the durable outbox to the centre, commands in, neighbours' events in.

Delivery is at least once and in order: a row of the SQLite outbox is published at QoS 1
and marked delivered only when the broker's PUBACK for every message of that row has
arrived with a success reason code.  paho keeps unacknowledged messages in memory only,
so everything not yet acknowledged stays pending in the store and is published again
after a reconnect or a restart; receivers deduplicate by event id.

Threads: ``hubd-mqtt`` runs paho's network loop and owns reconnection (capped
exponential backoff with jitter); ``hubd-mqtt-drain`` moves rows from the store to
paho and records PUBACKs.  A new event's row, when it is next in line and the drain is
idle, is published and written to the socket by the thread that committed it (the
hub's listener), so an alert does not wait for two thread wake-ups.  paho's callbacks
never wait on the store for long.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hubd import contract
from hubd.commands import CommandProcessor
from hubd.config import Config
from hubd.contract import MAX_COMMAND_BYTES, MQTT_COMMANDS, Topics, parse_topic
from hubd.lifecycle import Hub
from hubd.model import Event
from hubd.radio import cap, homeassistant
from hubd.store import OutboxItem

log = logging.getLogger("hubd.mqtt")

DESTINATION = "mqtt"


def topics_for(config: Config) -> Topics:
    """This hub's topics, under the configured root."""
    root = config.mqtt.root.strip("/") if config.mqtt else "safercom/v1"
    return Topics(root, config.hub.ward, config.hub.id)


def status_message(status: dict[str, Any], now: float) -> dict[str, Any]:
    """The retained status payload from ``Hub.status()`` at ``now``."""
    return contract.status_payload(
        hub=status["hub"], ward=status["ward"], time=now, name=status.get("name", ""),
        version=status["version"], uptime=status["uptime"], clock_synced=status["clock_synced"],
        components=status["components"], outbox=status["outbox"],
        open_alerts=sum(1 for a in status["open_alerts"] if not a.get("remote")))


class _Client(mqtt.Client):
    """paho's client, whose socket work (read, write, keepalive) is serialized by ``io_lock``
    so that a thread other than hubd-mqtt may write out what it has just queued.

    paho's own loop does the same from inside its callbacks (it writes after a CONNACK
    while reading), hence a re-entrant lock.  One writer at a time keeps packets whole and
    in order, and TLS sockets are never read and written at once."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.io_lock = threading.RLock()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        with self.io_lock:
            return super().loop_read(max_packets)

    def loop_write(self) -> MQTTErrorCode:
        with self.io_lock:
            return super().loop_write()

    def loop_misc(self) -> MQTTErrorCode:
        with self.io_lock:
            return super().loop_misc()

    def write_now(self) -> None:
        """Write what is queued from this thread, unless hubd-mqtt is at the socket (it then
        writes it itself as soon as it is done: publish() woke it)."""
        if self.io_lock.acquire(blocking=False):
            try:
                self.loop_write()
            finally:
                self.io_lock.release()


@dataclass
class _Row:
    """Messages of one outbox row still waiting for their PUBACK."""

    mids: set[int] = field(default_factory=set)
    sealed: bool = False  # every message of the row has been handed to paho
    error: str | None = None


class MqttLink:
    """Publishes this hub's outbox to the broker and takes commands and neighbours' events.

    :param config: the hub configuration (``config.mqtt`` must be set)
    :param hub: the core, whose store holds the outbox
    :param processor: the command path shared with the CLI and the page
    """

    #: Reconnection backoff: the n-th failed attempt waits about min(MAX, MIN * 2**n), jittered.
    RECONNECT_MIN = 0.5
    RECONNECT_MAX = 15.0
    #: Re-publish the retained status this often (uptime, health, queue depth).
    STATUS_INTERVAL = 60.0
    #: A session the broker keeps for us across drops (MQTT v5 Session Expiry Interval).
    SESSION_EXPIRY = 7 * 24 * 3600
    #: A refused row is retried after min(MAX, MIN * 2**attempts) seconds.
    RETRY_MIN = 5.0
    RETRY_MAX = 300.0
    #: While a backlog drains, deliveries are written to the store in batches of this many
    #: rows or after this many seconds, whichever comes first.
    SETTLE_BATCH = 100
    SETTLE_DELAY = 0.05
    ACTOR = "centre"

    def __init__(self, config: Config, hub: Hub, processor: CommandProcessor):
        if config.mqtt is None:
            raise ValueError("MqttLink needs an [mqtt] section")
        self.config = config
        self.cfg = config.mqtt
        self.hub = hub
        self.store = hub.store
        self.processor = processor
        self.topics = topics_for(config)
        self.hub_id = config.hub.id
        self.v5 = self.cfg.protocol == "5"
        self._lock = threading.Lock()
        self._rows: dict[int, _Row] = {}
        self._mid_row: dict[int, int | None] = {}
        self._early: dict[int, Any] = {}
        self._done: list[int] = []
        self._failed: list[tuple[int, str]] = []
        self._wake = threading.Event()
        self._filling = threading.Lock()  # one filler at a time, so rows leave in order
        self._stopping = threading.Event()
        self._closing = False
        self._connected = threading.Event()  # CONNACKed and paho's resends queued: rows may flow
        self._up = False  # CONNACKed (set in the callback, before paho re-sends what was in flight)
        self._resume = False
        self._ha_dirty = True
        self._threads: list[threading.Thread] = []
        self._inflight_cap = self.cfg.max_inflight
        self._neighbours: dict[str, dict[str, Any]] = {}
        self.published = 0
        self.connects = 0
        self.last_error = ""
        self.connected_since: float | None = None
        self.client = self._make_client()

    # --- Component ------------------------------------------------------------------------

    def start(self) -> None:
        self.hub.subscribe(self._on_hub_event)
        for name, target in (("hubd-mqtt", self._run_network), ("hubd-mqtt-drain", self._run_drain)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("MQTT link to %s:%d (%s, MQTT %s) as %s", self.cfg.host, self.cfg.port,
                 "TLS" if self.cfg.tls else "plain", self.cfg.protocol, self.topics.base)

    def stop(self, timeout: float = 5.0) -> None:
        """Say 'offline, stopped' on the status topic (so the Will is not needed) and disconnect."""
        self._closing = True
        if self._up:
            try:
                info = self._publish(self.topics.status, contract.dumps(contract.offline_payload(
                    self.config.hub.ward, self.hub_id, "stopped", time.time())), retain=True)
                deadline = time.monotonic() + min(2.0, timeout)
                while info is not None and not info.is_published() and time.monotonic() < deadline \
                        and self._up:
                    time.sleep(0.02)
            except Exception:
                log.exception("could not publish the offline status")
            self.client.disconnect()  # queued: hubd-mqtt writes it, closes the socket and ends
            for t in self._threads[:1]:
                t.join(min(2.0, timeout))
        self._stopping.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._settle_store()

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def status(self) -> dict[str, Any]:
        stats = self.store.outbox_stats().get(DESTINATION, {"depth": 0, "oldest_age": None})
        with self._lock:
            inflight = len(self._rows)
        return {
            "connected": self._connected.is_set(), "broker": f"{self.cfg.host}:{self.cfg.port}",
            "protocol": self.cfg.protocol, "tls": self.cfg.tls, "topic": self.topics.base,
            "connected_since": self.connected_since, "connects": self.connects,
            "last_error": self.last_error, "inflight": inflight, "published": self.published,
            "outbox_depth": stats["depth"], "outbox_oldest_age": stats["oldest_age"],
            "neighbours": dict(self._neighbours),
        }

    # --- the client -----------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2,
                                  "client_id": f"hubd-{self.hub_id}",
                                  "protocol": mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311}
        if not self.v5:
            kwargs["clean_session"] = False
        client = _Client(**kwargs)
        client.enable_logger(logging.getLogger("hubd.mqtt.paho"))
        # paho's own window is wider than ours: replies and status must not queue behind rows.
        client.max_inflight_messages_set(cfg.max_inflight * 3 + 10)
        if cfg.username:
            password = None
            if cfg.password_file:
                password = Path(cfg.password_file).read_text().strip()
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                           keyfile=cfg.key_file or None, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.will_set(self.topics.status, contract.dumps(contract.offline_payload(
            self.config.hub.ward, self.hub_id, "connection lost")), qos=1, retain=True)
        # Without paho's own thread, publish() from any thread would write to the socket
        # unguarded, and two writers reorder (or interleave) packets; with this hook it only
        # queues and wakes the loop through paho's socket pair.  Writes happen in
        # _Client.loop_write, under its lock (hubd-mqtt, or write_now after a new row).
        client.on_socket_register_write = lambda *_: None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.RECONNECT_MAX, self.RECONNECT_MIN * 2 ** max(0, attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _run_network(self) -> None:
        attempt = 0
        while not self._stopping.is_set() and not self._closing:
            connects_before = self.connects
            try:
                props = None
                if self.v5:
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = self.SESSION_EXPIRY
                    self.client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive,
                                        clean_start=False, properties=props)
                else:
                    self.client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
            except (OSError, ssl.SSLError, ValueError) as e:
                self._note_error(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {e}")
            else:
                while not self._stopping.is_set() and self.client.socket() is not None:
                    rc = self.client.loop(timeout=0.2)
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    if self._resume and self._up:
                        # paho calls on_connect *before* it re-sends the messages that were in
                        # flight; only once loop() has returned are they queued, so new rows
                        # published from now on go after them and the order holds.
                        self._resume = False
                        self._connected.set()
                        self._wake.set()
            self._connected.clear()
            if self._stopping.is_set() or self._closing:
                break
            attempt = 1 if self.connects > connects_before else attempt + 1
            self._stopping.wait(self._backoff(attempt))

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message
        health = self.hub.health.get("mqtt")
        if not self._closing and (health is None or health.status != "fault"):
            # One fault event per outage, not one per reconnection attempt.
            self.hub.set_health("mqtt", "fault", message)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._note_error(f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason}")
            return
        if properties is not None and hasattr(properties, "ReceiveMaximum"):
            self._inflight_cap = max(1, min(self.cfg.max_inflight, properties.ReceiveMaximum))
        self.connects += 1
        self.connected_since = time.time()
        self._up = True
        self._resume = True
        log.info("connected to %s:%d (session %s)", self.cfg.host, self.cfg.port,
                 "resumed" if flags.session_present else "new")
        subs = [(self.topics.cmd, 1)]
        if self.cfg.homeassistant:
            subs.append((self.topics.ha_siren_set, 1))
        for n in self.cfg.neighbours:
            if n != self.hub_id:
                subs += [(self.topics.of(n).events, 1), (self.topics.of(n).status, 1)]
        client.subscribe(subs)
        self.last_error = ""
        self.hub.set_health("mqtt", "ok")
        self._publish_status()
        if self.cfg.homeassistant:
            for topic, payload in homeassistant.discovery_messages(self.config, self.topics):
                self._publish(topic, contract.dumps(payload), retain=True)
            self._ha_dirty = True
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was_connected = self._up
        self._up = False
        self._connected.clear()
        if was_connected and not self._closing:  # after a refused CONNACK, keep saying why
            self._note_error(f"disconnected from {self.cfg.host}:{self.cfg.port}: {reason}")

    # --- publishing and PUBACKs -----------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False, row: int | None = None,
                 properties: Properties | None = None) -> mqtt.MQTTMessageInfo | None:
        """Hand one QoS 1 message to paho and remember its mid (for ``row``, if any).

        Never called with our lock held: paho calls ``on_publish`` under its own lock, so
        a PUBACK can arrive before ``publish`` returns; such early ones wait in ``_early``."""
        try:
            info = self.client.publish(topic, payload, qos=1, retain=retain,
                                       properties=properties if self.v5 else None)
        except ValueError as e:
            log.error("cannot publish on %s: %s", topic, e)
            if row is not None:
                with self._lock:
                    self._rows[row].error = str(e)
            return None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho keeps the message and sends it after the reconnect.
            log.warning("paho refused a message on %s: %s", topic, mqtt.error_string(info.rc))
            if row is not None:
                with self._lock:
                    self._rows[row].error = mqtt.error_string(info.rc)
            return None
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._mid_row[info.mid] = row
                if row is not None:
                    self._rows[row].mids.add(info.mid)
            elif row is not None and early.is_failure:
                self._rows[row].error = f"broker refused: {early}"
        return info

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            if mid not in self._mid_row:
                self._early[mid] = reason
                return
            row = self._mid_row.pop(mid)
            if row is None:
                if reason.is_failure:
                    log.warning("broker refused message %d: %s", mid, reason)
                return
            state = self._rows.get(row)
            if state is None:
                return
            state.mids.discard(mid)
            if reason.is_failure:
                state.error = f"broker refused: {reason}"
            self._finish_if_done(row, state)
        self._wake.set()

    def _finish_if_done(self, row: int, state: _Row) -> None:
        # Caller holds the lock.
        if state.sealed and not state.mids:
            del self._rows[row]
            if state.error:
                self._failed.append((row, state.error))
            else:
                self._done.append(row)

    def _publish_status(self) -> None:
        try:
            payload = status_message(self.hub.status(), time.time())
        except Exception:
            log.exception("cannot build the status")
            return
        self._publish(self.topics.status, contract.dumps(payload), retain=True)

    # --- the drain ------------------------------------------------------------------------

    def _on_hub_event(self, event: Event, envelope: dict[str, Any]) -> None:
        # Runs in whichever thread committed the event, just after the commit.  When the drain
        # is idle, the new row is published and written to the socket from here: handing it
        # to hubd-mqtt-drain and then to hubd-mqtt would cost two thread wake-ups, each
        # about as long as the broker's round trip.  Never waits: if the drain or the
        # network thread is busy, they send the row themselves.
        if event.type.startswith("alert.") or event.type.startswith("siren."):
            self._ha_dirty = True
        if self._connected.is_set() and not self._closing and self._filling.acquire(blocking=False):
            try:
                more = self._send_new(event, envelope)
                self.client.write_now()
            except Exception:
                log.exception("publishing %s from the committing thread failed; the drain retries",
                              event.id)
                more = True
            finally:
                self._filling.release()
            if not more and not (self.cfg.homeassistant and self._ha_dirty):
                return
        self._wake.set()

    def _run_drain(self) -> None:
        next_status = time.monotonic() + self.STATUS_INTERVAL
        last_settle = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                backlog = False
                if self._connected.is_set() and not self._closing:
                    with self._filling:
                        backlog = self._fill()
                # Recording deliveries costs an fsync: while a backlog drains, batch them
                # (the rows stay excluded from pending() until written), so publishing
                # does not stall on the disk; with no backlog, record at once.
                with self._lock:
                    settled = len(self._done) + len(self._failed)
                if settled and (not backlog or settled >= self.SETTLE_BATCH
                                or time.monotonic() - last_settle >= self.SETTLE_DELAY):
                    self._settle_store()
                    last_settle = time.monotonic()
                if self._connected.is_set() and not self._closing:
                    if time.monotonic() >= next_status:
                        next_status = time.monotonic() + self.STATUS_INTERVAL
                        self._publish_status()
                        self._ha_dirty = self._ha_dirty or self.cfg.homeassistant
                    if self.cfg.homeassistant and self._ha_dirty:
                        self._ha_dirty = False
                        state = homeassistant.state_payload(self.config, self.hub.status())
                        self._publish(self.topics.ha_state, contract.dumps(state), retain=True)
            except Exception:
                # The store or paho failed; the rows stay pending.  Keep the thread alive.
                log.exception("MQTT drain failed; retrying")
                self._stopping.wait(1.0)

    def _settle_store(self) -> None:
        with self._lock:
            done, failed = list(self._done), list(self._failed)
        if done:
            self.store.mark_delivered(done)
            self.published += len(done)
        now = time.time()
        for row, error in failed:
            attempts = self.store.query("SELECT attempts FROM outbox WHERE id = ?", (row,))
            n = attempts[0]["attempts"] if attempts else 0
            delay = min(self.RETRY_MAX, self.RETRY_MIN * 2 ** n)
            log.warning("outbox row %d refused (%s); retrying in %.0f s", row, error, delay)
            self.store.mark_failed(row, error, now + delay)
        if done or failed:
            with self._lock:
                # Only now may the rows leave the exclusion set: the store says delivered.
                del self._done[:len(done)]
                del self._failed[:len(failed)]

    def _window(self) -> tuple[int, set[int]]:
        """Room in the in-flight window, and the rows pending() must skip (in flight, or
        delivered or refused but not yet recorded)."""
        with self._lock:
            return (self._inflight_cap - len(self._rows),
                    set(self._rows) | set(self._done) | {r for r, _ in self._failed})

    def _send_new(self, event: Event, envelope: dict[str, Any]) -> bool:
        """Publish the row just queued with ``event`` if it is next in line (it usually is:
        then it goes from memory, not read back from the store); otherwise publish what is
        next (``_fill``).  True if rows may still be waiting."""
        row = next(((r, p) for d, r, p in event.outbox if d == DESTINATION), None)
        if row is None:
            return True  # nothing new for us; let the drain look
        room, busy = self._window()
        if room <= 0:
            return True
        if row[0] in busy:
            return False  # the drain was quicker
        first = self.store.first_pending(DESTINATION, exclude=busy)
        if first is None:
            return False  # already delivered and recorded
        if first != row[0]:
            return self._fill()
        self._publish_row(OutboxItem(id=row[0], destination=DESTINATION, event_id=event.id,
                                     event_seq=event.seq, type=event.type, priority=row[1], attempts=0,
                                     created_at=event.time, envelope=envelope))
        return False

    def _fill(self) -> bool:
        """Publish pending rows while the window has room; True if rows may still be waiting."""
        while self._connected.is_set() and not self._stopping.is_set():
            room, busy = self._window()
            if room <= 0:
                return True
            items = self.store.pending(DESTINATION, limit=room, exclude=busy)
            if not items:
                return False
            for item in items:
                self._publish_row(item)
        return False

    def _publish_row(self, item: OutboxItem) -> None:
        with self._lock:
            self._rows[item.id] = state = _Row()
        for topic, payload, props in self._messages(item):
            self._publish(topic, payload, row=item.id, properties=props)
        with self._lock:
            state.sealed = True
            self._finish_if_done(item.id, state)

    def _props(self, content_type: str, event_id: str) -> Properties | None:
        if not self.v5:
            return None
        p = Properties(PacketTypes.PUBLISH)
        p.ContentType = content_type
        p.UserProperty = [("event-id", event_id)]
        return p

    def _messages(self, item: OutboxItem) -> list[tuple[str, bytes, Properties | None]]:
        """The messages that deliver one outbox row: the event, and its JPEG or CAP."""
        env = contract.outgoing_envelope(item.envelope, self.hub_id)
        # No properties on events: packing them costs a quarter of the drain's time, and the
        # payload says all (its content type is fixed by the contract).
        out: list[tuple[str, bytes, Properties | None]] = [(self.topics.events, contract.dumps(env), None)]
        local = env.get("hub") == self.hub_id
        if local and item.type == "alert.snapshot":
            jpeg = self._snapshot_bytes(env)
            alert_id = (env.get("alert") or {}).get("id")
            if jpeg is not None and alert_id:
                out.append((self.topics.snapshot(alert_id), jpeg, self._props("image/jpeg", item.event_id)))
        if local and self.cfg.cap:
            xml = cap.cap_alert(env, hub_name=self.config.hub.name, location=self.config.hub.location)
            if xml is not None:
                out.append((self.topics.cap, xml, self._props("application/cap+xml", item.event_id)))
        return out

    def _snapshot_bytes(self, env: dict[str, Any]) -> bytes | None:
        rel = (env.get("data") or {}).get("path")
        if not isinstance(rel, str):
            log.warning("snapshot event %s has no path", env["id"])
            return None
        base = self.config.state_dir.resolve()
        path = (base / rel).resolve()
        if not path.is_relative_to(base):
            log.warning("snapshot event %s names a path outside the state directory: %s", env["id"], rel)
            return None
        try:
            return path.read_bytes()
        except OSError as e:
            # Retention may have removed it; the event still goes, so the centre knows it existed.
            log.warning("snapshot %s for %s is gone: %s", rel, env["id"], e.strerror)
            return None

    # --- incoming -------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == self.topics.cmd:
                self._on_command(msg)
            elif self.cfg.homeassistant and msg.topic == self.topics.ha_siren_set:
                self._on_ha_siren(msg)
            else:
                where = parse_topic(self.topics.root, msg.topic)
                if where and where.ward == self.topics.ward and where.hub in self.cfg.neighbours:
                    if where.leaf == "events":
                        self._on_neighbour_event(where.hub, msg.payload)
                    elif where.leaf == "status":
                        self._on_neighbour_status(where.hub, msg.payload)
        except Exception:
            # Whatever arrives, the link keeps running.
            log.exception("failed to handle a message on %s", msg.topic)

    def _on_command(self, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties if self.v5 else None
        reply_to = getattr(props, "ResponseTopic", None) or self.topics.reply
        correlation = getattr(props, "CorrelationData", None)
        command_id: str | None = None
        reply: dict[str, Any]
        request: Any = None
        if len(msg.payload) > MAX_COMMAND_BYTES:
            reply = contract.error_reply(self.hub_id, None, "too_large",
                                         f"command of {len(msg.payload)} bytes refused; at most "
                                         f"{MAX_COMMAND_BYTES} bytes")
        else:
            try:
                request = json.loads(msg.payload.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                reply = contract.error_reply(self.hub_id, None, "bad_json", f"not valid UTF-8 JSON: {e}")
            else:
                if isinstance(request, dict) and isinstance(request.get("id"), str):
                    command_id = request["id"]
                reply = self._command_reply(request, command_id)
        if not reply["ok"] and reply["error"]["code"] in ("too_large", "bad_json", "bad_request",
                                                          "unknown_command"):
            log.warning("refused MQTT command on %s: %s", msg.topic, reply["error"]["message"])
        out_props = None
        if self.v5 and correlation is not None:
            out_props = Properties(PacketTypes.PUBLISH)
            out_props.CorrelationData = correlation
        self._publish(reply_to, contract.dumps(reply), properties=out_props)

    def _command_reply(self, request: Any, command_id: str | None) -> dict[str, Any]:
        hub = self.hub_id
        if not isinstance(request, dict):
            return contract.error_reply(hub, None, "bad_request",
                                        f"a command must be a JSON object, got {type(request).__name__}")
        if command_id is None or not 1 <= len(command_id) <= 128:
            return contract.error_reply(hub, None, "bad_request",
                                        "missing 'id': every command needs a unique string id (1-128 chars)")
        name = request.get("cmd")
        if name not in MQTT_COMMANDS:
            return contract.error_reply(hub, command_id, "unknown_command",
                                        f"unknown command {name!r}; over MQTT expected one of "
                                        + ", ".join(MQTT_COMMANDS))
        previous = self.store.command_reply(command_id)
        if previous is not None:
            log.info("command %s repeated: answering, not applying", command_id)
            return contract.reply_payload(hub, command_id, previous, repeated=True)
        result = self.processor.execute(request, self.ACTOR)
        self.store.save_command_reply(command_id, result)
        return contract.reply_payload(hub, command_id, result)

    def _on_ha_siren(self, msg: mqtt.MQTTMessage) -> None:
        word = msg.payload.decode("utf-8", "replace").strip().upper()
        if word not in ("ON", "OFF"):
            log.warning("Home Assistant siren command %r ignored: expected ON or OFF", word[:20])
            return
        reply = self.processor.execute({"cmd": "siren_test" if word == "ON" else "silence"},
                                       "homeassistant")
        if not reply["ok"]:
            log.warning("Home Assistant siren %s failed: %s", word, reply["error"]["message"])
        self._ha_dirty = True
        self._wake.set()

    def _on_neighbour_event(self, neighbour: str, payload: bytes) -> None:
        try:
            env = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            log.warning("neighbour %s sent an event that is not JSON: %s", neighbour, e)
            return
        errors = contract.problems("event", env)
        if errors:
            log.warning("neighbour %s sent an invalid event: %s", neighbour, "; ".join(errors[:3]))
            return
        if neighbour not in (env["hub"], env.get("relayed_by")) or env["hub"] == self.hub_id:
            log.warning("event %s on %s's topic claims hub %s; ignored", env["id"], neighbour, env["hub"])
            return
        try:
            new = self.hub.ingest_remote(env, via="mqtt")
        except (KeyError, ValueError, TypeError) as e:
            log.warning("neighbour %s event %s not stored: %s", neighbour, env["id"], e)
            return
        if new and env["type"] == "alert.raised":
            alert = env.get("alert") or {}
            log.warning("neighbour %s raised %s (%s, %s)", env["hub"], alert.get("id"), alert.get("kind"),
                        alert.get("zone"))
            if self.cfg.chime_on_neighbour and not alert.get("silent"):
                self.hub.chime(f"mqtt:{env['hub']}")

    def _on_neighbour_status(self, neighbour: str, payload: bytes) -> None:
        try:
            status = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if isinstance(status, dict) and not contract.problems("status", status):
            self._neighbours[neighbour] = {"online": status["online"], "time": status.get("time"),
                                           "heard_at": time.time()}

