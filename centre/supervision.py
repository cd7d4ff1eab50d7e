"""Supervision: a hub not heard within its reporting time is "silent"; one heard only through
a neighbour while its own path is down is a "path fault". Restores close them.

What counts as hearing a hub is its own valid traffic (events, live statuses, replies), as
the ingest classified it, at the moment it arrived: a backlog in the ingest does not make a
hub look silent. A retained status says what was, not that the hub is there, and does not
count. A Last Will (or a clean "stopped") marks the hub's own path lost ``will_grace``
seconds later unless it is heard again: it speeds detection, it is not relied on, since a
hub that vanishes without a Will is caught by its reporting time all the same.

Every deadline runs on monotonic time. When the centre itself cannot hear (its broker link
or its store down) supervision pauses, and every hub gets a full reporting time from the
moment it resumes and from the centre's start: the centre's own outage never raises a
false "hub silent". Alarms are stored (opened/closed, with the hub's last known state), so
a restart neither forgets an open alarm nor raises it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hubd.centre import tables
from hubd.centre.clock import SYSTEM_CLOCK, Clock
from hubd.centre.config import SupervisionConfig
from hubd.centre.registry import HubRecord
from hubd.centre.store import Store

log = logging.getLogger("hubd.centre.supervision")

HUB_SILENT = "hub_silent"
PATH_FAULT = "path_fault"
#: A hub silent after its last word said it was on battery (or powering itself down): most
#: likely its power, not its link (docs/mqtt-contract.md, "Power lost, not silent").
POWER_LOST = "power_lost"
KINDS = (HUB_SILENT, PATH_FAULT, POWER_LOST)
#: The power states after which silence is a power loss.
ON_BATTERY = ("on_battery", "battery_low", "shutting_down")


@dataclass
class _Watch:
    hub: str
    ward: str
    reporting: float
    #: Monotonic times: last heard on its own topic, last heard through a neighbour.
    direct_at: float | None = None
    relayed_at: float | None = None
    relayed_by: str | None = None
    #: When its Will (or goodbye) arrived, if it has not been heard directly since.
    down_at: float | None = None
    #: When supervision of it began (enrolled, or the centre started).
    since: float = 0.0
    #: The open alarm: (row id, kind).
    alarm: tuple[int, str] | None = None


def reporting_time(hub: HubRecord, config: SupervisionConfig) -> float:
    """The hub's own, else its ward's, else the default."""
    if hub.report_every is not None:
        return hub.report_every
    return config.wards.get(hub.ward, config.report_every)


class Supervisor:
    """Watches every enrolled hub; ``check`` opens and closes alarms (call it every second)."""

    def __init__(self, store: Store, config: SupervisionConfig, *, clock: Clock = SYSTEM_CLOCK,
                 publish: Callable[[list[dict[str, Any]]], None] | None = None):
        self.store = store
        self.config = config
        self.clock = clock
        self.publish = publish or (lambda msgs: None)
        self._lock = threading.Lock()
        #: Held while alarms are opened or closed (by ``check`` and ``load``).
        self._alarms = threading.RLock()
        self._watches: dict[str, _Watch] = {}
        #: Deadlines count from here at the earliest: the start, or the end of a pause.
        self._grace_from = clock.monotonic()
        self._paused: set[str] = set()

    # -- the registry ------------------------------------------------------------------------

    def load(self, hubs: Mapping[str, HubRecord]) -> None:
        """Follow the registry: new hubs get a full reporting time from now; removed ones
        have their alarms closed. Open alarms are read back from the store."""
        with self._alarms:
            with self.store.read() as conn:
                a = tables.alarms.c
                open_rows = conn.execute(sa.select(a.id, a.hub, a.kind).where(a.closed_at.is_(None))).all()
            self._load(hubs, open_rows)

    def _load(self, hubs: Mapping[str, HubRecord], open_rows: Sequence[Any]) -> None:
        now = self.clock.monotonic()
        gone: list[tuple[int, str, str]] = []
        with self._lock:
            for hub_id, hub in hubs.items():
                w = self._watches.get(hub_id)
                if w is None:
                    w = self._watches[hub_id] = _Watch(hub_id, hub.ward, reporting_time(hub, self.config),
                                                       since=now)
                w.ward, w.reporting = hub.ward, reporting_time(hub, self.config)
            for row in open_rows:
                w = self._watches.get(row.hub)
                if w is not None and w.alarm is None:
                    w.alarm = (row.id, row.kind)
                elif w is None:
                    gone.append((row.id, row.hub, row.kind))
            for hub_id in [h for h in self._watches if h not in hubs]:
                w = self._watches.pop(hub_id)
                if w.alarm:
                    gone.append((w.alarm[0], hub_id, w.alarm[1]))
        for alarm_id, hub_id, kind in gone:
            self._close(alarm_id, hub_id, kind, "hub removed from the registry")

    # -- what the ingest hears -------------------------------------------------------------

    def heard(self, hub: str, mono: float) -> None:
        """Valid live traffic on ``hub``'s own topic."""
        with self._lock:
            w = self._watches.get(hub)
            if w is not None:
                w.direct_at = mono if w.direct_at is None else max(w.direct_at, mono)
                w.down_at = None

    def heard_relayed(self, hub: str, via: str, mono: float) -> None:
        """An event of ``hub`` published by its neighbour ``via``."""
        with self._lock:
            w = self._watches.get(hub)
            if w is not None:
                w.relayed_at, w.relayed_by = mono, via

    def went_offline(self, hub: str, mono: float) -> None:
        """Its Last Will, or its own "stopped", arrived live."""
        with self._lock:
            w = self._watches.get(hub)
            if w is not None and w.down_at is None:
                w.down_at = mono

    # -- the centre's own outages ------------------------------------------------------------

    def pause(self, why: str) -> None:
        with self._lock:
            if why not in self._paused:
                log.warning("supervision paused: %s", why)
            self._paused.add(why)

    def resume(self, why: str) -> None:
        with self._lock:
            if why not in self._paused:
                return
            self._paused.discard(why)
            if not self._paused:
                self._grace_from = self.clock.monotonic()
                log.info("supervision resumed: every hub has a full reporting time from now")

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    # -- deciding ---------------------------------------------------------------------------

    def _wanted(self, w: _Watch, now: float) -> tuple[str | None, str]:
        """The alarm this hub should have now, and why. The grace after a start or a pause
        only holds back new alarms: an open alarm closes when the hub is really heard."""
        down = w.down_at is not None and now - w.down_at >= self.config.will_grace
        heard = w.direct_at is not None and now - w.direct_at <= w.reporting and not down
        last_direct = max(w.direct_at if w.direct_at is not None else -1e18, self._grace_from, w.since)
        if heard or (w.alarm is None and now - last_direct <= w.reporting and not down):
            return None, ""
        relayed_ok = w.relayed_at is not None and now - w.relayed_at <= w.reporting
        if relayed_ok:
            return PATH_FAULT, (f"{w.hub} heard only through {w.relayed_by}: its own path is down "
                                f"(not heard directly for {now - last_direct:.0f} s)")
        if w.alarm is not None and now - max(self._grace_from, w.since) <= w.reporting:
            return w.alarm[1], ""  # not heard since the start (or pause): still as it was
        if w.down_at is not None:
            return HUB_SILENT, (f"{w.hub} went offline (Last Will) {now - w.down_at:.0f} s ago "
                                "and is not heard")
        return HUB_SILENT, (f"{w.hub} not heard for {now - last_direct:.0f} s "
                            f"(reporting time {w.reporting:g} s)")

    def check(self) -> None:
        """Open and close alarms as the hubs' traffic says."""
        with self._alarms:
            now = self.clock.monotonic()
            changes: list[tuple[_Watch, str | None, str]] = []
            with self._lock:
                if self._paused:
                    return
                for w in self._watches.values():
                    want, why = self._wanted(w, now)
                    have = w.alarm[1] if w.alarm else None
                    if have == POWER_LOST:
                        have = HUB_SILENT  # what it is, as far as traffic says
                    if want != have:
                        changes.append((w, want, why))
            for w, want, why in changes:
                if w.alarm is not None:
                    why_closed = "heard again" if want is None else f"now {want}"
                    self._close(w.alarm[0], w.hub, w.alarm[1], why_closed)
                    w.alarm = None
                if want is not None:
                    w.alarm = self._open(w, want, why)

    def _open(self, w: _Watch, kind: str, reason: str) -> tuple[int, str]:
        """Store and announce an alarm; its id and kind (``hub_silent`` may be told apart as
        ``power_lost`` by the hub's last status)."""
        wall = self.clock.time()
        with self.store.write() as conn:
            h = tables.hubs.c
            row = conn.execute(sa.select(h.last_heard_at, h.last_direct_at, h.last_relayed_at,
                                         h.last_relayed_by, h.online, h.status, h.status_at, h.clock_skew)
                               .where(h.id == w.hub)).first()
            detail = dict(row._mapping) if row is not None else {}
            if kind == HUB_SILENT:
                kind, reason = _power_lost(detail.get("status"), kind, reason)
            alarm_id = conn.execute(tables.alarms.insert().returning(tables.alarms.c.id).values(
                hub=w.hub, ward=w.ward, kind=kind, opened_at=wall, reason=reason, detail=detail)).scalar_one()
            body = {"kind": "alarm", "action": "opened", "id": alarm_id, "alarm": kind, "hub": w.hub,
                    "ward": w.ward, "reason": reason, "last_heard_at": detail.get("last_heard_at")}
            seq = conn.execute(tables.feed.insert().returning(tables.feed.c.seq)
                               .values(at=wall, kind="alarm", body=body)).scalar_one()
        log.warning("ALARM %s: %s", kind, reason)
        self.publish([{"seq": seq, "at": wall, **body}])
        return int(alarm_id), kind

    def _close(self, alarm_id: int, hub: str, kind: str, why: str) -> None:
        wall = self.clock.time()
        with self.store.write() as conn:
            a = tables.alarms.c
            conn.execute(tables.alarms.update().where(a.id == alarm_id, a.closed_at.is_(None))
                         .values(closed_at=wall))
            body = {"kind": "alarm", "action": "closed", "id": alarm_id, "alarm": kind, "hub": hub,
                    "reason": why}
            seq = conn.execute(tables.feed.insert().returning(tables.feed.c.seq)
                               .values(at=wall, kind="alarm", body=body)).scalar_one()
        log.warning("restored: %s %s closed (%s)", hub, kind, why)
        self.publish([{"seq": seq, "at": wall, **body}])

    # -- what the API shows ------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        """Per hub: ``state`` (online, path_fault, hub_silent, waiting: not heard since the
        centre started but within its reporting time) and seconds since heard."""
        now = self.clock.monotonic()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for w in self._watches.values():
                if w.alarm is not None:
                    state = w.alarm[1]
                elif w.direct_at is not None and now - w.direct_at <= w.reporting and w.down_at is None:
                    state = "online"
                else:
                    state = "waiting"
                out[w.hub] = {
                    "state": state, "reporting_time": w.reporting,
                    "heard_ago": None if w.direct_at is None else round(now - w.direct_at, 3),
                    "relayed_ago": None if w.relayed_at is None else round(now - w.relayed_at, 3),
                    "relayed_by": w.relayed_by, "alarm_id": w.alarm[0] if w.alarm else None,
                    "paused": bool(self._paused),
                }
        return out


def _power_lost(status: Any, kind: str, reason: str) -> tuple[str, str]:
    """``power_lost`` instead of ``hub_silent`` when the hub's last status said it was on
    battery or powering itself down."""
    power = status.get("power") if isinstance(status, dict) else None
    state = power.get("state") if isinstance(power, dict) else None
    if state not in ON_BATTERY:
        return kind, reason
    assert isinstance(power, dict)
    battery = power.get("battery")
    level = f", battery {battery:.0f} %" if isinstance(battery, int | float) else ""
    if state == "shutting_down":
        return POWER_LOST, f"{reason}: it powered itself down (battery critical{level})"
    return POWER_LOST, f"{reason}: power most likely lost (last heard {state.replace('_', ' ')}{level})"


def open_alarms(store: Store, hub: str | None = None, *, include_closed: bool = False,
                limit: int = 500) -> list[dict[str, Any]]:
    """Alarms, newest first (open ones only unless ``include_closed``)."""
    a = tables.alarms
    stmt = sa.select(a).order_by(a.c.opened_at.desc()).limit(limit)
    if not include_closed:
        stmt = stmt.where(a.c.closed_at.is_(None))
    if hub is not None:
        stmt = stmt.where(a.c.hub == hub)
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]

