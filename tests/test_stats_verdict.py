"""The verdict's statistics (D25) on simulated per-image margins with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from mtlx_core.stats.effects import decide, rank_biserial
from mtlx_core.stats.intervals import bca_paired, hierarchical
from mtlx_core.stats.trend import adjust
from mtlx_core.stats.verdict import POOLED, VerdictSettings, slope_table, trend_table, verdict_table


def study(effects: dict[float, float], n: int = 60, seeds: int = 1, arm: str = "a", ref_mean: float = 0.2,
          sd: float = 0.05, seed_sd: float = 0.0, rng: np.random.Generator | None = None,
          reference: str = "dense") -> pd.DataFrame:
    """Per-image margins of one arm: the reference's ~ N(ref_mean, sd) per image, each level's model = reference +
    its effect + noise (sd), for every seed."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for s in range(seeds):
        ref = ref_mean + rng.normal(0, sd, n)
        shift = rng.normal(0, seed_sd)
        for level, eff in effects.items():
            model = ref + eff + shift + rng.normal(0, sd, n)
            for i in range(n):
                rows.append((arm, f"{arm}-{level}-s{s}", "pruned", reference, f"{arm}-{reference}-s{s}", level,
                             "segmentation", "irof", s, f"img{i}", model[i], ref[i], ref[i]))
    return pd.DataFrame(rows, columns=["arm_id", "model_id", "model_role", "reference", "reference_id", "level",
                                       "task", "metric", "seed", "image_id", "margin_model", "margin_reference",
                                       "margin_dense"])


def test_verdict_finds_a_known_drop_and_rise_and_no_change() -> None:
    pairs = study({0.5: 0.0, 0.7: -0.05, 0.9: 0.05}, n=60)
    v = verdict_table(pairs, VerdictSettings(n_boot=2000)).set_index("level")
    assert v.loc[0.7, "verdict"] == "lower"
    assert v.loc[0.9, "verdict"] == "higher"
    assert v.loc[0.5, "verdict"] in ("equivalent", "inconclusive")
    assert v.loc[0.7, "share_of_margin_lost"] == pytest.approx(0.25, abs=0.06)


def test_false_positive_rate_under_no_effect_is_near_alpha() -> None:
    """1,000 simulated one-cell studies without an effect (TOST margin small next to the noise, so equivalence
    rarely fires): the share with a lower / higher verdict is within [0.03, 0.07]. 2,000 bootstrap resamples per
    cell instead of 10,000 keep it fast."""
    rng = np.random.default_rng(7)
    pairs = pd.concat([study({0.5: 0.0}, n=40, arm=f"arm{k}", sd=0.1, rng=rng) for k in range(1000)],
                      ignore_index=True)
    v = verdict_table(pairs, VerdictSettings(n_boot=2000))
    assert len(v) == 1000
    rate = float(v["verdict"].isin(["lower", "higher"]).mean())
    assert 0.03 <= rate <= 0.07, rate


def test_tost_declares_equivalence_when_the_effect_is_well_inside_the_margin() -> None:
    pairs = study({0.5: 0.002}, n=100, ref_mean=1.0, sd=0.05)
    v = verdict_table(pairs, VerdictSettings(n_boot=2000)).iloc[0]
    assert v["verdict"] == "equivalent"
    assert v["margin"] == pytest.approx(0.1 * abs(pairs["margin_reference"].mean()))
    expected = ttost_paired(pairs["margin_model"].to_numpy(), pairs["margin_reference"].to_numpy(),
                            -v["margin"], v["margin"])[0]
    assert v["p_tost"] == pytest.approx(expected, rel=1e-12)


def test_corrections_equal_statsmodels() -> None:
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17):
        p = rng.uniform(0, 0.2, m) ** 2
        assert np.allclose(adjust(p, "holm"), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
        assert np.allclose(adjust(p, "fdr_bh"), multipletests(p, method="fdr_bh")[1], rtol=0, atol=1e-15)
    p = np.array([0.01, np.nan, 0.04, 0.03])
    ok = multipletests(p[[0, 2, 3]], method="holm")[1]
    assert np.allclose(adjust(p, "holm")[[0, 2, 3]], ok)
    assert np.isnan(adjust(p, "holm")[1])
    # within the verdict table: Holm per arm family over its levels, BH across the study
    pairs = pd.concat([study({0.5: -0.01, 0.7: -0.02, 0.9: 0.0}, n=30, arm=a, rng=rng) for a in ("a", "b")])
    v = verdict_table(pairs, VerdictSettings(n_boot=500))
    for _, fam in v.groupby("arm_id"):
        assert np.allclose(fam["p_holm"], multipletests(fam["p_wilcoxon"], method="holm")[1])
    assert np.allclose(v["q_bh"], multipletests(v["p_wilcoxon"], method="fdr_bh")[1])


def test_interval_and_wilcoxon_are_the_libraries_own_per_cell() -> None:
    pairs = pd.concat([study({0.5: -0.01, 0.7: -0.03}, n=25, arm=a, rng=np.random.default_rng(k))
                       for k, a in enumerate("xyz")])
    v = verdict_table(pairs, VerdictSettings(n_boot=3000, seed=11))
    for row in v.itertuples(index=False):
        cell = pairs[pairs["model_id"] == row.model_id]
        x, y = cell["margin_model"].to_numpy(), cell["margin_reference"].to_numpy()
        ci = stats.bootstrap((x, y), lambda a, b, axis: np.mean(a - b, axis=axis), paired=True, vectorized=True,
                             n_resamples=3000, method="BCa", random_state=np.random.default_rng(11)
                             ).confidence_interval
        assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
        assert row.p_wilcoxon == pytest.approx(stats.wilcoxon(x, y).pvalue, rel=1e-12)


def test_hierarchical_bootstrap_covers_the_true_mean_95_percent() -> None:
    """Crossed seeds x images (3 seeds, 44 images: the demo_seeds shape; seed sd 0.02, image sd 0.1, residual
    sd 0.1): coverage of the true mean over 2,000 simulated studies within 2 points of 95 % (2,000 resamples
    per study instead of 10,000)."""
    rng = np.random.default_rng(5)
    hits = 0
    for r in range(2000):
        D = 0.1 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.1, (1, 44)) + rng.normal(0, 0.1, (3, 44))
        _, lo, hi = hierarchical(D, n_boot=2000, seed=r)
        hits += lo <= 0.1 <= hi
    assert abs(hits / 2000 - 0.95) <= 0.02, hits / 2000


def test_several_seeds_give_a_pooled_row_with_the_hierarchical_interval_and_per_seed_rows() -> None:
    pairs = study({0.5: -0.04, 0.9: 0.0}, n=30, seeds=3, seed_sd=0.005)
    v = verdict_table(pairs, VerdictSettings(n_boot=1000))
    pooled = v[v["seed"] == POOLED].set_index("level")
    assert len(pooled) == 2
    assert (pooled["n_seeds"] == 3).all()
    assert pooled["primary"].all()
    assert set(v[v["seed"] != POOLED]["seed"]) == {0, 1, 2}
    assert not v[v["seed"] != POOLED]["primary"].any()
    wide = pairs[pairs["level"] == 0.5].assign(d=lambda f: f["margin_model"] - f["margin_reference"])
    D = wide.pivot_table(index="seed", columns="image_id", values="d").to_numpy()
    assert (pooled.loc[0.5, "mean_delta"], pooled.loc[0.5, "ci_low"], pooled.loc[0.5, "ci_high"]) == \
        pytest.approx(hierarchical(D, 1000, 0))
    assert pooled.loc[0.5, "verdict"] == "lower"
    assert pooled.loc[0.5, "model_id"] == "a-0.5-s0;a-0.5-s1;a-0.5-s2"


def test_control_reference_is_its_own_family() -> None:
    both = pd.concat([study({0.5: -0.05, 0.7: 0.0}, n=30), study({0.5: 0.0, 0.7: 0.0}, n=30, reference="control")])
    v = verdict_table(both, VerdictSettings(n_boot=500))
    assert set(v["reference"]) == {"dense", "control"}
    for _, fam in v.groupby("reference"):
        assert np.allclose(fam["p_holm"], multipletests(fam["p_wilcoxon"], method="holm")[1])


def test_decide_follows_the_rule_in_order() -> None:
    assert decide(0.01, 0.001, -0.5, -0.1) == "equivalent"  # TOST first
    assert decide(0.2, 0.01, -0.5, -0.1) == "lower"
    assert decide(0.2, 0.01, 0.1, 0.5) == "higher"
    assert decide(0.2, 0.01, -0.1, 0.5) == "inconclusive"   # the interval straddles 0
    assert decide(0.2, 0.2, 0.1, 0.5) == "inconclusive"     # Holm p not below alpha
    assert decide(float("nan"), float("nan"), 0.1, 0.5) == "inconclusive"


def test_rank_biserial_is_one_when_every_difference_is_positive_and_matches_its_definition() -> None:
    assert rank_biserial([0.1, 0.2, 0.3, 0.0]) == 1.0
    d = np.array([0.3, -0.1, 0.2, -0.4, 0.5])
    r = stats.rankdata(np.abs(d))
    assert rank_biserial(d) == pytest.approx((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def test_bca_rows_with_no_spread_get_a_point_interval() -> None:
    lo, hi = bca_paired(np.array([[1.0, 2.0, 3.0], [0.5, 0.2, 0.9]]), np.array([[0.5, 1.5, 2.5], [0.4, 0.3, 0.1]]),
                        n_boot=500)
    assert lo[0] == hi[0] == 0.5
    assert lo[1] < hi[1]


def test_page_trend_finds_a_monotone_decline_and_slope_links_it_to_performance() -> None:
    pairs = study({0.5: -0.01, 0.7: -0.03, 0.8: -0.05, 0.9: -0.08}, n=40)
    t = trend_table(pairs).iloc[0]
    assert t["p_decreasing"] < 0.001 < 0.99 < t["p_increasing"]
    assert t["levels"] == "0.5,0.7,0.8,0.9"
    cells = verdict_table(pairs, VerdictSettings(n_boot=500))
    perf = pd.DataFrame({"model_id": cells["model_id"], "reference_id": cells["reference_id"],
                         "task": "segmentation", "d_perf": [-0.01, -0.03, -0.05, -0.08]})
    s = slope_table(cells, perf)
    row = s[s["scope"] == "all"].iloc[0]
    assert row["ci_low"] <= 1.0 <= row["ci_high"]
    assert row["n_models"] == 4
