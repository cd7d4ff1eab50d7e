"""atheris target: the configuration loader (TOML bytes -> Config or ConfigError).

    python tests/fuzz_targets/config.py -max_total_time=600
"""

from __future__ import annotations

import tomllib

import _common

from hubd.config import ConfigError, parse_config


def test_one_input(data: bytes) -> None:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    try:
        parse_config(doc, check_files=False)
    except ConfigError as e:
        assert e.errors


if __name__ == "__main__":
    _common.run(test_one_input)
