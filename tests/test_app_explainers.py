"""Issue 21 in the app and the store queries: the explainer selector (Overview, Compare, Layers), Compare's grid of
every explainer's map, and the queries that take an explainer (the smoke store has Grad-CAM and Grad-CAM++)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _app_store import smoke_store_path
from streamlit.testing.v1 import AppTest

from mtlx_core.store import query

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = smoke_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def map_figures(at: AppTest) -> list[dict]:
    figs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return [f for f in figs if f["data"][0]["type"] == "image" and len(f["data"]) > 1]


def test_explainers_query_lists_gradcam_first_with_the_models_that_have_each(store_env: Path) -> None:
    store = query.open_store(store_env)
    ex = query.explainers(store)
    assert ex["explainer"].tolist() == ["gradcam", "gradcampp"]
    n_models = len(store.df("SELECT model_id FROM models"))
    assert ex["n_models"].tolist() == [n_models, n_models]
    one = store.df("SELECT model_id FROM models ORDER BY model_id LIMIT 1")["model_id"].tolist()
    assert [list(m) for m in query.explainers(store, one)["models"]] == [one, one]


def test_saliency_maps_and_curves_follow_the_chosen_explainer(store_env: Path) -> None:
    store = query.open_store(store_env)
    row = store.df("SELECT model_id, image_id, task, target_id FROM explanations WHERE explainer = 'gradcampp' "
                   "AND NOT is_zero AND layer_role = 'primary' ORDER BY ALL LIMIT 1").iloc[0]
    args = ([row.model_id], row.image_id, row.task, int(row.target_id))
    cam = query.saliency_maps(store, *args)[row.model_id]
    pp = query.saliency_maps(store, *args, None, "gradcampp")[row.model_id]
    assert cam.shape == pp.shape
    assert not np.array_equal(cam, pp)
    for name in ("gradcam", "gradcampp"):
        curves = query.faithfulness_curves(store, *args, "irof", None, None, name)
        own = curves[curves["ordering"] != "random"]
        assert not own.empty
        assert set(own["explainer"]) == {name}
        assert (curves["ordering"] == "random").any()  # the shared random baseline


def test_compare_explainer_selector_switches_the_maps_and_is_kept_in_the_url(store_env: Path) -> None:
    at = run_page("pages/compare.py")
    sel = at.selectbox(key="cmp_explainer")
    assert sel.options == ["Grad-CAM", "Grad-CAM++"]
    assert sel.value == "gradcam"
    n_models = len(at.multiselect(key="cmp_models").value)
    before = map_figures(at)[:n_models]
    sel.select("gradcampp").run()
    assert not at.exception
    assert at.subheader[0].value.startswith("Grad-CAM++ at layer")
    assert map_figures(at)[:n_models] != before
    kept = at.query_params["cmp_explainer"]
    assert json.loads(kept[0] if isinstance(kept, list) else kept) == "gradcampp"


def test_compare_grid_shows_every_explainers_map_of_every_chosen_model(store_env: Path) -> None:
    at = run_page("pages/compare.py")
    n_models = len(at.multiselect(key="cmp_models").value)
    assert any(s.value.startswith("Every explainer for target") for s in at.subheader)
    assert any("**Grad-CAM++**: every selected model" in c.value for c in at.caption)
    with_grid = len(map_figures(at))
    at.toggle(key="cmp_grid").set_value(False).run()
    assert not at.exception
    grid = with_grid - len(map_figures(at))
    assert 2 <= grid <= 2 * n_models  # one row per explainer, one map per model that has this target


def test_overview_and_layers_offer_the_explainer_and_it_changes_the_scores(store_env: Path) -> None:
    at = run_page()
    sel = at.selectbox(key="ov_explainer")
    assert sel.options == ["Grad-CAM", "Grad-CAM++"]
    before = [d.value.to_csv() for d in at.dataframe]
    sel.select("gradcampp").run()
    assert not at.exception
    assert [d.value.to_csv() for d in at.dataframe] != before
    layers = run_page("pages/layers.py")
    assert layers.selectbox(key="ly_explainer").options == ["Grad-CAM", "Grad-CAM++"]
    layers.selectbox(key="ly_explainer").select("gradcampp").run()
    assert not layers.exception
    assert any("stored at the primary layer only" in c.value for c in layers.caption)


def test_verdict_runs_on_the_chosen_explainers_scores(store_env: Path) -> None:
    store = query.open_store(store_env)
    cam = query.verdict_grid(store, "dense", "score_norm", 0.1, "gradcam")
    pp = query.verdict_grid(store, "dense", "score_norm", 0.1, "gradcampp")
    assert not cam.empty
    assert not pp.empty
    assert not np.allclose(cam["mean_delta"].to_numpy(dtype=float), pp["mean_delta"].to_numpy(dtype=float),
                           equal_nan=True)
    at = run_page("pages/verdict.py")
    sel = at.selectbox(key="vd_explainer")
    assert sel.options == ["Grad-CAM", "Grad-CAM++"]
    sel.select("gradcampp").run()
    assert not at.exception
    assert any("Grad-CAM++**'s scores" in c.value for c in at.caption)
