"""``hubd centre``: run the centre, and look at or act through it from the command line.

Reading (alerts, hubs, events, quarantine) and managing (hub add/list/remove, user add)
work on the centre's store, whether or not the centre runs; a running centre is told at
once of a registry change. Acting on hubs (ack, resolve, command) goes through the running
centre's control socket, since only it talks to the broker. ``--json`` on every command.

The configuration comes from ``-c``, else ``$HUBD_CENTRE_CONFIG``, else
``/etc/hubd/centre.toml``.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hubd.centre.config import ConfigError, load_config
from hubd.centre.store import StoreError

SYSTEM_CONFIG = Path("/etc/hubd/centre.toml")


class CliError(Exception):
    """Said in one line, exit code 2."""


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("HUBD_CENTRE_CONFIG") or SYSTEM_CONFIG)


def _config(args: argparse.Namespace) -> Any:
    path = config_path(args)
    if not path.exists():
        raise CliError(f"no configuration at {path}: give one with -c centre.toml "
                       "(an annotated example is centre/example.toml)")
    return load_config(path)


def _store(args: argparse.Namespace) -> Any:
    from hubd.centre.store import Store

    cfg = _config(args)
    return Store.open(cfg.store_url, password=cfg.store_password())


def _control(args: argparse.Namespace, request: dict[str, Any], timeout: float = 90.0) -> Any:
    """A request to the running centre; CliError with its refusal."""
    from hubd.centre.control import request as send

    reply = send(_config(args).control_socket, request, timeout)
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise CliError(f"{err.get('code', 'error')}: {err.get('message', reply)}")
    return reply["result"]


def _try_control(args: argparse.Namespace, request: dict[str, Any]) -> Any:
    """The running centre's answer, or None when none runs."""
    from hubd.centre.control import ControlError

    try:
        return _control(args, request, timeout=10)
    except ControlError:
        return None


def since(text: str) -> float:
    """'15m', '2h', '3d', an ISO date/time, or Unix seconds."""
    from hubd.centre.queries import parse_time

    try:
        return parse_time(text, time.time())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _emit(args: argparse.Namespace, value: Any, human: Callable[[Any], None]) -> int:
    if args.json:
        print(json.dumps(value, indent=2, default=str))
    else:
        human(value)
    return 0


# -- run ----------------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from hubd.centre.control import private_dir
    from hubd.centre.service import Centre

    cfg = _config(args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    lock = private_dir(cfg.centre.runtime_dir) / "centre.lock"
    lock_file = open(lock, "w")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CliError(f"another centre runs with this runtime directory ({lock})") from None
    centre = Centre(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    centre.start()
    urls = [f"broker {cfg.mqtt.host}:{cfg.mqtt.port} (topics {cfg.mqtt.root}/+/+/...)",
            f"store {centre.store.where}"]
    if centre.web is not None:
        urls.append(f"API and page http://{cfg.web.bind}:{centre.web.port}/ (docs /api/openapi.json)")
    print(f"hubd centre {cfg.centre.name!r} running: " + "; ".join(urls), flush=True)
    try:
        centre.run_forever(stop)
    finally:
        centre.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    print(f"{args.file}: OK (store {cfg.store_url}, broker {cfg.mqtt.host}:{cfg.mqtt.port})")
    return 0


# -- reading -----------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    def human(s: dict[str, Any]) -> None:
        print(f"{s['name']}: up {s['uptime']:.0f} s; broker {s['broker']} "
              f"{'connected' if s['connected'] else 'NOT CONNECTED'}; store {s['store']}")
        print(f"hubs: {', '.join(f'{k} {v}' for k, v in sorted(s['hubs'].items())) or 'none enrolled'}"
              + ("  (supervision paused)" if s["supervision_paused"] else ""))
        i = s["ingest"]
        print(f"ingest: {i['rate']}/s, {i['stored']} stored, {i['duplicates']} duplicates, "
              f"{i['quarantined']} quarantined since the start; backlog {s['backlog']}")
        print(f"alerts: {', '.join(f'{k} {v}' for k, v in sorted(s['alerts'].items())) or 'none'}; "
              f"receipts pending {s['receipts_pending']}; quarantine "
              f"{sum(s['quarantine'].values())}")

    return _emit(args, _control(args, {"cmd": "status"}), human)


def cmd_alerts(args: argparse.Namespace) -> int:
    from hubd.centre import queries

    states = {"open": list(queries.OPEN_STATES), "all": []}.get(args.state, [args.state])
    store = _store(args)
    try:
        found = queries.alerts(store, ward=args.ward, hub=args.hub, states=states, since=args.since,
                               limit=args.limit)
    finally:
        store.close()

    def human(alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            print("no alerts")
            return
        rows = [("ALERT", "KIND", "STATE", "LVL", "ZONE", "HUB", "WARD", "RAISED", "TRUST")]
        rows += [(a["id"], a["kind"], a["state"] + (f" ({a['outcome']})" if a["outcome"] else ""),
                  str(a["level"]), a["zone"] or "-", a["hub"], a["ward"], _when(a["raised_at"]), a["trust"])
                 for a in alerts]
        _table(rows, sys.stdout)

    return _emit(args, found, human)


def cmd_events(args: argparse.Namespace) -> int:
    from hubd.centre import queries

    store = _store(args)
    try:
        found = queries.events(store, hub=args.hub, alert_id=args.alert, since=args.since, limit=args.limit)
    finally:
        store.close()

    def human(events: list[dict[str, Any]]) -> None:
        for e in events:
            paths = ", ".join(p["path"] + (f" via {p['via']}" if p["via"] else "") for p in e["paths"])
            print(f"{_when(e['time'])}  {e['type']:<20} {e['id']:<26} {e['trust']:<13} {paths}")

    return _emit(args, found, human)


def _print_hubs(hubs: list[dict[str, Any]]) -> None:
    if not hubs:
        print("no hubs enrolled: hubd centre hub add ID --ward WARD")
        return
    rows = [("HUB", "WARD", "NAME", "HEALTH", "LAST HEARD", "SKEW", "KEY")]
    for h in hubs:
        health = (h.get("health") or {}).get("state", "-")
        skew = f"{h['clock_skew']:+.1f} s" if h.get("clock_skew") is not None else "-"
        rows.append((h["id"], h["ward"], h["name"] or "-", health, _when(h.get("last_heard_at")), skew,
                     "yes" if h.get("public_key") else "-"))
    _table(rows, sys.stdout)


def cmd_hubs(args: argparse.Namespace) -> int:
    """With the centre running, its live health; else what the store last knew."""
    from hubd.centre import queries

    live = _try_control(args, {"cmd": "hubs"})
    if live is None:
        store = _store(args)
        try:
            live = queries.hubs(store)
        finally:
            store.close()
    return _emit(args, live, _print_hubs)


def cmd_quarantine(args: argparse.Namespace) -> int:
    from hubd.centre import queries, registry

    store = _store(args)
    try:
        found = {"messages": queries.quarantine(store, hub=args.hub, code=args.code, limit=args.limit),
                 "unknown_hubs": registry.candidates(store)}
    finally:
        store.close()

    def human(q: dict[str, Any]) -> None:
        for m in q["messages"]:
            print(f"{_when(m['received_at'])}  {m['code']:<14} {m['topic']}  {m['reason']}")
        for h in q["unknown_hubs"]:
            print(f"not enrolled: {h['hub']} (ward {h['ward']}), {h['messages']} messages, "
                  f"last {_when(h['last_at'])}: hubd centre hub add {h['hub']} --ward {h['ward']}")

    return _emit(args, found, human)


# -- acting through the running centre ---------------------------------------------------------------

def _print_command(c: dict[str, Any]) -> None:
    reply = c.get("reply") or {}
    if c["state"] == "replied":
        print(f"{c['cmd']} on {c['hub']}: done ({c['id']})")
    elif c["state"] == "failed":
        err = reply.get("error") or {}
        print(f"{c['cmd']} on {c['hub']}: refused by the hub: {err.get('code')}: {err.get('message')}")
    elif c["state"] == "timeout":
        print(f"{c['cmd']} on {c['hub']}: no reply within the timeout ({c['id']})")
    else:
        print(f"{c['cmd']} sent to {c['hub']}, no reply yet ({c['id']}); see hubd centre commands")


def _command_result(args: argparse.Namespace, request: dict[str, Any]) -> int:
    done = _control(args, {**request, "wait": args.wait})
    _emit(args, done, _print_command)
    return 0 if done["state"] in ("replied", "sent") else 1


def cmd_ack(args: argparse.Namespace) -> int:
    return _command_result(args, {"cmd": "ack", "alert": args.alert})


def cmd_resolve(args: argparse.Namespace) -> int:
    return _command_result(args, {"cmd": "resolve", "alert": args.alert, "outcome": args.outcome})


def cmd_command(args: argparse.Namespace) -> int:
    return _command_result(args, {"cmd": args.name, "hub": args.hub})


# -- the registry and accounts -------------------------------------------------------------------------

def cmd_hub(args: argparse.Namespace) -> int:
    from hubd.centre import registry
    from hubd.centre.registry import HubRecord, RegistryError

    store = _store(args)
    by = f"cli:{getpass.getuser()}"
    try:
        if args.action == "list":
            return cmd_hubs(args)
        if not args.id:
            raise CliError(f"hub {args.action}: give the hub id")
        if args.action == "add":
            if not args.ward:
                raise CliError("hub add: give --ward")
            record = HubRecord(id=args.id, ward=args.ward, name=args.name or "", lat=args.lat, lon=args.lon,
                               public_key=args.key, report_every=args.report_every)
            try:
                found = registry.enrol(store, record, by=by, replace=args.replace).as_dict()
            except RegistryError as e:
                raise CliError(str(e)) from None
            message = f"hub {args.id} ({args.ward}) {'changed' if args.replace else 'enrolled'}"
        else:
            try:
                registry.remove(store, args.id, by=by)
            except RegistryError as e:
                raise CliError(str(e)) from None
            found, message = {"id": args.id, "removed": True}, f"hub {args.id} removed"
    finally:
        store.close()
    _try_control(args, {"cmd": "reload"})
    return _emit(args, found, lambda _: print(message))


def cmd_user(args: argparse.Namespace) -> int:
    from hubd.centre.accounts import AccountError, Accounts

    store = _store(args)
    try:
        accounts = Accounts(store)
        if args.action == "list":
            return _emit(args, accounts.list(), _print_users)
        if not args.name:
            raise CliError(f"user {args.action}: give the user name")
        try:
            if args.action == "remove":
                accounts.remove(args.name)
            else:
                password = _read_password(args)
                if args.action == "add":
                    accounts.add(args.name, password, args.role)
                else:
                    accounts.passwd(args.name, password)
        except AccountError as e:
            raise CliError(str(e)) from None
    finally:
        store.close()
    done = {"add": "added", "passwd": "password changed", "remove": "removed"}[args.action]
    return _emit(args, {"user": args.name, "done": done}, lambda _: print(f"user {args.name}: {done}"))


def cmd_keys(args: argparse.Namespace) -> int:
    """The centre's signing key: ``init`` makes it (never over one), ``show`` prints its
    public half, which every hub needs in ``[trust] centre``."""
    from hubd.contract import (
        KeyFileError,
        generate_private_key,
        load_private_key,
        public_key_text,
        save_private_key,
    )

    path = _config(args).key_file
    try:
        if args.action == "init":
            key = generate_private_key()
            save_private_key(key, path)
        else:
            key = load_private_key(path)
    except KeyFileError as e:
        hint = "; make it with 'hubd centre keys init'" if e.code == "key_missing" else ""
        raise CliError(f"{e.message}{hint}") from None
    text = public_key_text(key)
    return _emit(args, {"key_file": str(path), "public_key": text},
                 lambda _: print(f"{text}\n(every hub needs it in [trust] centre; private key: {path})"))


def _print_users(users: list[dict[str, Any]]) -> None:
    for u in users:
        print(f"{u['name']:<20} {u['role']}")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the passwords differ")
    return first


# -- the parser -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hubd centre", description="The E-telligence centre: every ward hub's "
                                "alerts, stored once, confirmed and supervised.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config",
                        help=f"centre.toml (default $HUBD_CENTRE_CONFIG or {SYSTEM_CONFIG})")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", parents=[common], help="run the centre")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("check-config", help="validate a centre.toml")
    s.add_argument("file")
    s.set_defaults(func=cmd_check_config)
    s = sub.add_parser("status", parents=[common], help="the running centre's state")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("alerts", parents=[common], help="alerts (open ones unless --state)")
    s.add_argument("--state", default="open",
                   help="open (default), all, raised, acknowledged, resolved, cancelled")
    s.add_argument("--hub")
    s.add_argument("--ward")
    s.add_argument("--since", type=since, help="raised since: 15m, 2h, 1d or an ISO time")
    s.add_argument("--limit", type=int, default=200)
    s.set_defaults(func=cmd_alerts)
    s = sub.add_parser("events", parents=[common], help="events, newest first, with their paths")
    s.add_argument("--hub")
    s.add_argument("--alert")
    s.add_argument("--since", type=since)
    s.add_argument("--limit", type=int, default=100)
    s.set_defaults(func=cmd_events)
    s = sub.add_parser("hubs", parents=[common], help="enrolled hubs and their health")
    s.set_defaults(func=cmd_hubs)
    s = sub.add_parser("quarantine", parents=[common], help="refused messages, and hubs to enrol")
    s.add_argument("--hub")
    s.add_argument("--code")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=cmd_quarantine)

    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--wait", type=float, default=10.0,
                      help="seconds to wait for the hub's reply (default 10)")
    s = sub.add_parser("ack", parents=[common, wait], help="acknowledge an alert on its hub")
    s.add_argument("alert")
    s.set_defaults(func=cmd_ack)
    s = sub.add_parser("resolve", parents=[common, wait], help="resolve an alert on its hub")
    s.add_argument("alert")
    s.add_argument("--outcome", required=True, choices=["genuine", "false_alarm", "test"])
    s.set_defaults(func=cmd_resolve)
    s = sub.add_parser("command", parents=[common, wait], help="silence, siren_test or status on a hub")
    s.add_argument("hub")
    s.add_argument("name", choices=["silence", "siren_test", "status"])
    s.set_defaults(func=cmd_command)

    s = sub.add_parser("hub", parents=[common], help="the registry: add, list, remove")
    s.add_argument("action", choices=["add", "list", "remove"])
    s.add_argument("id", nargs="?")
    s.add_argument("--ward")
    s.add_argument("--name")
    s.add_argument("--lat", type=float)
    s.add_argument("--lon", type=float)
    s.add_argument("--key", help="the hub's public key, ed25519:... as it printed it")
    s.add_argument("--report-every", type=float, help="its own reporting time in seconds")
    s.add_argument("--replace", action="store_true", help="change an enrolled hub")
    s.set_defaults(func=cmd_hub)

    s = sub.add_parser("keys", parents=[common], help="the centre's signing key: init, show")
    s.add_argument("action", nargs="?", choices=["init", "show"], default="show")
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser("user", parents=[common], help="accounts: add, passwd, remove, list")
    s.add_argument("action", choices=["add", "passwd", "remove", "list"])
    s.add_argument("name", nargs="?")
    s.add_argument("--role", choices=["operator", "supervisor", "viewer"], default="operator")
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    s.set_defaults(func=cmd_user)
    return p


def main(argv: list[str] | None = None) -> int:
    from hubd.centre.control import ControlError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, ConfigError, StoreError, ControlError) as e:
        print(f"hubd centre {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
