"""mtlx dashboard: ``streamlit run app.py`` (the store is env ``MTLX_STORE``, default ``models_store/study.duckdb``).

Env ``MTLX_PLUGINS`` (comma-separated modules) names plugins that register models and tasks: ``mtlx_core.plugins``
imports them, with the ``mtlx.plugins`` entry points, the first time a page needs a name it does not know (the app
imports from the project only what the house rules allow, so the loading is not done here).
Env ``MTLX_TORCH_THREADS`` sets torch's CPU threads for the Live page (on a CPU shared with other jobs, 1 avoids
the slowdown of oversubscribed OpenMP threads; unset: torch's default).

The router: one ``st.Page`` per question; each page is UI only and reads the store through
``mtlx_core.store.query`` (pages/common.py caches the queries per published snapshot).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st
import torch

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # pages import their shared helpers as ``pages.common``
    sys.path.insert(0, str(ROOT))

from mtlx_core.store import query  # noqa: E402

if os.environ.get("MTLX_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["MTLX_TORCH_THREADS"]))

st.set_page_config(page_title="mtlx · faithfulness of pruned MTL explanations", page_icon=":material/insights:",
                   layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/insights:", default=True),
    st.Page("pages/verdict.py", title="Verdict", icon=":material/gavel:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/layers.py", title="Layers", icon=":material/layers:"),
    st.Page("pages/irof_steps.py", title="Perturbation steps", icon=":material/stairs:"),
    st.Page("pages/sanity.py", title="Sanity", icon=":material/rule:"),
    st.Page("pages/models.py", title="Models", icon=":material/table:"),
    st.Page("pages/live.py", title="Live", icon=":material/upload:"),
]

page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"Store: `{query.store_path()}`")
    st.caption("Set `MTLX_STORE` to read another store.")
page.run()
