"""What the running centre can be asked, by the API and by the command line alike.

Each operation takes plain values and ``by`` (who asked: ``operator:olga``, ``cli:root``),
and returns plain JSON-able values or raises ``OpError`` with a code the API maps to an
HTTP status. ``execute`` is the control socket's entry: one JSON request, one reply in the
hub's command-path shape (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hubd.centre import queries, registry
from hubd.centre.commands import CommandError
from hubd.centre.registry import HubRecord, RegistryError
from hubd.centre.supervision import open_alarms
from hubd.contract import MQTT_COMMANDS, parse_alert_id

if TYPE_CHECKING:
    from hubd.centre.service import Centre

log = logging.getLogger("hubd.centre.operations")

OUTCOMES = ("genuine", "false_alarm", "test")
#: Longest a caller may wait for a hub's reply.
MAX_WAIT = 60.0


class OpError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise OpError("bad_request", f"{name}: expected a number from {lo:g} to {hi:g}")
    return float(value)


class Operations:
    def __init__(self, centre: Centre):
        self.centre = centre
        self.store = centre.store

    # -- reading ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        c = self.centre
        health = c.supervisor.health()
        states: dict[str, int] = {}
        for h in health.values():
            states[h["state"]] = states.get(h["state"], 0) + 1
        stats = c.ingest.stats
        return {
            "name": c.config.centre.name, "uptime": round(c.clock.time() - c.started_at, 1),
            "store": c.store.where, "broker": f"{c.config.mqtt.host}:{c.config.mqtt.port}",
            "connected": c.ingest.connected, "backlog": c.ingest.backlog,
            "supervision_paused": c.supervisor.paused, "hubs": states,
            "ingest": {"rate": round(stats.rate(c.clock.monotonic()), 2), "stored": stats.stored,
                       "duplicates": stats.duplicates, "quarantined": sum(stats.quarantined.values()),
                       "lag_p50": stats.lag.quantile(0.5), "lag_p99": stats.lag.quantile(0.99)},
            **queries.counts(self.store),
        }

    def hubs(self) -> list[dict[str, Any]]:
        health = self.centre.supervisor.health()
        out = []
        for h in queries.hubs(self.store):
            h["health"] = health.get(h["id"], {"state": "waiting"})
            h["skew_flagged"] = h["clock_skew"] is not None and \
                abs(h["clock_skew"]) > self.centre.config.supervision.skew_warn
            out.append(h)
        return out

    def hub(self, hub_id: str) -> dict[str, Any]:
        found = next((h for h in self.hubs() if h["id"] == hub_id), None)
        if found is None:
            raise OpError("not_found", f"no hub {hub_id!r} is enrolled")
        found["alarms"] = open_alarms(self.store, hub_id, include_closed=True, limit=50)
        found["commands"] = self.centre.commands.list(hub=hub_id, limit=20)
        return found

    def alert(self, alert_id: str) -> dict[str, Any]:
        found = queries.alert(self.store, alert_id)
        if found is None:
            raise OpError("not_found", f"no alert {alert_id!r} at the centre")
        return found

    # -- acting ----------------------------------------------------------------------------------

    def command(self, hub_id: str, cmd: str, args: dict[str, Any], by: str,
                wait: float = 0) -> dict[str, Any]:
        """Send ``cmd`` to a hub; with ``wait``, wait that long for its reply."""
        hub = registry.get(self.store, hub_id)
        if hub is None:
            raise OpError("not_found", f"no hub {hub_id!r} is enrolled")
        try:
            sent = self.centre.commands.send(hub, cmd, args, by)
        except CommandError as e:
            raise OpError(e.code, e.message) from None
        if wait > 0:
            return self.centre.commands.wait(sent["id"], min(wait, MAX_WAIT)) or sent
        return sent

    def act_on_alert(self, alert_id: str, cmd: str, by: str, *, outcome: str | None = None,
                     wait: float = 0) -> dict[str, Any]:
        """ack, resolve, cancel or silence an alert, on the hub that raised it."""
        parsed = parse_alert_id(alert_id)
        if parsed is None:
            raise OpError("bad_request", f"{alert_id!r} is not an alert id (<hub>:<number>)")
        args: dict[str, Any] = {"alert": alert_id}
        if cmd == "resolve":
            if outcome not in OUTCOMES:
                raise OpError("bad_request", f"outcome: expected one of {', '.join(OUTCOMES)}")
            args["outcome"] = outcome
        return self.command(parsed.hub, cmd, args, by, wait)

    def enrol(self, record: HubRecord, by: str, replace: bool = False) -> dict[str, Any]:
        try:
            found = registry.enrol(self.store, record, by=by, replace=replace)
        except RegistryError as e:
            raise OpError("bad_request", str(e)) from None
        self.centre.reload_registry()
        log.info("hub %s (ward %s) %s by %s", record.id, record.ward,
                 "changed" if replace else "enrolled", by)
        return found.as_dict()

    def remove(self, hub_id: str, by: str) -> None:
        try:
            registry.remove(self.store, hub_id, by=by)
        except RegistryError as e:
            raise OpError("not_found", str(e)) from None
        self.centre.reload_registry()
        log.info("hub %s removed by %s", hub_id, by)

    # -- the control socket --------------------------------------------------------------------

    def execute(self, request: Any, by: str) -> dict[str, Any]:
        """One control-socket request; never raises."""
        try:
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise OpError("bad_request", "expected {\"cmd\": ...}")
            return {"ok": True, "result": self._dispatch(request, by)}
        except OpError as e:
            return {"ok": False, "error": {"code": e.code, "message": e.message}}
        except Exception as e:
            log.exception("control request %r failed", request)
            return {"ok": False, "error": {"code": "internal", "message": f"{type(e).__name__}: {e}"}}

    def _dispatch(self, r: dict[str, Any], by: str) -> Any:
        cmd = r["cmd"]
        wait = _number(r.get("wait", 10), "wait", 0, MAX_WAIT)
        if cmd == "status":
            return self.status()
        if cmd == "reload":
            self.centre.reload_registry()
            return {"hubs": len(self.centre.ingest.hubs)}
        if cmd in ("ack", "resolve", "cancel") or (cmd == "silence" and "alert" in r):
            if not isinstance(r.get("alert"), str):
                raise OpError("bad_request", f"{cmd}: give the alert id")
            return self.act_on_alert(r["alert"], cmd, by, outcome=r.get("outcome"), wait=wait)
        if cmd in MQTT_COMMANDS:
            if not isinstance(r.get("hub"), str):
                raise OpError("bad_request", f"{cmd}: give the hub")
            return self.command(r["hub"], cmd, {}, by, wait)
        if cmd == "hubs":
            return self.hubs()
        raise OpError("bad_request", f"unknown request {cmd!r}")

