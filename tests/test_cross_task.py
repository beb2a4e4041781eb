"""Cross-task similarity (issue 21's multi-task check): known answers on hand-made stores with the real schema, and
the Overview section under AppTest."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from streamlit.testing.v1 import AppTest

from mtlx_core.explain.similarity import map_similarity
from mtlx_core.store import query
from mtlx_core.store.codec import encode_array
from mtlx_core.store.cross_task import pair_similarity, store_topk, task_map
from mtlx_core.store.writer import StoreWriter, UnitRows
from pages.cross_task_figures import reading

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SHAPE = (6, 8)
DENSE = {"model_id": "d0", "arm_id": "a", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "seed": 0,
         "parent_id": None, "pruning_method": None}
PRUNED = {"model_id": "p0", "arm_id": "a", "target_sparsity": 0.5, "achieved_sparsity": 0.47, "seed": 0,
          "parent_id": "d0", "pruning_method": "netslim"}
CONTROL = {"model_id": "c0", "arm_id": "a", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "seed": 0,
           "parent_id": "d0", "pruning_method": "control"}


def _expl(model: str, image: str, task: str, target: int, arr: np.ndarray, role: str = "primary",
          explainer: str = "gradcam") -> dict:
    return {"model_id": model, "image_id": image, "task": task, "target_id": target, "target": f"t{target}",
            "layer": "enc" if role == "primary" else "dec", "layer_label": "enc", "layer_role": role,
            "explainer": explainer, "is_zero": not arr.any(), "saliency": encode_array(arr.astype(np.float32))}


def _faith(model: str, image: str, ordering: str, score: float) -> dict:
    return {"model_id": model, "image_id": image, "task": "segmentation", "target_id": 0, "target": "t0",
            "explainer": "gradcam" if ordering == "morf" else "random", "layer": "enc" if ordering == "morf" else "",
            "layer_label": "enc", "layer_role": "primary" if ordering == "morf" else "baseline", "metric": "irof",
            "variant": "fill=mean", "ordering": ordering, "replicate": 0, "seed": 0, "settings_key": "k",
            "n_steps": 3, "clean_score": 1.0, "curve": [1.0, 0.5, 0.0], "x": [0.0, 0.5, 1.0], "score": score,
            "score_norm": score, "status": "ok", "settings": "{}", "code_version": "t"}


def _build(path: Path, models: list[dict], expl: list[dict], faith: list[dict] | None = None,
           topk: float | None = None) -> query.Store:
    w = StoreWriter.open(path)
    if topk is not None:
        w.set_meta({"settings": json.dumps({"topk": topk})})
    rows = {"arms": [{"arm_id": "a", "label": "Arm A", "dense_model_id": "d0", "position": 0,
                      "tasks": ["segmentation", "depth"]}], "models": models, "explanations": expl}
    if faith:
        rows["faithfulness"] = faith
    w.commit(UnitRows("u", "explain", rows))
    w.publish()
    w.close(remove_work=True)
    return query.open_store(path)


def _random_map(rng: np.random.Generator) -> np.ndarray:
    return rng.random(SHAPE)


def test_task_map_is_the_mean_of_min_max_normalised_target_maps() -> None:
    m1 = np.array([[0.0, 0.5], [0.25, 0.5]])  # range [0, 0.5]
    m2 = np.array([[1.0, 0.2], [0.6, 0.2]])  # range [0.2, 1]
    expected = (np.array([[0.0, 1.0], [0.5, 1.0]]) + np.array([[1.0, 0.0], [0.5, 0.0]])) / 2
    np.testing.assert_allclose(task_map([m1, m2]), expected)
    np.testing.assert_allclose(task_map([m2]), (m2 - 0.2) / 0.8)  # one target: that map, normalised
    np.testing.assert_array_equal(task_map([np.zeros((2, 2))]), np.zeros((2, 2)))


def test_identical_task_maps_give_spearman_1_and_the_negative_gives_minus_1(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = _random_map(rng), _random_map(rng)
    expl = [_expl("d0", "i1", "segmentation", 0, a), _expl("d0", "i1", "depth", 0, a * 0.5),
            _expl("d0", "i2", "segmentation", 0, b), _expl("d0", "i2", "depth", 0, 1.0 - b),
            _expl("d0", "i1", "depth", 0, 1.0 - a, role="ablation"),  # other layers and explainers do not count
            _expl("d0", "i1", "depth", 0, 1.0 - a, explainer="gradcampp")]
    store = _build(tmp_path / "s.duckdb", [DENSE], expl)
    per = query.cross_task_per_image(store).set_index("image_id")
    assert (per.loc["i1", "task_a"], per.loc["i1", "task_b"]) == ("depth", "segmentation")
    assert per.loc["i1", "spearman"] == pytest.approx(1.0)
    assert per.loc["i1", "topk_iou"] == pytest.approx(1.0)
    assert per.loc["i2", "spearman"] == pytest.approx(-1.0)
    assert per.loc["i2", "topk_iou"] == pytest.approx(0.0)  # top 20 % of 48 pixels vs the bottom 20 %


def test_a_task_map_averages_its_targets_after_normalising_each(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    m1 = rng.random(SHAPE) * 0.1  # a weak target: raw values would drown in m2's
    m2 = 0.5 + rng.random(SHAPE) * 0.5
    mean = task_map([m1, m2])
    expl = [_expl("d0", "i1", "segmentation", 0, m1), _expl("d0", "i1", "segmentation", 1, m2),
            _expl("d0", "i1", "depth", 0, mean * 0.7)]
    store = _build(tmp_path / "s.duckdb", [DENSE], expl)
    row = query.cross_task_per_image(store).iloc[0]
    assert row["spearman"] == pytest.approx(1.0)
    assert (row["n_targets_a"], row["n_targets_b"]) == (1, 2)
    raw = spearmanr((m1 + m2).ravel(), mean.ravel()).statistic  # without normalising the ranks differ
    assert raw < 0.999


def test_pair_similarity_topk_uses_the_store_topk(tmp_path: Path) -> None:
    a = np.arange(48, dtype=np.float64).reshape(SHAPE)
    b = a[::-1, ::-1].copy()
    assert pair_similarity(a, b, 0.5) == (pytest.approx(-1.0), 0.0)
    store = _build(tmp_path / "s.duckdb", [DENSE], [_expl("d0", "i1", "segmentation", 0, a / 47),
                                                    _expl("d0", "i1", "depth", 0, b / 47)], topk=0.75)
    assert store_topk(store) == 0.75
    k = 36  # top 75 % of 48 pixels: the middle 24 are shared
    assert query.cross_task_per_image(store)["topk_iou"].iloc[0] == pytest.approx(24 / (2 * k - 24))


@pytest.mark.parametrize("seed", range(5))
def test_the_measures_equal_map_similarity_also_on_maps_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.maximum(np.round(rng.random((12, 16)) * 4) / 4 - 0.25, 0)  # many zeros and equal values
    b = np.maximum(np.round(rng.random((12, 16)) * 4) / 4 - 0.25, 0)
    for topk in (0.1, 0.2, 0.5):
        ref = map_similarity(a, b, topk)
        assert pair_similarity(a, b, topk) == (pytest.approx(ref.spearman), pytest.approx(ref.topk_iou))


def _pruning_store(path: Path, n_images: int, faith: bool = False) -> query.Store:
    rng = np.random.default_rng(2)
    expl = []
    for i in range(n_images):
        img = f"i{i:02d}"
        same = _random_map(rng)
        expl += [_expl("d0", img, "segmentation", 0, _random_map(rng)), _expl("d0", img, "depth", 0, _random_map(rng)),
                 _expl("p0", img, "segmentation", 0, same), _expl("p0", img, "depth", 0, same),
                 _expl("c0", img, "segmentation", 0, _random_map(rng)), _expl("c0", img, "depth", 0, _random_map(rng))]
    rows = [_faith(m, f"i{i:02d}", o, s) for m in ("d0", "p0") for i in range(n_images)
            for o, s in (("morf", 0.6 + 0.01 * i), ("random", 0.4))] if faith else None
    return _build(path, [DENSE, PRUNED, CONTROL], expl, rows)


def test_a_pruned_model_whose_task_maps_become_identical_is_significantly_more_alike(tmp_path: Path) -> None:
    df = query.cross_task_vs_sparsity(_pruning_store(tmp_path / "s.duckdb", 12), "spearman", n_boot=200)
    assert df["role"].tolist() == ["dense", "pruned", "control"]
    rows = df.set_index("model_id")
    assert rows.loc["p0", "mean"] == pytest.approx(1.0)
    assert rows.loc["p0", "sparsity"] == pytest.approx(0.47)
    assert rows.loc["d0", "sparsity"] == 0.0
    assert abs(rows.loc["d0", "mean"]) < 0.3
    assert rows.loc["p0", "delta"] == pytest.approx(1.0 - rows.loc["d0", "mean"])
    assert rows.loc["p0", "n_paired"] == 12
    assert rows.loc["p0", "p"] == pytest.approx(2 / 2 ** 12)  # exact Wilcoxon: every difference positive
    assert rows.loc["p0", "p_holm"] == pytest.approx(2 * 2 / 2 ** 12)  # Holm over the pruned level and the control
    assert rows.loc["p0", "change"] == "more alike"
    assert rows.loc["c0", "change"] == "no significant change"
    assert rows.loc["d0", "change"] == ""
    assert np.isnan(rows.loc["d0", "p"])
    assert rows.loc["p0", "delta_low"] <= rows.loc["p0", "delta"] <= rows.loc["p0", "delta_high"]


def test_an_all_zero_task_map_has_no_similarity_and_the_reading_says_why(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    expl = [_expl(m, f"i{i}", task, 0, np.zeros(SHAPE) if task == "depth" else _random_map(rng))
            for m in ("d0", "p0") for i in range(3) for task in ("segmentation", "depth")]
    df = query.cross_task_vs_sparsity(_build(tmp_path / "s.duckdb", [DENSE, PRUNED], expl), "topk_iou", n_boot=50)
    assert df["mean"].isna().all()
    assert df["n_images"].tolist() == [0, 0]
    text = reading(df, "Arm A", "top-k IoU", {})
    assert text == ("**Arm A**: no pruned level has enough images with comparable maps to test a change; a task's "
                    "maps are all zero on every image, so its maps cannot be compared with the others'.")


def test_a_level_pruned_from_the_previous_one_is_compared_with_the_dense_model(tmp_path: Path) -> None:
    """HRank's rounds: p1 is pruned from p0, which is pruned from d0; p1's change is from d0, not from p0, and a
    dense-only model's all-zero maps (no similarity on any image) give no test instead of an error."""
    rng = np.random.default_rng(5)
    level2 = {**PRUNED, "model_id": "p1", "target_sparsity": 0.75, "achieved_sparsity": 0.74, "parent_id": "p0"}
    blank = {**PRUNED, "model_id": "z0", "target_sparsity": 0.9, "achieved_sparsity": 0.9, "parent_id": "p1"}
    expl = []
    for i in range(8):
        img, same = f"i{i}", _random_map(rng)
        expl += [_expl("d0", img, "segmentation", 0, _random_map(rng)), _expl("d0", img, "depth", 0, _random_map(rng)),
                 _expl("p0", img, "segmentation", 0, same), _expl("p0", img, "depth", 0, same),
                 _expl("p1", img, "segmentation", 0, same), _expl("p1", img, "depth", 0, 1 - same),
                 _expl("z0", img, "segmentation", 0, np.zeros(SHAPE)), _expl("z0", img, "depth", 0, same)]
    df = query.cross_task_vs_sparsity(_build(tmp_path / "s.duckdb", [DENSE, PRUNED, level2, blank], expl),
                                      "spearman", n_boot=100)
    rows = df.set_index("model_id")
    assert set(rows["parent_id"].drop("d0")) == {"d0"}
    assert rows.loc["p1", "mean"] == pytest.approx(-1.0)
    assert rows.loc["p1", "delta"] == pytest.approx(-1.0 - rows.loc["d0", "mean"])  # from d0 (p0's mean is 1)
    assert rows.loc["z0", "n_paired"] == 0
    assert np.isnan(rows.loc["z0", "delta"])


def test_a_dense_only_store_has_the_dense_value_and_no_sparsity_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = _random_map(rng)
    expl = [_expl("d0", "i1", "segmentation", 0, a), _expl("d0", "i1", "depth", 0, a)]
    df = query.cross_task_vs_sparsity(_build(tmp_path / "s.duckdb", [DENSE], expl), "topk_iou", n_boot=100)
    assert df["role"].tolist() == ["dense"]
    assert df["mean"].iloc[0] == pytest.approx(1.0)
    assert np.isnan(df["delta"].iloc[0])
    assert df["n_paired"].iloc[0] == 0
    assert reading(df, "Arm A", "top-k IoU", {"depth": "Depth", "segmentation": "Seg"}) == (
        "**Arm A**: no pruned model to compare yet; the dense model's mean top-k IoU between its tasks' maps: "
        "Depth × Seg 1.00.")


def test_an_unknown_measure_lists_the_valid_ones(tmp_path: Path) -> None:
    store = _build(tmp_path / "s.duckdb", [DENSE], [])
    with pytest.raises(ValueError, match="valid measures: spearman, topk_iou"):
        query.cross_task_vs_sparsity(store, "ssim")
    assert query.cross_task_vs_sparsity(store).empty


def test_the_overview_shows_the_cross_task_section_with_a_reading_per_arm(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.duckdb"
    _pruning_store(path, 8, faith=True)
    monkeypatch.setenv("MTLX_STORE", str(path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Does pruning make the tasks' explanations more alike?" in [s.value for s in at.subheader]
    readings = [m.value for m in at.markdown if m.value.startswith("**Arm A**")]
    assert len(readings) == 1
    assert readings[0].startswith("**Arm A**: pruning makes the tasks' explanations more alike")
    assert "1 of 1 pruned level × task pair comparison; largest: Depth × Segmentation at 47 %" in readings[0]
    assert at.radio(key="ov_xt").value == "spearman"
    assert at.toggle(key="ov_xt_on").value is True  # a small store: computed without asking
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    xt = [f for f in charts if f["layout"].get("xaxis", {}).get("title", {}).get("text") == "achieved sparsity (%)"]
    assert len(xt) == 1
    assert [t["name"] for t in xt[0]["data"]] == ["Arm A", "Arm A · control"]
    x = xt[0]["data"][0]["x"]  # plotly sends numpy arrays as typed base64
    assert np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist() == pytest.approx([0.0, 47.0])
    at.toggle(key="ov_xt_on").set_value(False).run()  # a large store computes it only when asked
    assert not [m for m in at.markdown if m.value.startswith("**Arm A**")]
