"""What the AppTest files share: the app on the tiny model in fresh folders, a fresh model server per test, and
small helpers that open a page (goto), run, wait for a page's background job and read what the page drew."""

import json
import time
from pathlib import Path

import pytest

from .conftest import FIXTURES

APP = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
PNG = (FIXTURES / "A" / "input_image.png").read_bytes()


@pytest.fixture
def fresh_server():
    """Each test starts with a fresh process-wide model server (st.cache_resource outlives AppTests)."""
    from app.resources import get_server

    get_server.clear()
    yield
    for job in get_server().jobs():  # nothing of this test runs on into the next
        job.cancel()
    get_server.clear()



@pytest.fixture
def dirs(tmp_path, monkeypatch):
    ck, out = tmp_path / "checkpoints", tmp_path / "outputs"
    ck.mkdir()
    monkeypatch.setenv("SVD_CHECKPOINT_DIR", str(ck))
    monkeypatch.setenv("SVD_OUTPUT_DIR", str(out))
    return ck, out



@pytest.fixture
def with_tiny(dirs, tiny_checkpoint):
    ck, out = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    return ck, out



def goto(at, page: str):
    """Open the page at URL path `page` (app/navigation.PAGES) on the next run, as a link to /page does. The
    pages are functions, which AppTest.switch_page (file paths) cannot name; st.Page hashes the URL path."""
    from streamlit.util import calc_hash

    from app.navigation import PAGES

    assert page in PAGES, page
    at._page_hash = calc_hash(page)
    return at


def app(page=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        goto(at, page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def small(at, frames=3, steps=2, size=64):
    """Advanced settings small enough for a quick CPU run."""
    at.number_input(key="knob_width").set_value(size)
    at.number_input(key="knob_height").set_value(size)
    at.number_input(key="knob_num_frames").set_value(frames)
    at.number_input(key="knob_num_inference_steps").set_value(steps)
    at.run()



def wait_for(at, get, timeout=120):
    """Rerun the app until get() returns something (a background job finished)."""
    t = time.time()
    while time.time() - t < timeout:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        value = get()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("the job never finished")



def slot(at, name):
    return at.session_state[f"slot_{name}"] if f"slot_{name}" in at.session_state else None



def result(at, name):
    return getattr(slot(at, name), "result", None)



def wait(at, name, what="result", timeout=120):
    """Rerun until the page's slot holds a result (or an error)."""
    return wait_for(at, lambda: getattr(slot(at, name), what, None), timeout)



def job(at, name):
    return slot(at, name).job



def button(at, label):
    return next(b for b in at.button if b.label.startswith(label))



def charts(at) -> dict[str, list]:
    """The page's Vega-Lite charts: their y field -> the values they plot, in order."""
    import pyarrow as pa

    out = {}
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        rows = pa.ipc.open_stream(el.proto.data.data).read_all().to_pylist()
        y = spec["encoding"]["y"]["field"]
        out.setdefault(y, []).append([r[y] for r in rows])
    return out



def saved_run(sampler, png, **kw):
    from svd_core import save_run

    params = sampler.default_params(width=64, height=64, num_frames=3, num_inference_steps=1,
                                    decode_chunk_size=3, **kw)
    return save_run(sampler.generate(png, params), sampler.info, source=("photo.png", PNG))
