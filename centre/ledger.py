"""The ingest's write: one batch of classified messages, one transaction.

Everything a batch changes is committed together or not at all: new events (each id
once), the path each copy came by, the alerts' state by precedence, a pending receipt for
every event heard (a duplicate too: its hub is still waiting), the hubs' last known state,
the quarantine, command replies, snapshots and the live feed. The caller acknowledges the
batch's messages to the broker, and sends the receipts, only after ``record`` returns.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hubd.centre import tables
from hubd.centre.messages import (
    Classified,
    EventMessage,
    Received,
    Refused,
    ReplyMessage,
    SnapshotMessage,
    StatusMessage,
)
from hubd.centre.precedence import supersedes
from hubd.centre.store import Store
from hubd.centre.trust import BELIEVED
from hubd.contract import status_id

log = logging.getLogger("hubd.centre.ledger")

#: Bytes of a quarantined payload kept (its size is always recorded).
QUARANTINE_KEEP = 16 * 1024
#: Ids per ``IN (...)`` lookup.
CHUNK = 500

Item = tuple[Received, Classified]


@dataclass
class Recorded:
    """What a committed batch did."""

    stored: list[EventMessage] = field(default_factory=list)
    duplicates: int = 0
    quarantined: int = 0
    #: (root, ward, hub) -> ids of events and statuses to confirm now.
    receipts: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    #: Command ids whose reply was recorded.
    replies: list[str] = field(default_factory=list)
    #: The live feed's new messages, with their ``seq``.
    feed: list[dict[str, Any]] = field(default_factory=list)


def _chunked(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def _alert_row(ev: EventMessage, received_at: float) -> dict[str, Any]:
    a = ev.alert
    assert a is not None
    return {"id": a["id"], "hub": ev.origin, "ward": ev.ward, "seq": a["seq"], "kind": a["kind"],
            "source": a["source"], "zone": a["zone"], "state": a["state"], "outcome": a.get("outcome"),
            "level": a["level"], "silent": bool(a.get("silent", False)), "severity": a.get("severity"),
            "raised_at": a["raised_at"], "updated_at": a["updated_at"], "first_seen_at": received_at,
            "changed_at": received_at, "event_id": ev.id, "trust": ev.trust, "alert": a}


class Ledger:
    """Records batches in ``store``; snapshots go to files under ``snapshot_dir``."""

    def __init__(self, store: Store, snapshot_dir: Path):
        self.store = store
        self.snapshot_dir = snapshot_dir

    def record(self, items: Sequence[Item], now: float) -> Recorded:
        out = Recorded()
        snapshots = [self._save_snapshot(r, m) for r, m in items if isinstance(m, SnapshotMessage)]
        with self.store.write() as conn:
            feed: list[dict[str, Any]] = []
            self._events(conn, items, out, feed)
            self._statuses(conn, items, out)
            self._hubs(conn, items)
            self._quarantine(conn, items, out, feed)
            self._replies(conn, items, out, feed, now)
            if snapshots:
                conn.execute(self.store.insert(tables.snapshots).on_conflict_do_nothing(), snapshots)
                feed += [{"kind": "snapshot", "hub": s["hub"], "alert_id": s["alert_id"], "size": s["size"]}
                         for s in snapshots]
            if feed:
                insert = tables.feed.insert().returning(tables.feed.c.seq, sort_by_parameter_order=True)
                rows = [{"at": now, "kind": f["kind"], "body": f} for f in feed]
                seqs = conn.execute(insert, rows).scalars().all()
                out.feed = [{"seq": seq, "at": now, **f} for seq, f in zip(seqs, feed, strict=True)]
        return out

    # -- events, paths, receipts, alerts ---------------------------------------------------------

    def _events(self, conn: sa.Connection, items: Sequence[Item], out: Recorded,
                feed: list[dict[str, Any]]) -> None:
        events = [(r, m) for r, m in items if isinstance(m, EventMessage)]
        if not events:
            return
        ids = sorted({m.id for _, m in events})
        known: dict[str, str] = {}
        for part in _chunked(ids):
            known.update({i: t for i, t in conn.execute(sa.select(tables.events.c.id, tables.events.c.trust)
                                                        .where(tables.events.c.id.in_(part)))})
        new_rows: list[dict[str, Any]] = []
        upgraded: list[tuple[Received, EventMessage]] = []
        candidates: list[tuple[Received, EventMessage]] = []
        paths: dict[tuple[str, str, str], dict[str, Any]] = {}
        receipts: dict[str, dict[str, Any]] = {}
        for r, m in events:
            key = (m.id, m.path, m.via)
            p = paths.get(key)
            if p is None:
                paths[key] = {"event_id": m.id, "path": m.path, "via": m.via, "first_at": r.received_at,
                              "last_at": r.received_at, "count": 1}
            else:
                p["last_at"], p["count"] = r.received_at, p["count"] + 1
            receipts[m.id] = {"event_id": m.id, "hub": m.origin, "ward": m.ward, "root": m.root,
                              "created_at": r.received_at}
            out.receipts.setdefault((m.root, m.ward, m.origin), set()).add(m.id)
            if m.id in known:
                if m.trust in BELIEVED and known[m.id] not in BELIEVED:
                    # The origin's own copy of an event first heard only as ward-attested.
                    upgraded.append((r, m))
                    known[m.id] = m.trust
                    candidates.append((r, m))
                else:
                    out.duplicates += 1
                continue
            known[m.id] = m.trust
            env = m.envelope
            new_rows.append({"id": m.id, "hub": m.origin, "ward": m.ward, "type": env["type"],
                             "alert_id": (m.alert or {}).get("id"), "time": env["time"],
                             "received_at": r.received_at, "trust": m.trust, "envelope": env})
            out.stored.append(m)
            candidates.append((r, m))
            feed.append({"kind": "event", "id": m.id, "type": env["type"], "hub": m.origin, "ward": m.ward,
                         "time": env["time"], "actor": env.get("actor"),
                         "alert_id": (m.alert or {}).get("id"), "trust": m.trust, "path": m.path,
                         "via": m.via})
        if new_rows:
            conn.execute(self.store.insert(tables.events).on_conflict_do_nothing(index_elements=["id"]),
                         new_rows)
        for _, m in upgraded:
            conn.execute(tables.events.update().where(tables.events.c.id == m.id)
                         .values(trust=m.trust, envelope=m.envelope))
        ins = self.store.insert(tables.paths)
        conn.execute(ins.on_conflict_do_update(
            index_elements=["event_id", "path", "via"],
            set_={"last_at": ins.excluded.last_at, "count": tables.paths.c.count + ins.excluded.count}),
            list(paths.values()))
        self._pend_receipts(conn, list(receipts.values()))
        self._alerts(conn, candidates, feed)

    def _pend_receipts(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """A receipt pending for each (again, for an id heard again: its hub still waits)."""
        if rows:
            ins = self.store.insert(tables.receipts)
            conn.execute(ins.on_conflict_do_update(index_elements=["event_id"], set_={"sent_at": None}), rows)

    def _statuses(self, conn: sa.Connection, items: Sequence[Item], out: Recorded) -> None:
        """Version 2 statuses are numbered: each is answered with a receipt, which closes the
        hub's supervision round trip."""
        rows = {}
        for r, m in items:
            if isinstance(m, StatusMessage) and m.seq is not None:
                sid = status_id(m.hub, m.seq)
                rows[sid] = {"event_id": sid, "hub": m.hub, "ward": m.ward, "root": m.root,
                             "created_at": r.received_at}
                out.receipts.setdefault((m.root, m.ward, m.hub), set()).add(sid)
        self._pend_receipts(conn, list(rows.values()))

    def _alerts(self, conn: sa.Connection, candidates: list[tuple[Received, EventMessage]],
                feed: list[dict[str, Any]]) -> None:
        best: dict[str, tuple[Received, EventMessage]] = {}
        for r, m in candidates:
            a = m.alert
            if a is None:
                continue
            held = best.get(a["id"])
            if held is None or supersedes(a, m.trust, m.type, held[1].alert, held[1].trust):
                best[a["id"]] = (r, m)
        if not best:
            return
        current: dict[str, Any] = {}
        for part in _chunked(sorted(best)):
            ac = tables.alerts.c
            for found in conn.execute(sa.select(ac.id, ac.alert, ac.trust, ac.state).where(ac.id.in_(part))):
                current[found.id] = found
        changed: list[dict[str, Any]] = []
        for aid, (r, m) in best.items():
            cur = current.get(aid)
            a = m.alert
            assert a is not None
            if not supersedes(a, m.trust, m.type, cur.alert if cur else None, cur.trust if cur else None):
                continue
            changed.append(_alert_row(m, r.received_at))
            feed.append({"kind": "alert", "new": cur is None, "previous": cur.state if cur else None,
                         "alert": a, "hub": m.origin, "ward": m.ward, "trust": m.trust, "event_id": m.id})
        if changed:
            # One statement for the batch (an alert seen before keeps when it was first seen).
            ins = self.store.insert(tables.alerts)
            keep = {"id", "first_seen_at"}
            update = {c: ins.excluded[c] for c in changed[0] if c not in keep}
            conn.execute(ins.on_conflict_do_update(index_elements=["id"], set_=update), changed)

    # -- hubs' last known state ---------------------------------------------------------------

    def _hubs(self, conn: sa.Connection, items: Sequence[Item]) -> None:
        changes: dict[str, dict[str, Any]] = {}
        first_status: dict[str, dict[str, Any]] = {}
        for r, m in items:
            if isinstance(m, Refused):
                continue
            carrier = m.carrier if isinstance(m, EventMessage) else m.hub
            if isinstance(m, EventMessage | StatusMessage):
                changes.setdefault(carrier, {})["contract"] = m.version
            if isinstance(m, StatusMessage):
                if r.retain:
                    # An old retained status says what was, not that the hub is there now.
                    first_status[m.hub] = {"status": m.status, "online": m.online, "status_at": r.received_at}
                    continue
                c = changes.setdefault(m.hub, {})
                c.update(status=m.status, online=m.online, status_at=r.received_at)
                if not m.online:
                    continue  # a Will or a goodbye: the broker speaking for the hub
                if isinstance(m.status.get("time"), int | float):
                    c["clock_skew"] = float(m.status["time"]) - r.received_at
            c = changes.setdefault(carrier, {})
            c["last_heard_at"] = c["last_direct_at"] = r.received_at
            if isinstance(m, EventMessage) and m.via:
                o = changes.setdefault(m.origin, {})
                o.update(last_heard_at=r.received_at, last_relayed_at=r.received_at, last_relayed_by=m.via)
        self._update_hubs(conn, changes)
        self._update_hubs(conn, first_status, only_unknown=True)

    @staticmethod
    def _update_hubs(conn: sa.Connection, changes: dict[str, dict[str, Any]],
                     only_unknown: bool = False) -> None:
        """One executemany per set of columns (statements with bound parameters, compiled
        once, not a statement per hub)."""
        hubs = tables.hubs
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for hub, values in changes.items():
            groups.setdefault(tuple(sorted(values)), []).append({"hub_id": hub, **values})
        for columns, rows in groups.items():
            stmt = hubs.update().where(hubs.c.id == sa.bindparam("hub_id"))
            if only_unknown:
                stmt = stmt.where(hubs.c.status_at.is_(None))
            conn.execute(stmt.values({c: sa.bindparam(c) for c in columns}), rows)

    # -- quarantine, replies, snapshots ------------------------------------------------------

    def _quarantine(self, conn: sa.Connection, items: Sequence[Item], out: Recorded,
                    feed: list[dict[str, Any]]) -> None:
        rows = [{"received_at": r.received_at, "topic": r.topic, "ward": m.ward, "hub": m.hub, "code": m.code,
                 "reason": m.reason, "size": len(r.payload), "payload": r.payload[:QUARANTINE_KEEP],
                 "retained": r.retain}
                for r, m in items if isinstance(m, Refused)]
        if not rows:
            return
        conn.execute(tables.quarantine.insert(), rows)
        out.quarantined += len(rows)
        feed += [{"kind": "quarantine", "topic": q["topic"], "hub": q["hub"], "ward": q["ward"],
                  "code": q["code"], "reason": q["reason"]} for q in rows]

    def _replies(self, conn: sa.Connection, items: Sequence[Item], out: Recorded, feed: list[dict[str, Any]],
                 now: float) -> None:
        c = tables.commands.c
        for r, m in items:
            if not isinstance(m, ReplyMessage) or not isinstance(m.reply.get("id"), str):
                continue
            state = "replied" if m.reply["ok"] else "failed"
            done = conn.execute(tables.commands.update()
                                .where(c.id == m.reply["id"], c.hub == m.hub, c.replied_at.is_(None))
                                .values(state=state, reply=m.reply, replied_at=r.received_at)).rowcount
            if done:
                out.replies.append(m.reply["id"])
                feed.append({"kind": "command", "id": m.reply["id"], "hub": m.hub, "state": state,
                             "reply": m.reply})

    def _save_snapshot(self, r: Received, m: SnapshotMessage) -> dict[str, Any]:
        """Write the JPEG (atomically, named by its content) before the commit that lists it."""
        digest = hashlib.sha256(m.jpeg).hexdigest()[:16]
        folder = self.snapshot_dir / m.hub
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{m.alert_id.replace(':', '_')}-{digest}.jpg"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(m.jpeg)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return {"hub": m.hub, "alert_id": m.alert_id, "path": str(path), "size": len(m.jpeg),
                "received_at": r.received_at}
