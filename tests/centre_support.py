"""Test support for the centre: a store on SQLite or on PostgreSQL (a database of the test's
own, made and dropped here), enrolled hubs, and envelopes as hubs send them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hubd import contract

#: The PostgreSQL server the centre's tests use (a local service, trust auth). Only its
#: maintenance database is touched, to create and drop each test's own database.
POSTGRES = os.environ.get("HUBD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES, connect_timeout=3):
            return None
    except psycopg.Error as e:
        return f"PostgreSQL at {POSTGRES} is not reachable: {e}"


@contextmanager
def postgres_database(server: str = POSTGRES) -> Iterator[str]:
    """A fresh database with a random name on ``server``; its SQLAlchemy URL. Dropped after."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"centre_test_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(drivername="postgresql+psycopg", database=name) \
            .render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    """A store URL of ``kind`` (sqlite or postgresql) for one test."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'centre.db'}"
        return
    why = postgres_reachable()
    if why:
        pytest.skip(why)
    with postgres_database() as url:
        yield url


ALERT_DEFAULTS: dict[str, Any] = {"kind": "panic", "source": "gate", "zone": "Market gate", "outcome": None,
                                  "silent": False, "severity": 1}


def alert_event(hub: str, seq: int, transition: str = "raised", *, level: int = 0, ward: str = "ward-7",
                time: float = 1_763_712_000.0, relayed_by: str | None = None, **alert: Any) -> dict[str, Any]:
    """The envelope of an alert transition as ``hub`` sends it (contract v1)."""
    state = {"raised": "raised", "escalated": "raised", "acknowledged": "acknowledged",
             "resolved": "resolved", "cancelled": "cancelled"}[transition]
    aid = contract.alert_id(hub, seq)
    body = {**ALERT_DEFAULTS, "id": aid, "hub": hub, "seq": seq, "state": state, "level": level,
            "raised_at": time, "updated_at": time, **alert}
    if transition == "resolved" and body["outcome"] is None:
        body["outcome"] = "genuine"
    env = contract.event_envelope(id=contract.transition_event_id(aid, f"alert.{transition}", level),
                                  type=f"alert.{transition}", time=time, ward=ward, hub=hub,
                                  actor="button:gate", data={}, alert=body)
    if relayed_by:
        env["relayed_by"] = relayed_by
    return env


def routine_event(hub: str, n: int, type: str = "siren.test", *, ward: str = "ward-7",
                  time: float = 1_763_712_000.0) -> dict[str, Any]:
    return contract.event_envelope(id=contract.routine_event_id(hub, n), type=type, time=time, ward=ward,
                                   hub=hub, actor="system", data={})


def status(hub: str, *, ward: str = "ward-7", time: float = 1_763_712_000.0,
           online: bool = True) -> dict[str, Any]:
    if not online:
        return contract.offline_payload(ward, hub, "connection lost")
    return contract.status_payload(hub=hub, ward=ward, time=time, name=f"Hub {hub}", version="0.1.0",
                                   uptime=10.0, clock_synced=True, components={}, outbox={}, open_alerts=0)
