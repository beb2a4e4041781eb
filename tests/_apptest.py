"""Helpers of the app tests: run a page headless (AppTest), its plotly figures as JSON and their arrays as numpy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def array(v: object) -> np.ndarray:
    """A plotly array of a figure's JSON (plain list or typed base64) as numpy."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(s) for s in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v, dtype=float)


APP = str(Path(__file__).resolve().parents[1] / "app.py")


def run_page(page: str | None = None, timeout: float = 300) -> AppTest:
    """The app's landing page, then ``page``; no page may raise."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
