"""Mesh benchmark: frame size and LongFast airtime, codec speed, delivery on a lossy chain.

Baselines measured in the same run: the same alert as Meshtastic's Detection-Sensor
text and as the MQTT JSON envelope (bytes, airtime); a bare HMAC-SHA256 over the same
bytes (codec speed); the firmware's own flooding with hop limit 3 sent through the bare
``meshtastic`` library (delivery down the chain).

Run: ``python bench/bench_mesh.py``.  The simulated air runs at 1/50 of real airtime;
times on the chain are seconds of that simulation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from benchlib import report

from hubd.model import Alert, AlertKind, Event
from hubd.radio import frames
from hubd.radio.frames import Frame, FrameType
from hubd.radio.mesh_airtime import packet_airtime

KEY = bytes(range(32))
NODE = 0x1234ABCD
CHAIN = 10
BOUND = 60.0


def row(figure: str, value: float, unit: str, target: str, baseline: float | None) -> dict:
    ratio = round(value / baseline, 3) if baseline else None
    print(f"{figure:<58} {value:>10.3f} {unit:<8} (target {target}; baseline {baseline}, ratio {ratio})")
    return {"figure": figure, "value": round(value, 4), "unit": unit, "target": target, "ratio": ratio,
            "baseline": None if baseline is None else round(baseline, 4)}


def sizes() -> list[dict]:
    now = int(time.time())
    alert = Alert(id="hub-1:12", hub="hub-1", seq=12, kind=AlertKind.PANIC, source="gate", zone="Market gate",
                  raised_at=now, updated_at=now)
    frame = Frame(FrameType.RAISED, "hub-1", now, seq=12, kind="panic", zone="Market gate")
    ours = frames.encode(frame, KEY, NODE)
    # What the Detection Sensor module sends: "<sensor name> detected" (name at most 20 chars),
    # unauthenticated, with no id, time or kind the receiver could use.
    detection = b"Market gate panic detected"
    envelope = Event(id="hub-1:e57", type="alert.raised", time=now, hub="hub-1", actor="gate",
                     alert_id=alert.id).envelope("ward-7", alert)
    mqtt = json.dumps(envelope, separators=(",", ":")).encode()
    return [
        row("alert frame bytes (tag included)", len(ours), "bytes", "<= 40", len(detection)),
        row("alert frame LongFast airtime", packet_airtime(len(ours)), "s", "<= 0.8",
            packet_airtime(len(detection), 10)),
        row("detection-sensor text bytes (unauthenticated)", len(detection), "bytes", "-", len(ours)),
        row("MQTT JSON envelope bytes", len(mqtt), "bytes", f"> {frames.MAX_PAYLOAD} = no fit in 1 packet",
            len(ours)),
        row("MQTT JSON envelope LongFast airtime (if it fit)", packet_airtime(len(mqtt)), "s", "-",
            packet_airtime(len(ours))),
    ]


def codec_speed() -> list[dict]:
    frame = Frame(FrameType.RAISED, "hub-1", int(time.time()), seq=12, kind="panic", zone="Market gate")
    data = frames.encode(frame, KEY, NODE)
    n = 20_000
    t = time.perf_counter()
    for _ in range(n):
        hmac.new(KEY, data, hashlib.sha256).digest()
    bare = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        frames.decode(data, KEY, NODE)
    dec = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        frames.encode(frame, KEY, NODE)
    enc = n / (time.perf_counter() - t)
    return [row("decode+verify frames per second", dec, "1/s", "> 1000 (radio: ~2/s)", bare),
            row("encode+sign frames per second", enc, "1/s", "> 1000", bare)]


def firmware_flooding(loss: float, seed: int) -> float:
    """Fraction of the chain a bare-library broadcast reaches by the firmware's flooding alone."""
    from meshtastic.tcp_interface import TCPInterface

    from hubd.radio.meshsim import SimAir

    air = SimAir(seed=seed)
    nodes = [air.add_node(hop_limit=3) for _ in range(CHAIN)]
    for a, b in zip(nodes, nodes[1:], strict=False):
        air.link(a, b, loss)
    air.start()
    try:
        iface = TCPInterface("127.0.0.1", portNumber=nodes[0].port, timeout=10)
        pkt = iface.sendData(b"x" * 37, portNum=287, wantAck=True)
        time.sleep(2.0)
        iface.close()
        reached = sum(1 for n in nodes[1:] if n.has_heard(nodes[0].num, pkt.id))
        return reached / (CHAIN - 1)
    finally:
        air.stop()


def chain(loss: float, seed: int) -> tuple[float, float]:
    """(delivery ratio within BOUND, seconds until every hub knew every alert or BOUND)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from mesh_lab import Lab

    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp), seed=seed)
        hubs = lab.chain(CHAIN, loss=loss)
        lab.start()
        try:
            deadline = time.monotonic() + 40
            ends = (0, CHAIN - 1)
            while time.monotonic() < deadline and not all(
                    len(h.link.expected_holders()) == (1 if i in ends else 2) for i, h in enumerate(hubs)):
                time.sleep(0.1)
            start = time.monotonic()
            alerts = [hubs[0].raise_alert(), hubs[CHAIN // 2].raise_alert("fire"),
                      hubs[-1].raise_alert("medical")]
            want = [(h, a.id) for h in hubs for a in alerts if a.hub != h.id]
            while time.monotonic() - start < BOUND:
                got = sum(1 for h, a in want if h.store.get_alert(a))
                if got == len(want):
                    break
                time.sleep(0.05)
            took = time.monotonic() - start
            got = sum(1 for h, a in want if h.store.get_alert(a))
            return got / len(want), took
        finally:
            lab.stop()


def delivery() -> list[dict]:
    rows = []
    for loss in (0.0, 0.1, 0.2, 0.3):
        ratio, took = chain(loss, seed=int(loss * 100) + 1)
        bare = firmware_flooding(loss, seed=int(loss * 100) + 1)
        rows.append(row(f"chain of {CHAIN}, loss {loss:.0%}/link: delivery ratio (vs firmware flooding)",
                        ratio, "fraction", "1.0", bare))
        rows.append(row(f"chain of {CHAIN}, loss {loss:.0%}/link: time to all hubs (sim)", took, "s",
                        f"< {BOUND:.0f}", None))
    return rows


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("meshtastic").setLevel(logging.CRITICAL)
    rows = sizes() + codec_speed() + delivery()
    report("mesh", rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
