"""The real thing: `streamlit run` on localhost, Debian's Chromium driven by Playwright, the tiny model.

Screenshots go to $SCREENSHOT_DIR (default: a temporary folder); `SCREENSHOT_DIR=docs/screenshots pytest
tests/test_browser.py` refreshes the README's.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    base = tmp_path_factory.mktemp("browser")
    (base / "ck").mkdir()
    (base / "ck" / "tiny_demo.safetensors").symlink_to(tiny_checkpoint)
    port = free_port()
    env = {**os.environ, "SVD_CHECKPOINT_DIR": str(base / "ck"), "SVD_OUTPUT_DIR": str(base / "out"),
           "PYTHONPATH": ""}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://localhost:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert "Traceback" not in out, out[-3000:]


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1500})
        pg.set_default_timeout(90_000)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def wait_playing(page, index=-1):
    """Wait until the video element at `index` has data and a duration, then check that it plays."""
    pick = f"(() => {{ const all = [...document.querySelectorAll('video')]; return all.at({index}); }})()"
    page.wait_for_selector("video", state="attached")
    page.wait_for_function(f"() => {{ const v = {pick}; return v && v.readyState >= 2 && v.duration > 0; }}")
    t0 = page.evaluate(f"() => {pick}.currentTime")
    page.evaluate(f"() => {pick}.play()")
    page.wait_for_function(f"() => {pick}.currentTime != {t0}")
    return page.evaluate(f"""() => {{ const v = {pick};
        return {{readyState: v.readyState, duration: v.duration, w: v.videoWidth, h: v.videoHeight}}; }}""")


def test_generate_in_a_real_browser(server, page, shots):
    page.goto(server)
    page.get_by_role("heading", name="Generate").wait_for()
    gen = page.get_by_role("button", name="Generate video")
    assert gen.is_disabled()  # the gate
    page.locator("input[type=file]").first.set_input_files(str(FIXTURES / "A" / "input_image_large.png"))
    page.get_by_text("As sampled:").wait_for()
    page.wait_for_function("() => ![...document.querySelectorAll('button')].find("
                           "b => b.innerText.includes('Generate video')).disabled")
    gen.click()
    info = wait_playing(page)
    assert info["readyState"] >= 2 and info["duration"] > 0 and info["w"] == 128
    page.get_by_role("button", name="GIF").wait_for()
    page.wait_for_timeout(1000)  # let the last rerun settle before the picture
    page.screenshot(path=str(shots / "generate.png"), full_page=True)


def test_compare_in_a_real_browser(server, page, shots):
    page.get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare").wait_for()
    box = page.get_by_label("Values (2 to 6, comma-separated)")
    box.fill("0, 255")
    box.press("Enter")
    run = page.get_by_role("button", name="Run 2 samplings")
    page.wait_for_function("() => { const b = [...document.querySelectorAll('button')].find("
                           "b => b.innerText.includes('Run 2 samplings')); return b && !b.disabled; }")
    run.click()
    page.get_by_text("Side by side").wait_for()
    info = wait_playing(page, index=0)
    assert info["duration"] > 0 and info["w"] >= 2 * 128  # two tiles in one synchronised video
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_history_in_a_real_browser(server, page, shots):
    page.goto(f"{server}/history")  # a deep link runs the entry file first (no legacy pages/ mode)
    page.get_by_role("heading", name="History").wait_for()
    page.get_by_role("link", name="Compare").wait_for()
    page.get_by_text("Comparison").first.wait_for()
    # one run, then a comparison: its two cells and the comparison itself
    page.wait_for_function("() => [...document.querySelectorAll('button')]"
                           ".filter(b => b.innerText.includes('Use these settings')).length >= 4")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "history.png"), full_page=True)
