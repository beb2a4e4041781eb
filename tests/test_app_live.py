"""The Live page's logic (mtlx_core.live): model loading from the store, input sizing, Grad-CAM, IROF steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _app_store import smoke_store_path

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.explain.fastforward import ForwardSettings
from mtlx_core.explain.irof import IrofSettings
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels
from mtlx_core.live import (
    explain_image,
    irof_target,
    load_store_model,
    removal_order,
    removal_ranks,
    step_image,
    to_input,
    working_size,
)
from mtlx_core.runs import RunError
from mtlx_core.store import query


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


def test_removal_order_reversed_is_the_gradcam_order_backwards() -> None:
    labels = np.repeat(np.arange(4), 4).reshape(4, 4)  # four horizontal bands
    saliency = np.array([[0.1], [0.9], [0.5], [0.0]]) * np.ones((4, 4))
    assert removal_order(saliency, labels, "gradcam").tolist() == [1, 2, 0, 3]
    assert removal_order(saliency, labels, "reversed").tolist() == [3, 0, 2, 1]
    assert sorted(removal_order(saliency, labels, "random", seed=5).tolist()) == [0, 1, 2, 3]
    assert removal_ranks(np.array([1, 2, 0, 3]), labels)[:, 0].tolist() == [3, 1, 2, 4]


@pytest.mark.parametrize("fill_mode", ["quantus", "fixed"])
def test_step_image_replaces_exactly_the_first_k_segments(fill_mode: str) -> None:
    rng = np.random.default_rng(1)
    image = rng.random((8, 8, 3)).astype(np.float32)
    labels = np.repeat(np.arange(4), 16).reshape(8, 8)
    order = np.array([2, 0, 3, 1])
    assert np.array_equal(step_image(image, labels, order, 0, fill_mode), image)
    out = step_image(image, labels, order, 2, fill_mode)
    removed = np.isin(labels, order[:2])
    assert np.array_equal(out[~removed], image[~removed])
    assert not np.allclose(out[removed], image[removed])
    if fill_mode == "fixed":
        np.testing.assert_allclose(out[removed], np.broadcast_to(image.mean(axis=(0, 1)), out[removed].shape),
                                   rtol=1e-6)
    else:  # quantus: one grey value per removed segment, the mean of the image before its removal
        assert np.allclose(out[labels == 2], image.mean())


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
    assert res.prediction.shape[:2] == (64, 96)


def test_irof_target_scores_the_map_and_both_baselines(record: dict) -> None:
    lm = load_store_model(record, smoke_store_path())
    task = next(iter(lm.tasks))
    x = to_input(np.random.default_rng(3).random((32, 64, 3)).astype(np.float32), (32, 64))
    e = next(iter(explain_image(lm, x, task).maps.values()))
    sp = compute_superpixels(x[0], SlicSettings(n_segments=8))
    res = irof_target(lm, x, e, sp, IrofSettings(forward=ForwardSettings(trim_tasks=False)))  # no tracing: fast
    assert set(res) == {"gradcam", "random", "reversed"}
    assert all(len(r.curve) == sp.n_segments for r in res.values() if r.status == "ok")
