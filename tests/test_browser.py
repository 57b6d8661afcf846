"""The real thing: `streamlit run` on localhost, Debian's Chromium driven by Playwright, the tiny model.

Screenshots go to $SCREENSHOT_DIR (default: a temporary folder); `SCREENSHOT_DIR=docs/screenshots pytest
tests/test_browser.py` refreshes the README's.
"""

import os
import re
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
# Debian's Chromium (it plays H.264), never a browser Playwright downloaded; another system's `chromium` on PATH
DEBIAN_CHROMIUM = "/usr/bin/chromium"
CHROMIUM = DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).exists() else shutil.which("chromium") or DEBIAN_CHROMIUM
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]

playwright = pytest.importorskip("playwright.sync_api")
playwright.expect.set_options(timeout=300_000)  # expect() retries until it holds: a bound, not a pace
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
    log = base / "server.log"  # a file, not a pipe: nobody reads a pipe during the tests, and a full one hangs
    with log.open("w") as out:  # the server has its own copy of the file
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port",
                                 str(port), "--server.headless", "true"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    url_out = base / "out"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start")
        yield url, url_out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out = log.read_text()
        assert "Traceback" not in out, out[-3000:]


@pytest.fixture(scope="module")
def browser(server):
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def new_tab(browser):
    """A new tab: its own Streamlit session."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1500})
    pg.set_default_timeout(300_000)  # a bound for what is stuck, not a pace: runs on a busy CPU take minutes
    return pg


@pytest.fixture(scope="module")
def page(browser):
    return new_tab(browser)


def no_exception(page):
    assert page.locator("[data-testid=stException]").count() == 0


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def settled(page):
    """Wait until the page's script run is over (Streamlit marks its root with the script state)."""
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", state="attached")


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
    page.goto(server[0])
    page.get_by_role("heading", name="Generate").wait_for()
    gen = page.get_by_role("button", name="Generate video")
    assert gen.is_disabled()  # the gate
    page.locator("input[type=file]").first.set_input_files(str(FIXTURES / "A" / "input_image_large.png"))
    page.get_by_text("As sampled:").wait_for()
    page.wait_for_function("() => ![...document.querySelectorAll('button')].find("
                           "b => b.innerText.includes('Generate video')).disabled")
    gen.click()
    # the result plays by itself (wait_playing below presses play)
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.currentTime > 0; }")
    info = wait_playing(page)
    assert info["readyState"] >= 2 and info["duration"] > 0 and info["w"] == 128
    page.get_by_role("button", name="GIF").wait_for()
    settled(page)  # the last rerun is over before the picture
    page.screenshot(path=str(shots / "generate.png"), full_page=True)


def test_compare_in_a_real_browser(server, page, shots):
    page.get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare").wait_for()
    # Generate's settings came along, after its run and result were fragment reruns (they once fell back to the
    # release defaults, 1024x576 and 25 steps, here)
    assert "6 frames" in page.get_by_text("Everything not varied").inner_text()
    assert "128x128" in page.get_by_text("Everything not varied").inner_text()
    box = page.get_by_label("Values (2 to 6, separated by commas or spaces)")
    box.fill("0, 255")
    box.press("Enter")
    run = page.get_by_role("button", name="Run 2 samplings")
    page.wait_for_function("() => { const b = [...document.querySelectorAll('button')].find("
                           "b => b.innerText.includes('Run 2 samplings')); return b && !b.disabled; }")
    run.click()
    page.get_by_text("Side by side").wait_for()
    info = wait_playing(page, index=0)
    assert info["duration"] > 0 and info["w"] >= 2 * 128  # two tiles in one synchronised video
    settled(page)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_history_in_a_real_browser(server, page, shots):
    page.goto(f"{server[0]}/history")  # a deep link runs the entry file first (no legacy pages/ mode)
    page.get_by_role("heading", name="History").wait_for()
    page.get_by_role("link", name="Compare").wait_for()
    page.get_by_text("Comparison").first.wait_for()
    # one run, then a comparison with its two cells listed under it
    page.get_by_text("Its 2 cells").wait_for()
    # History's videos are not previews: they wait for the user
    page.get_by_text("Play", exact=True).first.click()
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.readyState >= 2; }")
    page.wait_for_timeout(1000)
    assert page.evaluate("() => document.querySelector('video').paused")
    page.wait_for_function("() => [...document.querySelectorAll('button')]"
                           ".filter(b => b.innerText.includes('Use these settings')).length >= 2")
    settled(page)
    page.screenshot(path=str(shots / "history.png"), full_page=True)


def ready(page, url, steps=2):
    """Generate with the image uploaded and few steps, the button enabled: the benchmark's own steps."""
    from bench.app import ready as bench_ready

    bench_ready(page, url, steps, FIXTURES / "A" / "input_image.png")


def runs_in(out):
    return sorted(p.name for p in out.iterdir() if (p / "run.json").is_file()) if out.is_dir() else []


def test_the_sidebar_follows_the_server_and_the_bar_is_a_progressbar(server, browser):
    """A tab that only watches sees another tab's run come and go in its sidebar, named in words, without a
    reload or a click; the running tab's progress bar is a progressbar to assistive technology, and advances."""
    url, _ = server
    watcher, runner = new_tab(browser), new_tab(browser)
    watcher.goto(url)
    watcher.get_by_role("heading", name="Generate").wait_for()
    sidebar = watcher.get_by_test_id("stSidebar")
    sidebar.get_by_text("Queue (every tab shares it): empty").wait_for()
    ready(runner, url, steps=12)
    runner.get_by_role("button", name="Generate video").click()
    bar = runner.get_by_role("progressbar")
    bar.wait_for()
    runner.get_by_text(re.compile(r"denoising step \d+/12")).wait_for()
    expect = playwright.expect  # retries until the attribute matches
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d*$"))  # it advances
    sidebar.get_by_text("Generate · another tab: running").wait_for()  # no reload, no click
    runner.get_by_test_id("stSidebar").get_by_text("Generate · this tab: running").wait_for()
    wait_playing(runner)
    sidebar.get_by_text("Queue (every tab shares it): empty").wait_for()
    no_exception(watcher)
    watcher.close()
    runner.close()


def test_three_tabs_at_once_and_a_double_click(server, browser):
    """Three sessions click at once: one queue, every video plays. A fourth tab clicks and is closed at once: its
    run does not hold the queue, it finishes and lands in History. A double click starts one run."""
    url, out = server
    tabs = [new_tab(browser) for _ in range(4)]
    for t in tabs:
        ready(t, url)
    before = runs_in(out)
    for t in tabs:
        t.get_by_role("button", name="Generate video").click(no_wait_after=True)
    closing = tabs.pop()
    closing.get_by_role("button", name="Cancel").wait_for()  # its click reached the server: it has a job
    closing.close()
    for t in tabs:
        info = wait_playing(t)
        assert info["duration"] > 0
        no_exception(t)
    deadline = time.time() + 600  # a bound for a stuck run, not a pace: a busy machine takes minutes
    while len(runs_in(out)) < len(before) + 4 and time.time() < deadline:
        time.sleep(0.5)
    assert len(runs_in(out)) == len(before) + 4
    before = runs_in(out)
    tabs[0].get_by_role("button", name="Generate video").dblclick()
    deadline = time.time() + 600
    while len(runs_in(out)) < len(before) + 1 and time.time() < deadline:
        time.sleep(0.3)
    time.sleep(3)  # a second run would be right behind the first (two steps on the tiny model)
    assert len(runs_in(out)) == len(before) + 1
    for t in tabs[1:]:
        t.close()


def test_live_preview_changes_while_it_denoises(server, browser):
    """The progress panel shows the model's current estimate and replaces it as the steps go, while the run is
    still denoising; it goes with Cancel."""
    from playwright.sync_api import expect

    url, _ = server
    tab = new_tab(browser)
    ready(tab, url, steps=60)  # steps enough for the panel (once a second) to show two
    tab.get_by_role("button", name="Generate video").click()
    preview = tab.get_by_test_id("stImage").filter(has_text="current estimate of the video").locator("img")
    preview.wait_for(state="visible")
    first = preview.get_attribute("src")
    expect(preview).not_to_have_attribute("src", first, timeout=30_000)  # a later step's estimate
    tab.get_by_text(re.compile(r"denoising step \d+/60")).wait_for()  # still denoising
    tab.get_by_role("button", name="Cancel").click()  # the rest of the run is not this test's
    tab.get_by_text("Cancelled: nothing was saved.").wait_for()
    assert preview.count() == 0  # gone with the progress panel
    no_exception(tab)
    tab.close()


def test_delete_while_shown_in_another_tab(server, browser):
    url, out = server
    shown = new_tab(browser)
    ready(shown, url)
    shown.get_by_role("button", name="Generate video").click()
    wait_playing(shown)
    caption = shown.get_by_text("saved to outputs/").inner_text()
    run_id = caption.rsplit("outputs/", 1)[1].split()[0]
    other = new_tab(browser)
    other.goto(f"{url}/history")
    other.get_by_role("heading", name="History").wait_for()
    card = other.locator(f".st-key-card_{run_id}")
    card.get_by_role("button", name="Delete").click()
    other.get_by_role("button", name="Yes, delete").click()
    other.wait_for_function(f"() => !document.body.innerText.includes('{run_id}')")
    assert run_id not in runs_in(out)
    shown.get_by_role("slider").first.focus()  # any interaction reruns the page that still shows the run
    shown.keyboard.press("ArrowRight")
    shown.get_by_text(f"Run {run_id} was deleted").wait_for()
    no_exception(shown)
    no_exception(other)
