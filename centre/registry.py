"""The hub registry: which hubs the centre believes, where they are, and their keys.

A hub is enrolled out of band (the command line or the API, by a supervisor): its id, ward,
name, location and, once hubs sign (contract v2), its public key. Nothing on the wire can
enrol a hub or change its key; traffic from a hub that is not enrolled is quarantined and
listed here for enrolment.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from hubd.centre import tables
from hubd.centre.store import Store
from hubd.contract import HUB_PATTERN, WARD_PATTERN, ContractError, KeyLookup, parse_public_key

_HUB = re.compile(HUB_PATTERN)
_WARD = re.compile(WARD_PATTERN)


class RegistryError(Exception):
    """An enrolment refused; the message says why."""


@dataclass(frozen=True)
class HubRecord:
    """One enrolled hub."""

    id: str
    ward: str
    name: str = ""
    lat: float | None = None
    lon: float | None = None
    public_key: str | None = None
    #: Its own reporting time in seconds (None: its ward's or the default).
    report_every: float | None = None
    enrolled_at: float = 0.0
    enrolled_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(record: HubRecord) -> None:
    """RegistryError unless every field is valid."""
    if not _HUB.fullmatch(record.id):
        raise RegistryError(f"hub id {record.id!r}: expected 1-24 letters, digits, '_' or '-'")
    if not _WARD.fullmatch(record.ward):
        raise RegistryError(f"ward {record.ward!r}: expected 1-32 letters, digits, '_' or '-'")
    if len(record.name) > 200:
        raise RegistryError("name: at most 200 characters")
    if (record.lat is None) != (record.lon is None):
        raise RegistryError("location: give both latitude and longitude, or neither")
    if record.lat is not None and not -90 <= record.lat <= 90:
        raise RegistryError(f"latitude {record.lat}: expected -90 to 90")
    if record.lon is not None and not -180 <= record.lon <= 180:
        raise RegistryError(f"longitude {record.lon}: expected -180 to 180")
    if record.public_key is not None:
        try:
            parse_public_key(record.public_key)
        except ContractError as e:
            raise RegistryError(f"public key: {e.message} (give it as the hub printed it: ed25519:...)") \
                from None
    if record.report_every is not None and not 1 <= record.report_every <= 25 * 3600:
        raise RegistryError(f"reporting time {record.report_every}: expected 1 to 90000 seconds")


def key_lookup(hubs: dict[str, HubRecord]) -> KeyLookup:
    """The enrolled public key of each hub (None for a hub without one, or not enrolled)."""
    keys = {h.id: parse_public_key(h.public_key) for h in hubs.values() if h.public_key}
    return keys.get


def _record(row: Any) -> HubRecord:
    return HubRecord(id=row.id, ward=row.ward, name=row.name, lat=row.lat, lon=row.lon,
                     public_key=row.public_key, report_every=row.report_every,
                     enrolled_at=row.enrolled_at, enrolled_by=row.enrolled_by)


_COLUMNS = [tables.hubs.c[k] for k in ("id", "ward", "name", "lat", "lon", "public_key", "report_every",
                                       "enrolled_at", "enrolled_by")]


def enrol(store: Store, record: HubRecord, *, by: str, replace: bool = False) -> HubRecord:
    """Enrol a hub (``replace``: change an enrolled hub's details, keeping what was heard)."""
    check(record)
    now = time.time()
    with store.write() as conn:
        existing = conn.execute(sa.select(tables.hubs.c.id).where(tables.hubs.c.id == record.id)).first()
        if existing is not None and not replace:
            raise RegistryError(f"hub {record.id} is already enrolled (remove it first, or change it)")
        values = {"ward": record.ward, "name": record.name, "lat": record.lat, "lon": record.lon,
                  "public_key": record.public_key, "report_every": record.report_every}
        if existing is None:
            record = HubRecord(**{**record.as_dict(), "enrolled_at": now, "enrolled_by": by})
            conn.execute(tables.hubs.insert().values(id=record.id, enrolled_at=now, enrolled_by=by, **values))
        else:
            conn.execute(tables.hubs.update().where(tables.hubs.c.id == record.id).values(**values))
        body = {"action": "changed" if existing else "enrolled", "hub": record.id, "ward": record.ward,
                "by": by}
        conn.execute(tables.feed.insert().values(at=now, kind="hub", body=body))
    found = get(store, record.id)
    assert found is not None
    return found


def remove(store: Store, hub_id: str, *, by: str) -> None:
    """Remove a hub from the registry (its events and alerts stay; its traffic is
    quarantined from now on)."""
    with store.write() as conn:
        if conn.execute(tables.hubs.delete().where(tables.hubs.c.id == hub_id)).rowcount == 0:
            raise RegistryError(f"no hub {hub_id!r} is enrolled")
        conn.execute(tables.feed.insert().values(at=time.time(), kind="hub",
                                                 body={"action": "removed", "hub": hub_id, "by": by}))


def get(store: Store, hub_id: str) -> HubRecord | None:
    with store.read() as conn:
        row = conn.execute(sa.select(*_COLUMNS).where(tables.hubs.c.id == hub_id)).first()
    return _record(row) if row is not None else None


def all_hubs(store: Store) -> dict[str, HubRecord]:
    """Every enrolled hub, by id."""
    with store.read() as conn:
        rows = conn.execute(sa.select(*_COLUMNS).order_by(tables.hubs.c.ward, tables.hubs.c.id)).all()
    return {r.id: _record(r) for r in rows}


def candidates(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Hubs heard but not enrolled (their traffic is in quarantine): one row per hub."""
    q = tables.quarantine
    enrolled = sa.select(tables.hubs.c.id)
    stmt = (sa.select(q.c.hub, sa.func.max(q.c.ward).label("ward"), sa.func.count().label("messages"),
                      sa.func.min(q.c.received_at).label("first_at"),
                      sa.func.max(q.c.received_at).label("last_at"))
            .where(q.c.code == "unknown_hub", q.c.hub.is_not(None), q.c.hub.not_in(enrolled))
            .group_by(q.c.hub).order_by(sa.func.max(q.c.received_at).desc()).limit(limit))
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]
