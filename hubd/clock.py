"""Time for the hub: one clock interface, and "is the system clock synchronised?".

Every part that needs time takes a :class:`Clock`: ``time()`` is wall time, for what is
shown and sent (event times, envelopes); ``monotonic()`` is for every timer and every
duration (escalation, cancel windows, siren max-on, supervision, retries), so that a
wall-clock jump in either direction changes only the displayed times.  Tests pass their
own clock; the daemon passes :data:`SYSTEM_CLOCK`.

A hub without a real-time clock boots with the time it had at shutdown (or 1970) and
keeps it until the network brings NTP.  Until then its timestamps are marked
unsynchronised (the ``clock_synced`` flag of every event), and nothing orders events by
wall time: the store's ``events.seq`` does that.

Sources, first answer wins:

1. ``HUBD_CLOCK_SYNCED=1`` or ``0`` in the environment: for a clock set by other means
   (a GPS receiver, an RTC that is known good) and for tests.
2. ``/run/systemd/timesync/synchronized``, which systemd-timesyncd (Raspberry Pi OS's
   default) creates once it has set the clock.
3. The kernel's NTP state through ``adjtimex(2)`` in read-only mode, which chrony and
   timesyncd both keep; under the systemd sandbox (``SystemCallFilter=~@privileged``)
   this call is refused and counts as "not known to be synchronised".

A clock reading earlier than :data:`EARLIEST` is never synchronised, whatever the
sources say.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger("hubd.clock")


class Clock(Protocol):
    """Wall time for display and the wire, monotonic time for timers and durations."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's clocks (``time.time`` and ``time.monotonic``)."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")

#: No correct clock reads earlier than this (2025-01-01 UTC): this hubd did not exist.
EARLIEST = 1735689600.0

_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h); only `status` is read, the tail is padded generously.
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 32),
    ]


def kernel_synced() -> bool | None:
    """The kernel's NTP status: True/False, or None when it cannot be read."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        tx = _Timex()  # modes = 0: read only, needs no privilege
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None  # e.g. EPERM from a seccomp filter
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


def check(now: float | None = None) -> tuple[bool, str]:
    """Whether the clock is synchronised, and how that was decided (uncached)."""
    now = time.time() if now is None else now
    if now < EARLIEST:
        return False, f"the clock reads {time.strftime('%Y-%m-%d', time.gmtime(now))}, before this software"
    forced = os.environ.get("HUBD_CLOCK_SYNCED", "").strip().lower()
    if forced in ("1", "yes", "true"):
        return True, "HUBD_CLOCK_SYNCED=1"
    if forced in ("0", "no", "false"):
        return False, "HUBD_CLOCK_SYNCED=0"
    if TIMESYNC_FLAG.exists():
        return True, "systemd-timesyncd has synchronised the clock"
    kernel = kernel_synced()
    if kernel:
        return True, "the kernel's NTP status is synchronised"
    if kernel is None:
        return False, "no time service reports synchronisation (adjtimex not readable)"
    return False, "the kernel's NTP status is unsynchronised (no NTP server reached yet?)"


class ClockWatch:
    """A cached answer to "is the clock synchronised?", cheap enough to ask per event.

    Calling the instance returns a bool; the answer is refreshed at most every
    ``ttl`` seconds and a change is logged."""

    def __init__(self, ttl: float = 5.0):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._checked = -1e18
        self._synced: bool | None = None
        self.reason = ""

    def __call__(self) -> bool:
        mono = time.monotonic()
        with self._lock:
            if mono - self._checked >= self.ttl:
                synced, self.reason = check()
                if synced != self._synced:
                    if synced:
                        log.info("clock synchronised (%s)", self.reason)
                    else:
                        log.warning("clock not synchronised: %s; timestamps are marked unsynchronised",
                                    self.reason)
                self._synced = synced
                self._checked = mono
            return bool(self._synced)
