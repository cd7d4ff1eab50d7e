"""Reading the store for the page and the API: query-string filters and the event log.

Every filter is checked and refused with a message naming the parameter; the
page's form and the API share these, so both say the same thing.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from hubd.model import AlertKind, AlertState
from hubd.store import Store
from hubd.web.errors import ApiError

KINDS = [k.value for k in AlertKind]
STATES = [s.value for s in AlertState]
#: How many events the log scans when filtering by alert kind/state/source (kept in Python).
SCAN_LIMIT = 5000


def _bad(name: str, message: str) -> ApiError:
    return ApiError("bad_request", f"parameter {name!r}: {message}")


def time_arg(args: MultiDict[str, str], name: str) -> float | None:
    """Epoch seconds or an ISO date/time such as 2026-11-21T08:00 (hub local time)."""
    text = args.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError, OSError):
            raise _bad(name, f"{text!r} is not a time: expected epoch seconds or e.g. 2026-11-21T08:00") \
                from None
    if not -1e11 < value < 1e11:
        raise _bad(name, f"{text!r} is out of range")
    return value


def int_arg(args: MultiDict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = args.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _bad(name, f"{text!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise _bad(name, f"{value} is out of range ({lo}..{hi})")
    return value


def bool_arg(args: MultiDict[str, str], name: str) -> bool | None:
    text = args.get(name, "").strip().lower()
    if not text:
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _bad(name, f"{text!r} is not a boolean: expected true or false")


def choice_arg(args: MultiDict[str, str], name: str, choices: list[str]) -> str | None:
    text = args.get(name, "").strip()
    if not text:
        return None
    if text not in choices:
        raise _bad(name, f"{text!r} is not one of {', '.join(choices)}")
    return text


def text_arg(args: MultiDict[str, str], name: str, max_len: int = 128) -> str | None:
    text = args.get(name, "").strip()
    if not text:
        return None
    if len(text) > max_len:
        raise _bad(name, f"longer than {max_len} characters")
    return text


def alerts(store: Store, args: MultiDict[str, str]) -> list[dict[str, Any]]:
    """``GET /api/alerts``: open, remote, kind, state, source, since, until, limit."""
    open_only = bool_arg(args, "open")
    found = store.alerts(open_only=bool(open_only), remote=bool_arg(args, "remote"),
                         kind=choice_arg(args, "kind", KINDS), state=choice_arg(args, "state", STATES),
                         source=text_arg(args, "source"), since=time_arg(args, "since"),
                         until=time_arg(args, "until"), limit=int_arg(args, "limit", 200, 1, 10_000))
    return [a.to_dict() for a in found]


@dataclass(frozen=True)
class EventFilter:
    since: float | None = None
    until: float | None = None
    type: str | None = None
    alert: str | None = None
    kind: str | None = None
    state: str | None = None
    source: str | None = None
    limit: int = 500

    @classmethod
    def parse(cls, args: MultiDict[str, str]) -> EventFilter:
        f = cls(since=time_arg(args, "since"), until=time_arg(args, "until"), type=text_arg(args, "type"),
                alert=text_arg(args, "alert", 64), kind=choice_arg(args, "kind", KINDS),
                state=choice_arg(args, "state", STATES), source=text_arg(args, "source"),
                limit=int_arg(args, "limit", 500, 1, 10_000))
        if f.since is not None and f.until is not None and f.until < f.since:
            raise _bad("until", "is before 'since'")
        return f

    def query_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "limit"}


def _matches(row: dict[str, Any], f: EventFilter) -> bool:
    alert = row["envelope"].get("alert") or {}
    if f.kind is not None and alert.get("kind") != f.kind:
        return False
    if f.state is not None and alert.get("state") != f.state:
        return False
    # An alert's source is its button (or the hub it came from); other events' is their actor.
    return f.source is None or f.source in (alert.get("source"), row["actor"])


def events(store: Store, f: EventFilter) -> list[dict[str, Any]]:
    """The event log, newest first.  kind/state/source match the alert as it was after
    the event (its envelope), so a resolved alert's 'raised' event still says 'raised'."""
    extra = f.kind is not None or f.state is not None or f.source is not None
    rows = store.events(alert_id=f.alert, since=f.since, until=f.until, type_prefix=f.type,
                        limit=SCAN_LIMIT if extra else f.limit, newest_first=True)
    if extra:
        rows = [r for r in rows if _matches(r, f)][:f.limit]
    out = []
    for r in rows:
        alert = r["envelope"].get("alert") or {}
        out.append({"seq": r["seq"], "id": r["id"], "type": r["type"], "time": r["time"], "hub": r["hub"],
                    "actor": r["actor"], "alert_id": r["alert_id"], "kind": alert.get("kind"),
                    "state": alert.get("state"), "source": alert.get("source"), "zone": alert.get("zone"),
                    "data": r["data"]})
    return out


CSV_COLUMNS = ["seq", "time_iso", "time", "type", "alert_id", "kind", "state", "zone", "source", "actor",
               "hub", "id", "data"]


def _cell(value: Any) -> Any:
    # Spreadsheets run cells that start with = + - @ as formulas: defuse them.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def events_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        iso = datetime.fromtimestamp(r["time"]).isoformat(timespec="seconds")
        w.writerow([_cell(x) for x in (r["seq"], iso, r["time"], r["type"], r["alert_id"] or "",
                                       r["kind"] or "", r["state"] or "", r["zone"] or "", r["source"] or "",
                                       r["actor"], r["hub"], r["id"], json.dumps(r["data"], sort_keys=True))])
    return buf.getvalue()
