"""The JSON Schemas of the contract, the normative part, and validation against them.

The files are ``schemas/<name>.json``. Version 1, what hubs publish today: ``event`` (the
envelope), ``status``, ``command`` and ``reply``; ``alert``, the one schema of an alert, is
``$defs/alert`` of ``event.json``, so that file stands alone for a consumer, and the hub's
OpenAPI document uses the same schema. Version 2 (signed, confirmed, supervised): ``event-v2``
(with ``alert-v2``, the wire alert, in its ``$defs``), ``status-v2``, ``command-v2``,
``reply-v2`` and ``receipt-v2``.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).with_name("schemas")

#: Schemas defined inside another file: name -> (file, name under its ``$defs``).
_DEFINED_IN = {"alert": ("event", "alert"), "alert-v2": ("event-v2", "alert")}


@functools.cache
def _load(name: str) -> dict[str, Any]:
    if name in _DEFINED_IN:
        file, key = _DEFINED_IN[name]
        return _load(file)["$defs"][key]
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text("utf-8"))


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (event, alert, status, command, reply, and their ``-v2``
    versions, and receipt-v2); a copy of its own."""
    return copy.deepcopy(_load(name))


@functools.cache
def version(name: str) -> int | None:
    """The contract version schema ``name`` is of (its ``v`` constant), if it says."""
    v = _load(name).get("properties", {}).get("v", {})
    return v.get("const") if isinstance(v, dict) else None


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    # A schema from $defs has no $schema of its own: it is of its file's draft.
    draft_of = _load(_DEFINED_IN[name][0] if name in _DEFINED_IN else name)
    cls = jsonschema.validators.validator_for(draft_of)
    return cls(_load(name))


def problems(name: str, payload: Any) -> list[str]:
    """What is wrong with ``payload`` under schema ``name`` (empty when it conforms)."""
    out = []
    for e in sorted(_validator(name).iter_errors(payload), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, e.absolute_path)) or "(top level)"
        out.append(f"{where}: {e.message}")
    return out
