"""The MQTT link: the durable outbox to the centre, commands in, neighbours' events in.

It speaks contract version 2 (docs/mqtt-contract.md): the envelopes it publishes are the
store's, signed by this hub when they were written (or, relayed, by their origin, or attested
by this hub for what it heard on the mesh); its status, Last Will and command replies are
signed too. What it takes in is read within the contract's bounds and believed only under a
signature: a neighbour's event under its origin's key from ``[trust] hubs`` (at most
``neighbour_rate`` a second), a command under ``[trust] centre``, fresh and never seen
before. Everything refused is counted (``status()["refused"]``) and logged.

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

The link's life is one :class:`LinkState`; the rows on their way to the broker are one
:class:`~hubd.radio.mqtt_inflight.InFlight`.  Snapshots, CAP and Home Assistant are side
outputs (:class:`~hubd.radio.mqtt_output.MqttOutput`) that the link calls, nothing more.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hubd import contract
from hubd.clock import SYSTEM_CLOCK, Clock
from hubd.commands import CommandProcessor
from hubd.config import Config
from hubd.contract import ContractError, Topics, parse_topic
from hubd.identity import TrustedKeys
from hubd.ingest import RemoteRefused
from hubd.lifecycle import Hub
from hubd.model import Event
from hubd.radio.cap import CapOutput
from hubd.radio.homeassistant import HomeAssistantOutput
from hubd.radio.mqtt_inflight import InFlight
from hubd.radio.mqtt_output import Message, MqttOutput
from hubd.radio.snapshots import SnapshotOutput
from hubd.store import OutboxItem

log = logging.getLogger("hubd.mqtt")

DESTINATION = "mqtt"


#: The topic root when none is configured (contract version 2's).
DEFAULT_ROOT = "safercom/v2"
#: The fields of a version 2 command that are its envelope, not the command path's arguments.
_COMMAND_ENVELOPE = ("v", "hub", "time", "by", "sig")
#: An error message in a reply is cut to this (reply-v2 allows 1024 characters).
MAX_MESSAGE = 1000


def topics_for(config: Config) -> Topics:
    """This hub's topics, under the configured root."""
    root = config.mqtt.root.strip("/") if config.mqtt else DEFAULT_ROOT
    return Topics(root, config.hub.ward, config.hub.id)


def status_message(status: dict[str, Any], *, seq: int, now: float, report_every: float,
                   connected_at: float) -> dict[str, Any]:
    """The retained status payload (contract version 2, unsigned) from ``Hub.status()`` at ``now``."""
    return contract.status_payload_v2(
        hub=status["hub"], ward=status["ward"], seq=seq, time=now, report_every=report_every,
        connected_at=connected_at, name=status.get("name", ""), version=status["version"],
        uptime=status["uptime"], clock_synced=status["clock_synced"],
        components={k: {f: v[f] for f in ("status", "reason", "since") if f in v}
                    for k, v in status["components"].items()},
        outbox=status["outbox"], open_alerts=sum(1 for a in status["open_alerts"] if not a.get("remote")),
        power=status["links"].get("power"), tamper=status["links"].get("tamper"))


def stopped_message(status: dict[str, Any], *, seq: int, now: float, connected_at: float) -> dict[str, Any]:
    """The retained 'offline, stopped' payload (unsigned) at ``now``, with the power and tamper
    of ``Hub.status()`` (power state ``shutting_down``: the hub powered itself down)."""
    return contract.stopped_payload_v2(hub=status["hub"], ward=status["ward"], seq=seq, time=now,
                                       connected_at=connected_at, power=status["links"].get("power"),
                                       tamper=status["links"].get("tamper"))


class RateLimit:
    """A token bucket per sender: ``rate`` a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # sender -> (tokens, when)

    def allow(self, sender: str) -> bool:
        now = self.clock()
        tokens, when = self._buckets.get(sender, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        if tokens < 1.0:
            self._buckets[sender] = (tokens, now)
            return False
        self._buckets[sender] = (tokens - 1.0, now)
        return True


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


class LinkState(enum.Enum):
    """Where the link is in its life."""

    STOPPED = "stopped"  # not started, or stopped
    CONNECTING = "connecting"  # no session: connecting, or waiting to try again
    RESUMING = "resuming"  # CONNACKed; paho re-queues what was in flight: no new rows yet
    READY = "ready"  # connected and resumed: rows flow
    CLOSING = "closing"  # stop(): saying "offline, stopped", then disconnecting
    STOPPING = "stopping"  # stop(): the connection is closed (or never was); the threads end


#: Connected and not stopping.
UP = (LinkState.RESUMING, LinkState.READY)


def standard_outputs(config: Config, topics: Topics, hub: Hub,
                     processor: CommandProcessor) -> list[MqttOutput]:
    """The side outputs the configuration asks for: snapshots always; CAP and Home
    Assistant when ``[mqtt] cap`` and ``homeassistant`` are on."""
    assert config.mqtt is not None
    outputs: list[MqttOutput] = [SnapshotOutput(config.hub.id, config.state_dir, topics.snapshot)]
    if config.mqtt.cap:
        outputs.append(CapOutput(topics.cap, config.hub.id, hub_name=config.hub.name,
                                 location=config.hub.location))
    if config.mqtt.homeassistant:
        outputs.append(HomeAssistantOutput(config, topics, hub.status, processor.execute))
    return outputs


class MqttLink:
    """Publishes this hub's outbox to the broker and takes commands and neighbours' events.

    :param config: the hub configuration (``config.mqtt`` must be set)
    :param hub: the core, whose store holds the outbox
    :param processor: the command path shared with the CLI and the page
    :param clock: wall time for what is recorded, monotonic time for timers
    :param outputs: the side outputs; by default those the configuration asks for
        (:func:`standard_outputs`)
    """

    #: Reconnection backoff: the n-th failed attempt waits about min(MAX, MIN * 2**n), jittered.
    RECONNECT_MIN = 0.5
    RECONNECT_MAX = 15.0
    #: Re-publish the retained status this often (uptime, health, queue depth): the contract's
    #: ``report_every``, by which the centre supervises the path.
    STATUS_INTERVAL = float(contract.DEFAULT_REPORT_EVERY)
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

    def __init__(self, config: Config, hub: Hub, processor: CommandProcessor, *,
                 clock: Clock = SYSTEM_CLOCK, outputs: Sequence[MqttOutput] | None = None):
        if config.mqtt is None:
            raise ValueError("MqttLink needs an [mqtt] section")
        self.config = config
        self.cfg = config.mqtt
        self.hub = hub
        self.store = hub.store
        self.processor = processor
        self.signer = hub.signer
        self.trusted = TrustedKeys(config)
        self.clock = clock
        self.topics = topics_for(config)
        self.hub_id = config.hub.id
        self.v5 = self.cfg.protocol == "5"
        self.outputs = list(standard_outputs(config, self.topics, hub, processor) if outputs is None
                            else outputs)
        self._subscribers: dict[str, list[MqttOutput]] = {}
        for output in self.outputs:
            for topic in output.subscriptions():
                self._subscribers.setdefault(topic, []).append(output)
        self.state = LinkState.STOPPED
        self._state_changed = threading.Condition()
        self.inflight = InFlight(self.cfg.max_inflight)
        self._wake = threading.Event()  # the drain has something to do
        self._filling = threading.Lock()  # one filler at a time, so rows leave in order
        self._threads: list[threading.Thread] = []
        self._neighbours: dict[str, dict[str, Any]] = {}
        self._rate = RateLimit(self.cfg.neighbour_rate, self.cfg.neighbour_burst, clock.monotonic)
        #: What was refused, by the contract's error code (and ``rate``, ``own``, ``not_stored``).
        self.refused: Counter[str] = Counter()
        #: When the current (or last) connection was made: its status and Will say so.
        self.connected_at = 0.0
        self._status_seq = self._status_ceiling = 0
        self.published = 0
        self.connects = 0
        self.last_error = ""
        self.connected_since: float | None = None
        self.client = self._make_client()

    # --- Component ------------------------------------------------------------------------

    def start(self) -> None:
        self.hub.subscribe(self._on_hub_event)
        self._move(LinkState.CONNECTING)
        for name, target in (("hubd-mqtt", self._run_network), ("hubd-mqtt-drain", self._run_drain)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("MQTT link to %s:%d (%s, MQTT %s) as %s", self.cfg.host, self.cfg.port,
                 "TLS" if self.cfg.tls else "plain", self.cfg.protocol, self.topics.base)

    def stop(self, timeout: float = 5.0) -> None:
        """Say 'offline, stopped' on the status topic (so the Will is not needed) and disconnect."""
        if self._move(LinkState.CLOSING, only_from=UP) in UP:
            try:
                info = self._publish(self.topics.status,
                                     contract.dumps(self.signer.sign("status", self._stopped_payload())),
                                     retain=True)
                deadline = self.clock.monotonic() + min(2.0, timeout)
                while info is not None and not info.is_published() and self.clock.monotonic() < deadline:
                    if self._wait_for(lambda: self.state is not LinkState.CLOSING, 0.02):
                        break  # the connection dropped meanwhile
            except Exception:
                log.exception("could not publish the offline status")
            self.client.disconnect()  # queued: hubd-mqtt writes it, closes the socket and ends
            for t in self._threads[:1]:
                t.join(min(2.0, timeout))
        self._move(LinkState.STOPPING)
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._settle_store()
        self._move(LinkState.STOPPED)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _stopped_payload(self) -> dict[str, Any]:
        seq = self._next_status_seq()  # if even this fails, the Will says offline
        now = self.clock.time()
        try:
            return stopped_message(self.hub.status(), seq=seq, now=now, connected_at=self.connected_at)
        except Exception:  # the store may be what failed: say "stopped" all the same
            log.exception("cannot read the status for the stopped status")
            return contract.stopped_payload_v2(hub=self.hub_id, ward=self.config.hub.ward, seq=seq, time=now,
                                               connected_at=self.connected_at)

    def publish_status(self) -> None:
        """Publish the retained status now, if connected (the power supervisor's last status)."""
        if self.state in UP:
            self._publish_status()
            self.client.write_now()

    def status(self) -> dict[str, Any]:
        stats = self.store.outbox_stats().get(DESTINATION, {"depth": 0, "oldest_age": None})
        return {
            "connected": self.state in (LinkState.READY, LinkState.CLOSING),
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "protocol": self.cfg.protocol, "tls": self.cfg.tls, "topic": self.topics.base,
            "connected_since": self.connected_since, "connects": self.connects,
            "last_error": self.last_error, "inflight": self.inflight.in_flight(), "published": self.published,
            "outbox_depth": stats["depth"], "outbox_oldest_age": stats["oldest_age"],
            "neighbours": dict(self._neighbours), "refused": dict(self.refused),
        }

    # --- the state ------------------------------------------------------------------------

    def _move(self, to: LinkState, *, only_from: Collection[LinkState] | None = None) -> LinkState:
        """Enter ``to`` (when in one of ``only_from``, if given); returns the state before.

        Readers on hot paths read ``self.state`` without the lock: one attribute read."""
        with self._state_changed:
            before = self.state
            if only_from is None or before in only_from:
                self.state = to
                self._state_changed.notify_all()
            return before

    def _wait_for(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` (checked at each state change), at most ``timeout`` seconds."""
        with self._state_changed:
            return self._state_changed.wait_for(ready, timeout)

    def _ending(self) -> bool:
        return self.state in (LinkState.STOPPING, LinkState.STOPPED)

    # --- the client -----------------------------------------------------------------------

    def _make_client(self) -> _Client:
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
        while self.state is LinkState.CONNECTING:
            connects_before = self.connects
            self._set_will()
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
                while not self._ending() and self.client.socket() is not None:
                    rc = self.client.loop(timeout=0.2)
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    # paho calls on_connect *before* it re-sends the messages that were in
                    # flight; only once loop() has returned are they queued, so new rows
                    # published from now on go after them and the order holds.
                    if self.state is LinkState.RESUMING and self._move(
                            LinkState.READY, only_from=(LinkState.RESUMING,)) is LinkState.RESUMING:
                        self._wake.set()
            self._move(LinkState.CONNECTING, only_from=UP)
            if self.state is not LinkState.CONNECTING:
                break
            attempt = 1 if self.connects > connects_before else attempt + 1
            self._wait_for(lambda: self.state is not LinkState.CONNECTING, self._backoff(attempt))

    def _set_will(self) -> None:
        """The Last Will of the connection about to be made, signed now: it names the time of
        this connection, so a replayed Will of an older one is known for what it is."""
        self.connected_at = self.clock.time()
        will = contract.will_payload_v2(hub=self.hub_id, ward=self.config.hub.ward,
                                        connected_at=self.connected_at)
        self.client.will_set(self.topics.status, contract.dumps(self.signer.sign("status", will)), qos=1,
                             retain=True)

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message
        health = self.hub.health.get("mqtt")
        if self.state in (LinkState.CONNECTING, *UP) and (health is None or health.status != "fault"):
            # One fault event per outage, not one per reconnection attempt.
            self.hub.set_health("mqtt", "fault", message)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._note_error(f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason}")
            return
        if properties is not None and hasattr(properties, "ReceiveMaximum"):
            self.inflight.resize(max(1, min(self.cfg.max_inflight, properties.ReceiveMaximum)))
        self.connects += 1
        self.connected_since = self.clock.time()
        if self._move(LinkState.RESUMING, only_from=(LinkState.CONNECTING,)) is not LinkState.CONNECTING:
            return  # stopping: nothing more to say
        log.info("connected to %s:%d (session %s)", self.cfg.host, self.cfg.port,
                 "resumed" if flags.session_present else "new")
        subs = [(self.topics.cmd, 1)] + [(topic, 1) for topic in self._subscribers]
        for n in self.cfg.neighbours:
            if n != self.hub_id:
                subs += [(self.topics.of(n).events, 1), (self.topics.of(n).status, 1)]
        client.subscribe(subs)
        self.last_error = ""
        self.hub.set_health("mqtt", "ok")
        self._publish_status()
        for output in self.outputs:
            output.on_connect(self._publish_message)
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        before = self._move(LinkState.CONNECTING, only_from=UP)
        if before in UP:  # after a refused CONNACK, keep saying why
            self._note_error(f"disconnected from {self.cfg.host}:{self.cfg.port}: {reason}")
        else:
            self._move(LinkState.STOPPING, only_from=(LinkState.CLOSING,))

    # --- publishing and PUBACKs -----------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False, row: int | None = None,
                 properties: Properties | None = None) -> mqtt.MQTTMessageInfo | None:
        """Hand one QoS 1 message to paho and tell the in-flight tracker its mid (for
        ``row``, if any).

        paho calls ``on_publish`` under its own lock, so a PUBACK can arrive before
        ``publish`` returns; the tracker keeps such early ones until it learns the mid."""
        try:
            info = self.client.publish(topic, payload, qos=1, retain=retain,
                                       properties=properties if self.v5 else None)
        except ValueError as e:
            log.error("cannot publish on %s: %s", topic, e)
            if row is not None:
                self.inflight.refused(row, str(e))
            return None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho keeps the message and sends it after the reconnect.
            log.warning("paho refused a message on %s: %s", topic, mqtt.error_string(info.rc))
            if row is not None:
                self.inflight.refused(row, mqtt.error_string(info.rc))
            return None
        self.inflight.sent(info.mid, row)
        return info

    def _publish_message(self, message: Message, row: int | None = None, event_id: str = "") -> None:
        props = self._props(message.content_type, event_id) if message.content_type else None
        self._publish(message.topic, message.payload, retain=message.retain, row=row, properties=props)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if self.inflight.acked(mid, str(reason) if reason.is_failure else None):
            self._wake.set()

    #: Status numbers are taken from the store this many at a time (one write per hundred).
    STATUS_SEQ_BLOCK = 100

    def _next_status_seq(self) -> int:
        """The next status number, never used before (``<hub>:s<seq>``, confirmed by receipts)."""
        with self._state_changed:
            if self._status_seq >= self._status_ceiling:
                self._status_ceiling = self.store.reserve("status_seq", self.STATUS_SEQ_BLOCK)
                self._status_seq = self._status_ceiling - self.STATUS_SEQ_BLOCK
            self._status_seq += 1
            return self._status_seq

    def _publish_status(self) -> None:
        try:
            payload = self.signer.sign("status", status_message(
                self.hub.status(), seq=self._next_status_seq(), now=self.clock.time(),
                report_every=self.STATUS_INTERVAL, connected_at=self.connected_at))
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
        outputs_due = any([output.on_event(event) for output in self.outputs])
        if self.state is LinkState.READY and self._filling.acquire(blocking=False):
            try:
                more = self._send_new(event, envelope)
                self.client.write_now()
            except Exception:
                log.exception("publishing %s from the committing thread failed; the drain retries",
                              event.id)
                more = True
            finally:
                self._filling.release()
            if not more and not outputs_due:
                return
        self._wake.set()

    def _run_drain(self) -> None:
        next_status = self.clock.monotonic() + self.STATUS_INTERVAL
        last_settle = self.clock.monotonic()
        while not self._ending():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                backlog = False
                if self.state is LinkState.READY:
                    with self._filling:
                        backlog = self._fill()
                # Recording deliveries costs an fsync: while a backlog drains, batch them
                # (the rows stay excluded from pending() until written), so publishing
                # does not stall on the disk; with no backlog, record at once.
                settled = self.inflight.settled_count()
                if settled and (not backlog or settled >= self.SETTLE_BATCH
                                or self.clock.monotonic() - last_settle >= self.SETTLE_DELAY):
                    self._settle_store()
                    last_settle = self.clock.monotonic()
                if self.state is LinkState.READY:
                    now = self.clock.monotonic()
                    periodic = now >= next_status
                    if periodic:
                        # At a fixed rate, not a fixed delay after each one: the loop's wake-up
                        # latency must not add up.  After a stall longer than the interval, one
                        # more goes at the next wake and the rate resumes from there (no burst).
                        next_status = max(next_status + self.STATUS_INTERVAL, now)
                        self._publish_status()
                    for output in self.outputs:
                        output.publish_due(self._publish_message, periodic)
            except Exception:
                # The store or paho failed; the rows stay pending.  Keep the thread alive.
                log.exception("MQTT drain failed; retrying")
                self._wait_for(self._ending, 1.0)

    def _settle_store(self) -> None:
        settled = self.inflight.settled()
        if settled.delivered:
            self.store.mark_delivered(settled.delivered)
            self.published += len(settled.delivered)
        now = self.clock.time()
        for row, error in settled.refused:
            delay = min(self.RETRY_MAX, self.RETRY_MIN * 2 ** self.store.outbox_attempts(row))
            log.warning("outbox row %d refused (%s); retrying in %.0f s", row, error, delay)
            self.store.mark_failed(row, error, now + delay)
        if settled:
            # Only now may the rows leave the busy set: the store says delivered.
            self.inflight.recorded(settled)

    def _send_new(self, event: Event, envelope: dict[str, Any]) -> bool:
        """Publish the row just queued with ``event`` if it is next in line (it usually is:
        then it goes from memory, not read back from the store); otherwise publish what is
        next (``_fill``).  True if rows may still be waiting."""
        row = next(((r, p) for d, r, p in event.outbox if d == DESTINATION), None)
        if row is None:
            return True  # nothing new for us; let the drain look
        room, busy = self.inflight.window()
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
        while self.state is LinkState.READY:
            room, busy = self.inflight.window()
            if room <= 0:
                return True
            items = self.store.pending(DESTINATION, limit=room, exclude=busy)
            if not items:
                return False
            for item in items:
                self._publish_row(item)
        return False

    def _publish_row(self, item: OutboxItem) -> None:
        """The row's event, then what the side outputs add to it."""
        self.inflight.open(item.id)
        try:
            env = contract.outgoing_envelope(item.envelope, self.hub_id)
            # No properties on events: packing them costs a quarter of the drain's time, and
            # the payload says all (its content type is fixed by the contract).
            self._publish(self.topics.events, contract.dumps(env), row=item.id)
            for output in self.outputs:
                for message in output.messages(env):
                    self._publish_message(message, row=item.id, event_id=item.event_id)
        except Exception as e:
            self.inflight.refused(item.id, f"{type(e).__name__}: {e}")  # retried, not lost
            raise
        finally:
            self.inflight.seal(item.id)

    def _props(self, content_type: str, event_id: str) -> Properties | None:
        if not self.v5:
            return None
        p = Properties(PacketTypes.PUBLISH)
        p.ContentType = content_type
        p.UserProperty = [("event-id", event_id)]
        return p

    # --- incoming -------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == self.topics.cmd:
                self._on_command(msg)
            elif msg.topic in self._subscribers:
                if any([o.on_message(msg.topic, bytes(msg.payload)) for o in self._subscribers[msg.topic]]):
                    self._wake.set()
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
        """A command: executed only when the centre signed it, for this hub, fresh and never seen
        before (``contract.check_command``); anything else gets a signed error reply and changes
        nothing. The reply goes to this hub's own reply topic only."""
        props = msg.properties if self.v5 else None
        asked_to = getattr(props, "ResponseTopic", None)
        if asked_to and asked_to != self.topics.reply:
            log.warning("a command asked for its reply on %r; it goes to %s (the only topic this hub "
                        "replies on)", str(asked_to)[:120], self.topics.reply)
        payload = bytes(msg.payload)
        try:
            reply = self._command_reply(payload)
        except Exception as e:  # whatever a command does, it gets an answer
            log.exception("command failed")
            reply = contract.error_reply_v2(hub=self.hub_id, command_id=_command_id(payload),
                                            time=self.clock.time(), code="internal",
                                            message=f"{type(e).__name__}: {e}"[:MAX_MESSAGE])
        out_props = None
        correlation = getattr(props, "CorrelationData", None)
        if self.v5 and correlation is not None:
            out_props = Properties(PacketTypes.PUBLISH)
            out_props.CorrelationData = correlation
        self._publish(self.topics.reply, contract.dumps(self.signer.sign("reply", reply)),
                      properties=out_props)

    def _command_reply(self, payload: bytes) -> dict[str, Any]:
        """The (unsigned) reply to one command's bytes."""
        now = self.clock.time()
        command_id = _command_id(payload)
        try:
            command = contract.parse_untrusted(payload, "command-v2")
            if self.trusted.centre is None:
                raise ContractError("bad_signature", "this hub has no [trust] centre key: it takes no "
                                    "commands over MQTT")
            accepted = contract.check_command(
                command, hub=self.hub_id, centre_key=self.trusted.centre, now=now,
                clock_synced=self.hub.clock_synced(), seen=self.store.command_seen,
                newest=self.store.newest_command(), window=self.config.trust.command_window)
        except ContractError as e:
            previous = self.store.command_reply(command_id) if e.code == "replayed" and command_id else None
            if previous is not None:
                log.info("command %s repeated: answering, not applying", command_id)
                return contract.reply_payload_v2(hub=self.hub_id, command_id=command_id, time=now,
                                                 reply=previous, repeated=True)
            self.refused[f"command_{e.code}"] += 1
            log.warning("refused an MQTT command (%s): %s", e.code, e.message[:300])
            return contract.error_reply_v2(hub=self.hub_id, command_id=command_id, time=now, code=e.code,
                                           message=e.message[:MAX_MESSAGE])
        # Seen from now on, before it runs: a crash mid-way must not let a replay apply it twice.
        self.store.note_command(accepted.id, accepted.time)
        request = {k: v for k, v in accepted.command.items() if k not in _COMMAND_ENVELOPE}
        by = str(accepted.command["by"])
        result = self.processor.execute(request, f"{self.ACTOR}:{by}"[:128])
        if not result["ok"]:
            result["error"]["message"] = str(result["error"]["message"])[:MAX_MESSAGE]
        self.store.save_command_reply(accepted.id, result)
        return contract.reply_payload_v2(hub=self.hub_id, command_id=accepted.id, time=self.clock.time(),
                                         reply=result, note=accepted.note)

    def _on_neighbour_event(self, neighbour: str, payload: bytes | bytearray) -> None:
        """An event on a neighbour's topic: stored only if its origin signed it (or a hub of
        ``[trust] hubs`` attested it from the mesh), within the bounds and the rate."""
        if not self._rate.allow(neighbour):
            self._refuse("rate", neighbour, f"more than {self.cfg.neighbour_rate:g} events a second")
            return
        try:
            env = contract.parse_untrusted(bytes(payload), "event-v2")
        except ContractError as e:
            self._refuse(e.code, neighbour, e.message)
            return
        verdict = contract.check_envelope(env, self.trusted.hub)
        if not verdict.accepted:
            assert verdict.error is not None
            self._refuse(verdict.error.code, neighbour,
                         f"event {str(env.get('id'))[:80]}: {verdict.error.message}")
            return
        if verdict.origin == self.hub_id:
            self.refused["own"] += 1  # our own event relayed back: we know it
            return
        try:
            new = self.hub.ingest_remote(env, via="mqtt", trust=str(verdict.trust))
        except RemoteRefused as e:
            self._refuse("not_stored", neighbour, str(e))
            return
        if new and env["type"] == "alert.raised":
            alert = env.get("alert") or {}
            log.warning("neighbour %s raised %s (%s, %s; %s)", env["hub"], alert.get("id"), alert.get("kind"),
                        alert.get("zone"), verdict.trust)
            if self.cfg.chime_on_neighbour and not alert.get("silent"):
                self.hub.chime(f"mqtt:{env['hub']}")

    def _refuse(self, code: str, neighbour: str, why: str) -> None:
        self.refused[code] += 1
        n = self.refused[code]
        if n <= 10 or n % 100 == 0:  # a flood must not flood the log too
            log.warning("refused a message on %s's topic (%s, %d so far): %s", neighbour, code, n, why[:200])

    def _on_neighbour_status(self, neighbour: str, payload: bytes | bytearray) -> None:
        try:
            status = contract.parse_untrusted(bytes(payload), "status-v2")
            if status["hub"] != neighbour:
                raise ContractError("wrong_origin", f"a status of {status['hub']} on {neighbour}'s topic")
            contract.check_signed("status", status, self.trusted.hub)
        except ContractError as e:
            self._refuse(f"status_{e.code}", neighbour, e.message)
            return
        self._neighbours[neighbour] = {"online": status["online"], "time": status.get("time"),
                                       "heard_at": self.clock.time()}


def _command_id(payload: bytes) -> str | None:
    """The ``id`` of a command, read leniently so that even a refusal can name it (None when
    it has none that a reply may carry)."""
    if len(payload) > contract.BOUNDS["command-v2"].max_bytes:
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    command_id = value.get("id") if isinstance(value, dict) else None
    if not isinstance(command_id, str) or not 1 <= len(command_id) <= 128:
        return None
    try:
        command_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no signed reply could carry it
        return None
    return command_id
