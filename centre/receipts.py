"""The receipt: the centre's word to a hub that it has committed the hub's events.

Sent to the origin's ``<root>/<ward>/<hub>/receipt`` (QoS 1, not retained) only after the
commit, naming at most ``MAX_IDS`` event ids of that one hub, sorted. This module is the one
place that builds it (docs/contract-v2's draft shape); when the contract's signed receipt
lands, ``receipt_payload`` becomes a call to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from hubd.contract import Topics

#: Ids in one receipt: small enough to cross the mesh as one frame.
MAX_IDS = 32
RECEIPT_VERSION = 2


def receipt_topic(root: str, ward: str, hub: str) -> str:
    return f"{Topics(root, ward, hub).base}/receipt"


def receipt_payload(hub: str, ids: Iterable[str], now: float) -> dict[str, Any]:
    """One receipt for ``ids``, all events of ``hub``; ``time`` in whole seconds."""
    return {"v": RECEIPT_VERSION, "type": "receipt", "hub": hub, "time": int(now), "ids": sorted(ids)}


def chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    """``ids`` sorted, in groups of at most ``MAX_IDS``: one receipt each."""
    ordered = sorted(set(ids))
    for i in range(0, len(ordered), MAX_IDS):
        yield ordered[i:i + MAX_IDS]
