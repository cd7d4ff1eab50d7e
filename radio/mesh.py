"""The LoRa mesh link: alerts to and from neighbouring hubs and marshals' handhelds.

``MeshLink`` owns one connection to a Meshtastic radio (``hubd.radio.mesh_radio``)
and one thread, ``hubd-mesh``, that does everything else: it drains the ``mesh``
outbox into compact authenticated frames (``hubd.radio.frames``), tracks their
delivery, hears other hubs' frames and feeds them to the core, and answers marshals.

Delivery.  Each outbox row is sent as a broadcast with want-ack.  It counts as
delivered when every neighbouring hub heard directly within ``neighbour_timeout`` has
been heard holding it (relaying it, or sending a receipt for it) and, when there are
no such neighbours, when the radio reports an ACK (explicit, or implicit: a
neighbour's rebroadcast).  Otherwise, after ``ack_timeout`` or on a NAK, it is
retried with exponential backoff; the row stays in SQLite meanwhile, so restarts lose
nothing.  A raise or escalation whose alert has since closed is superseded by the
closing frame and not retried further.

Flooding.  Every hub relays (once: the core deduplicates by event id) each alert frame
it hears for the first time, as its own outbox row; so alerts travel any number of
hops whatever the radios' hop limit.  A hub that hears again a frame it already holds,
directly from a neighbour, answers with a short receipt (HAVE) so that the neighbour
can stop retrying.

Callbacks from the library (on its reader and publishing threads) only put what they
got on the link's queue.
"""

from __future__ import annotations

import logging
import queue
import random
import re
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubd import contract
from hubd.clock import SYSTEM_CLOCK, Clock
from hubd.commands import CommandProcessor
from hubd.config import Config
from hubd.eventlog import MESH_EVENT_TYPES, PRIORITY_ALERT
from hubd.ingest import ATTESTED, RemoteRefused
from hubd.lifecycle import Hub
from hubd.model import SEVERITY, AlertKind, Event
from hubd.radio import frames
from hubd.radio.frames import EVENT_TYPE, FRAME_TYPE, STATE, Frame, FrameError, FrameType
from hubd.radio.mesh_airtime import AirtimeBudget, packet_airtime
from hubd.radio.mesh_radio import Radio, RadioError
from hubd.store import OutboxItem

log = logging.getLogger("hubd.radio.mesh")

DESTINATION = "mesh"
TEXT_PORT = 1  # TEXT_MESSAGE_APP
BROADCAST = "^all"
MAX_IN_FLIGHT = 4
CALL_TIMEOUT = 10.0
_ACK_RE = re.compile(r"^\s*ACK\s+(?:([A-Za-z0-9_-]{1,24})[:\s])?\s*(\d{1,8})\s*[.!]?\s*$", re.IGNORECASE)
#: An address that is not one node (Meshtastic's broadcast).
BROADCAST_NUM = 0xFFFFFFFF

Identity = tuple[str, int, int, int]


@dataclass
class Neighbour:
    """A hub heard on the mesh (kept here: the library does not refresh private-port traffic)."""

    node: int
    hub: str | None = None
    last_heard: float = 0.0  # wall clock
    direct_at: float = 0.0  # monotonic; last heard with no hops between
    snr: float | None = None
    rssi: int | None = None
    hops: int | None = None
    uplink: bool = False
    open_alerts: int = 0

    def as_dict(self, now: float, timeout: float) -> dict[str, Any]:
        age = now - self.last_heard
        return {"hub": self.hub, "node": f"!{self.node:08x}", "last_heard": round(self.last_heard, 1),
                "age": round(age, 1), "snr": self.snr, "rssi": self.rssi, "hops": self.hops,
                "uplink": self.uplink, "open_alerts": self.open_alerts, "stale": age > timeout}


@dataclass
class _Row:
    """An outbox row on the air, waiting for its confirmation."""

    id: int
    identity: Identity
    packet_id: int
    attempts: int
    deadline: float
    radio_acked: bool = False
    label: str = ""
    missing: set[int] = field(default_factory=set)


class MeshLink:
    """The Meshtastic link of one hub (a daemon Component with ``status()``)."""

    def __init__(self, config: Config, hub: Hub, processor: CommandProcessor, *,
                 clock: Clock = SYSTEM_CLOCK):
        assert config.mesh is not None
        self.config = config
        self.started_at = clock.time()
        self.cfg = config.mesh
        self.hub = hub
        self.processor = processor
        self.clock = clock
        self.hub_id = config.hub.id
        #: What marshals type to name this hub: "ACK <code> <n>".
        self.code = self.cfg.code or self.hub_id
        self.has_uplink = config.mqtt is not None
        self.gateway = config.mqtt is not None and self.cfg.uplink
        self.key: bytes = b""
        self.config_error: str | None = None
        self._check_config()
        self.neighbours: dict[int, Neighbour] = {}
        self.counters: Counter[str] = Counter()
        self.replay = frames.ReplayWindow(self.cfg.replay_window)
        for node, tag, frame_time in hub.store.mesh_frames_seen():  # the window survives restarts
            self.replay.restore(node, frame_time, tag, clock.monotonic())
        self.budget = AirtimeBudget(self.cfg.duty_cycle, clock=clock.monotonic)
        self.radio: Radio | None = None
        self.state = "stopped"
        self.last_error = ""
        self._inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: dict[int, _Row] = {}  # outbox id -> row on the air
        self._by_packet: dict[int, int] = {}  # packet id -> outbox id
        self._holders: OrderedDict[Identity, set[int]] = OrderedDict()  # who holds what
        self._receipts: dict[Identity, float] = {}  # receipts to send (monotonic due)
        self._receipt_sent: dict[Identity, float] = {}
        self._texts: OrderedDict[int, int] = OrderedDict()  # marshal text packet id -> alert seq
        self._next_beacon = 0.0
        self._last_activity = 0.0
        self._marker = 0
        self._probed_at = 0.0
        self._reconnect_delay = 0.5
        self._next_connect = 0.0
        self._subscribed = False

    def _check_config(self) -> None:
        try:
            frames.encode(Frame(FrameType.BEACON, self.hub_id, 0), b"k" * 16, 0)
        except ValueError as e:
            self.config_error = f"hub.id: {e}"
            return
        try:
            self.key = frames.read_key(Path(self.cfg.key_file))
        except (OSError, ValueError) as e:
            self.config_error = f"mesh.key_file: {self.cfg.key_file}: {e}"

    # --- Component ------------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = self.clock.time()
        if self.config_error:
            log.error("mesh link disabled: %s", self.config_error)
            self.state = "disabled"
            self.last_error = self.config_error
            self.hub.set_health("mesh", "fault", self.config_error)
            return
        from pubsub import pub

        pub.subscribe(self._pub_receive, "meshtastic.receive")
        pub.subscribe(self._pub_lost, "meshtastic.connection.lost")
        self._subscribed = True
        self.hub.subscribe(self._on_event)
        self._stop.clear()
        self.state = "connecting"
        self._thread = threading.Thread(target=self._run, name="hubd-mesh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15)
        if self._subscribed:
            from pubsub import pub

            for fn, topic in ((self._pub_receive, "meshtastic.receive"),
                              (self._pub_lost, "meshtastic.connection.lost")):
                try:
                    pub.unsubscribe(fn, topic)
                except Exception:
                    pass
            self._subscribed = False
        if self.radio is not None:
            self.radio.close()
            self.radio = None
        self.state = "stopped"

    def alive(self) -> bool:
        if self.state == "disabled":
            return True
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        now = self.clock.time()
        timeout = self.cfg.neighbour_timeout
        neighbours = sorted((n.as_dict(now, timeout) for n in list(self.neighbours.values())),
                            key=lambda d: (d["hub"] or "~", d["node"]))
        radio = self.radio
        return {
            "state": self.state, "connection": self.cfg.connection,
            "node": radio.node_id if radio else None, "in_flight": len(self._rows),
            "neighbours": neighbours, "stale_neighbours": sum(1 for n in neighbours if n["stale"]),
            "airtime_used": round(self.budget.fraction(), 4), "counters": dict(self.counters),
            "last_error": self.last_error,
        }

    # --- callbacks from other threads: enqueue only, never block, never raise ------------------

    def _on_event(self, event: Event, envelope: dict[str, Any]) -> None:
        if event.type in MESH_EVENT_TYPES:
            self._wake.set()

    def _pub_receive(self, packet: Any, interface: Any) -> None:
        self._hand_over("packet", interface, packet)

    def _pub_lost(self, interface: Any) -> None:
        self._hand_over("lost", interface, None)

    def _hand_over(self, kind: str, interface: Any, payload: Any) -> None:
        # Runs in meshtastic's reader thread (through pypubsub): hand over, never raise there.
        try:
            self._inbox.put((kind, interface, payload))
            self._wake.set()
        except Exception:
            pass

    def _make_response_handler(self, iface: Any) -> Any:
        def on_response(packet: dict[str, Any]) -> None:
            try:
                self._inbox.put(("response", iface, packet))
                self._wake.set()
            except Exception:
                pass
        return on_response

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.radio is None and self.clock.monotonic() >= self._next_connect:
                    self._connect()
                self._process_inbox()
                if self.radio is not None:
                    self._watchdog()
                if self.radio is not None:
                    self._expire()
                    self._drain()
                    self._send_receipts()
                    self._beacon()
            except RadioError as e:
                self._drop_radio(str(e))
            except Exception as e:
                log.exception("mesh link: unexpected error")
                self.last_error = f"{type(e).__name__}: {e}"
                self._stop.wait(1.0)
            self._wake.wait(self._next_wait())
            self._wake.clear()

    def _next_wait(self) -> float:
        now = self.clock.monotonic()
        waits = [1.0]
        if self.radio is None:
            waits.append(self._next_connect - now)
        else:
            waits.append(self._next_beacon - now)
            waits.extend(r.deadline - now for r in self._rows.values())
            waits.extend(t - now for t in self._receipts.values())
        return min(max(min(waits), 0.02), 1.0)

    # --- connection -----------------------------------------------------------------------

    def _connect(self) -> None:
        self.state = "connecting"
        try:
            radio = Radio.open(self.cfg.connection, timeout=10.0, stop=self._stop)
        except RadioError as e:
            self.counters["connect_failures"] += 1
            self._schedule_reconnect(f"cannot connect to the radio at {self.cfg.connection}: {e}")
            return
        self.radio = radio
        self.state = "connected"
        self.counters["connects"] += 1
        self._reconnect_delay = 0.5
        now = self.clock.monotonic()
        self._last_activity = now
        self._marker = radio.activity_marker()
        self._probed_at = now
        self._next_beacon = now + random.uniform(0.05, min(2.0, self.cfg.beacon_interval / 4))
        log.info("mesh: connected to radio %s (%s), hop limit %d", radio.node_id, self.cfg.connection,
                 radio.hop_limit)
        self.last_error = ""
        self.hub.set_health("mesh", "ok")

    def _schedule_reconnect(self, reason: str) -> None:
        delay = self._reconnect_delay * random.uniform(0.8, 1.2)
        self._next_connect = self.clock.monotonic() + delay
        self._reconnect_delay = min(self._reconnect_delay * 2, self.cfg.reconnect_max)
        self.state = "down"
        if reason != self.last_error:
            log.warning("mesh: %s; retrying in %.1f s", reason, delay)
        self.last_error = reason
        self.hub.set_health("mesh", "fault", reason)

    def _drop_radio(self, reason: str) -> None:
        radio, self.radio = self.radio, None
        if radio is not None:
            self.counters["disconnects"] += 1
            log.warning("mesh: radio %s lost: %s", radio.node_id, reason)
            radio.close()
        now = self.clock.time()
        for row in list(self._rows.values()):
            self._fail(row, f"radio lost: {reason}", retry_at=now)
        self._by_packet.clear()
        self._schedule_reconnect(reason)

    def _watchdog(self) -> None:
        radio = self.radio
        assert radio is not None
        now = self.clock.monotonic()
        marker = radio.activity_marker()
        if marker != self._marker:
            self._marker = marker
            self._last_activity = now
        if not radio.reader_alive():
            raise RadioError("the radio's reader stopped")
        if not radio.iface.isConnected.is_set() and now - self._last_activity > 5.0:
            raise RadioError("the radio is not connected")
        silent = now - self._last_activity
        if silent > self.cfg.watchdog:
            self.counters["watchdog"] += 1
            raise RadioError(f"radio silent for {silent:.0f} s")
        if silent > self.cfg.watchdog / 2 and now - self._probed_at > self.cfg.watchdog / 4:
            self._probed_at = now
            radio.call(lambda i: i.sendHeartbeat(), CALL_TIMEOUT)
            self._next_beacon = min(self._next_beacon, now)

    # --- inbound --------------------------------------------------------------------------

    def _process_inbox(self) -> None:
        for _ in range(500):
            try:
                kind, iface, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            radio = self.radio
            if radio is None or iface is not radio.iface:
                continue  # from an interface we already dropped
            self._last_activity = self.clock.monotonic()
            if kind == "lost":
                raise RadioError("connection to the radio lost")
            try:
                if kind == "response":
                    self._on_response(payload)
                else:
                    self._on_packet(payload)
            except RadioError:
                raise
            except Exception:
                log.exception("mesh: handling a packet failed")

    def _remember(self, sender: int, tag: bytes, frame_time: int) -> None:
        """Keep the replay window in the store, so that it holds across restarts. A store that
        refuses the write (a full SD card) costs that only: the frame is still heard."""
        try:
            self.hub.store.note_mesh_frame(sender, tag, frame_time, self.cfg.replay_window)
        except sqlite3.Error as e:
            self.counters["replay_window_unsaved"] += 1
            log.warning("mesh: could not keep frame %s of !%08x in the store: %s", tag.hex(), sender, e)

    def oldest_news(self) -> float:
        """Frames sent before this time are refused (while this hub's clock is synchronised):
        the events they carry may be pruned from the store already, so their ids no longer
        deduplicate them. A neighbour's clock may be off by up to the retention, less a window."""
        return self.clock.time() - self.config.store.retention_days * 86400 + self.cfg.replay_window

    def _on_packet(self, packet: dict[str, Any]) -> None:
        raw = packet.get("raw")
        if raw is None or not raw.HasField("decoded"):
            return
        sender = getattr(raw, "from")
        if self.radio is not None and sender == self.radio.node_num:
            return
        port = raw.decoded.portnum
        if port == TEXT_PORT:
            self._on_text(raw)
        elif port == self.cfg.port_num:
            self._on_frame(raw)

    def _on_frame(self, raw: Any) -> None:
        sender = getattr(raw, "from")
        node_id = f"!{sender:08x}"
        data = bytes(raw.decoded.payload)
        self.counters["frames_heard"] += 1
        try:
            frame = frames.decode(data, self.key, sender)
            if frame.time < self.oldest_news() and self.hub.clock_synced():
                raise frames.FrameReplayError(f"sent {self.clock.time() - frame.time:.0f} s ago, before this "
                                              "hub's retention: a replay (its event may be pruned here)")
            tag = data[-frames.TAG_LEN:]
            self.replay.check(sender, frame.time, tag, self.clock.monotonic())
            self._remember(sender, tag, frame.time)
        except FrameError as e:
            self.counters[f"refused_{e.reason}"] += 1
            self.last_error = f"refused {e.reason} frame from {node_id}: {e}"
            log.warning("mesh: refused %s frame from %s (%d bytes): %s", e.reason, node_id, len(data), e)
            return
        hops = max(raw.hop_start - raw.hop_limit, 0) if raw.hop_start else 0
        direct = hops == 0
        self._heard(sender, frame, hops, raw, direct)
        if frame.type == FrameType.BEACON:
            return
        ident = frame.identity
        if direct:
            self._holders.setdefault(ident, set()).add(sender)
            self._holders.move_to_end(ident)
            while len(self._holders) > 4000:
                self._holders.popitem(last=False)
            self._check_identity(ident)
        if frame.type == FrameType.HAVE:
            return
        if frame.origin == self.hub_id:
            if direct:
                self._want_receipt(ident)
            return
        envelope = self._envelope(frame, sender, hops, raw)
        relay = ("mesh",) + (("mqtt",) if self.gateway and not frame.uplink else ())
        try:
            new = self.hub.ingest_remote(envelope, via="mesh", trust=ATTESTED, relay_to=relay)
        except RemoteRefused:
            self.counters["refused_stored"] += 1
            return
        if new:
            self.counters["alerts_heard"] += 1
            log.info("mesh: heard %s %s from %s (via %s, %d hops)%s", envelope["type"],
                     envelope["alert"]["id"], frame.origin, node_id, hops,
                     "; relaying to MQTT" if "mqtt" in relay else "")
        else:
            self.counters["duplicates"] += 1
            if direct:
                self._want_receipt(ident)

    def _heard(self, sender: int, frame: Frame, hops: int, raw: Any, direct: bool) -> None:
        n = self.neighbours.get(sender)
        if direct:
            # A neighbour heard directly for the first time, or again after it went stale (a
            # partition that heals, a hub back from a power cut), missed what happened meanwhile:
            # delivery only waits for the neighbours heard lately.
            if n is None or not n.direct_at:
                # Never heard directly since this link started: it may have missed everything
                # since then (a partition from the start), not just the last timeout's worth.
                self._catch_up(min(self.started_at, self.clock.time()) - self.cfg.neighbour_timeout, sender)
            elif self.clock.monotonic() - n.direct_at > self.cfg.neighbour_timeout:
                self._catch_up(n.last_heard - self.cfg.neighbour_timeout, sender)
        if n is None:
            n = self.neighbours[sender] = Neighbour(sender)
            log.info("mesh: new neighbour node !%08x%s", sender,
                     f" (hub {frame.origin})" if frame.type == FrameType.BEACON else "")
        n.last_heard = self.clock.time()
        n.hops = hops
        if direct:
            n.direct_at = self.clock.monotonic()
            n.snr = round(raw.rx_snr, 2) if raw.rx_snr else n.snr
            n.rssi = raw.rx_rssi or n.rssi
        if frame.type == FrameType.BEACON:
            n.hub = frame.origin
            n.uplink = frame.uplink
            n.open_alerts = frame.open_alerts

    #: Alerts sent again to a returning neighbour, at most (the newest first).
    CATCH_UP_MAX = 50

    def _catch_up(self, since: float, sender: int) -> None:
        """Queue again the transitions of every alert (this hub's and those it heard) changed since
        ``since``, so that a returning neighbour hears them and floods them on; receivers
        deduplicate by event id and answer what they hold with a receipt."""
        events = self.hub.store.recent_alert_events(since, self.CATCH_UP_MAX, not_pending_for=DESTINATION)
        rows = [seq for seq, etype in events if etype in MESH_EVENT_TYPES]
        for seq in rows:
            self.hub.store.add_outbox(seq, DESTINATION, PRIORITY_ALERT)
        if rows:
            self.counters["catch_up"] += len(rows)
            log.info("mesh: %s is back; sending %d alert event(s) again", self._name(sender), len(rows))
            self._wake.set()

    def _envelope(self, frame: Frame, sender: int, hops: int, raw: Any) -> dict[str, Any]:
        alert_id = contract.alert_id(frame.origin, frame.seq)
        existing = self.hub.store.get_alert(alert_id)
        event_time = float(frame.event_time)
        raised_at = event_time if frame.type == FrameType.RAISED or existing is None else existing.raised_at
        relayer = self.neighbours.get(sender)
        relayed_by = relayer.hub if relayer and relayer.hub and relayer.hub != frame.origin else None
        data: dict[str, Any] = {}
        if frame.type == FrameType.ESCALATED:
            data["level"] = frame.level
        if frame.type == FrameType.RESOLVED:
            data["outcome"] = frame.outcome
        data["mesh"] = {"node": f"!{sender:08x}", "hops": hops, "snr": raw.rx_snr or None,
                        "rssi": raw.rx_rssi or None, "uplink": frame.uplink, "relayed_by": relayed_by}
        envelope = contract.event_envelope_v2(
            id=event_id(frame), type=EVENT_TYPE[frame.type], time=event_time, ward=self.config.hub.ward,
            hub=frame.origin, actor="mesh", data=data, alert={
                "id": alert_id, "hub": frame.origin, "seq": frame.seq, "kind": frame.kind,
                "source": "mesh", "zone": frame.zone, "state": STATE[frame.type],
                "outcome": frame.outcome if frame.type == FrameType.RESOLVED else None,
                "level": frame.level, "silent": frame.silent, "raised_at": raised_at,
                "updated_at": event_time, "severity": SEVERITY[AlertKind(frame.kind)],
            })
        # No room in a frame for the origin's signature: this hub vouches that it rebuilt the
        # envelope from an authentic frame (ward-attested; it can raise an alarm, never lower one).
        return {**self.hub.signer.attest(envelope), "path": "mesh"}

    def _on_response(self, packet: dict[str, Any]) -> None:
        decoded = packet.get("decoded") or {}
        pid = decoded.get("requestId")
        outbox_id = self._by_packet.pop(pid, None) if pid is not None else None
        if outbox_id is None or outbox_id not in self._rows:
            return
        row = self._rows[outbox_id]
        reason = (decoded.get("routing") or {}).get("errorReason", "NONE")
        if reason == "NONE":
            row.radio_acked = True
            self.counters["radio_acks"] += 1
            self._check_row(row)
        else:
            self.counters["radio_naks"] += 1
            self._check_row(row)
            if row.id in self._rows:
                self._fail(row, f"radio: {reason}")

    # --- marshals -------------------------------------------------------------------------

    def _on_text(self, raw: Any) -> None:
        """A marshal's acknowledgement: "ACK <code> <n>" (or "ACK <n>" as a reply to this hub's
        own alert text), from a node of ``mesh.marshals``, as a public-key (PKI) direct message
        to this hub's radio: the firmware (2.5 and later) sets ``pki_encrypted`` only when the
        sender's own key decrypted it, while a channel text's ``from`` is anyone's to set
        (advisory GHSA-377p-prwp-4hwf). Channel text counts only with ``marshal_channel_text``."""
        sender = getattr(raw, "from")
        node_id = f"!{sender:08x}"
        try:
            text = bytes(raw.decoded.payload).decode("utf-8")
        except UnicodeDecodeError:
            log.info("mesh: ignored a text from %s that is not UTF-8", node_id)
            return
        m = _ACK_RE.match(text)
        if m is None:
            self.counters["texts_ignored"] += 1
            log.info("mesh: ignored text from %s: %r", node_id, text[:80])
            return
        code, seq = m.group(1), int(m.group(2))
        if code and code.lower() != self.code.lower():
            log.info("mesh: text %r from %s is for hub %s, not this one (%s)", text[:40], node_id, code,
                     self.code)
            return
        reply_to = raw.decoded.reply_id
        if not code and self._texts.get(reply_to) != seq:
            # "ACK 12" alone names no hub: alert 12 of every hub that lists this marshal would do.
            self.counters["marshal_ambiguous"] += 1
            log.warning("mesh: ignored %r from %s: it names no hub (reply 'ACK %s %d', or reply to this "
                        "hub's alert text)", text[:40], node_id, self.code, seq)
            return
        if node_id not in self.cfg.marshals:
            self.counters["texts_ignored"] += 1
            log.warning("mesh: ignored %r from %s: not in mesh.marshals", text[:40], node_id)
            return
        radio = self.radio
        private = radio is not None and raw.to == radio.node_num and bool(getattr(raw, "pki_encrypted",
                                                                                  False))
        if not private and not self.cfg.marshal_channel_text:
            self.counters["marshal_unauthenticated"] += 1
            log.warning("mesh: ignored %r 'from' marshal %s: not a public-key direct message to this hub, so "
                        "anyone with the channel key could have sent it (mesh.marshal_channel_text = true "
                        "accepts such, knowing this)", text[:40], node_id)
            return
        alert_id = contract.alert_id(self.hub_id, seq)
        alert = self.hub.store.get_alert(alert_id)
        if alert is None or alert.remote:
            log.info("mesh: %r from marshal %s: no alert %s here", text[:40], node_id, alert_id)
            return
        reply = self.processor.execute({"cmd": "ack", "alert": alert_id}, actor=f"marshal:{node_id}")
        self.counters["marshal_acks" if reply["ok"] else "marshal_refused"] += 1
        answer = f"ACK {seq} OK" if reply["ok"] else f"ACK {seq}: {reply['error']['message']}"[:120]
        log.info("mesh: marshal %s (%s): %r -> %s", node_id, "public-key DM" if private else "channel text",
                 text[:40], answer)
        self._send_text(answer, destination=sender, private=private)

    def _marshal_text(self, alert: dict[str, Any], ftype: FrameType) -> str:
        seq = alert["seq"]
        when = time.strftime("%H:%M", time.localtime(alert.get("raised_at") or self.clock.time()))
        head = "ALERT" if ftype == FrameType.RAISED else f"ALERT L{alert.get('level', 0)}"
        zone = (alert.get("zone") or "")[:40]
        return (f"{head} {seq} {str(alert['kind']).upper()} {zone} {when} — reply ACK {self.code} {seq}"
                .replace("  ", " "))

    def _send_text(self, text: str, destination: Any = BROADCAST, *, private: bool = False) -> int | None:
        if self.radio is None:
            return None
        pkt = self._transmit(text, "text", destination=destination, private=private)
        if pkt is None:
            log.warning("mesh: airtime budget spent; marshal text not sent: %r", text)
            return None
        return pkt.id

    # --- outbound -------------------------------------------------------------------------

    def _drain(self) -> None:
        if len(self._rows) >= MAX_IN_FLIGHT:
            return
        items = self.hub.store.pending(DESTINATION, limit=MAX_IN_FLIGHT - len(self._rows),
                                       exclude=set(self._rows))
        for item in items:
            if self.radio is None or not self._send_row(item):
                return

    #: What each kind of transmission counts as sent.
    _SENT = {"alert": "frames_sent", "retry": "frames_sent", "receipt": "receipts_sent",
             "beacon": "beacons_sent", "text": "texts_sent"}

    def _transmit(self, payload: Frame | str, traffic: str, *, destination: Any = BROADCAST,
                  want_ack: bool = False, private: bool = False) -> Any | None:
        """Send one packet, if the airtime budget allows ``traffic`` (an ``AirtimeBudget``
        class): a frame on the ward's port, or a text to the marshals.  Returns the
        packet sent, or None when the budget says wait.

        The one way onto the air: encode, weigh the airtime, ask the budget, send, spend."""
        radio = self.radio
        assert radio is not None
        if isinstance(payload, Frame):
            data, port = frames.encode(payload, self.key, radio.node_num), self.cfg.port_num
        else:
            data, port = payload.encode("utf-8")[:200], TEXT_PORT
        air = packet_airtime(len(data), port)
        if not self.budget.allows(traffic, air):
            return None
        ack: dict[str, Any] = {}
        if want_ack:
            ack = {"onResponse": self._make_response_handler(radio.iface), "onResponseAckPermitted": True}
        if private:  # a public-key direct message (to a marshal who wrote one)
            ack["pkiEncrypted"] = True
        pkt = radio.call(lambda i: i.sendData(data, destinationId=destination, portNum=port, wantAck=want_ack,
                                              channelIndex=self.cfg.channel_index, **ack), CALL_TIMEOUT)
        self.budget.spend(air)
        self.counters[self._SENT[traffic]] += 1
        log.debug("mesh: sent %s packet %s (%d bytes)", traffic, pkt.id, len(data))
        return pkt

    def _send_row(self, item: OutboxItem) -> bool:
        """Put one outbox row on the air.  False when the airtime budget says wait (the
        drain stops there, so rows keep their order)."""
        frame = self._frame_to_send(item)
        if frame is None:
            return True
        pkt = self._transmit(frame, "alert" if item.attempts == 0 else "retry", want_ack=True)
        if pkt is None:
            self.counters["budget_waits"] += 1
            return False
        row = self._track(item, frame, pkt.id)
        if item.attempts == 0:
            self._tell_marshals(item, frame)
        self._check_row(row)
        return True

    def _frame_to_send(self, item: OutboxItem) -> Frame | None:
        """The row's frame; None (and the row taken off the mesh outbox) when it cannot go
        on the mesh, or when it is a retry of a raise or escalation the alert has closed since."""
        env = item.envelope
        try:
            frame = self.frame_for(env)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("mesh: event %s cannot go on the mesh (%s); dropped from the mesh outbox",
                        item.event_id, e)
            self.hub.store.mark_delivered([item.id])
            self.counters["unsendable"] += 1
            return None
        if item.attempts > 0 and frame.type in (FrameType.RAISED, FrameType.ESCALATED):
            alert_id = env["alert"]["id"]
            current = self.hub.store.get_alert(alert_id)
            if current is not None and not current.is_open:
                log.info("mesh: %s of %s superseded (the alert is %s); not retried", env["type"],
                         alert_id, current.state)
                self.hub.store.mark_delivered([item.id])
                self.counters["superseded"] += 1
                return None
        return frame

    def _track(self, item: OutboxItem, frame: Frame, packet_id: int) -> _Row:
        """Wait for the sent row's confirmation (holders' receipts, or the radio's ACK)."""
        if item.attempts:
            self.counters["retries"] += 1
        label = f"{item.envelope['type']} {item.envelope['alert'].get('id')}"
        row = _Row(item.id, frame.identity, packet_id, item.attempts,
                   self.clock.monotonic() + self.cfg.ack_timeout, label=label)
        self._rows[item.id] = row
        self._by_packet[packet_id] = item.id
        log.debug("mesh: %s on the air (attempt %d)", row.label, item.attempts + 1)
        return row

    def _tell_marshals(self, item: OutboxItem, frame: Frame) -> None:
        """A text for the marshals' handhelds on this hub's own raise or escalation.

        Sent on the channel only when ``mesh.marshals`` lists handhelds: without marshals
        nobody can answer it, and every radio on the channel would show the alert."""
        if not self.cfg.marshals:
            return
        if frame.origin != self.hub_id or frame.type not in (FrameType.RAISED, FrameType.ESCALATED):
            return
        pid = self._send_text(self._marshal_text(item.envelope["alert"], frame.type))
        if pid is not None:
            self._texts[pid] = frame.seq
            while len(self._texts) > 200:
                self._texts.popitem(last=False)

    def frame_for(self, env: dict[str, Any]) -> Frame:
        """The frame carrying an outbox event (this hub's own, or one it relays)."""
        ftype = FRAME_TYPE.get(env["type"])
        alert = env.get("alert")
        if ftype is None or not isinstance(alert, dict):
            raise ValueError(f"{env['type']} is not an alert transition")
        now = int(self.clock.time())
        origin = alert["hub"]
        uplink = self.uplink_now() if origin == self.hub_id else \
            bool(((env.get("data") or {}).get("mesh") or {}).get("uplink"))
        age = min(max(now - int(env["time"]), 0), 0xFFFF)
        return Frame(ftype, origin, now, seq=int(alert["seq"]), age=age,
                     kind=str(alert["kind"]), level=min(int(alert.get("level") or 0), frames.MAX_LEVEL),
                     outcome=alert.get("outcome") if ftype == FrameType.RESOLVED else None,
                     silent=bool(alert.get("silent")), uplink=uplink, zone=alert.get("zone") or "")

    def uplink_now(self) -> bool:
        """Whether this hub's frames may say it reaches the centre itself: [mqtt] is configured
        and the MQTT link is not known to be down.  A hub cut off from its broker says so, so
        that a neighbour with an uplink relays its alerts (the centre deduplicates by event id
        when the hub's own copies follow)."""
        health = self.hub.health.get("mqtt")
        return self.has_uplink and (health is None or health.status != "fault")

    def expected_holders(self) -> set[int]:
        """Neighbouring hubs heard directly within ``neighbour_timeout``."""
        now = self.clock.monotonic()
        return {n.node for n in self.neighbours.values()
                if n.direct_at and now - n.direct_at <= self.cfg.neighbour_timeout}

    def _check_identity(self, ident: Identity) -> None:
        for row in [r for r in self._rows.values() if r.identity == ident]:
            self._check_row(row)

    def _check_row(self, row: _Row) -> None:
        expected = self.expected_holders()
        holders = self._holders.get(row.identity, set())
        row.missing = expected - holders
        if row.missing or not (row.radio_acked or expected):
            return
        self.hub.store.mark_delivered([row.id])
        self.counters["delivered"] += 1
        log.debug("mesh: %s delivered", row.label)
        self._forget(row)

    def _forget(self, row: _Row) -> None:
        self._rows.pop(row.id, None)
        self._by_packet.pop(row.packet_id, None)
        if self.radio is not None:
            self.radio.forget_response(row.packet_id)

    def _fail(self, row: _Row, reason: str, retry_at: float | None = None) -> None:
        if retry_at is None:
            delay = min(self.cfg.retry_initial * (2 ** row.attempts), self.cfg.retry_max)
            retry_at = self.clock.time() + delay * random.uniform(0.8, 1.2)
        self.hub.store.mark_failed(row.id, reason, retry_at)
        self.counters["failed_attempts"] += 1
        log.info("mesh: %s not confirmed (%s); retry in %.1f s", row.label, reason,
                 retry_at - self.clock.time())
        self._forget(row)

    def _expire(self) -> None:
        now = self.clock.monotonic()
        for row in [r for r in self._rows.values() if r.deadline <= now]:
            self._check_row(row)
            if row.id not in self._rows:
                continue
            if row.missing:
                names = ", ".join(self._name(n) for n in sorted(row.missing))
                self._fail(row, f"no receipt from {names}")
            else:
                self._fail(row, "no ACK from the radio")

    def _name(self, node: int) -> str:
        n = self.neighbours.get(node)
        return f"{n.hub} (!{node:08x})" if n and n.hub else f"!{node:08x}"

    def _want_receipt(self, ident: Identity) -> None:
        now = self.clock.monotonic()
        holdoff = min(self.cfg.ack_timeout / 2, 10.0)
        if now - self._receipt_sent.get(ident, -1e9) < holdoff or ident in self._receipts:
            return
        # A short random wait, so that neighbours answering the same frame do not collide.
        self._receipts[ident] = now + random.uniform(0.0, min(0.5, holdoff / 4))

    def _send_receipts(self) -> None:
        now = self.clock.monotonic()
        for ident, due in list(self._receipts.items()):
            if due > now or self.radio is None:
                continue
            origin, seq, ftype, level = ident
            frame = Frame(FrameType.HAVE, origin, int(self.clock.time()), seq=seq, level=level,
                          ref_type=FrameType(ftype))
            if self._transmit(frame, "receipt") is None:
                return
            del self._receipts[ident]
            self._receipt_sent[ident] = now
        if len(self._receipt_sent) > 2000:
            for k in [k for k, t in self._receipt_sent.items() if now - t > 600]:
                del self._receipt_sent[k]

    def _beacon(self) -> None:
        now = self.clock.monotonic()
        if self.radio is None or now < self._next_beacon:
            return
        interval = self.cfg.beacon_interval
        open_alerts = len(self.hub.store.alerts(open_only=True, remote=False, limit=255))
        frame = Frame(FrameType.BEACON, self.hub_id, int(self.clock.time()), uplink=self.uplink_now(),
                      open_alerts=open_alerts)
        if self._rows or self._transmit(frame, "beacon") is None:
            # Alerts first: a beacon waits while frames are on the air or the budget is low.
            self._next_beacon = now + min(interval / 4, 5.0)
            return
        self._next_beacon = now + interval * random.uniform(0.9, 1.1)


def event_id(frame: Frame) -> str:
    """The event id of an alert frame: the same at every hub, so duplicates deduplicate."""
    return contract.transition_event_id(contract.alert_id(frame.origin, frame.seq), EVENT_TYPE[frame.type],
                                        frame.level)
