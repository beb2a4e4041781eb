"""The Live page's logic (mtlx_core.live): model loading from the store, input sizing, every explainer, IROF, and the
perturbed images of stored curves (the Perturbation steps page)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _app_store import smoke_store_path

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.explain.explainers import EXPLAINERS, get_explainer
from mtlx_core.explain.fastforward import ForwardSettings
from mtlx_core.explain.irof import IrofSettings
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels
from mtlx_core.live import (
    explain_image,
    irof_target,
    load_store_model,
    perturbation_steps,
    perturbed_steps,
    to_input,
    working_size,
)
from mtlx_core.runs import RunError
from mtlx_core.store import query
from mtlx_core.tasks.base import ScoreOptions


@pytest.fixture(scope="module")
def record() -> dict:
    store = query.open_store(smoke_store_path())
    arm = query.arms(store).iloc[0]
    return query.model_record(store, arm["dense_model_id"])


def test_working_size_keeps_the_aspect_at_the_training_pixel_count_in_multiples_of_32() -> None:
    synth = get_dataset_spec("synth")  # 96 x 128
    assert working_size(480, 640, synth) == (96, 128)
    assert working_size(512, 512, synth) == (96, 96)
    assert working_size(480, 640, synth, "original") == (480, 640)
    assert working_size(20, 2000, synth) == (32, 1120)  # 2000 * sqrt(96 * 128 / 40000) = 1109


def test_to_input_resizes_to_a_batch_of_one_in_unit_range() -> None:
    x = to_input(np.random.default_rng(0).random((480, 640, 3)).astype(np.float32), (96, 128))
    assert x.shape == (1, 3, 96, 128)
    assert 0.0 <= float(x.min()) <= float(x.max()) <= 1.0


def test_load_store_model_finds_the_run_through_its_recorded_checkpoint(record: dict) -> None:
    lm = load_store_model(record, smoke_store_path())
    assert lm.run_id == record["run_id"]
    assert lm.checkpoint_matches is True
    assert set(lm.tasks) == set(record["tasks"])


def test_load_store_model_names_the_folders_it_searched(record: dict, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLX_MODELS_DIR", str(tmp_path))
    with pytest.raises(RunError, match=str(tmp_path)):
        load_store_model({**record, "run_id": "no-such-run"}, tmp_path / "study.duckdb")


def test_explain_image_gives_one_map_per_target_of_its_own_prediction(record: dict) -> None:
    lm = load_store_model(record, smoke_store_path())
    task = next(iter(lm.tasks))
    x = to_input(np.random.default_rng(2).random((64, 96, 3)).astype(np.float32), (64, 96))
    res = explain_image(lm, x, task)
    with torch.no_grad():
        expected = {t.target_id for t in lm.tasks[task].explanation_targets(lm.model(x)[task][0])}
    assert set(res.maps) == expected
    assert all(e.map_input.shape == (64, 96) for e in res.maps.values())
    assert res.prediction.shape[-2:] == (64, 96)


def test_irof_target_scores_the_map_and_both_baselines(record: dict) -> None:
    lm = load_store_model(record, smoke_store_path())
    task = next(iter(lm.tasks))
    x = to_input(np.random.default_rng(3).random((32, 64, 3)).astype(np.float32), (32, 64))
    e = next(iter(explain_image(lm, x, task).maps.values()))
    sp = compute_superpixels(x[0], SlicSettings(n_segments=8))
    res = irof_target(lm, x, e, sp, IrofSettings(forward=ForwardSettings(trim_tasks=False)))  # no tracing: fast
    assert set(res) == {"gradcam", "random", "reversed"}
    assert all(len(r.curve) == sp.n_segments for r in res.values() if r.status == "ok")


# --- perturbed images of stored curves (the Perturbation steps page) ---------------------------------------


def stored_curves(store: query.Store, model_id: str, where: str = "", limit: int = 60) -> list:
    return list(store.df(
        "SELECT * FROM faithfulness WHERE model_id = ? AND status = 'ok' AND n_steps > 0 "
        f"AND metric IN ('irof', 'deletion', 'insertion') AND layer_role <> 'ablation' {where} "
        "ORDER BY image_id, task, target_id, metric, variant, ordering, replicate LIMIT ?",
        [model_id, limit]).itertuples())


def rebuild_args(store: query.Store, r: object) -> tuple:
    """``perturbed_steps`` / ``perturbation_steps`` arguments of a stored curve row."""
    sal = None if r.ordering == "random" else query.saliency_maps(  # type: ignore[attr-defined]
        store, [r.model_id], r.image_id, r.task, r.target_id, r.layer_label,  # type: ignore[attr-defined]
        explainer=r.explainer)[r.model_id]  # type: ignore[attr-defined]
    return (r.metric, query.settings_of(store, r.metric, r.variant), query.image(store, r.image_id),  # type: ignore[attr-defined]
            sal, None if r.ordering != "random" else int(r.seed), query.superpixels(store, r.image_id),  # type: ignore[attr-defined]
            r.ordering)  # type: ignore[attr-defined]


def test_perturbation_steps_rebuild_the_plan_of_every_stored_curve(record: dict) -> None:
    """The share perturbed at each point of the rebuilt plan is the stored ``x``: the same groups, order and
    steps, for every curve metric, ordering, random seed and variant."""
    store = query.open_store(smoke_store_path())
    rows = stored_curves(store, record["model_id"], limit=400)
    assert {(r.metric, r.ordering) for r in rows} >= {(m, o) for m in ("irof", "deletion", "insertion")
                                                      for o in ("morf", "lerf", "random")}
    assert len({r.variant for r in rows if r.metric == "irof"}) > 1
    for r in rows:
        step_map, steps = perturbation_steps(*rebuild_args(store, r))
        share = np.array([(step_map < k).mean() for k in steps])
        np.testing.assert_allclose(share, r.x, atol=1e-12, err_msg=f"{r.metric} {r.variant} {r.ordering}")


def test_perturbed_steps_start_and_end_where_the_metric_says(record: dict) -> None:
    store = query.open_store(smoke_store_path())
    rows = stored_curves(store, record["model_id"], "AND ordering = 'morf'")
    for metric in ("deletion", "insertion", "irof"):
        r = next(r for r in rows if r.metric == metric)
        args = rebuild_args(store, r)
        clean = args[2].astype(np.float32) / 255
        images = perturbed_steps(*args)
        step_map, steps = perturbation_steps(*args)
        assert len(images) == len(r.curve)
        assert all(im.shape == clean.shape and im.dtype == np.float32 for im in images)
        if metric == "deletion":  # deletion starts at the clean image
            np.testing.assert_array_equal(images[0], clean)
        if metric == "insertion":  # insertion ends at the clean image
            np.testing.assert_array_equal(images[-1], clean)
        for j in (0, len(images) // 2):
            moved = np.any(images[j] != clean, axis=-1)
            changed = step_map < steps[j]  # deletion: perturbed so far; insertion: copied back so far
            untouched = changed if metric == "insertion" else ~changed
            assert not moved[untouched].any()
        assert perturbed_steps(*args, points=[1])[0].tobytes() == images[1].tobytes()
    with pytest.raises(ValueError, match="out of range"):
        perturbed_steps(*args, points=[len(images)])
    with pytest.raises(ValueError, match="has no perturbation curve"):
        perturbed_steps("rma", {}, args[2], args[3])


def test_perturbed_images_reproduce_the_stored_curves_through_the_model(record: dict, one_thread: None) -> None:
    """Forwarding the rebuilt images through the store's model gives the stored curve (to float tolerance of the
    eager forward against precompute's fast path): they are the images the metric scored."""
    store = query.open_store(smoke_store_path())
    lm = load_store_model(record, smoke_store_path())
    rows = stored_curves(store, record["model_id"], "AND replicate = 0", limit=400)
    picked = {}
    for r in rows:
        picked.setdefault((r.metric, r.ordering), r)
    assert len(picked) == 9
    for r in picked.values():
        args = rebuild_args(store, r)
        task = lm.tasks[r.task]
        x = torch.from_numpy(args[2].astype(np.float32) / 255).permute(2, 0, 1)[None]
        xb = torch.from_numpy(np.stack(perturbed_steps(*args))).permute(0, 3, 1, 2)
        with torch.no_grad():
            clean = lm.model.eval()(x)[r.task]
            pred = torch.cat([lm.model(xb[i:i + 1])[r.task] for i in range(len(xb))])
        target = next(t for t in task.explanation_targets(clean[0]) if t.target_id == r.target_id)
        n, ids = len(xb), torch.full((len(xb),), r.target_id)
        opts = ScoreOptions(**args[1].get("score", {}))
        c0 = float(task.perturbation_score(clean, clean, target.mask[None], ids[:1], opts)[0])
        scores = task.perturbation_score(pred, clean.expand(n, -1, -1, -1), target.mask[None].expand(n, -1, -1),
                                         ids, opts).numpy()
        assert c0 == pytest.approx(r.clean_score, rel=1e-5)
        np.testing.assert_allclose(scores / c0, r.curve, atol=3e-3, err_msg=f"{r.metric} {r.ordering}")


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_explain_image_with_an_explainer_equals_calling_it_directly_at_the_stores_layer(
        record: dict, name: str, one_thread: None) -> None:
    """The Live page's maps of each registered explainer are that explainer's own, on the targets of the clean
    prediction and at the layer the store explained the task at."""
    store = query.open_store(smoke_store_path())
    lm = load_store_model(record, smoke_store_path(), settings=query.explain_settings(store))
    task = next(iter(lm.tasks))
    (layer,) = store.rows("SELECT DISTINCT layer FROM explanations WHERE model_id = ? AND task = ? "
                          "AND explainer = 'gradcam' AND layer_role = 'primary'", [record["model_id"], task])[0]
    x = to_input(np.random.default_rng(4).random((32, 64, 3)).astype(np.float32), (32, 64))
    res = explain_image(lm, x, task, explainer=name)
    direct = {e.target_id: e for e in get_explainer(name).explain(lm.model, x, lm.tasks[task], layer)}
    with torch.no_grad():
        expected = {t.target_id for t in lm.tasks[task].explanation_targets(lm.model(x)[task][0])}
    assert set(res.maps) == set(direct) == expected
    for tid, e in res.maps.items():
        assert e.saliency_method == name
        assert e.layer == direct[tid].layer
        assert float(np.abs(e.map_input - direct[tid].map_input).max()) < 1e-6


def test_irof_target_keys_the_curve_by_the_maps_explainer(record: dict) -> None:
    lm = load_store_model(record, smoke_store_path())
    task = next(iter(lm.tasks))
    x = to_input(np.random.default_rng(3).random((32, 64, 3)).astype(np.float32), (32, 64))
    e = next(iter(explain_image(lm, x, task, explainer="hirescam").maps.values()))
    sp = compute_superpixels(x[0], SlicSettings(n_segments=8))
    res = irof_target(lm, x, e, sp, IrofSettings(forward=ForwardSettings(trim_tasks=False)))
    assert set(res) == {"hirescam", "random", "reversed"}
