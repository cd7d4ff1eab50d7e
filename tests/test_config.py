"""Configuration: every kind of error names its key path and what was expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubd.config import ConfigError, config_schema, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent

MINIMAL = {"hub": {"ward": "w1", "id": "h1", "state_dir": "/tmp/x"}}


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, check_files=False)
    return e.value.errors


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.hub.id == "h1"
    assert cfg.web.port == 8080
    assert cfg.protocol.escalation == (60.0, 180.0, 600.0)
    assert cfg.mqtt is None and cfg.mesh is None
    assert cfg.destinations() == ()


def test_example_config_is_valid() -> None:
    cfg = load_config(REPO / "hubd" / "example.toml")
    assert [b.name for b in cfg.buttons] == ["gate", "clinic"]
    assert cfg.sirens[0].pin == 27


def test_unknown_key_is_named_with_its_path() -> None:
    errs = errors_of({**MINIMAL, "web": {"prot": 80}})
    assert errs == ["web: unknown key(s): 'prot'"]


def test_wrong_type_names_path_and_expected_type() -> None:
    errs = errors_of({**MINIMAL, "buttons": [{"name": "b", "pin": "seventeen"}]})
    assert errs == ["buttons[0].pin: expected integer, got str 'seventeen'"]


def test_bool_is_not_accepted_as_number() -> None:
    errs = errors_of({**MINIMAL, "protocol": {"cancel_window": True}})
    assert errs == ["protocol.cancel_window: expected number, got bool True"]


def test_missing_required_value() -> None:
    errs = errors_of({"hub": {"ward": "w1"}})
    assert errs == ["hub: 'id' is required (missing)"]


def test_pin_used_twice() -> None:
    errs = errors_of({**MINIMAL, "buttons": [{"name": "a", "pin": 17}],
                      "sirens": [{"name": "s", "pin": 17}]})
    assert errs == ["sirens[0].pin: pin 17 is already used by buttons[0].pin"]


def test_out_of_range_and_enum_and_pattern() -> None:
    errs = errors_of({"hub": {"ward": "bad ward!", "id": "h1"},
                      "buttons": [{"name": "a", "pin": 99, "kind": "burglary"}]})
    assert "buttons[0].kind: expected one of ['panic', 'medical', 'fire', 'intrusion', 'tamper', " \
           "'fault', 'test'], got 'burglary'" in errs
    assert "buttons[0].pin: 99 is out of range (maximum 53)" in errs
    assert any(e.startswith("hub.ward: 'bad ward!' does not match") for e in errs)
    assert len(errs) == 3


def test_escalation_must_increase() -> None:
    errs = errors_of({**MINIMAL, "protocol": {"escalation": [60, 30]}})
    assert errs == ["protocol.escalation: expected increasing positive seconds, e.g. [60, 180, 600]"]


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    key = tmp_path / "mesh-key"
    key.write_text("00" * 16)
    os.chmod(key, 0o644)
    data = {**MINIMAL, "mesh": {"connection": "tcp:127.0.0.1:4403", "key_file": str(key)}}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.errors == [f"mesh.key_file: {key} is readable by others (mode 644); run: chmod 600 {key}"]
    os.chmod(key, 0o600)
    assert parse_config(data).mesh.key_file == str(key)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text('[hub]\nward = "w"\nid = "h"\nstate_dir = "state"\n')
    cfg = load_config(tmp_path / "hub.toml")
    assert cfg.state_dir == tmp_path / "state"


def test_not_toml(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[hub\nward = ")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "bad.toml")
    assert "not valid TOML" in e.value.errors[0]


def test_schema_documents_every_field() -> None:
    schema = config_schema()
    button = schema["properties"]["buttons"]["items"]
    assert button["properties"]["hold_time"]["description"]
    assert button["additionalProperties"] is False


def run_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hubd.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[hub]\nward = "w"\ncolour = "red"\n[[buttons]]\nname = "a"\npin = 4\n'
                   '[[buttons]]\nname = "b"\npin = 4\n')
    out = run_check(bad)
    assert out.returncode == 2
    assert "hub: 'id' is required (missing)" in out.stderr
    assert "hub: unknown key(s): 'colour'" in out.stderr


def test_check_config_pin_conflict_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[hub]\nward = "w"\nid = "h"\n[[buttons]]\nname = "a"\npin = 4\n'
                   '[[buttons]]\nname = "b"\npin = 4\n')
    out = run_check(bad)
    assert out.returncode == 2
    assert "buttons[1].pin: pin 4 is already used by buttons[0].pin" in out.stderr


def test_check_config_summary_exits_0() -> None:
    out = run_check(REPO / "hubd" / "example.toml")
    assert out.returncode == 0, out.stderr
    assert "buttons: gate (pin 17, panic), clinic (pin 22, medical)" in out.stdout
