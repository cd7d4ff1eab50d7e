"""schemathesis against ``/api/openapi.json`` on the app served by waitress: valid and
invalid requests for every documented operation, as a logged-in manager (so the
requests reach the handlers, not just the login check) and anonymously.  No 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from test_web_helpers import Served, served_web_hub

#: /api/stream holds its worker until the stream ends; its bad input is tested in test_web.
#: Logging out would end the session the rest of the run relies on.
SKIP = {"/api/stream", "/api/logout"}
EXAMPLES = 12


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from served_web_hub(tmp_path)


def _fuzz(served: Served, session: requests.Session, mode: schemathesis.GenerationMode) -> int:
    schema = schemathesis.openapi.from_url(served.url + "/api/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in SKIP:
            continue

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            resp = case.call(base_url=served.url, session=session, timeout=20)
            if resp.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200} -> "
                                f"{resp.status_code} {resp.text[:200]}")
            elif resp.status_code >= 400 and case.path.startswith("/api/"):
                body = resp.json()  # every refusal is a JSON error that says why
                assert body["ok"] is False and body["error"]["message"]

        run()
    assert not failures, "\n".join(failures)
    return calls


def test_no_server_errors_for_a_logged_in_manager(served: Served) -> None:
    for i in range(3):
        served.web.raise_alert("gate", "panic", f"zone {i}")
    session = served.session()
    calls = _fuzz(served, session, schemathesis.GenerationMode.POSITIVE)
    calls += _fuzz(served, session, schemathesis.GenerationMode.NEGATIVE)
    assert calls > 100
    # The session survived the run: it was really testing the handlers behind the login.
    assert session.get(served.url + "/api/me", timeout=10).status_code == 200


def test_no_server_errors_anonymously(served: Served) -> None:
    assert _fuzz(served, requests.Session(), schemathesis.GenerationMode.POSITIVE) > 50
