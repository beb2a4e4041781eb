"""The app's read-only query module on a smoke store: what each query returns, errors, snapshot refresh."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from _app_store import smoke_store_path

from mtlx_core.store import query
from mtlx_core.store.errors import StoreBusyError, StoreError, StoreMissingError
from mtlx_core.store.snapshot import work_path


@pytest.fixture(scope="module")
def store() -> query.Store:
    return query.open_store(smoke_store_path())


@pytest.fixture(scope="module")
def one(store: query.Store) -> dict:
    """An (arm, models, image, task, target) that the dense and a pruned model both explain."""
    arm = query.arms(store).iloc[0]
    models = query.arm_models(store, arm["arm_id"])["model_id"].tolist()
    row = store.rows("SELECT image_id, task, target_id FROM explanations WHERE model_id = ? ORDER BY image_id, task, "
                     "target_id LIMIT 1", [models[0]])[0]
    return {"arm": arm, "models": models, "image_id": row[0], "task": row[1], "target_id": int(row[2])}


def test_overview_counts_every_table(store: query.Store) -> None:
    info = query.overview(store)
    assert info["meta"]["schema_version"] == "2"
    for table in ("models", "images", "explanations", "irof"):
        assert info["counts"][table] == store.rows(f"SELECT count(*) FROM {table}")[0][0] > 0


def test_arm_models_lists_the_dense_model_first_then_by_sparsity(store: query.Store) -> None:
    for arm in query.arms(store).itertuples():
        df = query.arm_models(store, arm.arm_id)
        assert df["model_id"].iloc[0] == arm.dense_model_id
        assert bool(df["is_dense"].iloc[0])
        assert not df["is_dense"].iloc[1:].any()
        assert list(df["target_sparsity"].iloc[1:]) == sorted(df["target_sparsity"].iloc[1:])


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means() -> None:
    values = np.array([0.1, 0.4, 0.2, 0.9, 0.5])
    mean, lo, hi = query.bootstrap_ci(values, n_boot=500, seed=3)
    idx = np.random.default_rng(3).integers(0, 5, size=(500, 5))
    expected = np.quantile(values[idx].mean(axis=1), [0.025, 0.975])
    assert mean == pytest.approx(values.mean())
    assert (lo, hi) == pytest.approx(tuple(expected), abs=1e-12)
    assert query.bootstrap_ci(np.array([0.3, np.nan])) == pytest.approx((0.3, 0.3, 0.3))


def test_figure4_means_are_means_over_images_of_the_per_image_target_means(store: query.Store) -> None:
    per_image = query.aoc_per_image(store, "quantus", "aoc_norm")
    fig4 = query.figure4(store, "quantus", "aoc_norm")
    r = fig4.iloc[0]
    rows = store.rows("SELECT image_id, avg(aoc_norm) FROM irof WHERE model_id = ? AND task = ? "
                      "AND saliency_method = ? AND fill_mode = 'quantus' AND isfinite(aoc_norm) GROUP BY image_id",
                      [r["model_id"], r["task"], r["saliency_method"]])
    assert r["mean"] == pytest.approx(np.mean([v for _, v in rows]))
    assert r["n_images"] == len(rows)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(query.bootstrap_ci(np.array([v for _, v in sorted(rows)]))[1:])
    assert set(per_image["saliency_method"]) <= {"gradcam", "random", "reversed"}


def test_performance_reads_each_tasks_primary_metric(store: query.Store) -> None:
    perf = query.performance(store)
    assert not perf.empty
    for task, (metric, _) in query.PRIMARY_METRIC.items():
        assert set(perf.loc[perf["task"] == task, "metric"]) <= {metric}


def test_maps_predictions_and_superpixels_have_the_image_size(store: query.Store, one: dict) -> None:
    h, w = query.image(store, one["image_id"]).shape[:2]
    maps = query.saliency_maps(store, one["models"], one["image_id"], one["task"], one["target_id"])
    assert one["models"][0] in maps
    assert all(m.shape == (h, w) and m.dtype == np.float32 for m in maps.values())
    preds = query.predictions(store, one["models"], one["image_id"], one["task"])
    assert all(p.shape[-2:] == (h, w) for p in preds.values())
    assert query.superpixels(store, one["image_id"]).shape == (h, w)


def test_irof_curves_have_one_value_per_segment(store: query.Store, one: dict) -> None:
    curves = query.irof_curves(store, one["models"], one["image_id"], one["task"], one["target_id"])
    ok = curves[curves["status"] == "ok"]
    assert {"gradcam", "random", "reversed"} <= set(curves["saliency_method"])
    assert all(len(c) == n for c, n in zip(ok["curve"], ok["n_segments"], strict=True))


def test_open_store_on_a_missing_file_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(StoreMissingError, match="precompute --preset demo"):
        query.open_store(tmp_path / "nothing.duckdb")


def test_open_store_on_a_file_that_is_not_a_store_raises_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a readable DuckDB study store"):
        query.open_store(junk)
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(StoreError, match="missing tables"):
        query.open_store(empty)


def test_open_store_while_a_writer_holds_the_file_raises_store_busy(tmp_path: Path) -> None:
    copy = tmp_path / "locked.duckdb"
    shutil.copy(smoke_store_path(), copy)
    writer = duckdb.connect(str(copy))  # this process writes it: a reader must not crash
    try:
        with pytest.raises(StoreBusyError, match="store is being written"):
            query.open_store(copy)
    finally:
        writer.close()


def test_queries_read_the_new_snapshot_once_it_is_published(tmp_path: Path) -> None:
    path = tmp_path / "study.duckdb"
    shutil.copy(smoke_store_path(), path)
    first = query.open_store(path)
    assert query.open_store(path) == first
    new = tmp_path / "next.duckdb"
    shutil.copy(smoke_store_path(), new)
    con = duckdb.connect(str(new))
    con.execute("INSERT OR REPLACE INTO meta VALUES ('preset', 'republished')")
    con.close()
    os.replace(new, path)  # what precompute's publish does
    assert query.overview(first)["meta"]["preset"] == "republished"  # an older handle reads it too
    assert query.open_store(path).signature != first.signature  # caches keyed by signature refresh


def test_open_store_while_the_first_snapshot_is_being_built_raises_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "study.duckdb"  # not published yet; precompute holds its work file
    writer = duckdb.connect(str(work_path(path)))
    try:
        with pytest.raises(StoreBusyError, match="no snapshot published yet"):
            query.open_store(path)
    finally:
        writer.close()
