"""The Verdict page under AppTest on the smoke store: grid, a cell's evidence, the selection kept in the URL."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from _app_store import smoke_store_path
from streamlit.testing.v1 import AppTest

from mtlx_core.store import query

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/verdict.py"


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = smoke_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path


def open_page(at: AppTest) -> AppTest:
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_verdict_page_shows_the_grid_and_the_first_cells_evidence(store_env: Path) -> None:
    at = open_page(AppTest.from_file(APP, default_timeout=300))
    assert at.title[0].value == "Verdict: does pruning change faithfulness?"
    grid = query.verdict_grid(query.open_store(store_env))
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = charts[0]["data"][0]
    assert heat["type"] == "heatmap"
    keys = {k for row in heat["customdata"] for k in row if k}
    assert keys == {f"{m}|{t}|{x}" for m, t, x in zip(grid["model_id"], grid["task"], grid["metric"], strict=True)}
    first = at.selectbox(key="vd_cell").value
    row = grid[(grid["model_id"] + "|" + grid["task"] + "|" + grid["metric"]) == first].iloc[0]
    shown = {m.label: m.value for m in at.metric}
    assert shown["mean Δ"] == f"{row['mean_delta']:+.4f}"
    assert shown["images · seeds"] == f"{row['n_images']} · {row['n_seeds']}"
    assert len(charts) >= 4  # grid, paired points, distribution, family (+ curves of both ends)


def test_the_selection_is_written_to_the_url_and_a_shared_url_opens_the_same_cell(store_env: Path) -> None:
    at = open_page(AppTest.from_file(APP, default_timeout=300))
    cells = at.selectbox(key="vd_cell").options
    assert len(cells) > 1
    target = at.selectbox(key="vd_cell").options[-1]
    at.selectbox(key="vd_cell").set_value(at.selectbox(key="vd_cell").options[-1]).run()
    at.radio(key="vd_value").set_value("score").run()
    assert not at.exception
    params = dict(at.query_params)
    assert json.loads(params["vd_value"][0] if isinstance(params["vd_value"], list) else params["vd_value"]) == "score"
    cell_param = params["vd_cell"][0] if isinstance(params["vd_cell"], list) else params["vd_cell"]
    # a new session opened with that URL shows the same cell and score
    shared = AppTest.from_file(APP, default_timeout=300)
    shared.query_params["vd_cell"] = cell_param
    shared.query_params["vd_value"] = json.dumps("score")
    open_page(shared)
    assert shared.radio(key="vd_value").value == "score"
    assert shared.selectbox(key="vd_cell").format_func(shared.selectbox(key="vd_cell").value) == target


def test_control_reference_shows_every_pruned_model_against_its_arms_control(store_env: Path) -> None:
    at = open_page(AppTest.from_file(APP, default_timeout=300))
    at.radio(key="vd_reference").set_value("control").run()
    assert not at.exception
    store = query.open_store(store_env)
    models = query.models(store)
    pruned = set(models.loc[models["parent_id"].notna() & (models["pruning_method"] != "control"), "model_id"])
    grid = query.verdict_grid(store, "control")
    assert set(grid["model_id"]) == pruned
    assert len(at.selectbox(key="vd_cell").options) == len(grid)
    assert not any("no control model" in i.value for i in at.info)


def test_control_reference_without_control_models_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    import duckdb

    path = tmp_path / "no_controls.duckdb"
    shutil.copy(smoke_store_path(), path)
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM models WHERE pruning_method = 'control'")
    con.close()
    monkeypatch.setenv("MTLX_STORE", str(path))
    at = open_page(AppTest.from_file(APP, default_timeout=300))
    at.radio(key="vd_reference").set_value("control").run()
    assert not at.exception
    assert any("no control model" in i.value for i in at.info)


def _values(v: list | dict) -> list[float]:
    """A plotly JSON array: a list, or numpy's typed-array encoding (``dtype`` + base64 ``bdata``)."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def test_cost_view_offers_every_stored_cost_axis_and_draws_the_chosen_one(store_env: Path) -> None:
    at = open_page(AppTest.from_file(APP, default_timeout=300))
    assert at.selectbox(key="vd_axis").options == ["parameters", "MACs", "CPU latency (ms, batch 1, 1 thread)",
                                                   "nominal sparsity"]
    at.selectbox(key="vd_axis").set_value("latency_cpu_ms").run()
    assert not at.exception
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    cost = [c for c in charts.values() if c["layout"].get("xaxis", {}).get("title", {}).get("text", "").startswith(
        "CPU latency")]
    assert cost
    assert cost[0]["layout"]["xaxis"]["type"] == "log"
    points = query.verdict_pareto(query.open_store(store_env), at.selectbox(key="vd_cost_metric").value)
    task = at.selectbox(key="vd_cost_task").value
    xs = sorted(x for t in cost[0]["data"] if t.get("xaxis", "x") == "x" for x in _values(t["x"]))
    assert xs == sorted(points.loc[points["task"] == task, "latency_cpu_ms"])
