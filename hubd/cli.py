"""The ``hubd`` command line: run the daemon, and talk to a running one.

Commands that act on alerts go through the daemon's control socket, so they take the
same path (and the same checks) as the page and the central server's commands.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from hubd import __version__
from hubd.config import Config, ConfigError, load_config

SYSTEM_CONFIG = Path("/etc/hubd/hub.toml")


def demo_runtime_dir() -> Path:
    """Where ``hubd demo`` puts its control socket, so plain CLI commands find it."""
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/hubd-{os.getuid()}"
    return Path(base) / "hubd-demo"


def demo_config_link() -> Path:
    """Where a running ``hubd demo`` links its config, so local commands (``hubd user``,
    ``hubd doctor``) find it as the control socket's commands find its socket."""
    return demo_runtime_dir() / "hub.toml"


def _socket_path(args: argparse.Namespace) -> tuple[Path, frozenset[int]]:
    """The control socket, and the users (besides this one and root) whose daemon may answer
    on it: the owner of the hub's state directory (the hubd user under systemd)."""
    if os.environ.get("HUBD_SOCKET"):
        return Path(os.environ["HUBD_SOCKET"]), frozenset({0})
    config = args.config or os.environ.get("HUBD_CONFIG")
    if not config and SYSTEM_CONFIG.exists():
        config = str(SYSTEM_CONFIG)
    if config:
        from hubd.control import hub_owners

        cfg = load_config(config, check_files=False)
        return cfg.control_socket, hub_owners(cfg.state_dir)
    return demo_runtime_dir() / "control.sock", frozenset({0})


def _config_path(args: argparse.Namespace) -> Path:
    """The config ``hubd run`` uses: -c, $HUBD_CONFIG, else the system's."""
    path = args.config or os.environ.get("HUBD_CONFIG") or SYSTEM_CONFIG
    return Path(path)


def _local_config_path(args: argparse.Namespace) -> Path:
    """The config of the hub that local commands work on: as ``_config_path``, but without a
    system config, the running demo's (in the order ``_socket_path`` finds a socket)."""
    if args.config or os.environ.get("HUBD_CONFIG") or SYSTEM_CONFIG.exists():
        return _config_path(args)
    demo = demo_config_link()
    return demo if demo.exists() else SYSTEM_CONFIG


def parse_since(text: str) -> float:
    """'15m', '2h', '3d', an ISO date/time, or seconds since the epoch."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected e.g. 15m, 2h, 3d, 2026-11-21T08:00 or epoch seconds") from None


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _print_alerts(alerts: list[dict[str, Any]]) -> None:
    if not alerts:
        print("no alerts")
        return
    rows = [("ALERT", "KIND", "STATE", "LVL", "ZONE", "SOURCE", "RAISED")]
    for a in alerts:
        state = a["state"] + (f" ({a['outcome']})" if a.get("outcome") else "")
        state += " silent" if a.get("silent") else ""
        rows.append((a["id"], a["kind"], state, str(a["level"]), a["zone"] or "-",
                     a["source"] + (" (remote)" if a.get("remote") else ""), _fmt_time(a["raised_at"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print_events(events: list[dict[str, Any]]) -> None:
    for e in events:
        data = " ".join(f"{k}={v}" for k, v in (e.get("data") or {}).items())
        print(f"{_fmt_time(e['time'])}  {e['type']:<20} {e.get('alert_id') or '-':<14} "
              f"by {e['actor']}  {data}".rstrip())


def _pairs(info: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in info.items() if v not in (None, "", [], {}))


def _print_section(name: str, info: Any) -> None:
    """One provider's status: a line, or one indented line per part (sirens, buttons...)."""
    if not isinstance(info, dict):
        print(f"{name}: {info}")
    elif info and all(isinstance(v, dict) for v in info.values()):
        print(f"{name}:")
        for part, detail in info.items():
            print(f"  {part:<22} {_pairs(detail)}")
    else:
        flat = {k: v for k, v in info.items() if not isinstance(v, dict | list)}
        print(f"{name}: {_pairs(flat)}")
        for k, v in info.items():
            if isinstance(v, dict) and v:
                print(f"  {k}: {_pairs(v) if not all(isinstance(x, dict) for x in v.values()) else ''}")
                for part, detail in v.items():
                    if isinstance(detail, dict):
                        print(f"    {part:<20} {_pairs(detail)}")
            elif isinstance(v, list) and v:
                print(f"  {k}: {len(v)}")


def _print_status(s: dict[str, Any]) -> None:
    print(f"hub {s['ward']}/{s['hub']} {s['name']!r}  hubd {s['version']}  up {s['uptime']:.0f} s"
          + ("" if s.get("clock_synced", True) else "  CLOCK NOT SYNCED"))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["alerts"].items())) or "none"
    print(f"alerts: {counts}; open: {len(s['open_alerts'])}")
    links = dict(s["links"])
    if isinstance(links.get("power"), dict):
        from hubd.power import describe

        print(f"power: {describe(links.pop('power'))}")
    if isinstance(links.get("tamper"), dict):
        tamper = links.pop("tamper")
        print("enclosure: " + ("OPEN" if tamper.get("open") else "closed")
              + (f" (alert {tamper['alert']})" if tamper.get("alert") else ""))
    print("components:")
    for name, h in s["components"].items():
        print(f"  {name:<24} {h['status']}" + (f"  ({h['reason']})" if h.get("reason") else ""))
    for name, info in links.items():
        _print_section(name, info)
    if s.get("unsaved"):
        print(f"NOT SAVED: {len(s['unsaved'])} item(s) kept in memory until the store takes writes: "
              + ", ".join(u.get("alert", {}).get("id") or u["type"] for u in s["unsaved"]))
    if s["outbox"]:
        for dest, o in s["outbox"].items():
            print(f"outbox {dest}: {o['depth']} pending, oldest {o['oldest_age']} s")


def _remote(args: argparse.Namespace, request: dict[str, Any]) -> int:
    from hubd.control import ControlError, send_command

    try:
        path, trusted = _socket_path(args)
        reply = send_command(path, request, timeout=30 + float(request.get("hold", 0)),
                             trusted_owners=trusted)
    except (ControlError, ConfigError) as e:
        print(f"hubd: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(reply, indent=2, default=str))
        return 0 if reply["ok"] else 1
    if not reply["ok"]:
        print(f"hubd: {reply['error']['message']}", file=sys.stderr)
        return 1
    result = reply["result"]
    cmd = request["cmd"]
    if cmd == "alerts":
        _print_alerts(result)
    elif cmd == "events":
        _print_events(result)
    elif cmd == "status":
        _print_status(result)
    elif cmd in ("ack", "resolve", "cancel"):
        print(f"{result['id']} is now {result['state']}"
              + (f" ({result['outcome']})" if result.get("outcome") else ""))
    elif cmd == "press":
        print(f"pressed {result['pressed']} for {result['hold']} s")
    else:
        print("done")
    return 0


# --- local commands ------------------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        print(f"{args.file}: {len(e.errors)} error(s)", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    print(f"  hub {cfg.hub.ward}/{cfg.hub.id} {cfg.hub.name!r}; pins: {cfg.hardware.pin_factory}")
    print(f"  buttons: {', '.join(f'{b.name} (pin {b.pin}, {b.kind})' for b in cfg.buttons) or 'none'}")
    print(f"  sirens: {', '.join(f'{s.name} (pin {s.pin})' for s in cfg.sirens) or 'none'}")
    print(f"  camera: {cfg.camera.backend}; store: {cfg.store_path}")
    page = f"http://{cfg.web.bind}:{cfg.web.port}/" if cfg.web.enabled else "off"
    print(f"  page: {page}")
    print(f"  mqtt: {f'{cfg.mqtt.host}:{cfg.mqtt.port}' if cfg.mqtt else 'off'}; "
          f"mesh: {cfg.mesh.connection if cfg.mesh else 'off'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hubd.daemon import run, setup_logging

    setup_logging(args.log_level)
    try:
        cfg = load_config(_config_path(args))
    except ConfigError as e:
        for err in e.errors:
            print(f"hubd: config: {err}", file=sys.stderr)
        return 2
    return run(cfg)


def cmd_demo(args: argparse.Namespace) -> int:
    from hubd.demo import run_demo

    return run_demo(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from hubd.doctor import report, run_checks

    path = _local_config_path(args)
    return report(run_checks(path, timeout=args.timeout), path, as_json=args.json)


def _local_config(args: argparse.Namespace) -> Config | None:
    """The config, for a command that works on the hub's own files rather than through the
    daemon; None, having said why, when it is not valid."""
    path = _local_config_path(args)
    try:
        return load_config(path, check_files=False)
    except ConfigError as e:
        print(f"hubd: config: {'; '.join(e.errors)}", file=sys.stderr)
        if path == SYSTEM_CONFIG and not path.exists():
            print("hubd: no hub on this machine: give its config with -c FILE, or start `hubd demo`",
                  file=sys.stderr)
        return None


def cmd_user(args: argparse.Namespace) -> int:
    from hubd.store import Store
    from hubd.users import UserError, Users

    cfg = _local_config(args)
    if cfg is None:
        return 2
    store = Store(cfg.store_path)
    users = Users(store)
    try:
        if args.action == "list":
            for u in users.list():
                print(f"{u['name']:<20} {u['role']}")
            return 0
        if args.action == "remove":
            users.remove(args.name)
            print(f"removed {args.name}")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                print("hubd: the passwords differ", file=sys.stderr)
                return 1
        if args.action == "add":
            users.add(args.name, password, args.role)
            print(f"added {args.role} {args.name}")
        else:
            users.passwd(args.name, password)
            print(f"password of {args.name} changed")
    except UserError as e:
        print(f"hubd: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()  # says the store was closed: not a power cut at the next boot
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """``hubd keys init|show``: this hub's signing key (contract version 2)."""
    from hubd import contract
    from hubd.identity import init_key

    cfg = _local_config(args)
    if cfg is None:
        return 2
    path = cfg.signing_key_path
    try:
        key = init_key(path) if args.action == "init" else contract.load_private_key(path)
    except contract.KeyFileError as e:
        hint = " (make it with: hubd keys init)" if e.code == "key_missing" else ""
        print(f"hubd: {e.message}{hint}", file=sys.stderr)
        return 1
    public = contract.public_key_text(key)
    if args.json:
        print(json.dumps({"hub": cfg.hub.id, "key_file": str(path), "public_key": public}))
    elif args.action == "init":
        print(f"made {path}\n{public}\n\nEnrol this public key at the centre, and in the [trust] hubs of "
              f"this hub's neighbours:\n  {cfg.hub.id} = \"{public}\"")
    else:
        print(public)
    return 0


# --- parser --------------------------------------------------------------------------------

def _port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number, 0-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="config file (default $HUBD_CONFIG, /etc/hubd/hub.toml, "
                                               "else the running demo)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = argparse.ArgumentParser(prog="hubd", description="Community-security ward hub.")
    p.add_argument("--version", action="version", version=f"hubd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", parents=[common], help="run the daemon")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("demo", parents=[common], help="run a simulated hub on this machine")
    s.add_argument("--state-dir", help="where the demo keeps its store (default ~/.local/state/hubd-demo)")
    s.add_argument("--port", type=_port_number, help="page port (default 8080, or a free one if 8080 is "
                                                     "taken; 0 picks a free one)")
    s.add_argument("--bind", default="127.0.0.1")
    s.add_argument("--mqtt", metavar="HOST:PORT", help="also connect to this MQTT broker")
    s.add_argument("--hubs", type=int, default=1, choices=range(1, 21), metavar="N",
                   help="run N hubs (1-20) joined by a simulated LoRa mesh, each with its own page")
    s.add_argument("--mesh-loss", type=float, default=0.0, metavar="P",
                   help="with --hubs: packet loss on each simulated radio link (0-1)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("check-config", help="validate a config file")
    s.add_argument("file")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("status", parents=[common], help="health of the running hub")
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "status"}))

    s = sub.add_parser("alerts", parents=[common], help="open alerts (--all for every alert)")
    s.add_argument("--all", action="store_true")
    s.add_argument("--limit", type=int, default=200)
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "alerts", "all": a.all, "limit": a.limit}))

    s = sub.add_parser("events", parents=[common], help="the event log")
    s.add_argument("--since", type=parse_since, help="e.g. 15m, 2h, 1d or an ISO time")
    s.add_argument("--alert", help="only this alert's events")
    s.add_argument("--limit", type=int, default=500)
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "events", "limit": a.limit,
                                              **({"since": a.since} if a.since is not None else {}),
                                              **({"alert": a.alert} if a.alert else {})}))

    s = sub.add_parser("ack", parents=[common], help="acknowledge an alert")
    s.add_argument("alert")
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "ack", "alert": a.alert}))

    s = sub.add_parser("resolve", parents=[common], help="resolve an alert")
    s.add_argument("alert")
    s.add_argument("--outcome", required=True, choices=["genuine", "false_alarm", "test"])
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "resolve", "alert": a.alert, "outcome": a.outcome}))

    s = sub.add_parser("cancel", parents=[common], help="cancel an alert inside the cancel window")
    s.add_argument("alert")
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "cancel", "alert": a.alert}))

    s = sub.add_parser("siren", parents=[common], help="siren test or silence")
    s.add_argument("action", choices=["test", "silence"])
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "siren_test" if a.action == "test" else "silence"}))

    s = sub.add_parser("press", parents=[common], help="press a simulated button (mock pins only); "
                       "'tamper' opens the enclosure, 'mains' cuts the mains, for --hold seconds")
    s.add_argument("button", help="a button's name, tamper or mains")
    s.add_argument("--hold", type=float, default=0.2, help="seconds to hold (default 0.2)")
    s.set_defaults(func=lambda a: _remote(a, {"cmd": "press", "button": a.button, "hold": a.hold}))

    s = sub.add_parser("doctor", parents=[common], help="check the installation and say what to fix")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds per network check (default 5)")
    s.set_defaults(func=cmd_doctor)

    sub.add_parser("centre", help="the E-telligence centre: hubd centre --help", add_help=False)
    s = sub.add_parser("keys", parents=[common], help="this hub's signing key: init (make it), show")
    s.add_argument("action", choices=["init", "show"])
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser("user", parents=[common], help="page accounts: add, passwd, remove, list")
    s.add_argument("action", choices=["add", "passwd", "remove", "list"])
    s.add_argument("name", nargs="?")
    s.add_argument("--role", choices=["manager", "viewer"], default="manager")
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    s.set_defaults(func=cmd_user)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["centre"]:  # the centre has its own command line (centre/cli.py)
        from hubd.centre.cli import main as centre_main

        return centre_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "action", None) in ("add", "passwd", "remove") and not args.name:
        parser.error("user add/passwd/remove need a NAME")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
