"""MQTT topics: every hub has one subtree, ``<root>/<ward>/<hub>/``, for any ward and hub.

``Topics`` builds the topics of one hub, ``parse_topic`` reads any hub's topic back, and
``topic_filter`` makes subscription filters across wards and hubs (``<root>/+/+/events``).
The root comes from the hub's ``[mqtt] root`` (default ``safercom/v1``) and may hold several
levels; ward and hub ids are single levels without wildcards (see ``ids``), so a topic parses
one way only. As with ids, building trusts its arguments (the hub's configuration validated
them) and parsing is strict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hubd.contract.ids import HUB_PATTERN, WARD_PATTERN

_HUB_RE = re.compile(HUB_PATTERN)
_WARD_RE = re.compile(WARD_PATTERN)
_WILDCARD = "+"


@dataclass(frozen=True)
class Topics:
    """The topics of one hub: ``<root>/<ward>/<hub>/...``."""

    root: str
    ward: str
    hub: str

    @property
    def base(self) -> str:
        return f"{self.root}/{self.ward}/{self.hub}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    @property
    def receipt(self) -> str:
        """Where the centre's receipts for this hub's events go (contract version 2)."""
        return f"{self.base}/receipt"

    @property
    def cap(self) -> str:
        return f"{self.base}/cap"

    @property
    def ha_state(self) -> str:
        return f"{self.base}/ha/state"

    @property
    def ha_siren_set(self) -> str:
        return f"{self.base}/cmd/siren"

    def snapshot(self, alert_id: str) -> str:
        return f"{self.base}/snapshots/{alert_id}"

    def of(self, hub: str, ward: str | None = None) -> Topics:
        """The topics of another hub under the same root: of this ward unless ``ward`` is given."""
        return replace(self, hub=hub, ward=self.ward if ward is None else ward)


@dataclass(frozen=True)
class TopicRef:
    """Whose topic it is, and which of its topics: ``leaf`` is the rest after the hub
    (``events``, ``status``, ``cmd/siren``, ``snapshots/<alert-id>``...)."""

    ward: str
    hub: str
    leaf: str


def parse_topic(root: str, topic: str) -> TopicRef | None:
    """``TopicRef`` for a topic of any hub under ``root``; None for another root, a ward or hub
    that is not a valid id, an empty level or a wildcard."""
    prefix = f"{root}/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix):].split("/", 2)
    if len(parts) < 3:
        return None
    ward, hub, leaf = parts
    levels = leaf.split("/")
    if not (_WARD_RE.fullmatch(ward) and _HUB_RE.fullmatch(hub)) \
            or any(not level or "+" in level or "#" in level for level in levels):
        return None
    return TopicRef(ward, hub, leaf)


def topic_filter(root: str, leaf: str, *, ward: str = _WILDCARD, hub: str = _WILDCARD) -> str:
    """A subscription filter for ``leaf`` of every hub of every ward (``<root>/+/+/<leaf>``),
    or of one ward or hub when given; ``leaf`` may itself end in ``#``."""
    if ward != _WILDCARD and not _WARD_RE.fullmatch(ward):
        raise ValueError(f"ward {ward!r} is neither '+' nor a ward id ({WARD_PATTERN})")
    if hub != _WILDCARD and not _HUB_RE.fullmatch(hub):
        raise ValueError(f"hub {hub!r} is neither '+' nor a hub id ({HUB_PATTERN})")
    return f"{root}/{ward}/{hub}/{leaf}"
