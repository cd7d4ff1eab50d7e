"""The Prometheus text exposition format (version 0.0.4), for an app's ``/metrics``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: One sample: its labels and its value (None: left out).
Sample = tuple[dict[str, Any], Any]


def label_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if not v.is_integer() else str(int(v))


class Exposition:
    """One scrape's text, built one metric family at a time."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples: Iterable[Sample]) -> None:
        self._lines.append(f"# HELP {name} {help_}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            lab = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{lab}}} {number(value)}" if lab else f"{name} {number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
