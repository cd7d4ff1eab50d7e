"""What every benchmark shares: percentiles and the report that bench/run gathers."""

from __future__ import annotations

import json


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report(bench: str, rows: list[dict]) -> None:
    """Print the rows for a person, then the JSON line bench/run reads."""
    width = max((len(r["figure"]) for r in rows), default=0)
    for r in rows:
        print(f"{r['figure']:<{width}}  {r['value']!s:>10} {r.get('unit', ''):<9} "
              f"target {r.get('target') or '-':<22} baseline {r.get('baseline', '')!s:>10}  "
              f"ratio {r.get('ratio', '')}")
    print(json.dumps({"bench": bench, "rows": rows}))
