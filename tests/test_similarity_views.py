"""Map similarity vs sparsity and the seeds' noise floor (issue 18): known answers on a hand-made store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlx_core.store import query
from mtlx_core.store.writer import StoreWriter, UnitRows


def _sim(model: str, ref: str, image: str, target: int, v: float, task: str = "segmentation") -> dict:
    return {"model_id": model, "reference_id": ref, "image_id": image, "task": task, "target_id": target,
            "layer": "enc", "spearman": v, "ssim": v / 2, "topk_iou": v / 4, "topk": 0.2, "topk_pixels": 10}


@pytest.fixture
def store(tmp_path: Path) -> query.Store:
    w = StoreWriter.open(tmp_path / "s.duckdb")
    models = [{"model_id": "d0", "arm_id": "a", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "seed": 0,
               "parent_id": None, "pruning_method": None},
              {"model_id": "d1", "arm_id": "a", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "seed": 1,
               "parent_id": None, "pruning_method": None},
              {"model_id": "p0", "arm_id": "a", "target_sparsity": 0.5, "achieved_sparsity": 0.48, "seed": 0,
               "parent_id": "d0", "pruning_method": "netslim"},
              {"model_id": "c0", "arm_id": "a", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "seed": 0,
               "parent_id": "d0", "pruning_method": "control"},
              {"model_id": "e0", "arm_id": "b", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "seed": 0,
               "parent_id": None, "pruning_method": None}]
    rows = [_sim("p0", "d0", "i1", 0, 0.5), _sim("p0", "d0", "i1", 1, 0.7), _sim("p0", "d0", "i2", 0, 0.8),
            _sim("c0", "d0", "i1", 0, 0.9),
            _sim("d1", "d0", "i1", 0, 0.9), _sim("d1", "d0", "i2", 0, 0.7), _sim("d1", "d0", "i2", 1, 0.5),
            _sim("e0", "d0", "i1", 0, 0.1)]  # another arm's dense model: not a seed of arm a
    w.commit(UnitRows("u", "explain", {"arms": [{"arm_id": "a", "label": "A", "dense_model_id": "d0",
                                                 "position": 0}], "models": models, "similarity": rows}))
    w.publish()
    w.close(remove_work=True)
    return query.open_store(tmp_path / "s.duckdb")


def test_similarity_vs_sparsity_averages_targets_per_image_then_images(store: query.Store) -> None:
    df = query.similarity_vs_sparsity(store, "spearman", n_boot=200).set_index("model_id")
    assert sorted(df.index) == ["c0", "p0"]
    assert df.loc["p0", "mean"] == pytest.approx((0.6 + 0.8) / 2)  # image i1: mean of 0.5 and 0.7
    assert (df.loc["p0", "n_images"], df.loc["p0", "role"], df.loc["p0", "sparsity"]) == (2, "pruned", 0.48)
    assert (df.loc["c0", "role"], df.loc["c0", "mean"]) == ("control", pytest.approx(0.9))
    ssim = query.similarity_vs_sparsity(store, "ssim", n_boot=200).set_index("model_id")
    assert ssim.loc["p0", "mean"] == pytest.approx(0.35)


def test_seed_noise_is_another_seeds_dense_maps_against_the_first_seeds(store: query.Store) -> None:
    noise = query.seed_noise(store, "spearman", n_boot=200)
    assert len(noise) == 1
    row = noise.iloc[0]
    assert (row["arm_id"], row["task"], row["n_pairs"], row["n_images"]) == ("a", "segmentation", 1, 2)
    assert row["mean"] == pytest.approx((0.9 + 0.6) / 2)
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]


def test_an_unknown_similarity_measure_lists_the_valid_ones(store: query.Store) -> None:
    with pytest.raises(ValueError, match="valid measures: spearman, ssim, topk_iou"):
        query.seed_noise(store, "pearson")
