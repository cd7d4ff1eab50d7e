"""atheris target: request bodies to the page's state-changing API, as a logged-in manager
(Flask's test client); never a 5xx, every refusal a JSON error.

    python tests/fuzz_targets/api_bodies.py -max_total_time=600
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import _common

STATE: dict = {}
PATHS = ["/api/alerts/hub-1:1/ack", "/api/alerts/hub-1:1/resolve", "/api/alerts/hub-1:1/cancel",
         "/api/siren/silence", "/api/commands", "/api/login"]


def setup() -> None:
    from test_web_helpers import login, make_web_hub

    w = make_web_hub(Path(tempfile.mkdtemp(prefix="hubd-fuzz-")))
    w.raise_alert("gate")
    client = w.app.test_client()
    STATE.update(w=w, client=client, token=login(client))


def test_one_input(data: bytes) -> None:
    path = PATHS[data[0] % len(PATHS)] if data else PATHS[0]
    r = STATE["client"].post(path, data=data[1:], content_type="application/json",
                             headers={"X-CSRF-Token": STATE["token"]})
    assert r.status_code < 500, r.get_data(as_text=True)[:300]
    if r.status_code >= 400:
        body = r.get_json()
        assert body["ok"] is False and body["error"]["message"], body


if __name__ == "__main__":
    _common.run(test_one_input, setup)
