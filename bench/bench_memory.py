"""Memory and ``/api/status`` over many alerts: the press soak of tests/system/soak.py (the
whole daemon, simulated button and siren, MQTT to a real mosquitto, the page on; each press's
alert resolved at once), 10,000 presses after 1,000 of warm-up by default.

With ``--trace`` it also compares tracemalloc snapshots taken before and after the presses
and prints what grew, by allocation site: how growth is found.  (Tracing makes presses
about three times slower.)

Run: ``python bench/bench_memory.py [--presses N] [--warm-up N] [--trace]``; the last line
is JSON for bench/run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "system"))

from benchlib import report  # noqa: E402
from soak import presses  # noqa: E402
from support import Mosquitto  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--presses", type=int, default=10_000)
    parser.add_argument("--warm-up", type=int, default=1000)
    parser.add_argument("--trace", action="store_true", help="compare tracemalloc snapshots")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker").start()
        try:
            r = presses(broker.port, args.presses, args.warm_up, trace=args.trace)
        finally:
            broker.stop()

    for s in r["samples"]:
        print(f"  after {s['presses']:>6} presses: RSS {s['rss_kb'] / 1024:.1f} MB, "
              f"{s['blocks']} Python blocks, {s['timers']} timers queued")
    if r["grew"]:
        print(f"what grew over {args.presses} presses (tracemalloc, by allocation site):")
        for g in r["grew"]:
            print(f"  {g['kib']:+9.1f} KiB {g['blocks']:+7d} blocks")
            for line in g["where"]:
                print(f"      {line}")
    before, after = r["before"], r["after"]
    rss0, rss1 = before["rss_kb"] / 1024, after["rss_kb"] / 1024
    p0, p1 = before["status"]["p50_ms"], after["status"]["p50_ms"]
    rows = [
        {"figure": f"RSS after {args.warm_up} presses", "value": round(rss0, 1), "unit": "MB"},
        {"figure": f"RSS after {args.presses} more", "value": round(rss1, 1), "unit": "MB",
         "target": "<= +2 MB", "baseline": round(rss0, 1), "ratio": round(rss1 / rss0, 3)},
        {"figure": f"Python blocks grown over {args.presses} presses",
         "value": after["blocks"] - before["blocks"], "unit": "blocks", "target": "<= 5000"},
        {"figure": "/api/status p50 after warm-up", "value": p0, "unit": "ms"},
        {"figure": f"/api/status p50 after {args.presses} more", "value": p1, "unit": "ms",
         "target": "<= 1.25 x", "baseline": p0, "ratio": round(p1 / p0, 2)},
        {"figure": "presses per second", "value": round(args.presses / r["seconds"], 1), "unit": "/s"},
    ]
    report("memory", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
