"""AppTest of Setup (app/views/setup.py)."""

import pytest

from .apptest import (
    app,
)

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


def test_setup_page(with_tiny):
    ck, _ = with_tiny
    (ck / "old_model.ckpt").write_bytes(b"\x80\x04 pickle")
    (ck / "svd_xt.safetensors").write_bytes(b"half a download")
    at = app("setup")
    assert at.title[0].value == "Setup" and not at.exception
    assert any("svd_xt.safetensors" in m.value for m in at.markdown)
    warnings = " ".join(w.value for w in at.warning)
    assert "old_model.ckpt" in warnings and "pickle" in warnings and "not a safetensors file" in warnings
    from streamlit import config

    port = config.get_option("server.port")
    config.set_option("server.port", 8599)  # the serving note names the port the app runs on
    try:
        at.run()
    finally:
        config.set_option("server.port", port)
    assert any("ssh -L 8599:localhost:8599" in m.value for m in at.markdown)
