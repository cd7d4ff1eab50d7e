"""Commands to hubs: ack, resolve, cancel, silence, siren_test and status over a hub's
``cmd`` topic, each with a unique id, who asked, a reply matched by that id, and a timeout.

A command is stored before it is published, so it is never sent without a record. It goes
in the contract version the hub was last heard speaking (a hub with a public key enrolled and
not heard yet: version 2): version 2 commands carry the hub, the centre's time and who asked,
signed with the centre's key, which is all a hub will execute; version 1 commands are plain,
for hubs not yet migrated. The hub answers on its ``<base>/reply`` (named as the MQTT v5
Response Topic, the id as Correlation Data); the ingest commits the reply like any message and
tells ``Commands``, which wakes whoever waits. A command without a reply within the timeout
(monotonic) is marked timed out; a late reply is still recorded. ``command_payload`` is the
one place that builds the wire form.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hubd.centre import tables
from hubd.centre.clock import SYSTEM_CLOCK, Clock
from hubd.centre.registry import HubRecord
from hubd.centre.store import Store
from hubd.contract import MQTT_COMMANDS, Topics, command_payload_v2, problems, sign

log = logging.getLogger("hubd.centre.commands")

#: publish(topic, payload, properties): the ingest's MQTT client, QoS 1.
Publish = Callable[[str, bytes, Properties | None], None]


class CommandError(Exception):
    """A command refused before it was sent (``code`` as in the API's errors)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def command_payload(version: int, *, command_id: str, cmd: str, args: dict[str, Any], hub: str, time: float,
                    by: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The command as published: version 2 signed (schema ``command-v2``), or version 1
    (schema ``command``)."""
    if version == 1:
        return {"id": command_id, "cmd": cmd, **args}
    unsigned = command_payload_v2(id=command_id, cmd=cmd, hub=hub, time=time, by=by, alert=args.get("alert"),
                                  outcome=args.get("outcome"))
    return sign("command", unsigned, key)


def _row(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


class Commands:
    def __init__(self, store: Store, roots: dict[str, int], timeout: float, key: Ed25519PrivateKey, *,
                 publish: Publish | None = None, clock: Clock = SYSTEM_CLOCK):
        self.store = store
        #: The topic root of each contract version.
        self.root_of = {version: root for root, version in roots.items()}
        self.key = key
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
        version = self.version_of(hub)
        if version not in self.root_of:
            raise CommandError("unavailable", f"hub {hub.id} speaks contract version {version}, which this "
                                              "centre does not read ([mqtt] root_v1 is empty)")
        command_id = uuid.uuid4().hex
        now = self.clock.time()
        payload = command_payload(version, command_id=command_id, cmd=cmd, args=args, hub=hub.id, time=now,
                                  by=by, key=self.key)
        wrong = problems("command-v2" if version == 2 else "command", payload)
        if wrong:
            raise CommandError("bad_request", f"{cmd}: " + "; ".join(wrong[:3]))
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
        topics = Topics(self.root_of[version], hub.ward, hub.id)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.reply
        props.CorrelationData = command_id.encode()
        self.publish(topics.cmd, json.dumps(payload, separators=(",", ":")).encode(), props)
        log.info("command %s %s to %s by %s", command_id, cmd, hub.id, by)
        self.on_feed([{"seq": seq, "at": now, **body}])
        return {**row, "reply": None, "replied_at": None}

    def version_of(self, hub: HubRecord) -> int:
        """The contract version to command ``hub`` in: the one it was last heard speaking."""
        with self.store.read() as conn:
            heard = conn.execute(sa.select(tables.hubs.c.contract).where(tables.hubs.c.id == hub.id)).scalar()
        return int(heard) if heard else (2 if hub.public_key else 1)

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
