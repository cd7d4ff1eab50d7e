"""Commands to hubs: ack, resolve, cancel, silence, siren_test and status over a hub's
``cmd`` topic, each with a unique id, who asked, a reply matched by that id, and a timeout.

A command is stored before it is published, so it is never sent without a record. The hub
answers on its ``<base>/reply`` (named as the MQTT v5 Response Topic, the id as Correlation
Data); the ingest commits the reply like any message and tells ``Commands``, which wakes
whoever waits. A command without a reply within the timeout (monotonic) is marked timed out;
a late reply is still recorded. ``command_payload`` is the one place that builds the wire
form: contract v2 signs it there.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hubd.centre import tables
from hubd.centre.clock import SYSTEM_CLOCK, Clock
from hubd.centre.registry import HubRecord
from hubd.centre.store import Store
from hubd.contract import MQTT_COMMANDS, Topics, problems

log = logging.getLogger("hubd.centre.commands")

#: publish(topic, payload, properties): the ingest's MQTT client, QoS 1.
Publish = Callable[[str, bytes, Properties | None], None]


class CommandError(Exception):
    """A command refused before it was sent (``code`` as in the API's errors)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def command_payload(command_id: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    """The command as published (schema ``command``)."""
    return {"id": command_id, "cmd": cmd, **args}


def _row(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


class Commands:
    def __init__(self, store: Store, root: str, timeout: float, *, publish: Publish | None = None,
                 clock: Clock = SYSTEM_CLOCK):
        self.store = store
        self.root = root
        self.timeout = timeout
        self.publish = publish
        self.clock = clock
        self.on_feed: Callable[[list[dict[str, Any]]], None] = lambda msgs: None
        self._cond = threading.Condition()
        #: Command id -> monotonic deadline, for commands awaiting a reply.
        self._deadlines: dict[str, float] = {}

    def start(self) -> None:
        """Commands still awaiting a reply from before a restart get a full timeout from now."""
        with self.store.read() as conn:
            c = tables.commands.c
            ids = conn.execute(sa.select(c.id).where(c.state == "sent")).scalars()
            deadline = self.clock.monotonic() + self.timeout
            with self._cond:
                self._deadlines.update({i: deadline for i in ids})

    def send(self, hub: HubRecord, cmd: str, args: dict[str, Any], by: str) -> dict[str, Any]:
        """Store and publish one command; its record (state ``sent``)."""
        if cmd not in MQTT_COMMANDS:
            raise CommandError("bad_request",
                               f"unknown command {cmd!r}; expected one of {', '.join(MQTT_COMMANDS)}")
        if self.publish is None:
            raise CommandError("unavailable", "the centre's MQTT link is not running")
        command_id = uuid.uuid4().hex
        payload = command_payload(command_id, cmd, args)
        wrong = problems("command", payload)
        if wrong:
            raise CommandError("bad_request", f"{cmd}: " + "; ".join(wrong[:3]))
        now = self.clock.time()
        row = {"id": command_id, "hub": hub.id, "ward": hub.ward, "cmd": cmd, "args": args, "by": by,
               "sent_at": now, "timeout_at": now + self.timeout, "state": "sent"}
        with self.store.write() as conn:
            conn.execute(tables.commands.insert().values(**row))
            body = {"kind": "command", "action": "sent", "id": command_id, "hub": hub.id, "cmd": cmd,
                    "args": args, "by": by}
            seq = conn.execute(tables.feed.insert().returning(tables.feed.c.seq)
                               .values(at=now, kind="command", body=body)).scalar_one()
        with self._cond:
            self._deadlines[command_id] = self.clock.monotonic() + self.timeout
        topics = Topics(self.root, hub.ward, hub.id)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.reply
        props.CorrelationData = command_id.encode()
        self.publish(topics.cmd, json.dumps(payload, separators=(",", ":")).encode(), props)
        log.info("command %s %s to %s by %s", command_id, cmd, hub.id, by)
        self.on_feed([{"seq": seq, "at": now, **body}])
        return {**row, "reply": None, "replied_at": None}

    def replied(self, ids: list[str]) -> None:
        """The ingest committed replies to these commands."""
        with self._cond:
            for i in ids:
                self._deadlines.pop(i, None)
            self._cond.notify_all()

    def wait(self, command_id: str, timeout: float) -> dict[str, Any] | None:
        """The command's record once it is no longer awaiting a reply, or as it is after
        ``timeout`` seconds; None when there is no such command."""
        deadline = self.clock.monotonic() + timeout
        while True:
            found = self.get(command_id)
            if found is None or found["state"] != "sent":
                return found
            with self._cond:
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    return found
                self._cond.wait(min(left, 0.5))

    def expire(self) -> None:
        """Mark commands past their deadline as timed out."""
        now = self.clock.monotonic()
        with self._cond:
            due = [i for i, d in self._deadlines.items() if d <= now]
            for i in due:
                del self._deadlines[i]
        if not due:
            return
        wall = self.clock.time()
        feed = []
        with self.store.write() as conn:
            c = tables.commands.c
            for i in due:
                if conn.execute(tables.commands.update().where(c.id == i, c.state == "sent")
                                .values(state="timeout")).rowcount:
                    body = {"kind": "command", "action": "timeout", "id": i, "state": "timeout"}
                    seq = conn.execute(tables.feed.insert().returning(tables.feed.c.seq)
                                       .values(at=wall, kind="command", body=body)).scalar_one()
                    feed.append({"seq": seq, "at": wall, **body})
        for f in feed:
            log.warning("command %s: no reply within %g s", f["id"], self.timeout)
        with self._cond:
            self._cond.notify_all()
        if feed:
            self.on_feed(feed)

    def get(self, command_id: str) -> dict[str, Any] | None:
        with self.store.read() as conn:
            r = conn.execute(sa.select(tables.commands).where(tables.commands.c.id == command_id)).first()
        return _row(r) if r is not None else None

    def list(self, *, hub: str | None = None, state: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        stmt = sa.select(tables.commands).order_by(tables.commands.c.sent_at.desc()).limit(limit)
        if hub:
            stmt = stmt.where(tables.commands.c.hub == hub)
        if state:
            stmt = stmt.where(tables.commands.c.state == state)
        with self.store.read() as conn:
            return [_row(r) for r in conn.execute(stmt)]
