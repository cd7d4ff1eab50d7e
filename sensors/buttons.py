"""Panic buttons: the false-alarm rules between a GPIO line and the hub's alerts.

Per button (``[[buttons]]`` in the config):

* **Debounce.**  A press counts on its first edge, so the siren is never late; the
  line must then stay inactive for ``debounce`` seconds before the press is over.
  Any bounce train therefore gives exactly one press.  (gpiozero's ``bounce_time``
  is ignored on mock pins and unreliable on some factories, hence our own rule.)
* **Hold to confirm.**  With ``hold_time`` > 0 a press must last that long to raise
  an alert; a shorter press is logged, nothing more.
* **Silent gesture.**  ``silent_presses`` short presses within ``silent_window``
  raise a silent (duress) alert: no local siren, everything else as usual.
* **Cancel.**  While this button's alert is open and inside the protocol's cancel
  window, holding the button again for ``cancel_hold`` cancels it.
* **Hold-down.**  Any other press while the alert is open adds an
  ``alert.pressed_again`` event (and with ``repeat_escalates`` raises its level); it
  never raises a second alert.
* **Stuck input.**  Active longer than ``stuck_after`` is a fault, not more alerts.
* **Boot grace.**  A line active at start, or going active within
  ``hardware.boot_grace`` seconds of start, is a fault until released, never an alert.

Decisions are made from edge times, not from when a timer thread wakes up, so a
busy machine delays a decision but never changes it.  Each button keeps its open
alert in memory (read from the store once at start, then kept current from the
hub's events) so that nothing touches the disk before the siren sounds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import Factory

from hubd.config import ButtonConfig, TamperConfig
from hubd.lifecycle import Hub
from hubd.model import Event, TransitionError
from hubd.sensors.gpio import InputLine
from hubd.timers import Handle, Timers

log = logging.getLogger("hubd.sensors.button")

#: Repeated presses escalate an alert at most this often (seconds).
REPEAT_ESCALATION_GAP = 30.0

# What the current press is doing.
_BOOT = "boot"            # active during boot grace: a fault, ignored until released
_NEW = "new"              # may become an alert (hold) or part of the silent gesture
_RAISED = "raised"        # this press raised the alert
_AGAIN_PENDING = "again?"  # pressed while the alert is open and cancellable: cancel if held
_DONE = "done"            # pressed again or cancelled: nothing more to decide


@dataclass
class OpenAlert:
    id: str
    state: str
    raised_at: float


class PanicButton:
    """A panic button on one GPIO line, raising and cancelling its alerts on ``hub``.

    ``timers`` runs the hold, cancel, debounce and stuck deadlines on ``clock``
    (seconds, monotonic); a button given none starts its own.  ``component`` and
    ``source`` name it in health reports and alerts (``button:<name>`` and
    ``<name>`` by default).
    """

    def __init__(self, config: ButtonConfig, hub: Hub, pin_factory: Factory | None = None, *,
                 timers: Timers | None = None, clock: Callable[[], float] | None = None,
                 boot_grace: float | None = None, component: str | None = None,
                 source: str | None = None, can_cancel: bool = True):
        self.config = config
        self.name = config.name
        self.hub = hub
        self.component = component or f"button:{self.name}"
        self.source = source or self.name
        self.can_cancel = can_cancel
        self._own_timers = timers is None
        self.timers = timers or Timers(f"button-{self.name}", clock or time.monotonic)
        self.clock = clock or self.timers.clock
        self.boot_grace = hub.config.hardware.boot_grace if boot_grace is None else boot_grace
        self._lock = threading.RLock()
        self._open_lock = threading.Lock()  # a leaf lock: held by hub listeners, never around hub calls
        self._open: OpenAlert | None = None
        self._pressed = False
        self._raw = False
        self._press_t = 0.0
        self._press_no = 0
        self._role = _DONE
        self._released_at: float | None = None
        self._release_timer: Handle | None = None
        self._hold_timer: Handle | None = None
        self._cancel_timer: Handle | None = None
        self._stuck_timer: Handle | None = None
        self._stuck = False
        self._short: deque[float] = deque(maxlen=max(1, config.silent_presses))
        self._last_repeat_escalation = float("-inf")
        self.short_presses = 0

        self._learn_open_alert()
        hub.subscribe(self._on_event)
        self.started_at = self.clock()
        self.line = InputLine(config.pin, pull_up=config.pull_up, active_high=config.active_high,
                              on_change=self._edge, pin_factory=pin_factory)
        with self._lock:
            self._raw = self.line.is_active
            if self._raw:
                # A press in progress that started before we did: a fault until it is released.
                self._pressed, self._press_t, self._role = True, self.started_at, _BOOT
                self.hub.set_health(self.component, "fault",
                                    "input active at start (stuck, shorted or held): ignored until released")
                self._stuck_timer = self.timers.call_at(self.started_at + config.stuck_after,
                                                        self._stuck_due(self._press_no))
            else:
                self.hub.set_health(self.component, "ok")
        if self._own_timers:
            self.timers.start()

    # --- the open alert, kept in memory -------------------------------------------------

    def _learn_open_alert(self) -> None:
        for alert in self.hub.store.alerts(open_only=True, remote=False, source=self.source, limit=1):
            self._open = OpenAlert(alert.id, str(alert.state), alert.raised_at)

    def _on_event(self, event: Event, envelope: dict[str, Any]) -> None:
        a = envelope.get("alert")
        if not a or a.get("source") != self.source or event.hub != self.hub.hub_id:
            return
        with self._open_lock:
            if a["state"] in ("raised", "acknowledged"):
                self._open = OpenAlert(a["id"], a["state"], a["raised_at"])
            elif self._open is not None and self._open.id == a["id"]:
                self._open = None

    @property
    def open_alert(self) -> OpenAlert | None:
        with self._open_lock:
            return self._open

    # --- edges --------------------------------------------------------------------------

    def _edge(self, active: bool) -> None:
        now = self.clock()
        with self._lock:
            if active == self._raw:
                return
            self._raw = active
            if active:
                if not self._pressed:
                    self._begin(now)
                elif self._released_at is not None and now - self._released_at >= self.config.debounce:
                    # The release was real; its timer has not run yet (busy machine).
                    self._end(self._released_at)
                    self._begin(now)
                else:
                    self._released_at = None  # a bounce: the press goes on
                    _cancel(self._release_timer)
                    self._check_held(now)
            elif self._pressed:
                self._released_at = now
                if self.config.debounce <= 0:
                    self._end(now)
                else:
                    self._release_timer = self.timers.call_at(now + self.config.debounce,
                                                              self._release_due(self._press_no))

    def _begin(self, now: float) -> None:
        self._pressed = True
        self._press_t = now
        self._press_no += 1
        self._released_at = None
        no = self._press_no
        self._stuck_timer = self.timers.call_at(now + self.config.stuck_after, self._stuck_due(no))
        if now - self.started_at < self.boot_grace:
            self._role = _BOOT
            self.hub.set_health(self.component, "fault",
                                f"input went active {now - self.started_at:.1f} s after start, inside the "
                                f"boot grace of {self.boot_grace:g} s: ignored until released")
            return
        alert = self.open_alert
        if alert is not None:
            if self.can_cancel and alert.state == "raised" and self.hub.within_cancel_window(alert):
                self._role = _AGAIN_PENDING
                self._cancel_timer = self.timers.call_at(now + self.config.cancel_hold, self._cancel_due(no))
            else:
                self._role = _DONE
                self._pressed_again(alert)
            return
        self._role = _NEW
        if self.config.hold_time <= 0:
            self._raise(silent=False)
        else:
            self._hold_timer = self.timers.call_at(now + self.config.hold_time, self._hold_due(no))

    def _end(self, at: float) -> None:
        """The press that began at ``_press_t`` ended at ``at`` (debounce already applied)."""
        self._pressed = False
        self._released_at = None
        for t in (self._release_timer, self._hold_timer, self._cancel_timer, self._stuck_timer):
            _cancel(t)
        held = at - self._press_t
        role, self._role = self._role, _DONE
        if self._stuck or role == _BOOT:
            self._stuck = False
            self.hub.set_health(self.component, "ok")
        if role == _NEW:
            if held >= self.config.hold_time:
                self._raise(silent=False)  # held long enough; the hold timer was late
            else:
                self._short_press(held)
        elif role == _AGAIN_PENDING:
            alert = self.open_alert
            if alert is not None:
                if held >= self.config.cancel_hold:
                    self._cancel(alert)
                else:
                    self._pressed_again(alert)

    # --- deadlines (run on the timers thread) --------------------------------------------

    def _release_due(self, no: int) -> Callable[[], None]:
        def due() -> None:
            with self._lock:
                if (self._press_no == no and self._pressed and not self._raw and self._released_at is not None
                        and self.clock() - self._released_at >= self.config.debounce - 1e-6):
                    self._end(self._released_at)
        return due

    def _check_held(self, now: float) -> None:
        """Act on a hold that has lasted long enough, unless the line is inactive right now
        (then the release, or the bounce that resumes the press, decides)."""
        if not self._pressed or self._released_at is not None:
            return
        held = now - self._press_t
        if self._role == _NEW and self.config.hold_time > 0 and held >= self.config.hold_time:
            self._raise(silent=False)
        elif self._role == _AGAIN_PENDING and held >= self.config.cancel_hold:
            self._role = _DONE
            alert = self.open_alert
            if alert is not None:
                self._cancel(alert)

    def _hold_due(self, no: int) -> Callable[[], None]:
        def due() -> None:
            with self._lock:
                if self._press_no == no:
                    self._check_held(self.clock())
        return due

    _cancel_due = _hold_due

    def _stuck_due(self, no: int) -> Callable[[], None]:
        def due() -> None:
            with self._lock:
                if self._press_no == no and self._pressed and self._released_at is None and not self._stuck:
                    self._stuck = True
                    self._role = _DONE if self._role != _BOOT else _BOOT
                    self.hub.set_health(self.component, "fault",
                                        f"input active for over {self.config.stuck_after:g} s (stuck or "
                                        f"shorted?): ignored until released")
        return due

    # --- actions on the hub --------------------------------------------------------------

    def _raise(self, *, silent: bool) -> None:
        self._role = _RAISED
        self._short.clear()
        try:
            alert = self.hub.raise_alert(self.source, self.config.kind, self.config.zone,
                                         actor=self.component, silent=silent)
        except Exception:
            # The siren has sounded already; the store failed. Keep the button working.
            log.exception("%s: could not raise the alert", self.component)
            return
        with self._open_lock:
            if self._open is None or self._open.id != alert.id:
                self._open = OpenAlert(alert.id, str(alert.state), alert.raised_at)

    def _short_press(self, held: float) -> None:
        self.short_presses += 1
        n = self.config.silent_presses
        if n:
            self._short.append(self._press_t)
            if len(self._short) >= n and self._press_t - self._short[0] <= self.config.silent_window:
                log.warning("%s: silent gesture (%d presses)", self.component, n)
                self._raise(silent=True)
                return
        log.info("%s: short press (%.2f s < hold_time %g s): not an alert", self.component, held,
                 self.config.hold_time)

    def _pressed_again(self, alert: OpenAlert) -> None:
        try:
            self.hub.record("alert.pressed_again", actor=self.component, alert_id=alert.id,
                            data={"button": self.name})
            now = self.clock()
            if (self.config.repeat_escalates and alert.state == "raised"
                    and now - self._last_repeat_escalation >= REPEAT_ESCALATION_GAP):
                self._last_repeat_escalation = now
                self.hub.escalate(alert.id, actor=self.component, reason="pressed again")
        except Exception:
            log.exception("%s: could not record the repeated press on %s", self.component, alert.id)

    def _cancel(self, alert: OpenAlert) -> None:
        try:
            self.hub.cancel(alert.id, actor=self.component)
        except TransitionError as e:
            # Acknowledged or out of the window meanwhile: it stays open, and the press is noted.
            log.warning("%s: cannot cancel %s: %s", self.component, alert.id, e)
            self._pressed_again(alert)
        except Exception:
            log.exception("%s: could not cancel %s", self.component, alert.id)

    # --- simulation, status, shutdown ----------------------------------------------------

    def press(self, hold: float = 0.2) -> None:
        """Press the button on a mock pin for ``hold`` seconds (``hubd press``): the same rules apply."""
        self.line.drive(True)
        threading.Event().wait(hold)
        self.line.drive(False)

    def status(self) -> dict[str, Any]:
        alert = self.open_alert
        return {"pin": self.config.pin, "zone": self.config.zone, "kind": self.config.kind,
                "active": self._raw, "open_alert": alert.id if alert else None,
                "short_presses": self.short_presses}

    def close(self) -> None:
        if self._own_timers:
            self.timers.stop()
        self.line.close()


def tamper_input(config: TamperConfig, hub: Hub, pin_factory: Factory | None = None, *,
                 timers: Timers | None = None, clock: Callable[[], float] | None = None,
                 boot_grace: float | None = None) -> PanicButton:
    """The enclosure's tamper switch: an alert of ``config.kind`` (tamper) on opening, with the
    buttons' debounce, hold-down, stuck and boot rules (no hold-to-confirm, no cancel by the switch)."""
    bc = ButtonConfig(name="tamper", pin=config.pin, zone=config.zone, kind=config.kind,
                      pull_up=config.pull_up, active_high=config.active_high, debounce=0.05, hold_time=0.0,
                      stuck_after=3600.0)
    return PanicButton(bc, hub, pin_factory, timers=timers, clock=clock, boot_grace=boot_grace,
                       component="tamper", source="tamper:enclosure", can_cancel=False)


def _cancel(handle: Handle | None) -> None:
    if handle is not None:
        handle.cancel()
