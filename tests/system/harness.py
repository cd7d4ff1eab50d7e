"""A ward on one machine: N ``hubd run`` daemons, a real Mosquitto, the simulated LoRa air
and a subscriber playing the central server.

Each hub is the real daemon with gpiozero's mock pins, driven through its control socket
(the path ``hubd press`` and ``hubd resolve`` take).  The centre is a paho v5 client with
a persistent session that deduplicates by event id, as the contract asks of receivers,
and sends commands with MQTT v5 response topics and correlation data.  A hub may reach
the broker through a ``Cable`` (a TCP forwarder the test can cut and mend) to take it
off the network without touching the broker.

Sizes come from the environment so that the same scenarios run CI-sized by default and
longer by hand: ``HUBD_CHAOS_HUBS`` (5), ``HUBD_CHAOS_PRESSES`` (1000),
``HUBD_CHAOS_OUTAGE`` (60 s), ``HUBD_CHAOS_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import socket
import textwrap
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from mesh_lab import FAST_MESH
from mqtt_support import CENTRE_KEY, trust_section, write_hub_key
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import HubProcess, Mosquitto, free_port, hub_config, wait_for

from hubd import contract
from hubd.control import ControlError, send_command
from hubd.radio.frames import write_key
from hubd.radio.meshsim import SimAir, SimNode

ROOT = "safercom/v2"
WARD = "ward-7"

#: What a central deployment needs of its broker: the centre's persistent session and its
#: queue survive a broker crash (saved every second); tests/support.py's broker already
#: lifts mosquitto's default cap of 1000 queued messages per session.
BROKER_CONF = "autosave_interval 1\n"

BUTTONS = (("gate", 17, "panic", "Market gate"), ("clinic", 22, "medical", "Clinic"),
           ("store", 23, "fire", "Grain store"), ("yard", 24, "intrusion", "Yard"))


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process in KiB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --- the centre -----------------------------------------------------------------------------

class Centre:
    """The central server's consumer: every hub's events, statuses and replies of the ward.

    ``events`` keeps the first copy of each event id; ``copies`` counts every arrival, so a
    test can see that duplicates happened and were absorbed. Commands are signed with the
    test centre's key (contract version 2); a hub replies on its own ``reply`` topic."""

    def __init__(self, host: str, port: int, *, root: str = ROOT, ward: str = WARD):
        self.base = f"{root}/{ward}"
        self.events: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.copies: defaultdict[str, int] = defaultdict(int)
        self.status: dict[str, dict[str, Any]] = {}
        self.replies: dict[bytes, dict[str, Any]] = {}
        self.invalid: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"centre-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.max_inflight_messages_set(100)
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 24 * 3600
        self.client.connect(host, port, 10, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(15), "the centre could not subscribe"

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:  # noqa: ANN001
        if not reason.is_failure:
            client.subscribe([(f"{self.base}/+/events", 1), (f"{self.base}/+/status", 1),
                              (f"{self.base}/+/reply", 1)])

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        try:
            body = json.loads(msg.payload)
        except ValueError:
            with self._lock:
                self.invalid.append((msg.topic, bytes(msg.payload)))
            return
        with self._lock:
            if msg.topic.endswith("/reply"):
                corr = getattr(msg.properties, "CorrelationData", None)
                if corr is not None:
                    self.replies[bytes(corr)] = body
            elif msg.topic.endswith("/status"):
                self.status[msg.topic.rsplit("/", 2)[-2]] = body
            elif isinstance(body, dict) and isinstance(body.get("id"), str):
                self.copies[body["id"]] += 1
                if body["id"] not in self.events:
                    self.events[body["id"]] = body
                    self.order.append(body["id"])
            else:
                self.invalid.append((msg.topic, bytes(msg.payload)))

    # reading

    def has(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self.events

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events.values() if e["type"] == type_]

    def alert_events(self, alert_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self.events[i] for i in self.order
                    if (self.events[i].get("alert") or {}).get("id") == alert_id]

    def alert_state(self, alert_id: str) -> str | None:
        """The alert's state as the centre knows it: from its transition events, by precedence
        (a late copy of an older event must not roll it back)."""
        rank = {"raised": 0, "escalated": 0, "acknowledged": 1, "resolved": 2, "cancelled": 2}
        best: tuple[int, str] | None = None
        for e in self.alert_events(alert_id):
            kind = e["type"].split(".", 1)[1]
            if kind in rank:
                state = e["alert"]["state"]
                if best is None or rank[kind] >= best[0]:
                    best = (rank[kind], state)
        return best[1] if best else None

    def alert_outcome(self, alert_id: str) -> str | None:
        for e in self.alert_events(alert_id):
            if e["type"] == "alert.resolved":
                return e["alert"].get("outcome")
        return None

    # commands

    def command(self, hub: str, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send a command (signed) and wait for its reply, sending it again (the same bytes) if no
        reply comes: the hub answers a repeated id from its store instead of applying it twice."""
        signed = contract.sign("command", contract.command_payload_v2(
            id=f"c-{uuid.uuid4().hex[:12]}", hub=hub, time=time.time(), by="operator:chaos", **request),
            CENTRE_KEY)
        correlation = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = correlation
        deadline = time.monotonic() + timeout
        while True:
            self.client.publish(f"{self.base}/{hub}/cmd", contract.dumps(signed), qos=1, properties=props)
            resend = time.monotonic() + 5.0
            while time.monotonic() < min(resend, deadline):
                with self._lock:
                    reply = self.replies.get(correlation)
                if reply is not None:
                    return reply
                time.sleep(0.02)
            if time.monotonic() >= deadline:
                raise AssertionError(f"no reply from {hub} to {request}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- a cable to the broker that the test can cut ---------------------------------------------

class Cable:
    """A TCP forwarder between one hub and the broker: ``cut()`` drops every connection and
    refuses new ones (the hub's network is gone), ``mend()`` lets them through again."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.target = target_port
        self.port = free_port()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._pump, name="test-cable", daemon=True)
        self._thread.start()
        self.mend()

    def mend(self) -> None:
        with self._lock:
            if self._listener is None:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.host, self.port))
                s.listen(8)
                s.setblocking(False)
                self._listener = s
                self._sel.register(s, selectors.EVENT_READ, None)

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for a, b in self._pairs:
                for s in (a, b):
                    try:
                        self._sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
            self._pairs.clear()

    def _pump(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                idle = not self._sel.get_map()
            if idle:
                time.sleep(0.05)
                continue
            for key, _ in self._sel.select(0.1):
                with self._lock:
                    if key.fileobj is self._listener:
                        try:
                            client, _ = self._listener.accept()
                            upstream = socket.create_connection((self.host, self.target), timeout=2)
                        except OSError:
                            continue
                        client.setblocking(False)
                        upstream.setblocking(False)
                        self._pairs.append((client, upstream))
                        self._sel.register(client, selectors.EVENT_READ, upstream)
                        self._sel.register(upstream, selectors.EVENT_READ, client)
                        continue
                    if key.data is None:
                        continue
                    src, dst = key.fileobj, key.data
                    try:
                        data = src.recv(65536)
                        if data:
                            dst.setblocking(True)
                            dst.sendall(data)
                            dst.setblocking(False)
                    except OSError:
                        data = b""
                    if not data:
                        self._close_pair(src)

    def _close_pair(self, s: socket.socket) -> None:
        for pair in list(self._pairs):
            if s in pair:
                self._pairs.remove(pair)
                for x in pair:
                    try:
                        self._sel.unregister(x)
                    except (KeyError, ValueError):
                        pass
                    x.close()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(5)


# --- the ward -------------------------------------------------------------------------------

@dataclass
class Node:
    """One hub of the ward as the test sees it."""

    id: str
    index: int
    config: Path
    proc: HubProcess
    control: Path
    radio: SimNode | None = None
    cable: Cable | None = None
    rss: list[tuple[float, int]] = field(default_factory=list)

    def call(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        return send_command(self.control, request, timeout=timeout)

    def try_call(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any] | None:
        """The reply, or None when the daemon is down (killed, restarting)."""
        try:
            return self.call(request, timeout)
        except (ControlError, OSError, ValueError):
            return None

    def alerts(self, *, all_: bool = True) -> list[dict[str, Any]]:
        reply = self.call({"cmd": "alerts", "all": all_, "limit": 10_000}, timeout=60)
        assert reply["ok"], reply
        return reply["result"]

    def status(self) -> dict[str, Any]:
        reply = self.call({"cmd": "status"}, timeout=30)
        assert reply["ok"], reply
        return reply["result"]

    def outbox(self, destination: str) -> int:
        return self.status()["outbox"].get(destination, {}).get("depth", 0)

    @property
    def pid(self) -> int | None:
        p = self.proc.proc
        return p.pid if p is not None and p.poll() is None else None

    def sample_rss(self) -> None:
        if self.pid and (kb := rss_kb(self.pid)):
            self.rss.append((time.monotonic(), kb))


class Ward:
    """N hubs, a broker, optionally the simulated air, and the centre.

    :param mqtt: hubs with an [mqtt] section (all, or a set of hub indexes from 1)
    :param mesh: hubs with a [mesh] section (all, or a set of indexes)
    :param topology: ``chain`` (1-2-3-..., the usual street of posts) or ``full``
    :param loss: radio loss on every link of the air
    :param cabled: hub indexes whose broker connection goes through a ``Cable``
    """

    def __init__(self, base: Path, n: int = 5, *, mqtt: bool | set[int] = True, mesh: bool | set[int] = False,
                 topology: str = "chain", loss: float = 0.0, cabled: set[int] = frozenset(),
                 escalation: str = "[300, 900]", seed: int | None = None,
                 mesh_options: dict[str, Any] | None = None, air_scale: float = 0.02):
        self.base = Path(base)
        self.n = n
        self.seed = seed if seed is not None else env_int("HUBD_CHAOS_SEED", 7)
        self.random = random.Random(self.seed)
        self.ids = [f"hub-{i}" for i in range(1, n + 1)]
        self.with_mqtt = set(range(1, n + 1)) if mqtt is True else set(mqtt or ())
        self.with_mesh = set(range(1, n + 1)) if mesh is True else set(mesh or ())
        self.broker = Mosquitto(self.base / "broker", extra_conf=BROKER_CONF)
        self.air: SimAir | None = None
        self.cabled = set(cabled)
        self.topology = topology
        self.loss = loss
        self.escalation = escalation
        self.mesh_options = {**FAST_MESH, **(mesh_options or {})}
        self.air_scale = air_scale
        self.nodes: list[Node] = []
        self.centre: Centre | None = None
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    # building

    def _buttons(self) -> str:
        out = []
        for name, pin, kind, zone in BUTTONS:
            out.append(f'[[buttons]]\nname = "{name}"\npin = {pin}\nzone = "{zone}"\nkind = "{kind}"\n')
        out.append('[[sirens]]\nname = "main"\npin = 27\n')
        return "\n".join(out)

    def start(self) -> Ward:
        self.broker.start()
        self.centre = Centre(self.broker.host, self.broker.port)
        radios: dict[int, SimNode] = {}
        if self.with_mesh:
            key_file = self.base / "network.key"
            write_key(key_file)
            self.air = SimAir(seed=self.seed, time_scale=self.air_scale)
            for i in sorted(self.with_mesh):
                radios[i] = self.air.add_node(hop_limit=1, name=f"hub-{i}")
            order = sorted(radios)
            if self.topology == "chain":
                pairs = list(zip(order, order[1:], strict=False))
            else:
                pairs = [(a, b) for a in order for b in order if a < b]
            for a, b in pairs:
                self.air.link(radios[a], radios[b], loss=self.loss)
            self.air.start()
        for i, hub_id in enumerate(self.ids, start=1):
            tmp = self.base / hub_id
            extra = ""
            cable = None
            if i in self.with_mqtt:
                port = self.broker.port
                if i in self.cabled:
                    cable = Cable(self.broker.port)
                    port = cable.port
                neighbours = json.dumps([h for h in self.ids if h != hub_id and
                                         self.ids.index(h) + 1 in self.with_mqtt])
                extra += textwrap.dedent(f"""\
                    [mqtt]
                    host = "127.0.0.1"
                    port = {port}
                    keepalive = 5
                    neighbours = {neighbours}
                    """)
            if i in radios:
                timers = "\n".join(f"{k} = {v}" for k, v in self.mesh_options.items())
                extra += (f'\n[mesh]\nconnection = "tcp:127.0.0.1:{radios[i].port}"\n'
                          f'key_file = "{self.base / "network.key"}"\n{timers}\n')
            extra += trust_section(self.ids)  # every hub believes the others and the centre
            write_hub_key(tmp / "state", hub_id)
            cfg = hub_config(tmp, hub_id=hub_id, ward=WARD, web=False, buttons=self._buttons(), extra=extra,
                             protocol=f"cancel_window = 30\nescalation = {self.escalation}")
            proc = HubProcess(cfg, env={"HUBD_CLOCK_SYNCED": "1"})
            self.nodes.append(Node(hub_id, i, cfg, proc, tmp / "run" / "control.sock", radios.get(i), cable))
        for node in self.nodes:
            node.proc.start(wait=False)
        for node in self.nodes:
            wait_for(lambda node=node: node.proc._ready(), 60, interval=0.2, message=f"{node.id} ready")
        for node in self.nodes:
            if node.index in self.with_mqtt:
                wait_for(lambda node=node: node.status()["links"]["mqtt"]["connected"], 30, interval=0.2,
                         message=f"{node.id} connected to the broker")
        self._sampler = threading.Thread(target=self._sample, name="test-rss", daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            for node in self.nodes:
                node.sample_rss()

    def stop(self) -> None:
        self._stop.set()
        for node in self.nodes:
            node.proc.stop()
            if node.cable:
                node.cable.close()
        if self.centre:
            self.centre.close()
        if self.air:
            self.air.stop()
        self.broker.stop()

    def __getitem__(self, hub_id: str) -> Node:
        return next(n for n in self.nodes if n.id == hub_id)

    # acting

    def restart(self, node: Node) -> None:
        """kill -9 a hub and start it again on the same state directory."""
        node.proc.kill9()
        node.proc = HubProcess(node.config, env={"HUBD_CLOCK_SYNCED": "1"})
        node.proc.start(wait=False)
        wait_for(node.proc._ready, 60, interval=0.2, message=f"{node.id} back after kill -9")

    # checking

    def wait_drained(self, timeout: float = 180.0) -> None:
        """Every hub's outbox empty for every destination it has."""
        def drained() -> bool:
            for node in self.nodes:
                reply = node.try_call({"cmd": "status"})
                if reply is None or not reply["ok"] or reply["result"]["outbox"]:
                    return False
            return True
        wait_for(drained, timeout, interval=1.0, message="every hub's outbox drained")

    def rss_report(self) -> dict[str, tuple[int, int, int]]:
        """Per hub: (first sample after warm-up, peak, last) RSS in KiB."""
        out = {}
        for node in self.nodes:
            kbs = [kb for _, kb in node.rss]
            if kbs:
                warm = kbs[min(len(kbs) - 1, 5)]
                out[node.id] = (warm, max(kbs), kbs[-1])
        return out

    def assert_memory_bounded(self, cap_mb: float = 150.0) -> None:
        """Every hub's RSS stayed under ``cap_mb`` (a Pi 3 has 1 GB for everything)."""
        report = self.rss_report()
        assert report, "no RSS samples"
        for hub, (_warm, peak, _last) in report.items():
            assert peak < cap_mb * 1024, f"{hub} RSS peaked at {peak / 1024:.0f} MB (cap {cap_mb} MB)"


# --- residents and managers -------------------------------------------------------------------

OUTCOMES = ("genuine", "false_alarm", "test")


@dataclass
class Closure:
    how: str  # "local" or "centre"
    outcome: str
    acked: bool


class Workload:
    """Residents pressing buttons at random times on every hub, and managers closing the alerts
    (on the hub's CLI path, or from the centre over MQTT) as they come.

    A button whose alert is still open would add ``alert.pressed_again`` instead of a new
    alert, so a resident here presses only a button whose last alert is closed, and what a
    user expects is exact: one alert per press.  A press the daemon cannot take (it is
    down) is no alert; a press whose reply was lost with the daemon is looked up after the
    restart (``unknown`` counts those)."""

    def __init__(self, ward: Ward, presses: int, *, mean_gap: float = 0.1, centre_share: float = 0.3,
                 leave_open: float = 0.25, hubs: list[Node] | None = None, seed: int | None = None):
        self.ward = ward
        self.presses = presses
        self.mean_gap = mean_gap
        self.centre_share = centre_share
        self.leave_open = leave_open
        self.hubs = hubs or ward.nodes
        self.random = random.Random(ward.seed if seed is None else seed)
        self.raised: dict[str, list[str]] = {n.id: [] for n in ward.nodes}
        self.closures: dict[str, Closure] = {}
        self.unknown = 0
        self.refused_down = 0
        self.errors: list[str] = []
        self._taken = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.stop_event = threading.Event()

    @property
    def done(self) -> int:
        with self._lock:
            return self._taken

    def start(self) -> Workload:
        for node in self.hubs:
            rng = random.Random(self.random.random())
            t = threading.Thread(target=self._resident, args=(node, rng), name=f"test-resident-{node.id}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def join(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"workload threads still running: {alive}"
        assert not self.errors, "\n".join(self.errors[:20])

    def _take(self) -> bool:
        with self._lock:
            if self._taken >= self.presses or self.stop_event.is_set():
                return False
            self._taken += 1
            return True

    # one resident (and the managers) of one hub

    def _resident(self, node: Node, rng: random.Random) -> None:
        open_: dict[str, str] = {}
        buttons = [b[0] for b in BUTTONS]
        released: dict[str, float] = {}
        try:
            while True:
                time.sleep(rng.expovariate(1.0 / self.mean_gap) if self.mean_gap else 0)
                free = [b for b in buttons if b not in open_]
                if not free or (open_ and rng.random() < 0.3):
                    self._close(node, open_, rng.choice(sorted(open_)), rng)
                    continue
                if not self._take():
                    break
                button = rng.choice(free)
                # A press within the debounce time (0.05 s) of the last release is a bounce of that
                # press, not a new one: a hand cannot press twice that fast.
                time.sleep(max(0.0, released.get(button, 0.0) + 0.15 - time.monotonic()))
                reply = node.try_call({"cmd": "press", "button": button, "hold": 0.05})
                released[button] = time.monotonic()
                if reply is not None:
                    assert reply["ok"], reply
                alert_id = self._find_open(node, button, acked=reply is not None)
                if alert_id is None:
                    with self._lock:
                        self.refused_down += 1  # the daemon was down: no alert, as a user would see
                    continue
                with self._lock:
                    self.raised[node.id].append(alert_id)
                open_[button] = alert_id
                if rng.random() > self.leave_open:
                    self._close(node, open_, button, rng)
            for button in sorted(open_):
                self._close(node, open_, button, rng)
        except Exception as e:  # reported by join()
            self.errors.append(f"{node.id}: {type(e).__name__}: {e}")

    def _wait_up(self, node: Node) -> None:
        wait_for(lambda: node.try_call({"cmd": "status"}, timeout=5), 90, interval=0.2,
                 message=f"{node.id} answering again")

    def _find_open(self, node: Node, button: str, *, acked: bool) -> str | None:
        """The open alert of ``button``.  A press the daemon answered must have raised one (it is
        committed before the answer); after an unanswered press, whatever the restarted hub has."""
        deadline = time.monotonic() + 30
        certain = acked
        while time.monotonic() < deadline:
            reply = node.try_call({"cmd": "alerts", "limit": 1000})
            if reply is None:
                self._wait_up(node)
                certain = False
                continue
            mine = [a for a in reply["result"] if a["hub"] == node.id and a["source"] == button]
            if mine:
                if not certain:
                    with self._lock:
                        self.unknown += 1
                return mine[0]["id"]
            if acked and not certain:
                raise AssertionError(f"{node.id}: a press on {button} that the hub answered is not "
                                     f"there after its restart: a lost alert")
            if not acked:
                return None  # the press never reached a running daemon
            time.sleep(0.05)
        raise AssertionError(f"{node.id}: a press on {button} raised no alert within 30 s")

    def _close(self, node: Node, open_: dict[str, str], button: str, rng: random.Random) -> None:
        alert_id = open_.pop(button)
        centre = self.ward.centre is not None and node.index in self.ward.with_mqtt and \
            rng.random() < self.centre_share
        closure = Closure("centre" if centre else "local", rng.choice(OUTCOMES), rng.random() < 0.5)
        if closure.acked:
            self._act(node, {"cmd": "ack", "alert": alert_id}, closure.how, accept=("acknowledged",))
        self._act(node, {"cmd": "resolve", "alert": alert_id, "outcome": closure.outcome}, closure.how,
                  accept=("resolved",))
        with self._lock:
            self.closures[alert_id] = closure

    def _act(self, node: Node, request: dict[str, Any], how: str, accept: tuple[str, ...]) -> None:
        """Apply one command; a command whose reply was lost with a killed daemon is sent again,
        and a refusal then is fine only if the alert already is where the command would take it."""
        retried = False
        while True:
            if how == "centre":
                assert self.ward.centre is not None
                reply = self.ward.centre.command(node.id, request, timeout=180)
                if reply.get("repeated"):
                    retried = True
                result = reply
            else:
                result = node.try_call(request)
                if result is None:
                    self._wait_up(node)
                    retried = True
                    continue
            if result["ok"]:
                return
            code = result["error"]["code"]
            # "replayed": the hub had taken the command in (its id is seen before it runs) when it
            # was killed, before its reply went out; if it did not get to apply it, a new command
            # (a new id) is the centre's way to try again.
            if (retried or code == "replayed") and code in ("illegal_transition", "replayed"):
                state = next(a["state"] for a in node.alerts() if a["id"] == request["alert"])
                if state in accept:
                    return
                if code == "replayed":
                    continue
            raise AssertionError(f"{node.id}: {request} refused: {result}")


# --- what the ward must agree on ---------------------------------------------------------------

def check_ward(ward: Ward, work: Workload, *, neighbours: dict[str, set[str]] | None = None,
               timeout: float = 180.0) -> None:
    """Zero lost alerts and no false ones: every alert a press raised is, with its final state
    and outcome, at its hub, at the centre (once per event id after deduplication) and at every
    neighbour that should hear it; nothing else was raised anywhere.

    ``neighbours`` maps a hub to the hubs that must hear its alerts (default: every other hub)."""
    expected = {aid: hub for hub, ids in work.raised.items() for aid in ids}
    assert len(expected) == sum(len(v) for v in work.raised.values()), "an alert id was handed out twice"
    ward.wait_drained(timeout)
    finals: dict[str, dict[str, Any]] = {}
    for node in ward.nodes:
        local = {a["id"]: a for a in node.alerts() if a["hub"] == node.id and not a["remote"]}
        assert set(local) == set(work.raised[node.id]), (
            f"{node.id}: alerts at the hub differ from the presses: false "
            f"{sorted(set(local) - set(work.raised[node.id]))[:10]}, lost "
            f"{sorted(set(work.raised[node.id]) - set(local))[:10]}")
        for aid, a in local.items():
            closure = work.closures.get(aid)
            assert closure is not None, f"{aid} was never closed by the test"
            assert (a["state"], a["outcome"]) == ("resolved", closure.outcome), (aid, a, closure)
            finals[aid] = a
    centre = ward.centre
    if centre is not None:
        heard_from = {ward.ids[i - 1] for i in ward.with_mqtt} | ({h for h in ward.ids} if ward.with_mesh
                                                                   else set())

        def centre_agrees() -> list[str]:
            wrong = []
            for aid, hub in expected.items():
                if hub not in heard_from:
                    continue
                state, outcome = centre.alert_state(aid), centre.alert_outcome(aid)
                if state != "resolved" or outcome != finals[aid]["outcome"]:
                    wrong.append(f"{aid}: centre says {centre.alert_state(aid)}/{centre.alert_outcome(aid)}")
            return wrong

        wait_for(lambda: not centre_agrees(), timeout, interval=1.0,
                 message=lambda: f"the centre to hold every alert: {centre_agrees()[:10]}")
        raised_at_centre = {e["alert"]["id"] for e in centre.of_type("alert.raised")}
        assert raised_at_centre <= set(expected), f"false alerts at the centre: " \
                                                  f"{sorted(raised_at_centre - set(expected))[:10]}"
        assert not centre.invalid, centre.invalid[:5]
    if neighbours is None:
        neighbours = {h: set(ward.ids) - {h} for h in ward.ids}
    for node in ward.nodes:
        must_hear = {aid for aid, hub in expected.items() if node.id in neighbours.get(hub, ())}

        def missing(node: Node = node, must_hear: set[str] = must_hear) -> list[str]:
            seen = {a["id"]: a for a in node.alerts() if a["remote"]}
            out = [aid for aid in sorted(must_hear)
                   if aid not in seen or seen[aid]["state"] != "resolved"
                   or seen[aid]["outcome"] != finals[aid]["outcome"]]
            false = set(seen) - set(expected)
            assert not false, f"{node.id} lists alerts nobody raised: {sorted(false)[:10]}"
            return out

        wait_for(lambda m=missing: not m(), timeout, interval=1.0,
                 message=lambda m=missing, n=node: f"{n.id} to hear every neighbour's alert: {m()[:10]}")
    copies = sum(centre.copies.values()) if centre else 0
    print(f"ward: {len(expected)} alerts, {work.unknown} presses answered only after a restart, "
          f"{work.refused_down} presses on a dead hub; centre: {len(centre.events) if centre else 0} events, "
          f"{copies - (len(centre.events) if centre else 0)} duplicate copies absorbed; RSS KiB (after "
          f"warm-up, peak, last): {ward.rss_report()}")
