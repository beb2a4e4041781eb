"""``python -m mtlx_core.precompute``: the smoke preset end to end, idempotency, SIGKILL resumption, readers."""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _smoke import smoke_args

from mtlx_core.explain.similarity import map_similarity
from mtlx_core.precompute import get_study_preset, run_precompute
from mtlx_core.precompute.__main__ import main
from mtlx_core.store.aggregate import bootstrap_means, group_intervals, mean_interval, per_image
from mtlx_core.store.errors import StoreBusyError, StoreError, StoreMissingError
from mtlx_core.store.snapshot import open_readonly, work_path
from mtlx_core.store.writer import TABLES

ROOT = Path(__file__).resolve().parents[1]
#: columns that record when or where, not what (ignored when comparing stores)
VOLATILE = {"units": ("seconds", "finished_at", "cpu_seconds"),
            "models": ("checkpoint", "latency_cpu_ms", "latency_gpu_ms")}  # latency: measured
VOLATILE_META = ("created_at", "updated_at", "code_version_last")
CODE_VERSION = re.compile(r"\d+\.\d+\.\d+(\+g[0-9a-f]+(\.dirty)?)?")


@pytest.fixture(scope="module")
def shared(smoke_reference: dict[str, Path]) -> dict[str, Path]:
    """The reference smoke store (``conftest.smoke_reference``)."""
    return smoke_reference


def _args(store: Path, models: Path, data: Path) -> list[str]:
    return smoke_args(store, models, data)


def _query(store: Path, sql: str) -> list[tuple]:
    con = open_readonly(store)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _one(store: Path, sql: str) -> Any:
    return _query(store, sql)[0][0]


def store_contents(store: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without timing/location columns; NaN made comparable."""
    con = open_readonly(store)
    out = {}
    try:
        for t in TABLES:
            cols = [c for c in (r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()) if c not in VOLATILE.get(t, ())]
            where = f"WHERE key NOT IN {VOLATILE_META}" if t == "meta" else ""
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {t} {where}").fetchall()
            out[t] = sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)
    finally:
        con.close()
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, str):  # a commit landing between two runs changes the recorded code version only
        return CODE_VERSION.sub("<code version>", v)
    if isinstance(v, list):
        return tuple(_norm(x) for x in v)
    return v


# --- the smoke preset end to end ------------------------------------------------------------------------

def test_smoke_populates_every_table(shared: dict[str, Path]) -> None:
    counts = {t: _one(shared["store"], f"SELECT count(*) FROM {t}") for t in TABLES}
    assert all(n > 0 for n in counts.values()), counts
    assert _one(shared["store"], "SELECT value FROM meta WHERE key = 'preset'") == "smoke"


def test_finished_run_records_status_complete_and_every_arm(shared: dict[str, Path]) -> None:
    arms = [a.arm_id for a in get_study_preset("smoke").arms]
    assert _one(shared["store"], "SELECT value FROM meta WHERE key = 'status'") == "complete"
    assert json.loads(_one(shared["store"], "SELECT value FROM meta WHERE key = 'arms_complete'")) == arms
    assert json.loads(_one(shared["store"], "SELECT value FROM meta WHERE key = 'arms_planned'")) == arms


def test_smoke_counts_are_consistent(shared: dict[str, Path]) -> None:
    s = shared["store"]
    preset = get_study_preset("smoke")
    e = preset.explain
    n_models = sum(len(a.sparsities) for a in preset.arms) + len(preset.arms)  # dense, pruned, one control each
    n_batches = math.ceil(e.images / e.batch_images)
    assert _one(s, "SELECT count(*) FROM models") == n_models
    assert _one(s, "SELECT count(*) FROM arms") == len(preset.arms)
    assert _one(s, "SELECT count(*) FROM images") == e.images  # both arms share the synthetic images
    assert _one(s, "SELECT count(*) FROM superpixels") == e.images
    # one prediction per model, image and task of the model
    assert _one(s, "SELECT count(*) FROM predictions") == _one(
        s, "SELECT sum(len(tasks)) FROM models") * e.images
    # every primary Grad-CAM explanation is also made at the arm's one ablation layer (dec_stage2 / block_out), and
    # by Grad-CAM++ at the primary layer (smoke: both explainers on every model)
    n_exp = _one(s, "SELECT count(*) FROM explanations WHERE layer_role = 'primary' AND explainer = 'gradcam'")
    n_pp = _one(s, "SELECT count(*) FROM explanations WHERE layer_role = 'primary' AND explainer = 'gradcampp'")
    n_abl = _one(s, "SELECT count(*) FROM explanations WHERE layer_role = 'ablation'")
    assert n_abl == n_exp == n_pp
    assert _one(s, "SELECT count(*) FROM explanations WHERE layer_role = 'ablation' AND explainer <> 'gradcam'") == 0
    assert _query(s, "SELECT DISTINCT layer_label FROM explanations WHERE layer_role = 'ablation' ORDER BY 1") == [
        ("block_out",), ("dec_stage2",)]
    # faithfulness rows per explanation: MoRF for every metric variant, LeRF for every curve variant; IROF runs
    # with both fills (each with its AbPC) and depth once more with the range floor (curve metrics and AbPC)
    curve = 4  # irof quantus, irof fixed, deletion, insertion
    maps = 3  # rma, pointing, leakage
    per_exp = _query(s, """
        SELECT e.layer_role, e.task = 'depth', count(*) FILTER (WHERE f.ordering = 'morf'),
               count(*) FILTER (WHERE f.ordering = 'lerf'), count(*) FILTER (WHERE f.ordering = 'random')
        FROM explanations e JOIN faithfulness f USING (model_id, image_id, task, target_id, explainer, layer)
        GROUP BY e.model_id, e.image_id, e.task, e.target_id, e.explainer, e.layer, e.layer_role""")
    assert len(per_exp) == n_exp + n_pp + n_abl  # no explanation without scores: every metric on every explainer
    expected = {("primary", False): (curve + maps + 2, curve, 0),
                ("primary", True): (2 * curve + maps + 4, 2 * curve, 0),
                ("ablation", False): (1 + maps, 0, 0), ("ablation", True): (1 + maps, 0, 0)}  # IROF, maps
    assert all(expected[(role, depth)] == (m, le, r) for role, depth, m, le, r in per_exp), per_exp
    assert {(role, depth) for role, depth, *_ in per_exp} == set(expected)
    # K random orderings per distinct primary target, for every curve and map variant, layer-free
    k = e.n_random
    rnd = _query(s, """
        SELECT t.task = 'depth', count(f.image_id) FROM (SELECT DISTINCT model_id, image_id, task, target_id
             FROM explanations WHERE layer_role = 'primary') t
        LEFT JOIN faithfulness f ON f.ordering = 'random' AND f.model_id = t.model_id AND f.image_id = t.image_id
             AND f.task = t.task AND f.target_id = t.target_id
        GROUP BY t.task, t.model_id, t.image_id, t.target_id""")
    assert {(d, n) for d, n in rnd} <= {(False, k * (curve + maps)), (True, k * (2 * curve + maps))}
    assert _one(s, "SELECT count(*) FROM faithfulness WHERE ordering = 'random' AND (explainer <> 'random' "
                   "OR layer <> '' OR layer_role <> 'baseline')") == 0
    # only ok rows carry scores, never NaN
    assert _one(s, "SELECT count(*) FROM faithfulness WHERE (status = 'ok') <> (score IS NOT NULL)") == 0
    assert _one(s, "SELECT count(*) FROM faithfulness WHERE isnan(score) OR isnan(score_norm)") == 0
    # a similarity row for every pruned explanation whose target the dense model also explained
    assert _one(s, "SELECT count(*) FROM similarity") == _one(s, """
        SELECT count(*) FROM explanations p JOIN models m USING (model_id) JOIN arms a USING (arm_id)
        JOIN explanations d ON d.model_id = a.dense_model_id AND d.image_id = p.image_id AND d.task = p.task
             AND d.target_id = p.target_id AND d.layer = p.layer AND d.explainer = 'gradcam'
        WHERE m.parent_id IS NOT NULL AND p.layer_role = 'primary' AND p.explainer = 'gradcam'""")
    kinds = dict(_query(s, "SELECT kind, count(*) FROM units GROUP BY kind"))
    assert kinds == {"train": len(preset.arms), "prune": n_models - 2 * len(preset.arms), "images": n_batches,
                     "control": len(preset.arms), "sanity": len(preset.arms),
                     "targets": len(preset.arms), "explain": n_models * n_batches, "layer": n_models * n_batches}
    # the dense models' targets: every candidate recorded, all drawn (max_targets None), images in sample order
    assert _one(s, "SELECT count(*) FROM target_draws WHERE NOT drawn") == 0
    assert _one(s, "SELECT count(*) FROM target_draws t JOIN arms a ON t.model_id = a.dense_model_id") == _one(
        s, "SELECT count(*) FROM explanations e JOIN arms a ON e.model_id = a.dense_model_id "
           "WHERE e.layer_role = 'primary' AND e.explainer = 'gradcam'")
    # every row says what produced it
    assert _one(s, "SELECT count(*) FROM faithfulness WHERE code_version IS NULL OR settings IS NULL "
                   "OR settings_key IS NULL OR variant IS NULL OR (ordering = 'random') <> (seed IS NOT NULL)") == 0
    assert _one(s, "SELECT count(*) FROM models WHERE checkpoint_sha256 IS NULL OR config IS NULL") == 0
    assert _query(s, "SELECT DISTINCT topk FROM similarity") == [(e.topk,)]


def test_each_arm_has_one_control_fine_tuned_like_its_pruned_models_and_explained(shared: dict[str, Path]) -> None:
    from mtlx_core.store.verdict_data import ConnectionReader, model_roles

    s = shared["store"]
    rows = _query(s, "SELECT c.arm_id, c.model_id, c.parent_id, c.target_sparsity, c.config, p.config, "
                     "a.dense_model_id FROM models c JOIN arms a USING (arm_id) JOIN models p ON p.arm_id = c.arm_id "
                     "AND p.pruning_method NOT IN ('control') WHERE c.pruning_method = 'control'")
    assert sorted(r[0] for r in rows) == sorted(a.arm_id for a in get_study_preset("smoke").arms)
    for _arm, model_id, parent, level, cfg, pruned_cfg, dense in rows:
        control, pruned = json.loads(cfg), json.loads(pruned_cfg)
        assert (parent, level, control["role"]) == (dense, 0.0, "control")
        assert control["train"] == pruned["train"]  # the pruned model's fine-tuning, exactly
        n = _one(s, f"SELECT count(DISTINCT image_id) FROM explanations WHERE model_id = '{model_id}'")
        assert n == get_study_preset("smoke").explain.images
        assert _one(s, f"SELECT count(*) FROM similarity WHERE model_id = '{model_id}' "
                       f"AND reference_id = '{dense}'") > 0
    con = open_readonly(s)
    try:
        roles = model_roles(ConnectionReader(con))
    finally:
        con.close()
    assert sorted(roles.loc[roles["role"] == "control", "model_id"]) == sorted(r[1] for r in rows)
    assert (roles["role"] == "dense").sum() == len(rows)


def test_every_model_has_its_cost_axes(shared: dict[str, Path]) -> None:
    s = shared["store"]
    rows = _query(s, "SELECT m.model_id, m.pruning_method, m.params, m.macs, m.latency_cpu_ms, m.latency_gpu_ms, "
                     "m.cost_settings, d.params, d.macs FROM models m JOIN arms a USING (arm_id) "
                     "JOIN models d ON d.model_id = a.dense_model_id")
    assert len(rows) == _one(s, "SELECT count(*) FROM models")
    for model_id, method, params, macs, cpu, gpu, settings, d_params, d_macs in rows:
        assert min(params, macs, cpu) > 0, model_id
        assert gpu is None, model_id
        cost = json.loads(settings)
        assert (cost["batch"], cost["threads"]) == (1, 1)
        assert cost["runs"] >= 20
        if method == "netslim":  # structured: physically smaller
            assert params < d_params
            assert macs < d_macs
        elif method == "control":
            assert (params, macs) == (d_params, d_macs)
    assert _one(s, "SELECT count(*) FROM models WHERE pruning_method = 'netslim'") > 0


def test_the_verdict_compares_every_pruned_model_with_its_arms_control(shared: dict[str, Path]) -> None:
    from mtlx_core.stats.verdict import VerdictSettings
    from mtlx_core.store.verdict import compute_verdict
    from mtlx_core.store.verdict_data import ConnectionReader

    con = open_readonly(shared["store"])
    try:
        cells = compute_verdict(ConnectionReader(con), VerdictSettings(n_boot=200)).cells
        pruned = {m for (m,) in con.execute("SELECT model_id FROM models WHERE pruning_method NOT IN ('control') "
                                            "AND parent_id IS NOT NULL").fetchall()}
    finally:
        con.close()
    assert set(cells.loc[cells["reference"] == "control", "model_id"]) == pruned


@pytest.mark.slow  # about 40 s on 2 cores: a second seed of one smoke arm, trained, pruned, controlled, explained
def test_seeds_train_one_dense_model_per_seed_each_pruned_and_pooled_by_the_verdict(shared: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    from mtlx_core.stats.verdict import POOLED, VerdictSettings
    from mtlx_core.store import query
    from mtlx_core.store import verdict_data as vd
    from mtlx_core.store.verdict import compute_verdict

    arm = "smoke_segnet_mtan_famo_netslim"
    store = tmp_path / "seeds.duckdb"
    assert main([*_args(store, shared["models"], shared["data"]), "--seeds", "2", "--arm", arm, "--images", "2"]) == 0
    dense = _query(store, f"SELECT model_id, seed FROM models WHERE parent_id IS NULL AND arm_id = '{arm}' "
                          "ORDER BY seed")
    assert [seed for _, seed in dense] == [dense[0][1], dense[0][1] + 1]  # the preset's seed, then + 1
    assert _one(store, "SELECT dense_model_id FROM arms") == dense[0][0]  # seed 0 is the arm's own, as before
    for model_id, seed in dense:  # each seed: its pruned level and its control, on the same images
        kids = _query(store, f"SELECT pruning_method, seed FROM models WHERE parent_id = '{model_id}' ORDER BY 1")
        assert kids == [("control", seed), ("netslim", seed)]
    per_model = _query(store, "SELECT model_id, list(DISTINCT image_id ORDER BY image_id) FROM explanations "
                              "WHERE layer_role = 'primary' GROUP BY model_id")
    assert len(per_model) == 6
    assert len({tuple(ids) for _, ids in per_model}) == 1
    s = query.open_store(store)
    assert query.arm_models(s, arm)["model_id"].tolist()[0] == dense[0][0]
    assert len(query.arm_models(s, arm)) == 2  # the arm's line: seed 0's dense and pruned models
    cells = compute_verdict(s, VerdictSettings(n_boot=200)).cells
    # the two controls (level 0, against their own seed's dense model) pool into one primary row, per-seed beside
    ctrl = cells[(cells["level"] == 0) & (cells["reference"] == "dense")]
    assert set(ctrl.loc[ctrl["primary"], "seed"]) == {POOLED}
    assert set(ctrl.loc[ctrl["primary"], "n_seeds"]) == {2}
    assert set(ctrl.loc[~ctrl["primary"], "seed"]) == {0, 1}
    # images are paired within seed: every model is compared with references of its own seed only
    roles = vd.model_roles(s)
    pairs = vd.pairs_frame(roles, vd.target_margins(s, vd.metric_labels(s)))
    seed_of = dict(zip(roles["model_id"], roles["seed"], strict=True))
    assert {seed_of[m] for m in pairs["model_id"]} == {0, 1}
    assert all(seed_of[m] == seed_of[r] for m, r in zip(pairs["model_id"], pairs["reference_id"], strict=True))
    # the noise floor of map similarity: seed 1's dense maps against seed 0's, on every target both explained
    both = _one(store, f"SELECT count(*) FROM explanations a JOIN explanations b USING (image_id, task, target_id, "
                       f"layer) WHERE a.model_id = '{dense[1][0]}' AND b.model_id = '{dense[0][0]}' "
                       "AND a.layer_role = 'primary' AND a.explainer = 'gradcam' AND b.explainer = 'gradcam'")
    seeds_sim = _query(store, "SELECT reference_id, count(*) FROM similarity WHERE model_id = "
                              f"'{dense[1][0]}' GROUP BY 1")
    assert both > 0
    assert seeds_sim == [(dense[0][0], both)]
    noise = query.seed_noise(s, "spearman", n_boot=200)
    assert set(noise["n_pairs"]) == {1}
    assert set(noise["task"]) == {t for (t,) in _query(store, "SELECT DISTINCT task FROM similarity WHERE "
                                                              f"model_id = '{dense[1][0]}'")}
    moved = query.similarity_vs_sparsity(s, "spearman", n_boot=200)
    assert dense[1][0] not in set(moved["model_id"])  # seed rows are not pruning comparisons
    assert set(moved["role"]) == {"pruned", "control"}


def test_smoke_has_gradcam_and_gradcampp_rows_for_every_model_with_unique_keys(shared: dict[str, Path]) -> None:
    """Issue 21: the smoke preset explains every model with Grad-CAM and Grad-CAM++ (same targets), scores every
    metric variant on both, and the explainer is part of both tables' keys."""
    s = shared["store"]
    models = {m for (m,) in _query(s, "SELECT model_id FROM models")}
    for name in ("gradcam", "gradcampp"):
        assert {m for (m,) in _query(s, f"SELECT DISTINCT model_id FROM explanations WHERE explainer = '{name}' "
                                        "AND layer_role = 'primary'")} == models
        assert {m for (m,) in _query(s, f"SELECT DISTINCT model_id FROM faithfulness WHERE explainer = '{name}'")} \
            == models
    targets = _query(s, "SELECT explainer, count(*) FROM (SELECT DISTINCT explainer, model_id, image_id, task, "
                        "target_id FROM explanations WHERE layer_role = 'primary') GROUP BY explainer ORDER BY 1")
    assert len(targets) == 2
    assert targets[0][1] == targets[1][1]
    variants = _query(s, "SELECT explainer, count(DISTINCT metric || variant || ordering) FROM faithfulness "
                         "WHERE layer_role = 'primary' GROUP BY explainer ORDER BY 1")
    assert len(variants) == 2
    assert variants[0][1] == variants[1][1]
    assert _one(s, "SELECT count(*) - count(DISTINCT (model_id, image_id, task, target_id, explainer, layer)) "
                   "FROM explanations") == 0
    assert _one(s, "SELECT count(*) - count(DISTINCT (model_id, image_id, task, target_id, explainer, layer, metric, "
                   "ordering, replicate, settings_key)) FROM faithfulness") == 0
    maps = _query(s, "SELECT a.saliency = b.saliency FROM explanations a JOIN explanations b USING (model_id, "
                     "image_id, task, target_id, layer) WHERE a.explainer = 'gradcam' AND b.explainer = 'gradcampp' "
                     "AND NOT a.is_zero")
    assert maps
    assert not all(same for (same,) in maps)


def test_random_baseline_is_one_map_per_image(shared: dict[str, Path]) -> None:
    """Random ordering j of an image is one map (seed j) for every target, task and model: its IROF curves
    perturb the same segments in the same order, so they share the share-perturbed axis ``x`` (segments differ
    in size: another order would give another ``x``), and replicates differ from each other."""
    s = shared["store"]
    k = get_study_preset("smoke").explain.n_random
    assert _query(s, "SELECT DISTINCT replicate, seed FROM faithfulness WHERE ordering = 'random' ORDER BY 1") == [
        (j, j) for j in range(k)]
    per = _query(s, "SELECT image_id, replicate, count(DISTINCT x), count(DISTINCT model_id || task || target_id) "
                    "FROM faithfulness WHERE ordering = 'random' AND metric = 'irof' AND variant = 'fill=quantus' "
                    "AND status = 'ok' GROUP BY image_id, replicate")
    assert per
    assert all(n_x == 1 and n_targets > 1 for _, _, n_x, n_targets in per)
    differ = _query(s, "SELECT image_id, count(DISTINCT x) FROM faithfulness WHERE ordering = 'random' "
                       "AND metric = 'irof' AND variant = 'fill=quantus' AND status = 'ok' GROUP BY image_id")
    assert all(n == k for _, n in differ)


def test_second_run_does_no_work(shared: dict[str, Path]) -> None:
    before = shared["store"].stat().st_mtime_ns
    result = run_precompute(get_study_preset("smoke"), shared["store"], shared["models"],
                            data={"*": str(shared["data"])}, progress=False)
    assert sum(result.executed.values()) == 0
    assert result.skipped == {u for (u,) in _query(shared["store"], "SELECT unit_id FROM units")}
    assert shared["store"].stat().st_mtime_ns == before
    assert not work_path(shared["store"]).exists()


def test_unknown_preset_lists_the_valid_ones(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["--preset", "nope", "--store", str(tmp_path / "s.duckdb")]) == 2
    assert "valid presets: smoke, demo, paper" in caplog.text


def test_missing_real_data_names_the_folder(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    missing = tmp_path / "no_cityscapes"
    with caplog.at_level(logging.ERROR):
        assert main(["--preset", "paper_cityscapes", "--store", str(tmp_path / "s.duckdb"),
                     "--data", f"cityscapes={missing}"]) == 2
    assert str(missing) in caplog.text
    assert "convert-cityscapes" in caplog.text
    assert not (tmp_path / "s.duckdb").exists()


def test_store_defaults_to_mtlx_store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mtlx_core.precompute.__main__ import default_store

    monkeypatch.setenv("MTLX_STORE", str(tmp_path / "x.duckdb"))
    assert default_store() == tmp_path / "x.duckdb"
    monkeypatch.delenv("MTLX_STORE")
    assert default_store() == Path("models_store/study.duckdb")


def test_merge_of_a_shard_reproduces_it(shared: dict[str, Path], tmp_path: Path) -> None:
    merged = tmp_path / "merged.duckdb"
    assert main(["--merge", str(shared["store"]), "--store", str(merged)]) == 0
    a, b = store_contents(merged), store_contents(shared["store"])
    assert {t: rows for t, rows in a.items() if t != "meta"} == {t: rows for t, rows in b.items() if t != "meta"}
    assert ("preset", "smoke") in a["meta"]
    assert main(["--merge", str(shared["store"]), "--store", str(merged)]) == 0  # nothing new: no error


def test_unknown_arm_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid arms: smoke_segnet_mtan_famo_netslim, smoke_deeplab_disparse"):
        run_precompute(get_study_preset("smoke"), tmp_path / "s.duckdb", tmp_path / "m", arms=["nope"])


# --- pieces -----------------------------------------------------------------------------------------------

def test_similarity_of_identical_and_shifted_maps() -> None:
    a = np.random.default_rng(0).random((24, 32)).astype(np.float32)
    s = map_similarity(a, a, 0.2)
    assert (s.spearman, s.topk_iou, s.topk_pixels) == (pytest.approx(1.0), 1.0, round(0.2 * a.size))
    assert s.ssim == pytest.approx(1.0)
    assert map_similarity(a, 1 - a, 0.2).topk_iou == 0.0


def test_bootstrap_ci_resamples_whole_images() -> None:
    """Targets are averaged per image first, then images are resampled: image a has three targets at 1, image b
    one at 3. Over images the mean is 2 (over targets it would be 1.5), and a resample of two images can only
    average 1, 2 or 3, so the 95 % interval is exactly [1, 3] (a target-level bootstrap would give values like
    1.5 or 2.5 as endpoints)."""
    targets = pd.DataFrame({"image_id": ["a", "a", "a", "b"], "v": [1.0, 1.0, 1.0, 3.0]})
    images = per_image(targets, ["image_id"], ["v"])
    assert images["v"].tolist() == [1.0, 3.0]
    assert images["n_targets"].tolist() == [3, 1]
    mean, lo, hi = mean_interval(images["v"].to_numpy(), n_boot=2000)
    assert (mean, lo, hi) == (2.0, 1.0, 3.0)
    means = bootstrap_means(np.array([[1.0, 3.0]]), n_boot=2000)[:, 0]
    assert set(np.unique(means)) == {1.0, 2.0, 3.0}
    grouped = group_intervals(images.assign(g="x"), ["g"], "v", n_boot=2000)
    assert grouped[["mean", "ci_low", "ci_high", "n_images"]].iloc[0].tolist() == [2.0, 1.0, 3.0, 2]


# --- SIGKILL at any point ---------------------------------------------------------------------------------

def _run_killed(cmd: list[str], kill_after: str | None, delay: float, store: Path) -> tuple[bool, dict[str, int]]:
    """Run ``cmd``; SIGKILL it ``delay`` s after its first log line containing ``kill_after`` (or after ``delay``
    s when None). Meanwhile open the store and its work file read-only: only the two store errors may occur."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    probes = {"ok": 0, "busy": 0, "missing": 0, "error": 0}
    seen: list[str] = []
    t0, deadline = time.monotonic(), None if kill_after else time.monotonic() + delay
    try:
        while proc.poll() is None:
            while not lines.empty():
                line = lines.get()
                seen.append(line)
                if kill_after and deadline is None and kill_after in line:
                    deadline = time.monotonic() + delay
            if deadline is not None and time.monotonic() >= deadline:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True, probes
            _probe(store, probes)
            time.sleep(0.1)
            assert time.monotonic() - t0 < 600
    finally:
        if proc.poll() is None:  # a failed assertion must not leave the run behind
            proc.kill()
            proc.wait()
    time.sleep(0.2)
    seen += list(lines.queue)
    assert proc.returncode == 0, "".join(seen[-30:])
    return False, probes


def _probe(store: Path, probes: dict[str, int]) -> None:
    """A reader of the store and of its work file: a query, or one of the store's errors, never anything else."""
    for path in (store, work_path(store)):
        try:
            con = open_readonly(path)
            con.execute("SELECT count(*) FROM units").fetchone()
            con.close()
            probes["ok"] += 1
        except StoreBusyError:
            probes["busy"] += 1
        except StoreMissingError:
            probes["missing"] += 1
        except StoreError:  # the work file itself, between a kill and the next run: unreadable read-only
            assert path == work_path(store)
            probes["error"] += 1


def _kill_and_resume(shared: dict[str, Path], tmp_path: Path, points: list[tuple[str | None, float]]) -> int:
    store, models = tmp_path / "study.duckdb", tmp_path / "models"
    cmd = [sys.executable, "-m", "mtlx_core.precompute", *_args(store, models, shared["data"])]
    kills = 0
    for kill_after, delay in points:
        killed, probes = _run_killed(cmd, kill_after, delay, store)
        kills += killed
        if killed and kill_after:  # killed after a commit: the work file was locked, readers heard so
            assert probes["busy"] > 0
        if not killed:
            break
    _run_killed(cmd, None, 1e9, store)  # to the end
    assert json.dumps(store_contents(store), default=repr) == json.dumps(store_contents(shared["store"]),
                                                                         default=repr)
    assert not work_path(store).exists()
    return kills


def test_sigkill_once_then_resume_gives_the_same_store(shared: dict[str, Path], tmp_path: Path) -> None:
    assert _kill_and_resume(shared, tmp_path, [("unit done: explain:", 0.3)]) == 1


@pytest.mark.slow
def test_sigkill_at_many_points_then_resume_gives_the_same_store(shared: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    points: list[tuple[str | None, float]] = [
        (None, float(rng.uniform(3, 8))),  # start-up, data, first training
        ("unit done:", 0.0),  # right after a commit (a resumed run always has a next unit until the end)
        ("unit done:", 0.05),  # just inside the next unit
        ("published", 0.0),  # right after a snapshot
        ("unit done:", float(rng.uniform(0, 1))),  # somewhere inside a unit
        (None, float(rng.uniform(1, 4))),
    ]
    assert _kill_and_resume(shared, tmp_path, points) == len(points)
