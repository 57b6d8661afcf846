"""The app's state and imports, read from its source: only app/state.py touches st.session_state, and the app uses
svd_core like any other user (its public names and the vocabulary modules params, camera, errors)."""

import ast
from pathlib import Path

import svd_core

APP = Path(__file__).resolve().parent.parent / "app"
VOCABULARY = {"svd_core.params", "svd_core.camera", "svd_core.errors"}


def _modules():
    return sorted(APP.rglob("*.py"))


def session_state_uses(source: str) -> list[int]:
    """Lines of `source` that name session_state: `st.session_state`, `streamlit.session_state`, or the name
    imported from streamlit."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "session_state":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streamlit") and any(
                a.name == "session_state" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_only_the_state_module_touches_session_state():
    found = {f"{path.relative_to(APP)}:{line}" for path in _modules() if path.name != "state.py" or
             path.parent != APP for line in session_state_uses(path.read_text())}
    assert found == set(), f"st.session_state outside app/state.py: {sorted(found)}"
    assert session_state_uses((APP / "state.py").read_text())  # the check sees a use where there is one


def test_the_check_sees_every_way_of_writing_it():
    assert session_state_uses("import streamlit as st\nS = st.session_state\n") == [2]
    assert session_state_uses("import streamlit\nstreamlit.session_state['k'] = 1\n") == [2]
    assert session_state_uses("from streamlit import session_state\n") == [1]
    assert session_state_uses("import streamlit as st\nst.write(st.query_params)\n") == []


def svd_core_imports(source: str) -> list[tuple[int, str]]:
    """(line, what) of every import of svd_core in `source`: 'svd_core.NAME' for a name of the package,
    the module itself for a submodule."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "svd_core":
            out += [(node.lineno, f"svd_core.{a.name}" if node.module == "svd_core" else node.module)
                    for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "svd_core"]
    return out


def test_the_app_uses_only_the_public_api():
    public = {f"svd_core.{name}" for name in svd_core.__all__} | VOCABULARY | {"svd_core"}
    found = {f"{path.relative_to(APP)}:{line} {what}" for path in _modules()
             for line, what in svd_core_imports(path.read_text()) if what not in public}
    assert found == set(), f"the app imports svd_core internals: {sorted(found)}"
    assert all(hasattr(svd_core, name) for name in svd_core.__all__)


def test_the_import_check_sees_internals():
    source = "from svd_core.runs import scan_runs\nfrom svd_core import SamplingParams\nimport svd_core.hub\n"
    assert svd_core_imports(source) == [(1, "svd_core.runs"), (2, "svd_core.SamplingParams"), (3, "svd_core.hub")]
