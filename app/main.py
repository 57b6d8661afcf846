"""SVD Studio entry point: `streamlit run app/main.py`. Page config, the shared sidebar, navigation."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's `app` package and svd_core, installed or not
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.controls import sidebar  # noqa: E402
from app.navigation import pages  # noqa: E402
from app.widgets.progress import consume_job  # noqa: E402

st.set_page_config(page_title="SVD Studio", page_icon="🎞️", layout="wide")
nav = st.navigation(pages())
for slot in ("gen", "cmp"):  # a finished background job hands its result to session state, on any page
    consume_job(slot)
sidebar()
nav.run()
