"""What the MQTT link publishes besides the outbox's events: the interface of its side outputs.

The link (``hubd.radio.mqtt``) owns the connection, the session, the outbox drain and its
PUBACKs, commands and neighbours.  Everything else it publishes comes from an
:class:`MqttOutput` through these hooks: a camera snapshot with its event
(``hubd.radio.snapshots``), CAP (``hubd.radio.cap``), Home Assistant discovery and state
(``hubd.radio.homeassistant``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubd.model import Event


@dataclass(frozen=True)
class Message:
    """One QoS 1 message an output asks the link to publish."""

    topic: str
    payload: bytes
    content_type: str | None = None  # MQTT v5: sent as a property, with the event's id
    retain: bool = False


#: How an output publishes outside an outbox row (the link's, for ``on_connect`` and ``publish_due``).
Publish = Callable[[Message], None]


class MqttOutput:
    """A side output of the MQTT link.  Every hook does nothing here; an output overrides
    the ones it needs.  Hooks run in the link's threads and must not block."""

    def messages(self, envelope: dict[str, Any]) -> list[Message]:
        """Messages that go with one outbox row, after its event (``envelope``, as
        published).  The row counts as delivered only once each is acknowledged."""
        return []

    def subscriptions(self) -> list[str]:
        """Topics this output takes messages on (subscribed at every connect)."""
        return []

    def on_connect(self, publish: Publish) -> None:
        """The link has (re)connected: publish what the broker must hold."""

    def on_message(self, topic: str, payload: bytes) -> bool:
        """A message on one of :meth:`subscriptions`.  True if there is now something to
        publish (the link then calls :meth:`publish_due` soon)."""
        return False

    def on_event(self, event: Event) -> bool:
        """An event was committed (called in the committing thread: be quick).  True if
        there is something to publish."""
        return False

    def publish_due(self, publish: Publish, periodic: bool) -> None:
        """Publish what is due; called by the link's drain while connected, with
        ``periodic`` set once every status interval."""
