"""Simulated Meshtastic radios, and a simulated air joining them.

Each ``SimNode`` listens on a TCP port and speaks the firmware's stream API (frames
``0x94 0xC3 len16`` + ``ToRadio``/``FromRadio`` protobufs), so the unmodified
``meshtastic.tcp_interface.TCPInterface`` connects to it as to a real radio.  The
``SimAir`` carries packets between nodes over the links of a topology, each with its
own loss, after the packet's LoRa airtime (scaled by ``time_scale``) plus a delay.

Firmware behaviour reproduced (the parts a hub depends on):

* flooding: a node rebroadcasts a packet it has not seen before while its hop limit
  lasts, after a short random contention delay; duplicates (same sender and packet
  id) are dropped;
* reliable delivery: a packet sent with ``want_ack`` is transmitted up to 3 times;
  hearing a neighbour rebroadcast it is an *implicit* ACK, a routing ACK from the
  destination an explicit one; after the last try the client gets a NAK with
  ``MAX_RETRANSMIT``.  A want-ack broadcast heard with no hops left (so nobody will
  rebroadcast it) is answered with an explicit ACK;
* the client queue holds 32 packets and drops non-text packets when full; a
  ``QueueStatus`` answers every packet and heartbeat from the client;
* faults: ``reboot()`` (the TCP server goes away for a while and state is lost),
  ``drop_client()`` (the TCP connection breaks), ``freeze()`` (a hung radio that
  keeps the connection open and says nothing).

* public-key direct messages: a client's direct message sent with ``pkiEncrypted`` arrives
  marked ``pki_encrypted`` (the receiving firmware's word that the sender's key decrypted it);
  a broadcast never is, nor anything injected (a forger has no sender's key).

Not modelled: collisions and channel busy time, encryption itself, routing of directed
packets other than by flooding, the node database beyond the node itself.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, portnums_pb2

from hubd.radio.mesh_airtime import packet_airtime

log = logging.getLogger("hubd.meshsim")

START1, START2 = 0x94, 0xC3
BROADCAST = 0xFFFFFFFF
CLIENT_QUEUE = 32
TX_QUEUE = 16
RELIABLE_TRIES = 3


@dataclass
class LinkQuality:
    loss: float = 0.0
    snr: float = 6.0
    rssi: int = -90


@dataclass
class AirStats:
    transmissions: int = 0
    airtime: float = 0.0  # unscaled seconds
    heard: int = 0
    lost: int = 0
    per_node: dict[int, int] = field(default_factory=dict)


class SimAir:
    """The shared medium: topology, loss, delay and airtime, on one timer thread."""

    def __init__(self, *, seed: int | None = None, delay: float = 0.01, time_scale: float = 0.02,
                 contention: float = 0.02, retransmit_interval: float | None = None):
        self.random = random.Random(seed)
        self.delay = delay
        self.time_scale = time_scale
        self.contention = contention
        #: Seconds between transmissions of a want-ack packet awaiting its ACK.
        self.retransmit_interval = retransmit_interval if retransmit_interval is not None else \
            max(0.3, 6 * (packet_airtime(60) * time_scale + delay + contention))
        self.nodes: dict[int, SimNode] = {}
        self.links: dict[int, dict[int, LinkQuality]] = {}
        self.stats = AirStats()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._count = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # --- building ---------------------------------------------------------------------------

    def add_node(self, num: int | None = None, *, hop_limit: int = 3, name: str = "",
                 port: int = 0, host: str = "127.0.0.1") -> SimNode:
        if num is None:
            num = self.random.randrange(0x10000000, 0xFFFFFFF0)
            while num in self.nodes:
                num = self.random.randrange(0x10000000, 0xFFFFFFF0)
        node = SimNode(self, num, hop_limit=hop_limit, name=name, host=host, port=port)
        self.nodes[num] = node
        self.links.setdefault(num, {})
        return node

    def link(self, a: SimNode, b: SimNode, loss: float = 0.0, *, snr: float = 6.0, rssi: int = -90) -> None:
        """Join two nodes both ways with the same loss probability."""
        self.links[a.num][b.num] = LinkQuality(loss, snr, rssi)
        self.links[b.num][a.num] = LinkQuality(loss, snr, rssi)

    def unlink(self, a: SimNode, b: SimNode) -> None:
        self.links[a.num].pop(b.num, None)
        self.links[b.num].pop(a.num, None)

    def set_loss(self, loss: float) -> None:
        for peers in self.links.values():
            for q in peers.values():
                q.loss = loss

    def start(self) -> SimAir:
        self._thread = threading.Thread(target=self._run, name="hubd-meshsim-air", daemon=True)
        self._thread.start()
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self) -> None:
        for node in list(self.nodes.values()):
            node.stop()
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(5)

    # --- scheduling -------------------------------------------------------------------------

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + max(delay, 0.0), next(self._count), fn))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stop:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("simulated air: event failed")

    # --- the medium -------------------------------------------------------------------------

    def transmit(self, sender: SimNode, packet: mesh_pb2.MeshPacket) -> None:
        """Put one packet on the air from ``sender``; each neighbour may hear it."""
        airtime = packet_airtime(len(packet.decoded.payload), packet.decoded.portnum or 1)
        self.stats.transmissions += 1
        self.stats.airtime += airtime
        self.stats.per_node[sender.num] = self.stats.per_node.get(sender.num, 0) + 1
        data = packet.SerializeToString()
        for peer, q in list(self.links.get(sender.num, {}).items()):
            if self.random.random() < q.loss:
                self.stats.lost += 1
                continue
            self.stats.heard += 1
            node = self.nodes.get(peer)
            if node is not None:
                self.later(airtime * self.time_scale + self.delay, functools.partial(node.hear, data, q))


class SimNode:
    """One simulated radio with its TCP stream API server."""

    def __init__(self, air: SimAir, num: int, *, hop_limit: int, name: str, host: str, port: int):
        self.air = air
        self.num = num
        self.node_id = f"!{num:08x}"
        self.hop_limit = hop_limit
        self.long_name = name or f"Sim {self.node_id[-4:]}"
        self.short_name = self.node_id[-4:]
        self.host = host
        self.port = port
        self.frozen = False
        self.up = False
        self.connections = 0  # client connections accepted, for tests
        self.received: list[mesh_pb2.MeshPacket] = []  # packets handed to the client, for tests
        self.sent: list[mesh_pb2.MeshPacket] = []  # packets the client sent, for tests
        self._lock = threading.RLock()
        self._server: socket.socket | None = None
        self._client: _Client | None = None
        self._seen: dict[tuple[int, int], float] = {}
        self._pending: dict[int, _Pending] = {}
        self._backlog: deque[mesh_pb2.FromRadio] = deque()
        self._generation = 0
        self._config_request: int | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self.up:
                return
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((self.host, self.port))
            srv.listen(4)
            self.port = srv.getsockname()[1]
            self._server = srv
            self.up = True
            self._generation += 1
        threading.Thread(target=self._accept, args=(srv,), name=f"hubd-meshsim-{self.short_name}",
                         daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self.up = False
            srv, self._server = self._server, None
            client, self._client = self._client, None
        if srv is not None:
            try:
                srv.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            srv.close()
        if client is not None:
            client.close()

    def reboot(self, down_for: float = 1.0) -> None:
        """Go away (TCP server closed, state lost) and come back after ``down_for`` seconds."""
        log.info("sim %s: rebooting for %.1f s", self.node_id, down_for)
        self.stop()
        with self._lock:
            self._seen.clear()
            for p in self._pending.values():
                p.cancelled = True
            self._pending.clear()
            self._backlog.clear()
        threading.Timer(down_for, self.start).start()

    def drop_client(self) -> None:
        """Break the client's TCP connection (the node stays up)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            log.info("sim %s: dropping the client connection", self.node_id)
            client.close(reset=True)

    def freeze(self, frozen: bool = True) -> None:
        """A hung radio: the connection stays open, nothing is answered or sent.

        Unfrozen, it answers the last configuration request it ignored (as a radio
        working off its backlog would)."""
        self.frozen = frozen
        if not frozen:
            with self._lock:
                client, request, self._config_request = self._client, self._config_request, None
            if client is not None and request is not None:
                self._send_config(client, request)

    def inject(self, packet: mesh_pb2.MeshPacket, quality: LinkQuality | None = None) -> None:
        """Hear ``packet`` exactly as given (an attacker's transmitter can forge any header), except
        ``pki_encrypted``: that is the receiving firmware's word that the sender's own key
        decrypted the packet, which no forged transmission earns."""
        forged = mesh_pb2.MeshPacket()
        forged.CopyFrom(packet)
        forged.pki_encrypted = False
        self.hear(forged.SerializeToString(), quality or LinkQuality())

    def has_heard(self, sender: int, packet_id: int) -> bool:
        """Whether this node has heard (or sent) a packet, client connected or not."""
        with self._lock:
            return (sender, packet_id) in self._seen

    @property
    def client_connected(self) -> bool:
        return self._client is not None and not self._client.closed

    # --- the client side (stream API) -------------------------------------------------------

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with self._lock:
                if not self.up or srv is not self._server:
                    conn.close()
                    return
                old, self._client = self._client, _Client(self, conn)
                self.connections += 1
                client = self._client
            if old is not None:  # like the firmware: a new client replaces the old one
                old.close()
            client.start()

    def _to_client(self, msg: mesh_pb2.FromRadio, *, control: bool = False) -> None:
        with self._lock:
            client = self._client
            if client is None or not client.configured:
                if not control:
                    self._queue_backlog(msg)
                return
        client.send(msg, control=control)

    def _queue_backlog(self, msg: mesh_pb2.FromRadio) -> None:
        if len(self._backlog) >= CLIENT_QUEUE:
            if not _is_text(msg):
                return
            for i, m in enumerate(self._backlog):
                if not _is_text(m):
                    del self._backlog[i]
                    break
            else:
                return
        self._backlog.append(msg)

    def _handle_to_radio(self, client: _Client, data: bytes) -> None:
        msg = mesh_pb2.ToRadio()
        try:
            msg.ParseFromString(data)
        except Exception:
            log.warning("sim %s: unparseable ToRadio", self.node_id)
            return
        which = msg.WhichOneof("payload_variant")
        if self.frozen:
            if which == "want_config_id":
                self._config_request = msg.want_config_id
            return
        if which == "want_config_id":
            self._send_config(client, msg.want_config_id)
        elif which == "packet":
            self._from_client(client, msg.packet)
        elif which == "heartbeat":
            client.send(self._queue_status(0), control=True)
        elif which == "disconnect":
            client.close()

    def _send_config(self, client: _Client, config_id: int) -> None:
        out = []
        m = mesh_pb2.FromRadio()
        m.my_info.my_node_num = self.num
        m.my_info.reboot_count = self._generation
        m.my_info.min_app_version = 30200
        out.append(m)
        m = mesh_pb2.FromRadio()
        m.node_info.num = self.num
        m.node_info.user.id = self.node_id
        m.node_info.user.long_name = self.long_name
        m.node_info.user.short_name = self.short_name
        m.node_info.last_heard = int(time.time())
        out.append(m)
        m = mesh_pb2.FromRadio()
        m.config.lora.CopyFrom(config_pb2.Config.LoRaConfig(
            hop_limit=self.hop_limit, use_preset=True,
            modem_preset=config_pb2.Config.LoRaConfig.ModemPreset.LONG_FAST,
            region=config_pb2.Config.LoRaConfig.RegionCode.EU_868, tx_enabled=True))
        out.append(m)
        m = mesh_pb2.FromRadio()
        m.channel.index = 0
        m.channel.role = channel_pb2.Channel.Role.PRIMARY
        m.channel.settings.psk = b"\x01"
        out.append(m)
        m = mesh_pb2.FromRadio()
        m.config_complete_id = config_id
        out.append(m)
        for msg in out:
            client.send(msg, control=True)
        client.configured = True
        client.send(self._queue_status(0), control=True)
        with self._lock:
            backlog, self._backlog = list(self._backlog), deque()
        for msg in backlog:
            client.send(msg)

    def _queue_status(self, packet_id: int, res: int = 0) -> mesh_pb2.FromRadio:
        m = mesh_pb2.FromRadio()
        m.queueStatus.res = res
        m.queueStatus.free = TX_QUEUE - len(self._pending)
        m.queueStatus.maxlen = TX_QUEUE
        m.queueStatus.mesh_packet_id = packet_id
        return m

    def _from_client(self, client: _Client, packet: mesh_pb2.MeshPacket) -> None:
        p = mesh_pb2.MeshPacket()
        p.CopyFrom(packet)
        setattr(p, "from", self.num)
        if not p.id:
            p.id = self.air.random.randrange(1, 0xFFFFFFFF)
        if not p.hop_limit:
            p.hop_limit = 0
        p.hop_start = p.hop_limit
        # Public-key encryption (firmware 2.5+) is for direct messages only: the receiving radio
        # decrypts with this node's key and says so (pki_encrypted), which the sim carries along.
        p.pki_encrypted = p.pki_encrypted and p.to not in (BROADCAST, self.num)
        self.sent.append(p)
        client.send(self._queue_status(p.id), control=True)
        if p.to == self.num:
            return
        with self._lock:
            self._seen[(self.num, p.id)] = time.monotonic()
            if p.want_ack:
                pend = _Pending(p)
                self._pending[p.id] = pend
        self.air.transmit(self, p)
        if p.want_ack:
            self.air.later(self.air.retransmit_interval, lambda: self._retry(pend))

    def _retry(self, pend: _Pending) -> None:
        with self._lock:
            if pend.cancelled or self._pending.get(pend.packet.id) is not pend:
                return
            if pend.tries >= RELIABLE_TRIES:
                del self._pending[pend.packet.id]
                nak = True
            else:
                pend.tries += 1
                nak = False
        if nak:
            self._ack_to_client(pend.packet.id, self.num, mesh_pb2.Routing.Error.MAX_RETRANSMIT)
            return
        if not self.frozen and self.up:
            self.air.transmit(self, pend.packet)
        self.air.later(self.air.retransmit_interval, lambda: self._retry(pend))

    def _ack_to_client(self, request_id: int, sender: int, error: int) -> None:
        p = mesh_pb2.MeshPacket()
        setattr(p, "from", sender)
        p.to = self.num
        p.id = self.air.random.randrange(1, 0xFFFFFFFF)
        p.decoded.portnum = portnums_pb2.PortNum.ROUTING_APP
        p.decoded.request_id = request_id
        p.decoded.payload = mesh_pb2.Routing(error_reason=error).SerializeToString()
        p.priority = mesh_pb2.MeshPacket.Priority.ACK
        m = mesh_pb2.FromRadio()
        m.packet.CopyFrom(p)
        self._to_client(m)

    def _resolve(self, request_id: int) -> bool:
        with self._lock:
            pend = self._pending.pop(request_id, None)
        if pend is None:
            return False
        pend.cancelled = True
        return True

    # --- the air side -----------------------------------------------------------------------

    def hear(self, data: bytes, quality: LinkQuality) -> None:
        if not self.up or self.frozen:
            return
        p = mesh_pb2.MeshPacket()
        p.ParseFromString(data)
        sender = getattr(p, "from")
        key = (sender, p.id)
        if sender == self.num:
            # Our own packet, rebroadcast by a neighbour: the implicit ACK.
            if self._resolve(p.id):
                self._ack_to_client(p.id, self.num, mesh_pb2.Routing.Error.NONE)
            return
        with self._lock:
            now = time.monotonic()
            if key in self._seen:
                return
            self._seen[key] = now
            if len(self._seen) > 5000:
                for k in [k for k, t in self._seen.items() if now - t > 600]:
                    del self._seen[k]
        p.rx_time = int(time.time())
        p.rx_snr = quality.snr
        p.rx_rssi = quality.rssi
        routing_for_us = (p.to == self.num and p.decoded.portnum == portnums_pb2.PortNum.ROUTING_APP)
        if routing_for_us and p.decoded.request_id:
            self._resolve(p.decoded.request_id)
        if p.to in (BROADCAST, self.num):
            m = mesh_pb2.FromRadio()
            m.packet.CopyFrom(p)
            self._to_client(m)
        if p.to == self.num and p.want_ack and not routing_for_us:
            self._send_ack(p)
        elif p.to != self.num and p.hop_limit > 0:
            relay = mesh_pb2.MeshPacket()
            relay.CopyFrom(p)
            relay.hop_limit = p.hop_limit - 1
            relay.relay_node = self.num & 0xFF
            for f in ("rx_time", "rx_snr", "rx_rssi"):
                relay.ClearField(f)
            self.air.later(self.air.random.uniform(0, self.air.contention),
                           functools.partial(self._transmit_if_up, relay))
        elif p.to == BROADCAST and p.want_ack and p.hop_limit == 0:
            self._send_ack(p)

    def _transmit_if_up(self, packet: mesh_pb2.MeshPacket) -> None:
        if self.up and not self.frozen:
            self.air.transmit(self, packet)

    def _send_ack(self, p: mesh_pb2.MeshPacket) -> None:
        ack = mesh_pb2.MeshPacket()
        setattr(ack, "from", self.num)
        ack.to = getattr(p, "from")
        ack.id = self.air.random.randrange(1, 0xFFFFFFFF)
        ack.hop_limit = self.hop_limit
        ack.hop_start = self.hop_limit
        ack.decoded.portnum = portnums_pb2.PortNum.ROUTING_APP
        ack.decoded.request_id = p.id
        ack.decoded.payload = mesh_pb2.Routing(error_reason=mesh_pb2.Routing.Error.NONE).SerializeToString()
        ack.priority = mesh_pb2.MeshPacket.Priority.ACK
        with self._lock:
            self._seen[(self.num, ack.id)] = time.monotonic()
        self.air.later(self.air.random.uniform(0, self.air.contention),
                       functools.partial(self._transmit_if_up, ack))


@dataclass
class _Pending:
    packet: mesh_pb2.MeshPacket
    tries: int = 1
    cancelled: bool = False


def _is_text(msg: mesh_pb2.FromRadio) -> bool:
    return msg.HasField("packet") and msg.packet.decoded.portnum == portnums_pb2.PortNum.TEXT_MESSAGE_APP


class _Client:
    """One TCP client of a node: a reader thread, and a writer with the firmware's queue."""

    def __init__(self, node: SimNode, conn: socket.socket):
        self.node = node
        self.conn = conn
        self.conn.settimeout(None)
        self.configured = False
        self.closed = False
        self.dropped = 0
        self._queue: deque[tuple[mesh_pb2.FromRadio, bool]] = deque()
        self._cv = threading.Condition()

    def start(self) -> None:
        name = f"hubd-meshsim-{self.node.short_name}"
        threading.Thread(target=self._read, name=name + "-rx", daemon=True).start()
        threading.Thread(target=self._write, name=name + "-tx", daemon=True).start()

    def send(self, msg: mesh_pb2.FromRadio, *, control: bool = False) -> None:
        with self._cv:
            if self.closed:
                return
            if not control:
                if msg.HasField("packet"):
                    self.node.received.append(msg.packet)
                packets = sum(1 for _, c in self._queue if not c)
                if packets >= CLIENT_QUEUE:
                    if not _is_text(msg):
                        self.dropped += 1
                        return
                    for i, (m, c) in enumerate(self._queue):
                        if not c and not _is_text(m):
                            del self._queue[i]
                            self.dropped += 1
                            break
                    else:
                        self.dropped += 1
                        return
            self._queue.append((msg, control))
            self._cv.notify()

    def close(self, reset: bool = False) -> None:
        with self._cv:
            if self.closed:
                return
            self.closed = True
            self._cv.notify_all()
        try:
            if reset:
                self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()

    def _write(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self.closed:
                    self._cv.wait()
                if self.closed:
                    return
                msg, _ = self._queue.popleft()
            if self.node.frozen:
                continue
            data = msg.SerializeToString()
            try:
                self.conn.sendall(bytes([START1, START2, len(data) >> 8, len(data) & 0xFF]) + data)
            except OSError:
                self.close()
                return

    def _read(self) -> None:
        buf = b""
        while not self.closed:
            try:
                chunk = self.conn.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                i = buf.find(bytes([START1, START2]))
                if i < 0:
                    buf = buf[-1:] if buf.endswith(bytes([START1])) else b""
                    break
                buf = buf[i:]
                if len(buf) < 4:
                    break
                n = (buf[2] << 8) | buf[3]
                if n > 512:
                    buf = buf[2:]
                    continue
                if len(buf) < 4 + n:
                    break
                payload, buf = buf[4:4 + n], buf[4 + n:]
                try:
                    self.node._handle_to_radio(self, payload)
                except Exception:
                    log.exception("sim %s: handling a client message failed", self.node.node_id)
        self.close()
        with self.node._lock:
            if self.node._client is self:
                self.node._client = None
