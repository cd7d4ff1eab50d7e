"""The receipt: the centre's signed word to a hub that it has committed the hub's events
and statuses.

Sent to the origin's ``<root>/<ward>/<hub>/receipt`` (QoS 1, not retained) only after the
commit, under the root the events came by. The contract builds it (``receipts_for`` cuts the
ids into receipts that each fit one mesh packet) and the centre signs each with its key; this
module is the one place that does both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hubd.contract import Topics, receipts_for, sign


def receipt_topic(root: str, ward: str, hub: str) -> str:
    return Topics(root, ward, hub).receipt


def signed_receipts(hub: str, ids: Iterable[str], now: float, key: Ed25519PrivateKey) -> list[dict[str, Any]]:
    """Receipts naming every id of ``ids`` (each an event or status id of ``hub``), signed."""
    return [sign("receipt", r, key) for r in receipts_for(hub=hub, time=int(now), ids=ids)]
