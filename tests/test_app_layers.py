"""The layer ablation in the app (Layers page, layer selectors of Compare and Perturbation steps) on a smoke store with
every registered Grad-CAM layer explained.

The store: the app tests' smoke store when it already has ablation layers (``MTLX_TEST_STORE``), else a copy of it
to which the real precompute adds them (``--layers all``: only the new layer units run, about 20 s on 2 CPU cores).
"""

from __future__ import annotations

import atexit
import base64
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from _app_store import smoke_store_path
from test_app import figures, run_page

from mtlx_core.store import query

_built: dict[str, Path] = {}


def layered_store_path() -> Path:
    """A smoke store with the ablation layers (built on first use in this test process)."""
    base = smoke_store_path()
    store = query.open_store(base)
    if (query.layers(store)["layer_role"] == "ablation").any():
        return base
    if "store" not in _built:
        some_model = str(query.models(store)["model_id"].iloc[0])
        models_dir = Path(query.model_record(store, some_model)["checkpoint"]).parents[1]  # <dir>/<run>/model.pt
        preset = query.overview(store)["meta"]["preset"]
        root = Path(tempfile.mkdtemp(prefix="mtlx_app_layers_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        path = root / "study.duckdb"
        shutil.copy(base, path)
        cmd = [sys.executable, "-m", "mtlx_core.precompute", "--preset", preset, "--store", str(path),
               "--models-dir", str(models_dir), "--threads", "1", "--no-progress", "--layers", "all"]
        # cwd = the smoke store's folder: its relative data folder (data_cache/...) is reused
        proc = subprocess.run(cmd, cwd=models_dir, capture_output=True, text=True, timeout=1200, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")
        _built["store"] = path
    return _built["store"]


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = layered_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path


def layer_options(store: query.Store, model_ids: list[str]) -> list[str]:
    lay = query.layers(store, model_ids)
    return [f"{r.layer_label} (primary)" if r.layer_role == "primary" else r.layer_label for r in lay.itertuples()]


def heatmap_z(fig: dict) -> np.ndarray:
    """The saliency of an overlay figure (plotly writes arrays as typed base64)."""
    z = fig["data"][1]["z"]
    if isinstance(z, dict):
        shape = [int(s) for s in str(z["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"])).reshape(shape)
    return np.asarray(z, dtype=np.float32)


def dense_map(at: object) -> np.ndarray:
    maps = [f for f in figures(at) if f["data"][0]["type"] == "image" and len(f["data"]) > 1
            and f["layout"]["title"]["text"].startswith("dense")]
    assert len(maps) == 1
    return heatmap_z(maps[0])


def test_layers_page_puts_every_stored_layer_on_the_x_axis_primary_first(store_env: Path) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/layers.py")
    arm_id = at.selectbox(key="ly_arm").value
    wanted = layer_options(store, query.arm_models(store, arm_id)["model_id"].tolist())
    assert len(wanted) > 1
    charts = figures(at)
    assert len(charts) == len(query.arms(store).set_index("arm_id").loc[arm_id, "tasks"])
    assert all(c["layout"]["xaxis"]["ticktext"] == wanted for c in charts)
    assert not any("--layers all" in i.value for i in at.info)


def test_compare_offers_exactly_the_stored_layers_and_a_non_primary_one_shows_its_map(store_env: Path) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/compare.py")
    chosen = at.multiselect(key="cmp_models").value
    assert at.selectbox(key="cmp_layer").options == layer_options(store, chosen)
    dense = str(query.arms(store).set_index("arm_id").loc[at.selectbox(key="cmp_arm").value, "dense_model_id"])
    image_id, task, target = at.radio(key="cmp_image").value, at.selectbox(key="cmp_task").value, \
        at.selectbox(key="cmp_target").value
    primary = query.saliency_maps(store, [dense], image_id, task, target)[dense]
    np.testing.assert_allclose(dense_map(at), primary)
    other = next(lay for lay in query.layers(store, chosen).query("layer_role == 'ablation'")["layer_label"]
                 if (m := query.saliency_maps(store, [dense], image_id, task, target, lay).get(dense)) is not None
                 and not np.allclose(m, primary))
    at.selectbox(key="cmp_layer").set_value(other).run()
    assert not at.exception
    np.testing.assert_allclose(dense_map(at), query.saliency_maps(store, [dense], image_id, task, target, other)[dense])
    curves = next(f for f in figures(at) if f["data"][0]["type"] == "scatter")
    names = [d["name"] for d in curves["data"]]
    assert any(" · most relevant first (" in n for n in names)
    stored = query.faithfulness_curves(store, chosen, image_id, task, target, layer=other)
    assert set(stored.loc[stored["ordering"] != "random", "layer_label"]) == {other}
    if "lerf" not in set(stored["ordering"]):  # what the store has at this layer, nothing borrowed from the primary
        assert not any(" · least relevant first (" in n for n in names)


def test_steps_page_offers_the_orderings_stored_at_the_chosen_layer(store_env: Path) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/irof_steps.py")
    labels = {"morf": "most relevant first", "lerf": "least relevant first", "random": "random ordering"}

    def stored() -> list[str]:
        curves = query.faithfulness_curves(store, [at.selectbox(key="st_model").value],
                                           at.radio(key="st_image").value, at.selectbox(key="st_task").value,
                                           at.selectbox(key="st_target").value,
                                           layer=at.selectbox(key="st_layer").value)
        return [labels[o] for o in labels if o in set(curves.loc[curves["status"] == "ok", "ordering"])]

    # the first image and target whose map is not all zero (the smoke models' tiny maps can be): every ordering
    for image in at.radio(key="st_image").options:
        at.radio(key="st_image").set_value(image).run()
        found = next((t for t in at.selectbox(key="st_target").options
                      if at.selectbox(key="st_target").set_value(t).run() and "most relevant first" in stored()), None)
        if found is not None:
            break
    assert at.selectbox(key="st_order").options == stored() == list(labels.values())
    at.selectbox(key="st_order").set_value("lerf").run()
    at.selectbox(key="st_layer").select_index(1).run()
    assert not at.exception
    assert at.selectbox(key="st_order").options == stored()
    if "least relevant first" not in stored():
        assert at.selectbox(key="st_order").value == "morf"
