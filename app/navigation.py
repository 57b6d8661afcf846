"""The studio's pages: each is a function of app/views, opened by its URL path (/compare, /history, /setup; Generate
at the root). main.py hands them to st.navigation; a page that opens another asks for it here."""

from __future__ import annotations

import streamlit as st

# url path -> (title, icon); the first is the default page
PAGES = {"generate": ("Generate", ":material/movie:"), "compare": ("Compare", ":material/compare:"),
         "history": ("History", ":material/history:"), "setup": ("Setup", ":material/settings:")}


def page(name: str) -> st.Page:
    """The page at URL path `name` (one of PAGES)."""
    from app.views import compare, generate, history, setup  # here: History imports this module


    views = {"generate": generate.page, "compare": compare.page, "history": history.page, "setup": setup.page}
    if name not in PAGES:
        raise ValueError(f"unknown page {name!r}; valid: {', '.join(PAGES)}")
    title, icon = PAGES[name]
    return st.Page(views[name], title=title, icon=icon, url_path=name, default=name == next(iter(PAGES)))


def pages() -> list[st.Page]:
    return [page(name) for name in PAGES]
