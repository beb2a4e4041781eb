"""The verdict read from a store: roles, seeds, control references, selection, the report's files and columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _app_store import smoke_store_path
from _verdict_store import N_IMAGES, build
from scipy import stats

from mtlx_core.report import PER_IMAGE_COLUMNS
from mtlx_core.report.__main__ import main as report_main
from mtlx_core.stats.verdict import POOLED, VERDICT_COLUMNS, VerdictSettings
from mtlx_core.store.reader import open_store
from mtlx_core.store.verdict import compute_verdict


@pytest.fixture(scope="module")
def seeds_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("verdict") / "study.duckdb")


@pytest.fixture(scope="module")
def verdict(seeds_store: Path):
    return compute_verdict(open_store(seeds_store), VerdictSettings(n_boot=1000), sensitivity=True)


def test_two_seeds_pool_into_one_primary_row_per_cell_with_per_seed_rows_beside(verdict) -> None:
    c = verdict.cells
    pooled = c[c["seed"] == POOLED]
    assert set(zip(pooled["level"], pooled["reference"], strict=True)) == {
        (0.5, "dense"), (0.9, "dense"), (0.5, "control"), (0.9, "control"), (0.0, "dense")}
    assert (pooled["n_seeds"] == 2).all()
    assert pooled["primary"].all()
    assert set(pooled.loc[pooled["level"] == 0.9, "model_id"]) == {"p0_90;p1_90"}
    per_seed = c[(c["seed"] != POOLED) & (c["level"] == 0.9) & (c["reference"] == "dense")]
    assert sorted(per_seed["model_id"]) == ["p0_90", "p1_90"]
    assert not per_seed["primary"].any()


def test_pruned_models_are_compared_with_their_own_seeds_dense_and_control(verdict) -> None:
    p = verdict.per_image
    refs = p.drop_duplicates(["model_id", "reference"]).set_index(["model_id", "reference"])["reference_id"]
    assert refs[("p1_90", "dense")] == "d1"
    assert refs[("p1_90", "control")] == "c1"
    assert refs[("c0", "dense")] == "d0"
    assert ("c0", "control") not in refs.index


def test_the_known_drop_is_lower_against_both_references_and_no_effect_is_not(verdict) -> None:
    c = verdict.cells[verdict.cells["primary"]].set_index(["level", "reference"])
    assert c.loc[(0.9, "dense"), "verdict"] == "lower"
    assert c.loc[(0.9, "control"), "verdict"] == "lower"
    assert c.loc[(0.9, "dense"), "mean_delta"] == pytest.approx(-0.1, abs=0.02)
    assert c.loc[(0.5, "dense"), "verdict"] in ("equivalent", "inconclusive")


def test_selection_and_trivial_marks_are_beside_every_verdict(verdict) -> None:
    c = verdict.cells[verdict.cells["seed"] != POOLED].set_index(["model_id", "reference"])
    assert c.loc[("p0_90", "dense"), "targets_dropped"] == pytest.approx(10 / (2 * N_IMAGES))
    assert c.loc[("p0_90", "dense"), "zero_maps"] == pytest.approx(8 / (2 * N_IMAGES - 10))
    assert c.loc[("p0_90", "dense"), "no_better_than_trivial"]
    assert not c.loc[("p0_50", "dense"), "no_better_than_trivial"]
    assert c.loc[("p0_50", "dense"), "targets_dropped"] == 0


def test_sensitivity_uses_only_the_targets_both_models_have(verdict) -> None:
    s = verdict.sensitivity
    assert s is not None
    row = s[(s["model_id"] == "p0_90") & (s["reference"] == "dense")].iloc[0]
    full = verdict.cells[(verdict.cells["model_id"] == "p0_90") & (verdict.cells["reference"] == "dense")].iloc[0]
    assert row["n_images"] == full["n_images"] == N_IMAGES
    assert row["mean_delta"] != full["mean_delta"]  # images 0-9: target 0 only on both sides


def test_report_writes_the_issues_columns_and_per_image_recomputes_every_test(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert report_main(["--store", str(smoke_store_path()), "--out", str(out), "--n-boot", "500"]) == 0
    v = pd.read_csv(out / "verdict.csv")
    per = pd.read_csv(out / "per_image.csv")
    assert list(v.columns) == list(VERDICT_COLUMNS)
    assert list(per.columns) == list(PER_IMAGE_COLUMNS)
    assert set(v["verdict"]) <= {"equivalent", "lower", "higher", "inconclusive"}
    for row in v.itertuples(index=False):
        cell = per[(per["model_id"] == row.model_id) & (per["reference"] == row.reference)
                   & (per["task"] == row.task) & (per["metric"] == row.metric)]
        assert len(cell) == row.n_images
        assert cell["delta"].mean() == pytest.approx(row.mean_delta, abs=1e-9)
        if np.ptp(cell["delta"]) > 0:
            assert stats.wilcoxon(cell["margin_model"], cell["margin_reference"]).pvalue == \
                pytest.approx(row.p_wilcoxon, rel=1e-6)
    for name in ("verdict_grid_dense", "verdict_grid_control", "figure4", "pareto_params", "pareto_macs",
                 "pareto_latency_cpu_ms", "pareto_level"):
        assert (out / f"{name}.png").stat().st_size > 0
        assert (out / f"{name}.svg").stat().st_size > 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["verdict_settings"]["n_boot"] == 500
    assert man["checkpoints"]
    assert man["packages"]["scipy"]
    assert man["notes"] == ["latency_gpu_ms is empty for every model: its Pareto view is skipped"]  # CPU study
    assert set(v["reference"]) == {"dense", "control"}
    assert set(man["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}


def test_cost_views_read_every_cost_column_and_ring_the_pareto_front(seeds_store: Path, tmp_path: Path) -> None:
    import shutil

    import duckdb

    from mtlx_core.store import query

    path = tmp_path / "costs.duckdb"
    shutil.copy(seeds_store, path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE models SET latency_cpu_ms = 1 + 9 * (1 - target_sparsity)")
    con.close()
    store = query.open_store(path)
    assert query.cost_axes(store) == ["params", "macs", "latency_cpu_ms", "level"]  # no GPU latency stored
    pts = query.verdict_pareto(store, "irof")
    assert set(pts["model_id"]) == {"d0", "d1", "c0", "c1", "p0_50", "p1_50", "p0_90", "p1_90"}
    assert pts.set_index("model_id").loc["p0_90", "latency_cpu_ms"] == pytest.approx(1.9)
    assert set(pts.loc[pts["model_id"] == "c0", "role"]) == {"control"}
    # the 90 % models cost least (MACs), so nothing dominates them; a dense model is dominated by its own control
    # only if the control is at least as good on every axis: the front is a non-empty proper subset
    front = set(pts.loc[pts["front"], "model_id"])
    assert {"p0_90", "p1_90"} & front
    assert front < set(pts["model_id"])
    with pytest.raises(ValueError, match="valid: irof"):
        query.verdict_pareto(store, "nope")


def test_report_on_a_missing_or_old_store_fails_cleanly_and_writes_nothing(tmp_path: Path,
                                                                           seeds_store: Path) -> None:
    out = tmp_path / "report"
    assert report_main(["--store", str(tmp_path / "none.duckdb"), "--out", str(out)]) == 2
    old = tmp_path / "old.duckdb"
    old.write_bytes(seeds_store.read_bytes())
    import duckdb

    con = duckdb.connect(str(old))
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    assert report_main(["--store", str(old), "--out", str(out)]) == 2
    assert not out.exists()
    assert list(tmp_path.glob(".report*")) == []


def test_report_error_midway_leaves_an_existing_folder_untouched(tmp_path: Path, seeds_store: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "verdict.csv").write_text("old")
    from mtlx_core.report import build as report_build

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_build.manifest, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        report_build.write_report(seeds_store, out, settings=VerdictSettings(n_boot=200))
    assert [p.name for p in out.iterdir()] == ["verdict.csv"]
    assert (out / "verdict.csv").read_text() == "old"
    assert list(tmp_path.glob(".report*")) == []
