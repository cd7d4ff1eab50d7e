"""The hub's power: mains or battery, the battery's level and time left, the Pi's own supply,
and what the hub does about them.

Readings come from the sensors' adapters (``hubd.sensors.power``: a mains-fail input, a
battery monitor on I2C, the firmware's under-voltage flags) as plain :class:`PowerReading`
values; nothing here touches hardware.

:class:`PowerRules` turns readings into changes, with no I/O and on a monotonic clock that
the caller passes in:

* **Mains or battery.**  From the mains-fail input when one is fitted, else from the
  battery's current (discharging means on battery).  A change counts only once it has held
  for the debounce time: a flicker is not an outage.
* **Battery level.**  A percentage of the voltage between ``empty_voltage`` and
  ``full_voltage``, from the median of the last readings, so that one sag under load
  neither raises an alarm nor shuts the hub down.
* **Low, critical.**  Only while on battery (on mains a low battery is charging):
  ``low_battery`` reports ``power.battery_low`` once per outage, ``critical_battery`` (or
  ``shutdown_after`` seconds on battery) starts the orderly shutdown.
* **Time left** until that shutdown: from the current drawn and the capacity when both are
  known, else from how fast the level has fallen.
* **Under-voltage** of the Pi's own supply, cleared only after it has stayed away a while.

:class:`PowerSupervisor` applies the changes on the hub: each is an event for the centre
(``power.on_battery``, ``power.mains_restored``, ``power.battery_low``, ``power.battery_ok``,
``power.undervoltage``, ``power.undervoltage_cleared``, ``power.shutdown``,
``power.shutdown_failed``, ``power.restored``); a low battery raises an alert; a critical one
sends a last status, flushes the store and runs the shutdown command.  The shutdown leaves a
record in the store, so the next start says how long the hub was down, and raises nothing.
"""

from __future__ import annotations

import enum
import logging
import shlex
import statistics
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hubd.clock import Clock
from hubd.config import Config, PowerConfig
from hubd.lifecycle import Hub
from hubd.model import AlertKind, Event

log = logging.getLogger("hubd.power")

#: Without a mains input, the battery current must say "on battery" (or "back") this long.
CURRENT_DEBOUNCE = 10.0
#: Battery levels are the median of this many readings.
LEVEL_READINGS = 5
#: A low battery is over (``power.battery_ok``) once the level is this many points above low.
LOW_HYSTERESIS = 5.0
#: The Pi's under-voltage is over once the firmware has not reported it for this long.
UNDERVOLTAGE_CLEAR_AFTER = 30.0
#: The time left from the fall of the level needs this span of readings, and this fall.
SLOPE_WINDOW = 900.0
SLOPE_MIN_SPAN = 120.0
SLOPE_MIN_FALL = 0.5
#: After a shutdown command failed, the next attempt waits this long.
SHUTDOWN_RETRY = 60.0
#: The shutdown command is given this long to return.
SHUTDOWN_COMMAND_TIMEOUT = 60.0
#: "Down for" needs a synchronised clock (a Pi without RTC boots with its last time); after
#: this long without one the restart is reported without it.
RESTORED_CLOCK_WAIT = 600.0

#: Source and zone of the low-battery alert.
ALARM_SOURCE = "power:battery"
ACTOR = "power"


class PowerState(enum.StrEnum):
    """The hub's power in one word (the ``state`` of the status's ``power`` object)."""

    UNKNOWN = "unknown"  # no source says (yet)
    MAINS = "mains"
    ON_BATTERY = "on_battery"
    BATTERY_LOW = "battery_low"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class PowerReading:
    """One look at the power sources; None where a source is not fitted or could not be read."""

    #: The mains-fail input is active (the mains has failed).
    mains_failed: bool | None = None
    #: Battery voltage, volts.
    battery_voltage: float | None = None
    #: Battery current, amperes: positive while charging, negative while it powers the hub.
    battery_current: float | None = None
    #: The Pi's firmware reports under-voltage now.
    undervoltage: bool | None = None
    #: The firmware's flags that are set now (``undervoltage``, ``freq_capped``, ...).
    throttled: tuple[str, ...] = ()


@dataclass(frozen=True)
class PowerChange:
    """Something the centre should hear of: an event ``type`` with its ``data``."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


def battery_percent(voltage: float, empty: float, full: float) -> float:
    """The battery level, 0-100 %, read linearly between ``empty`` and ``full`` volts (as UPS
    boards do: rough at the ends of a Li-ion curve, steady in between)."""
    return max(0.0, min(100.0, (voltage - empty) / (full - empty) * 100.0))


class _Debounced:
    """A boolean that changes only once a new raw value has held for ``hold`` seconds."""

    def __init__(self, hold: float):
        self.hold = hold
        self.value: bool | None = None
        self._candidate: tuple[bool, float] | None = None

    def update(self, raw: bool | None, now: float) -> bool:
        """Feed a raw value; True when the debounced value changed."""
        if raw is None or raw == self.value:
            self._candidate = None
            return False
        if self._candidate is None or self._candidate[0] != raw:
            self._candidate = (raw, now)
        if now - self._candidate[1] >= self.hold:
            self.value, self._candidate = raw, None
            return True
        return False

    def due(self) -> float | None:
        """When a pending change would be decided (monotonic), if one is pending."""
        return None if self._candidate is None else self._candidate[1] + self.hold


class PowerRules:
    """Readings in, changes out: the power rules, with no I/O (``now`` is monotonic seconds)."""

    def __init__(self, config: PowerConfig):
        self.config = config
        hold = config.mains.debounce if config.mains else CURRENT_DEBOUNCE
        self._on_battery = _Debounced(hold)
        self._volts: deque[float] = deque(maxlen=LEVEL_READINGS)
        self._levels: deque[tuple[float, float]] = deque()  # (now, level) while on battery
        self.current: float | None = None
        self.undervoltage: bool | None = None
        self._undervoltage_off_since: float | None = None
        self.throttled: tuple[str, ...] = ()
        self.low = False
        self.shutting_down = False
        self._shutdown_retry_at = float("-inf")
        self._on_battery_since: float | None = None
        self.state = PowerState.UNKNOWN
        self.state_since: float | None = None

    # --- reading ------------------------------------------------------------------------------

    @property
    def on_battery(self) -> bool | None:
        return self._on_battery.value

    @property
    def level(self) -> float | None:
        """Battery percent (median of the last readings), None without a battery monitor."""
        b = self.config.battery
        if b is None or not self._volts:
            return None
        return round(battery_percent(statistics.median(self._volts), b.empty_voltage, b.full_voltage), 1)

    @property
    def voltage(self) -> float | None:
        return round(statistics.median(self._volts), 3) if self._volts else None

    def on_battery_for(self, now: float) -> float | None:
        return None if self._on_battery_since is None else now - self._on_battery_since

    def time_left(self, now: float) -> float | None:
        """Seconds until the hub shuts itself down (estimated), None when unknown or on mains."""
        if not self.on_battery or not self.config.shutdown:
            return None
        estimates = []
        level, critical = self.level, self.config.critical_battery
        capacity = self.config.battery.capacity_mah if self.config.battery else 0.0
        if level is not None:
            if capacity and self.current is not None and self.current < 0:
                amp_hours = capacity / 1000 * max(0.0, level - critical) / 100
                estimates.append(amp_hours / -self.current * 3600)
            elif self._levels:
                t0, first = self._levels[0]
                span, fall = now - t0, first - level
                if span >= SLOPE_MIN_SPAN and fall >= SLOPE_MIN_FALL:
                    estimates.append(max(0.0, level - critical) / (fall / span))
        if self.config.shutdown_after and self._on_battery_since is not None:
            estimates.append(self.config.shutdown_after - (now - self._on_battery_since))
        return max(0.0, min(estimates)) if estimates else None

    def due(self) -> float | None:
        """When a pending mains change would be decided (monotonic), if one is pending."""
        return self._on_battery.due()

    # --- the rules ----------------------------------------------------------------------------

    def update(self, reading: PowerReading, now: float) -> list[PowerChange]:
        changes: list[PowerChange] = []
        if reading.battery_voltage is not None:
            self._volts.append(reading.battery_voltage)
        self.current = reading.battery_current
        self.throttled = reading.throttled
        was = self._on_battery.value
        if self._on_battery.update(self._raw_on_battery(reading), now):
            changes += self._mains_changed(was, now)
        if self.on_battery and self.level is not None:
            self._levels.append((now, self.level))
            while self._levels and self._levels[0][0] < now - SLOPE_WINDOW:
                self._levels.popleft()
        changes += self._battery_rules(now)
        changes += self._undervoltage(reading.undervoltage, now)
        self._track_state(now)
        return changes

    def shutdown_failed(self, now: float) -> None:
        """The shutdown command failed: the hub runs on, and tries again a while later."""
        self.shutting_down = False
        self._shutdown_retry_at = now + SHUTDOWN_RETRY
        self._track_state(now)

    def _raw_on_battery(self, reading: PowerReading) -> bool | None:
        if self.config.mains is not None:
            return reading.mains_failed
        if self.config.battery is not None and reading.battery_current is not None:
            return reading.battery_current < -self.config.battery.discharge_threshold
        return None

    def _mains_changed(self, was: bool | None, now: float) -> list[PowerChange]:
        if self.on_battery:
            self._on_battery_since = now
            self._levels.clear()
            data: dict[str, Any] = {"battery": self.level, "voltage": self.voltage}
            if was is None:
                data["at_start"] = True
            return [PowerChange("power.on_battery", data)]
        on_for = self.on_battery_for(now)
        self._on_battery_since = None
        self._levels.clear()
        self.low = False
        if was is None:
            return []  # the hub starts on mains: nothing happened
        return [PowerChange("power.mains_restored", {"battery": self.level,
                                                     "on_battery_for": None if on_for is None
                                                     else round(on_for, 1)})]

    def _battery_rules(self, now: float) -> list[PowerChange]:
        level, cfg = self.level, self.config
        if not self.on_battery or self.shutting_down:
            return []
        changes = []
        if level is not None and not self.low and level <= cfg.low_battery:
            self.low = True
            changes.append(PowerChange("power.battery_low", {
                "battery": level, "low_at": cfg.low_battery, "time_left": _rounded(self.time_left(now))}))
        elif level is not None and self.low and level >= cfg.low_battery + LOW_HYSTERESIS:
            self.low = False
            changes.append(PowerChange("power.battery_ok", {"battery": level}))
        if cfg.shutdown and now >= self._shutdown_retry_at:
            reason = None
            if level is not None and level <= cfg.critical_battery:
                reason = f"battery {level:.0f} % (critical at {cfg.critical_battery:g} %)"
            elif cfg.shutdown_after and now - (self._on_battery_since or now) >= cfg.shutdown_after:
                reason = f"on battery for {format_duration(cfg.shutdown_after)}"
            if reason is not None:
                self.shutting_down = True
                message = "powering down" + (f", battery {level:.0f} %" if level is not None else "")
                changes.append(PowerChange("power.shutdown", {"battery": level, "reason": reason,
                                                              "message": message}))
        return changes

    def _undervoltage(self, now_flag: bool | None, now: float) -> list[PowerChange]:
        if now_flag is None:
            return []
        if now_flag:
            self._undervoltage_off_since = None
            if not self.undervoltage:
                self.undervoltage = True
                return [PowerChange("power.undervoltage", {"flags": list(self.throttled)})]
            return []
        if self.undervoltage is None:
            self.undervoltage = False
        elif self.undervoltage:
            if self._undervoltage_off_since is None:
                self._undervoltage_off_since = now
            if now - self._undervoltage_off_since >= UNDERVOLTAGE_CLEAR_AFTER:
                self.undervoltage = False
                self._undervoltage_off_since = None
                return [PowerChange("power.undervoltage_cleared", {})]
        return []

    def _track_state(self, now: float) -> None:
        if self.shutting_down:
            state = PowerState.SHUTTING_DOWN
        elif self.on_battery:
            state = PowerState.BATTERY_LOW if self.low else PowerState.ON_BATTERY
        elif self.on_battery is False:
            state = PowerState.MAINS
        else:
            state = PowerState.UNKNOWN
        if state != self.state or self.state_since is None:
            self.state, self.state_since = state, now


def _rounded(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds)


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '1 h 20 min', '2 d 3 h'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def describe(power: Mapping[str, Any]) -> str:
    """One line for people (``hubd status``) from the status's ``power`` object."""
    state = power.get("state")
    parts = {"mains": "mains power", "on_battery": "ON BATTERY", "battery_low": "ON BATTERY, LOW",
             "shutting_down": "POWERING DOWN", "unknown": "power unknown"}
    text = parts.get(str(state), str(state))
    if power.get("battery") is not None:
        text += f", battery {power['battery']:.0f} %"
    if power.get("time_left") is not None and state in ("on_battery", "battery_low"):
        text += f", about {format_duration(power['time_left'])} left"
    if power.get("undervoltage"):
        text += "; the Pi's supply is UNDER-VOLTAGE"
    return text


#: Runs a shutdown command (argv) and returns what went wrong, or None.
CommandRunner = Callable[[Sequence[str]], str | None]


def run_command(argv: Sequence[str]) -> str | None:
    """Run ``argv``; None if it exited 0, else why not (for the log and the event)."""
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SHUTDOWN_COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if done.returncode != 0:
        return f"exit status {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}"
    return None


class PowerSupervisor:
    """Applies the power rules on the hub (see the module's docstring).

    ``update(reading)`` is called by the power sensors' thread; it may block for the whole
    shutdown sequence (at most ``shutdown_grace`` plus the command's time), never a hub thread.
    ``on_change`` callables run after each reading's changes are recorded (before the shutdown
    waits for the broker): the daemon gives the MQTT link's "publish the status now", so the retained
    status says the power state at once, and the last one says "shutting_down".
    """

    def __init__(self, config: Config, hub: Hub, *, clock: Clock,
                 run: CommandRunner = run_command, clock_synced: Callable[[], bool] | None = None):
        assert config.power is not None
        self.config = config.power
        self.hub = hub
        self.store = hub.store
        self.clock = clock
        self.clock_synced = clock_synced or hub.clock_synced
        self.rules = PowerRules(config.power)
        self._run = run
        self._lock = threading.Lock()
        self._restored: dict[str, Any] | None = None
        self._started_at = clock.monotonic()
        self.on_change: list[Callable[[], None]] = []

    # --- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the record of the last orderly shutdown, if the hub is back from one."""
        try:
            self._restored = self.store.take_power_down()
        except Exception:  # a store that refuses writes must not keep the hub from starting
            log.exception("could not read the record of the last power-down")
        self._report_restored()

    def update(self, reading: PowerReading) -> None:
        with self._lock:
            changes = self.rules.update(reading, self.clock.monotonic())
        self._report_restored()
        recorded = [(change, self._apply(change)) for change in changes]
        if changes:
            for hook in self.on_change:
                try:
                    hook()
                except Exception:
                    log.exception("after %s", ", ".join(c.type for c in changes))
        for change, event in recorded:
            if change.type == "power.shutdown":
                self._shut_down(change, event.outbox if event is not None else ())

    def due(self) -> float | None:
        """When the rules want the next reading (monotonic), if sooner than the usual poll."""
        with self._lock:
            return self.rules.due()

    def status(self) -> dict[str, Any]:
        """The ``power`` object of the status (``hubd status``, the page, the MQTT status)."""
        now_mono, now = self.clock.monotonic(), self.clock.time()
        with self._lock:
            r = self.rules
            since = None if r.state_since is None else round(now - (now_mono - r.state_since), 3)
            return {
                "state": str(r.state), "since": since,
                "mains": None if r.on_battery is None else not r.on_battery,
                "battery": r.level, "voltage": r.voltage,
                "current": None if r.current is None else round(r.current, 3),
                "time_left": _rounded(r.time_left(now_mono)),
                "undervoltage": r.undervoltage, "throttled": list(r.throttled),
                "low_at": self.config.low_battery, "critical_at": self.config.critical_battery,
            }

    # --- acting on the hub --------------------------------------------------------------------

    def _apply(self, change: PowerChange) -> Event | None:
        """Record a change as an event (returned) and raise the alarm it calls for."""
        level = "critical" if change.type == "power.shutdown" else "warning"
        getattr(log, level)("%s %s", change.type, change.data)
        try:
            event: Event | None = self.hub.record(change.type, actor=ACTOR, data=change.data)
        except Exception:
            log.exception("could not record %s", change.type)
            event = None
        if change.type == "power.battery_low" and self.config.low_alarm:
            self._raise_alarm(change)
        return event

    def _raise_alarm(self, change: PowerChange) -> None:
        if self.store.alerts(open_only=True, remote=False, source=ALARM_SOURCE, limit=1):
            return  # one alarm until a manager closes it, however often the battery runs low
        try:
            self.hub.raise_alert(ALARM_SOURCE, AlertKind(self.config.alarm_kind), "power", actor=ACTOR,
                                 extra={"reason": "battery low", "battery": change.data.get("battery")})
        except Exception:
            log.exception("could not raise the low-battery alarm")

    def _shut_down(self, change: PowerChange, outbox: Sequence[tuple[str, int, int]]) -> None:
        """The event confirmed by the broker (within the grace; the last status has gone with
        ``on_change``), the store flushed with a record of the shutdown, then the command."""
        rows = [row for dest, row, _ in outbox if dest == "mqtt"]
        deadline = self.clock.monotonic() + self.config.shutdown_grace
        while rows and not self.store.delivered(rows) and self.clock.monotonic() < deadline:
            threading.Event().wait(0.1)
        record = {"time": self.clock.time(), "battery": change.data.get("battery"),
                  "reason": change.data.get("reason"), "clock_synced": self.clock_synced()}
        try:
            self.store.save_power_down(record)
            self.store.flush()
        except Exception:
            log.exception("could not flush the store before shutting down; shutting down all the same")
        argv = shlex.split(self.config.shutdown_command)
        log.critical("shutting down: %s (%s)", change.data.get("reason"), " ".join(argv))
        error = self._run(argv)
        if error is None:
            return  # systemd stops hubd (a clean stop) and powers the machine off
        log.critical("the shutdown command %r failed: %s; running on, trying again in %.0f s",
                     self.config.shutdown_command, error, SHUTDOWN_RETRY)
        self.store.take_power_down()
        with self._lock:
            self.rules.shutdown_failed(self.clock.monotonic())
        try:
            self.hub.record("power.shutdown_failed", actor=ACTOR,
                            data={"command": self.config.shutdown_command, "error": error})
        except Exception:
            log.exception("could not record the failed shutdown")

    def _report_restored(self) -> None:
        """``power.restored`` with how long the hub was down, once the clock can say it."""
        record = self._restored
        if record is None:
            return
        # Both ends need a synchronised clock (a Pi without RTC boots with its last time).
        synced = bool(record.get("clock_synced", True)) and self.clock_synced()
        if (not synced and record.get("clock_synced", True)
                and self.clock.monotonic() - self._started_at < RESTORED_CLOCK_WAIT):
            return  # NTP may come yet
        self._restored = None
        down_for = round(self.clock.time() - record["time"], 1) if synced else None
        data = {"down_for": down_for, "shutdown_at": record["time"],
                "battery_at_shutdown": record.get("battery"), "reason": record.get("reason")}
        log.warning("back after an orderly power-down%s", f" of {format_duration(down_for)}"
                    if down_for is not None else " (how long is unknown: the clock is not synchronised)")
        try:
            self.hub.record("power.restored", actor=ACTOR, data=data)
        except Exception:
            log.exception("could not record power.restored")
