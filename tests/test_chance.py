"""Do the explanations beat chance: paired statistics and the store queries behind the Overview and Layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mtlx_core.stats.paired import holm, paired_summary
from mtlx_core.store import query
from mtlx_core.store.chance import verdict
from mtlx_core.store.writer import StoreConflictError, StoreWriter, UnitRows


def test_paired_summary_is_scipys_mean_bca_interval_and_wilcoxon() -> None:
    d = np.random.default_rng(0).normal(0.05, 0.1, size=32)
    s = paired_summary(d, n_boot=2000, seed=1)
    ci = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa",
                         random_state=np.random.default_rng(1)).confidence_interval
    assert (s.n, s.mean, s.ci_low, s.ci_high) == (32, pytest.approx(d.mean()), pytest.approx(ci.low),
                                                  pytest.approx(ci.high))
    assert s.p == pytest.approx(stats.wilcoxon(d).pvalue)


def test_paired_summary_degenerate_inputs() -> None:
    assert paired_summary([]).n == 0
    one = paired_summary([0.3, np.nan])
    assert (one.n, one.mean) == (1, 0.3)
    assert np.isnan(one.p)
    zeros = paired_summary([0.0] * 5)
    assert (zeros.mean, zeros.ci_low, zeros.ci_high, zeros.p) == (0.0, 0.0, 0.0, 1.0)
    same = paired_summary([0.25] * 8)
    assert (same.ci_low, same.ci_high) == (0.25, 0.25)
    assert same.p == pytest.approx(stats.wilcoxon([0.25] * 8).pvalue)


def test_holm_adjusts_like_the_step_down_rule_and_skips_nan() -> None:
    got = holm([0.01, 0.04, np.nan, 0.03])
    # sorted 0.01, 0.03, 0.04 with factors 3, 2, 1 -> 0.03, 0.06, 0.06 (monotone)
    assert got[0] == pytest.approx(0.03)
    assert got[3] == pytest.approx(0.06)
    assert got[1] == pytest.approx(0.06)
    assert np.isnan(got[2])


@pytest.mark.parametrize(("row", "expected"), [
    ({"p_holm": 0.01, "ci_low": 0.01, "ci_high": 0.05, "margin": 0.03, "margin_share": 0.3}, "clearly beats chance"),
    ({"p_holm": 0.01, "ci_low": 0.01, "ci_high": 0.05, "margin": 0.03, "margin_share": 0.1}, "beats chance"),
    ({"p_holm": 0.01, "ci_low": -0.05, "ci_high": -0.01, "margin": -0.03, "margin_share": -0.3},
     "worse than chance"),
    ({"p_holm": 0.2, "ci_low": -0.01, "ci_high": 0.05, "margin": 0.02, "margin_share": 0.3}, "no better than chance"),
    ({"p_holm": 0.01, "ci_low": -0.001, "ci_high": 0.05, "margin": 0.02, "margin_share": 0.3},
     "no better than chance"),
])
def test_verdict_words(row: dict, expected: str) -> None:
    assert verdict(row) == expected


def _irof(model: str, image: str, target: int, method: str, aoc: float, layer: str = "enc_bottleneck",
          role: str = "primary", status: str = "ok", replicate: int = 0) -> dict:
    rnd = method == "random"
    ok = status == "ok"
    return {"model_id": model, "image_id": image, "task": "depth", "target_id": target,
            "explainer": method, "layer": "" if rnd else layer, "layer_label": "" if rnd else layer,
            "layer_role": "baseline" if rnd else role, "metric": "irof", "variant": "fill=quantus",
            "ordering": "random" if rnd else "morf", "replicate": replicate, "settings_key": "k",
            "score": aoc * 50 if ok else None, "score_norm": aoc if ok else None, "status": status}


@pytest.fixture
def store(tmp_path: Path) -> query.Store:
    """A dense model whose Grad-CAM beats random by 0.05 on every image and target (and 0.0 at an ablation
    layer), and a pruned model with no margin; 12 images x 2 targets."""
    w = StoreWriter.open(tmp_path / "s.duckdb")
    rows = []
    rng = np.random.default_rng(0)
    for i in range(12):
        for t in range(2):
            r = 0.1 + 0.02 * rng.random()
            # two random orderings per target (D24: their mean is the chance level, here r)
            rows += [_irof("dense", f"img{i}", t, "random", r - 0.01),
                     _irof("dense", f"img{i}", t, "random", r + 0.01, replicate=1),
                     _irof("dense", f"img{i}", t, "gradcam", r + 0.05),
                     _irof("dense", f"img{i}", t, "gradcam", r, "dec_stage2", "ablation"),
                     _irof("pruned", f"img{i}", t, "random", r), _irof("pruned", f"img{i}", t, "gradcam",
                                                                       r + 0.001 * rng.normal())]
    rows.append(_irof("dense", "img0", 5, "gradcam", 0.9, status="single_segment"))  # never enters a mean
    w.commit(UnitRows("u", "explain", {
        "arms": [{"arm_id": "a", "label": "A", "dense_model_id": "dense", "position": 0}],
        "models": [{"model_id": "dense", "arm_id": "a", "target_sparsity": 0.0, "achieved_sparsity": 0.0},
                   {"model_id": "pruned", "arm_id": "a", "target_sparsity": 0.5, "achieved_sparsity": 0.5}],
        "faithfulness": rows}))
    w.publish()
    w.close(remove_work=True)
    return query.open_store(tmp_path / "s.duckdb")


def test_beats_chance_reports_the_dense_margin_and_its_test(store: query.Store) -> None:
    df = query.beats_chance(store, n_boot=1000)
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["model_id"], r["task"], r["layer_label"], r["n_images"], r["n_targets"]) == (
        "dense", "depth", "enc_bottleneck", 12, 24)
    assert r["margin"] == pytest.approx(0.05)
    per_image = query.chance_per_image(store)
    dense = per_image[(per_image["model_id"] == "dense") & (per_image["layer_role"] == "primary")]
    assert r["p"] == pytest.approx(stats.wilcoxon(dense["margin"].to_numpy()).pvalue)
    assert r["p_holm"] < 0.05
    assert r["verdict"] == "clearly beats chance"
    assert r["margin_share"] == pytest.approx(0.05 / r["random"])


def test_margin_by_layer_has_every_model_and_layer(store: query.Store) -> None:
    df = query.margin_by_layer(store, n_boot=500).set_index(["model_id", "layer_label"])
    assert sorted(df.index) == [("dense", "dec_stage2"), ("dense", "enc_bottleneck"), ("pruned", "enc_bottleneck")]
    assert df.loc[("dense", "dec_stage2"), "margin"] == pytest.approx(0.0, abs=1e-12)
    assert df.loc[("dense", "dec_stage2"), "layer_role"] == "ablation"
    assert abs(df.loc[("pruned", "enc_bottleneck"), "margin"]) < 0.001


def test_a_schema_2_store_is_refused_with_a_rebuild_hint(tmp_path: Path) -> None:
    w = StoreWriter.open(tmp_path / "old.duckdb")
    w.con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    w.publish()
    w.close(remove_work=True)
    with pytest.raises(StoreConflictError, match=r"schema version 2.*rebuild"):
        StoreWriter.open(tmp_path / "old.duckdb")
