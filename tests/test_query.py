"""The app's read-only query module on a smoke store: what each query returns, errors, snapshot refresh."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from _app_store import smoke_store_path

from mtlx_core.store import query
from mtlx_core.store.aggregate import mean_interval
from mtlx_core.store.errors import StoreBusyError, StoreError, StoreMissingError
from mtlx_core.store.snapshot import work_path
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask


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
    assert info["meta"]["schema_version"] == "5"
    for table in ("models", "images", "explanations", "faithfulness"):
        assert info["counts"][table] == store.rows(f"SELECT count(*) FROM {table}")[0][0] > 0


def test_arm_models_lists_the_dense_model_first_then_by_sparsity(store: query.Store) -> None:
    for arm in query.arms(store).itertuples():
        df = query.arm_models(store, arm.arm_id)
        assert df["model_id"].iloc[0] == arm.dense_model_id
        assert bool(df["is_dense"].iloc[0])
        assert not df["is_dense"].iloc[1:].any()
        assert list(df["target_sparsity"].iloc[1:]) == sorted(df["target_sparsity"].iloc[1:])


def test_metric_variants_list_irof_first_with_one_default_variant_per_metric(store: query.Store) -> None:
    mv = query.metric_variants(store)
    assert mv["metric"].iloc[0] == "irof"
    assert {"irof", "deletion", "insertion", "abpc", "rma", "pointing", "leakage"} <= set(mv["metric"])
    assert (mv.groupby("metric")["is_default"].sum() == 1).all()
    kinds = dict(zip(mv["metric"], mv["kind"], strict=False))
    assert (kinds["irof"], kinds["deletion"], kinds["abpc"], kinds["rma"]) == ("curve", "curve", "derived", "map")
    for metric in ("irof", "deletion"):
        variant = query.default_variant(store, metric)
        assert variant in set(mv.loc[mv["metric"] == metric, "variant"])
        assert query.settings_of(store, metric)["metric"] == query.settings_of(store, metric, variant)["metric"]
    assert query.settings_of(store, "deletion")["metric"]["n_steps"] > 0
    with pytest.raises(ValueError, match="stored metrics: irof"):
        query.default_variant(store, "no_such_metric")


@pytest.mark.parametrize("metric", ["irof", "deletion", "rma"])
def test_figure4_means_are_means_over_images_of_the_per_image_target_means(store: query.Store, metric: str) -> None:
    variant = query.default_variant(store, metric)
    fig4 = query.figure4(store, metric)
    assert set(fig4["series"]) <= set(query.SERIES)
    r = fig4[fig4["series"] == "explainer"].iloc[0]
    rows = store.rows("SELECT image_id, avg(score_norm) FROM faithfulness WHERE model_id = ? AND task = ? "
                      "AND metric = ? AND variant = ? AND ordering = 'morf' AND explainer = 'gradcam' "
                      "AND layer_role = 'primary' AND status = 'ok' GROUP BY image_id ORDER BY image_id",
                      [r["model_id"], r["task"], metric, variant])
    values = np.array([v for _, v in rows])
    assert r["mean"] == pytest.approx(values.mean())
    assert r["n_images"] == len(rows)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(mean_interval(values)[1:])
    rnd = fig4[(fig4["series"] == "random") & (fig4["model_id"] == r["model_id"]) & (fig4["task"] == r["task"])]
    assert len(rnd) == 1


def test_figure4_differs_between_metrics_and_score_columns(store: query.Store) -> None:
    keys = ["arm_id", "model_id", "task", "series"]
    irof = query.figure4(store, "irof").set_index(keys)["mean"]
    deletion = query.figure4(store, "deletion").set_index(keys)["mean"]
    raw = query.figure4(store, "irof", value="score").set_index(keys)["mean"]
    common = irof.index.intersection(deletion.index)
    assert len(common) > 0
    assert not np.allclose(irof[common], deletion[common])
    assert not np.allclose(irof, raw[irof.index])


def test_performance_reads_each_tasks_primary_metric(store: query.Store) -> None:
    """One row per arm point and task of its model: the value of the task's own primary metric (the Task
    class's, e.g. mIoU and not pixel accuracy), its direction, and the same metric of the dataset's trivial
    predictor; recomputed here from the ``task_metrics`` rows."""
    tasks = {t.name: t for t in (SegmentationTask, DepthTask, NormalsTask)}
    rows = store.rows("SELECT model_id, task, metric, value FROM task_metrics")
    value = {(m, t, k): v for m, t, k, v in rows}
    per_task = Counter((m, t) for m, t, _, _ in rows)
    assert min(per_task.values()) > 1, "a task with one metric: the test could not tell the primary one apart"
    expected = {}
    for arm_id, dense_id, dataset in store.rows("SELECT arm_id, dense_model_id, dataset FROM arms"):
        for model_id, model_tasks in store.rows("SELECT model_id, tasks FROM models WHERE (arm_id = ? AND "
                                                "coalesce(pruning_method, '') <> 'control') OR model_id = ?",
                                                [arm_id, dense_id]):  # the arm's line: controls are the verdict's
            for task in model_tasks:
                metric = tasks[task].primary_metric
                expected[(arm_id, model_id, task)] = (metric, value[(model_id, task, metric)],
                                                      tasks[task].higher_is_better[metric],
                                                      value.get((f"trivial:{dataset}", task, metric)))
    perf = query.performance(store)
    got = {(r.arm_id, r.model_id, r.task): (r.metric, r.value, bool(r.higher_is_better),
                                            None if pd.isna(r.trivial) else r.trivial) for r in perf.itertuples()}
    assert len(got) == len(perf)
    assert got == expected
    assert all(trivial is not None for *_, trivial in expected.values())  # every dataset has its trivial row


def test_maps_predictions_and_superpixels_have_the_image_size(store: query.Store, one: dict) -> None:
    h, w = query.image(store, one["image_id"]).shape[:2]
    maps = query.saliency_maps(store, one["models"], one["image_id"], one["task"], one["target_id"])
    assert one["models"][0] in maps
    assert all(m.shape == (h, w) and m.dtype == np.float32 for m in maps.values())
    preds = query.predictions(store, one["models"], one["image_id"], one["task"])
    assert all(p.shape[-2:] == (h, w) for p in preds.values())
    assert query.superpixels(store, one["image_id"]).shape == (h, w)


@pytest.mark.parametrize("metric", ["irof", "deletion", "insertion"])
def test_faithfulness_curves_hold_morf_lerf_and_random_curves_over_the_share_perturbed(
        store: query.Store, one: dict, metric: str) -> None:
    curves = query.faithfulness_curves(store, one["models"], one["image_id"], one["task"], one["target_id"], metric)
    assert {"morf", "lerf", "random"} <= set(curves["ordering"])
    assert set(curves.loc[curves["ordering"] == "random", "explainer"]) == {"random"}
    assert curves.loc[curves["ordering"] == "random", "seed"].notna().all()
    ok = curves[curves["status"] == "ok"]
    for r in ok.itertuples():
        x = np.asarray(r.x)
        assert len(r.curve) == len(x) == (r.n_steps if metric == "irof" else r.n_steps + 1)
        assert np.all(np.diff(x) >= 0)
        assert x[0] >= 0
        assert x[-1] == pytest.approx(1.0)
    assert curves.loc[curves["status"] != "ok", "score"].isna().all()


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


def test_pruning_by_module_lists_what_each_pruned_model_removed(store: query.Store) -> None:
    df = query.pruning_by_module(store)
    pruned = query.models(store).dropna(subset=["pruning_method"])
    assert set(df["model_id"]) == set(pruned["model_id"])
    netslim = df[df["method"] == "netslim"]
    assert list(netslim["module"]) == ["trunk encoder", "trunk decoder", "shared attention convs",
                                       "attention hidden", "heads"]
    assert (netslim["unit"] == "channels").all()
    assert np.allclose(netslim["removed"], 1 - netslim["after"] / netslim["before"])
    disparse = df[df["method"] == "disparse"]
    assert set(disparse["unit"]) == {"weights"}  # unstructured: zeroed weights per module kind
    assert set(disparse["module"]) == {"trunk encoder", "heads"}  # DeepLab: backbone and ASPP heads


def test_pruning_summary_has_the_mode_sizes_and_small_gammas(store: query.Store) -> None:
    df = query.pruning_summary(store).set_index("method")
    assert df.loc["netslim", "netslim_mode"] == "decoupled"
    assert df.loc["netslim", "finetune_bn_l1"] == 0.0
    assert df.loc["netslim", "macs_ratio"] == df.loc["netslim", "macs_before"] / df.loc["netslim", "macs_after"] > 1
    assert df.loc["netslim", "small_gamma_kept"] >= 0
    assert pd.isna(df.loc["disparse", "small_gamma_kept"])
