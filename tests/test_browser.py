"""The page in headless Chromium (Debian's ``chromium`` package, driven by playwright):
a manager on a phone logs in, a button press appears live without a reload, they
acknowledge it, and the state changes on the page and in ``hubd alerts``.

Screenshots land in tests/artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HUBD, REPO, HubProcess, free_port, hub_config, wait_for

from hubd.config import load_config
from hubd.store import Store

CHROMIUM = os.environ.get("HUBD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ARTIFACTS = REPO / "tests" / "artifacts"
PASSWORD = "night shift 0200"
PHONE = {"width": 390, "height": 844}

# No skip: a missing browser is a failing test, so CI cannot pass without one.
assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), \
    f"{CHROMIUM} is missing: apt-get install -y chromium (the web suite needs it)"


def _add_user(config: Path, name: str, role: str) -> None:
    r = subprocess.run([*HUBD, "user", "add", name, "--role", role, "--password-stdin", "-c", str(config)],
                       input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def hub(tmp_path: Path, hub_processes: list[HubProcess]) -> HubProcess:
    config = hub_config(tmp_path, web_port=free_port())
    _add_user(config, "alice", "manager")
    _add_user(config, "victor", "viewer")
    h = HubProcess(config).start()
    hub_processes.append(h)
    return h


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _url(hub: HubProcess) -> str:
    cfg = load_config(hub.config, check_files=False)
    return f"http://127.0.0.1:{cfg.web.port}"


def _login(page, url: str, user: str) -> None:
    page.goto(url + "/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#alerts")
    page.wait_for_selector("#live.on", timeout=15_000)


def _camera_frame(browser, zone: str) -> bytes:
    """A JPEG as the camera adapter would store it (rendered, since there is no camera here)."""
    page = browser.new_page(viewport={"width": 320, "height": 240})
    page.set_content(f"""<body style="margin:0;background:linear-gradient(160deg,#1c2430,#3a3326 60%,#12100c);
        width:320px;height:240px;font:14px monospace;color:#cfd">
        <div style="position:absolute;left:110px;top:70px;width:60px;height:120px;background:#0b0d10;
        border-radius:30px 30px 4px 4px"></div>
        <div style="position:absolute;left:8px;top:6px">CAM1 {zone} {time.strftime('%H:%M:%S')}</div>
        </body>""")
    jpeg = page.screenshot(type="jpeg", quality=70)
    page.close()
    return jpeg


def test_manager_on_a_phone_sees_a_press_live_and_acknowledges_it(hub: HubProcess, browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    url = _url(hub)
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, color_scheme="dark")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _login(page, url, "alice")
    assert page.locator(".allclear").inner_text() == "No open alerts"
    loaded_at = page.evaluate("window.hubdLoadedAt")

    pressed = time.monotonic()
    r = hub.cli("press", "gate")
    assert r.returncode == 0, r.stderr
    card = page.locator("#alerts article[data-alert]")
    card.wait_for(timeout=10_000)
    shown_after = time.monotonic() - pressed
    assert page.evaluate("window.hubdLoadedAt") == loaded_at, "the page reloaded instead of updating live"
    aid = card.get_attribute("data-alert")
    assert card.get_attribute("data-state") == "raised"
    assert "PANIC" in card.inner_text() and "Market gate" in card.inner_text()
    assert "ALERT PANIC" in page.locator("#toasts").inner_text()

    # The camera adapter's snapshot, so the screenshot shows what a manager would see.
    cfg = load_config(hub.config, check_files=False)
    snapdir = cfg.state_dir / "snapshots"
    snapdir.mkdir(exist_ok=True)
    jpeg = _camera_frame(browser, "Market gate")
    (snapdir / "gate-1.jpg").write_bytes(jpeg)
    store = Store(cfg.store_path)
    store.add_snapshot(aid, "snapshots/gate-1.jpg", time.time(), len(jpeg))
    store.close()
    page.reload()
    page.wait_for_selector("#live.on", timeout=15_000)
    page.locator("img.thumb").wait_for(timeout=10_000)
    wait_for(lambda: page.evaluate("document.querySelector('img.thumb').naturalWidth") > 0, 10,
             message="the snapshot thumbnail to load")
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone-alert.png"), full_page=True)

    loaded_at = page.evaluate("window.hubdLoadedAt")
    card.locator("button", has_text="Acknowledge").click()
    page.locator(f'#alerts article[data-alert="{aid}"][data-state="acknowledged"]').wait_for(timeout=10_000)
    assert page.evaluate("window.hubdLoadedAt") == loaded_at
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone-acknowledged.png"), full_page=True)

    alerts = hub.cli_json("alerts")["result"]
    assert [(a["id"], a["state"]) for a in alerts] == [(aid, "acknowledged")]
    events = hub.cli_json("events", "--alert", aid)["result"]
    assert ("alert.acknowledged", "web:alice") in [(e["type"], e["actor"]) for e in events]
    assert not [e for e in errors if "Content Security Policy" in e], errors
    print(f"alert on the page {shown_after:.2f} s after `hubd press` returned")

    # The alert's own page: timeline with actors and the snapshot.
    page.goto(f"{url}/alerts/{aid}")
    assert "web:alice" in page.locator(".timeline").inner_text()
    page.screenshot(path=str(ARTIFACTS / "alert-phone.png"), full_page=True)
    ctx.close()


def test_viewer_sees_the_alert_but_gets_no_buttons(hub: HubProcess, browser) -> None:
    ctx = browser.new_context(viewport=PHONE)
    page = ctx.new_page()
    _login(page, _url(hub), "victor")
    assert hub.cli("press", "clinic").returncode == 0
    card = page.locator("#alerts article[data-alert]")
    card.wait_for(timeout=10_000)
    assert "MEDICAL" in card.inner_text()
    assert card.locator("button").count() == 0
    assert page.locator("text=Test chirp").count() == 0
    # Even a hand-made request from the viewer's logged-in page is refused.
    status = page.evaluate("""async (id) => (await fetch('/api/alerts/' + id + '/ack', {method: 'POST',
        headers: {'Content-Type': 'application/json',
                  'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
        body: '{}'})).status""", card.get_attribute("data-alert"))
    assert status == 403
    assert hub.cli_json("alerts")["result"][0]["state"] == "raised"
    ctx.close()


def test_every_page_says_live_while_the_hub_runs(hub: HubProcess, browser) -> None:
    """The Events and Config pages have no live part, yet the hub is reachable: the badge says so,
    and a new alert still pops up there."""
    ctx = browser.new_context(viewport=PHONE)
    page = ctx.new_page()
    url = _url(hub)
    _login(page, url, "alice")
    for path in ("/events", "/config"):
        page.goto(url + path)
        page.wait_for_selector("#live.on", timeout=15_000)
        assert page.locator("#live").inner_text() == "live"
    assert hub.cli("press", "gate").returncode == 0
    page.locator("#toasts .toast.alarm").wait_for(timeout=10_000)
    assert "ALERT PANIC" in page.locator("#toasts").inner_text()
    ctx.close()

