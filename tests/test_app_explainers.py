"""Issue 21 in the app and the store queries: the explainer selector (Overview, Compare, Layers, Perturbation steps,
Live), Compare's grid of every explainer's map, and the queries that take an explainer (the smoke store has Grad-CAM
and Grad-CAM++)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _app_store import smoke_store_path
from _apptest import array as plot_array
from _apptest import figures as plot_figures
from _apptest import run_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from mtlx_core.explain.explainers import EXPLAINERS, get_explainer
from mtlx_core.live import load_store_model, to_input, working_size
from mtlx_core.store import query
from mtlx_core.uploads import load_image_bytes

EXPLAINER_LABELS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "hirescam": "HiResCAM", "xgradcam": "XGrad-CAM",
                    "layercam": "LayerCAM", "scorecam": "Score-CAM", "integrated_gradients": "Integrated Gradients"}


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = smoke_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path


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


# --- the Perturbation steps and Live pages (issue 21: "the Live page offers the same explainers") ---------------


def test_steps_explainer_selector_offers_the_targets_stored_explainers_and_the_curve_follows_it(
        store_env: Path) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/irof_steps.py")
    model_id, task = at.selectbox(key="st_model").value, at.selectbox(key="st_task").value
    metric, variant = at.selectbox(key="st_metric").value, at.selectbox(key="st_variant").value
    # a target whose most-relevant-first curve both explainers have (an all-zero map has none)
    image_id, target_id = store.rows(
        "SELECT a.image_id, a.target_id FROM faithfulness a JOIN faithfulness b "
        "USING (model_id, image_id, task, target_id, metric, variant, ordering, layer_role) WHERE a.model_id = ? "
        "AND a.task = ? AND a.metric = ? AND a.variant = ? AND a.ordering = 'morf' AND a.layer_role = 'primary' "
        "AND a.explainer = 'gradcam' AND b.explainer = 'gradcampp' AND a.status = 'ok' AND b.status = 'ok' "
        "ORDER BY ALL LIMIT 1", [model_id, task, metric, variant])[0]
    at.radio(key="st_image").set_value(image_id).run()
    at.selectbox(key="st_target").set_value(int(target_id)).run()
    at.selectbox(key="st_order").set_value("morf").run()
    assert not at.exception
    where = ("model_id = ? AND image_id = ? AND task = ? AND target_id = ? AND layer_role = 'primary'",
             [model_id, image_id, task, target_id])
    stored = [n for (n,) in store.rows(f"SELECT DISTINCT explainer FROM explanations WHERE {where[0]} "
                                       "ORDER BY explainer <> 'gradcam', explainer", where[1])]
    assert stored == ["gradcam", "gradcampp"]  # the smoke store's explainers on every model
    sel = at.selectbox(key="st_explainer")
    assert sel.options == [EXPLAINER_LABELS[n] for n in stored]
    assert sel.value == "gradcam"

    def stored_row(explainer: str) -> pd.Series:
        return store.df(f"SELECT curve, score FROM faithfulness WHERE {where[0]} AND metric = ? AND variant = ? "
                        "AND explainer = ? AND ordering = 'morf'", [*where[1], metric, variant, explainer]).iloc[0]

    def shown_morf() -> np.ndarray:
        return next(plot_array(d["y"]) for d in plot_figures(at)[2]["data"] if d["name"] == "most relevant first")

    cam, pp = stored_row("gradcam"), stored_row("gradcampp")
    assert not np.allclose(cam["curve"], pp["curve"])
    np.testing.assert_allclose(shown_morf(), cam["curve"], rtol=0, atol=1e-12)
    sel.select("gradcampp").run()
    assert not at.exception
    assert not at.warning
    np.testing.assert_allclose(shown_morf(), pp["curve"], rtol=0, atol=1e-12)
    assert at.metric[3].value == f"{pp['score']:.4g}"
    assert "Grad-CAM++ at layer" in at.caption[-1].value
    kept = at.query_params["st_explainer"]
    assert json.loads(kept[0] if isinstance(kept, list) else kept) == "gradcampp"
    ablation = query.layers(store, [model_id], task)
    ablation = ablation.loc[ablation["layer_role"] == "ablation", "layer_label"].iloc[0]
    at.selectbox(key="st_layer").set_value(ablation).run()  # the layer ablation is Grad-CAM's alone: no selector
    assert not at.exception
    assert "st_explainer" not in {w.key for w in at.selectbox}


def test_live_offers_every_registered_explainer_and_shows_and_scores_the_chosen_ones_map(store_env: Path) -> None:
    at = run_page("pages/live.py")
    pixels = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    at.file_uploader(key="lv_upload").upload("room.png", buf.getvalue(), "image/png").run()
    sel = at.selectbox(key="lv_explainer")
    assert sel.options == [EXPLAINER_LABELS[n] for n in EXPLAINERS]
    assert sel.value == "gradcam"
    sel.select("gradcampp").run()
    assert not at.exception
    assert not at.error
    assert any("Grad-CAM++ took" in c.value for c in at.caption)
    # the dense model's map is Grad-CAM++ called directly on the same input, at the store's layer, same target
    store = query.open_store(store_env)
    arm = query.arms(store).set_index("arm_id").loc[at.selectbox(key="lv_arm").value]
    dense = str(arm["dense_model_id"])
    lm = load_store_model(query.model_record(store, dense), store_env)
    task, target_id = at.selectbox(key="lv_task").value, int(at.selectbox(key="lv_target").value)
    (layer,) = store.rows("SELECT DISTINCT layer FROM explanations WHERE model_id = ? AND task = ? "
                          "AND explainer = 'gradcampp' AND layer_role = 'primary'", [dense, task])[0]
    image = load_image_bytes(buf.getvalue(), "room.png")
    x = to_input(image.array, working_size(image.height, image.width, lm.spec))
    direct = {e.target_id: e for e in get_explainer("gradcampp").explain(lm.model, x, lm.tasks[task], layer)}
    dense_map = next(f for f in map_figures(at) if f["layout"]["title"]["text"].startswith("dense"))
    shown = plot_array(dense_map["data"][1]["z"])
    assert shown.shape == direct[target_id].map_input.shape
    assert float(np.abs(shown - direct[target_id].map_input).max()) < 1e-6
    at.radio(key="lv_source").set_value("Bundled photo").run()  # SLIC finds segments on a photo, not on noise
    assert at.selectbox(key="lv_explainer").value == "gradcampp"
    at.button(key="lv_irof").click().run()  # IROF scores the chosen explainer's map
    assert not at.exception
    curves = [d for d in plot_figures(at)[-1]["data"] if len(d["y"])]
    methods = {d["name"].split(" · ")[1].split(" ")[0] for d in curves}
    assert "gradcampp" in methods
    assert "gradcam" not in methods
