"""What the API, the page and the command line read from the store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hubd.centre import tables
from hubd.centre.store import Store

OPEN_STATES = ("raised", "acknowledged")
_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float) -> float:
    """A time as people and scripts give it: ``15m``, ``2h``, ``3d`` (that long before
    ``now``), Unix seconds, or an ISO 8601 date/time; ValueError saying what is expected."""
    text = text.strip()
    if text[-1:] in _AGO and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * _AGO[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"{text!r}: expected e.g. 15m, 2h, 3d, Unix seconds or an ISO 8601 time") from None


def _rows(store: Store, stmt: Any) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def alerts(store: Store, *, ward: str | None = None, hub: str | None = None, states: Sequence[str] = (),
           since: float | None = None, until: float | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Alerts, newest raised first; ``since``/``until`` bound when they were raised."""
    a = tables.alerts.c
    stmt = sa.select(tables.alerts).order_by(a.raised_at.desc(), a.id).limit(limit)
    if ward:
        stmt = stmt.where(a.ward == ward)
    if hub:
        stmt = stmt.where(a.hub == hub)
    if states:
        stmt = stmt.where(a.state.in_(list(states)))
    if since is not None:
        stmt = stmt.where(a.raised_at >= since)
    if until is not None:
        stmt = stmt.where(a.raised_at < until)
    return _rows(store, stmt)


def alert(store: Store, alert_id: str) -> dict[str, Any] | None:
    """One alert with its timeline (every event, oldest first, each with its paths)."""
    found = _rows(store, sa.select(tables.alerts).where(tables.alerts.c.id == alert_id))
    if not found:
        return None
    out = found[0]
    out["events"] = events(store, alert_id=alert_id, limit=1000, newest_first=False)
    return out


def events(store: Store, *, hub: str | None = None, ward: str | None = None, type: str | None = None,
           alert_id: str | None = None, since: float | None = None, until: float | None = None,
           limit: int = 200, newest_first: bool = True) -> list[dict[str, Any]]:
    """Events with the paths that carried each; ``since``/``until`` bound their origin time."""
    e = tables.events.c
    stmt = sa.select(tables.events).limit(limit)
    stmt = stmt.order_by(e.seq.desc() if newest_first else e.seq)
    for col, value in ((e.hub, hub), (e.ward, ward), (e.type, type), (e.alert_id, alert_id)):
        if value:
            stmt = stmt.where(col == value)
    if since is not None:
        stmt = stmt.where(e.time >= since)
    if until is not None:
        stmt = stmt.where(e.time < until)
    rows = _rows(store, stmt)
    carried = paths(store, [r["id"] for r in rows])
    for r in rows:
        r["paths"] = carried.get(r["id"], [])
    return rows


def paths(store: Store, event_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The paths of these events, by event id."""
    out: dict[str, list[dict[str, Any]]] = {}
    p = tables.paths.c
    for i in range(0, len(event_ids), 500):
        stmt = sa.select(tables.paths).where(p.event_id.in_(list(event_ids[i:i + 500]))).order_by(p.first_at)
        for r in _rows(store, stmt):
            out.setdefault(r.pop("event_id"), []).append(r)
    return out


def hubs(store: Store) -> list[dict[str, Any]]:
    """Every enrolled hub with what was last heard of it."""
    h = tables.hubs.c
    return _rows(store, sa.select(tables.hubs).order_by(h.ward, h.id))


def quarantine(store: Store, *, hub: str | None = None, code: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    """Refused messages, newest first; the payload as text where it is text."""
    q = tables.quarantine.c
    stmt = sa.select(tables.quarantine).order_by(q.id.desc()).limit(limit)
    if hub:
        stmt = stmt.where(q.hub == hub)
    if code:
        stmt = stmt.where(q.code == code)
    rows = _rows(store, stmt)
    for r in rows:
        raw = bytes(r.pop("payload"))
        try:
            r["payload"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            r["payload"] = raw.hex()
            r["payload_hex"] = True
    return rows


def counts(store: Store) -> dict[str, Any]:
    """Totals for /metrics and the status: alerts by state, quarantine by code, pending receipts."""
    a, q, r = tables.alerts.c, tables.quarantine.c, tables.receipts.c
    with store.read() as conn:
        by_state = {k: v for k, v in conn.execute(sa.select(a.state, sa.func.count()).group_by(a.state))}
        by_code = {k: v for k, v in conn.execute(sa.select(q.code, sa.func.count()).group_by(q.code))}
        pending = conn.execute(sa.select(sa.func.count()).select_from(tables.receipts)
                               .where(r.sent_at.is_(None))).scalar_one()
        oldest = conn.execute(sa.select(sa.func.min(r.created_at)).where(r.sent_at.is_(None))).scalar_one()
        events_total = conn.execute(sa.select(sa.func.count()).select_from(tables.events)).scalar_one()
    return {"alerts": by_state, "quarantine": by_code, "receipts_pending": int(pending),
            "oldest_pending_receipt_at": oldest, "events": int(events_total)}


def feed_latest(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(tables.feed.c.seq), 0))).scalar_one())


def feed_after(store: Store, seq: int, limit: int) -> list[dict[str, Any]]:
    f = tables.feed.c
    stmt = sa.select(f.seq, f.at, f.body).where(f.seq > seq).order_by(f.seq).limit(limit)
    with store.read() as conn:
        return [{"seq": r.seq, "at": r.at, **r.body} for r in conn.execute(stmt)]
