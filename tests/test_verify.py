"""``python -m mtlx_core.verify``: a smoke store's stored scores recomputed by the reference libraries.

The module builds one small smoke store (both arms, 2 images, every metric of the registry with cheaper step
counts, no ablation layers; ~30 s on one thread) and checks that a sample of every metric's rows agrees with the
references within 1e-4, and that a missing store or model is a clear error.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlx_core.faithfulness.registry import METRICS, build_metrics
from mtlx_core.precompute import get_study_preset, run_precompute
from mtlx_core.store.codec import decode_array
from mtlx_core.store.snapshot import open_readonly
from mtlx_core.verify import StoreModels, main, metric_of, verify_store

pytest.importorskip("quantus", reason="quantus (the reference of IROF and its siblings) cannot be imported")
pytest.importorskip("pytorch_grad_cam", reason="pytorch_grad_cam (ROAD's reference) cannot be imported")

TOL = 1e-4
CHEAPER = (("deletion", (("n_steps", 4),)), ("insertion", (("n_steps", 4),)), ("pixelflip", (("target_steps", 8),)),
           ("faithcorr", (("nr_runs", 10),)), ("region", (("regions_evaluation", 10),)))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    preset = get_study_preset("smoke")
    # Grad-CAM alone: the sample of each metric's rows stays the one these tests were written on (the explainer is
    # checked by test_each_row_is_checked_against_its_own_explainers_map)
    explain = dataclasses.replace(preset.explain, metrics=("all",), metric_options=CHEAPER, ablation_layers=(),
                                  explainers=("gradcam",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_precompute(dataclasses.replace(preset, explain=explain), root / "study.duckdb", root / "models",
                       images=2, data={"*": str(root / "data")}, progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return {"store": root / "study.duckdb", "models": root / "models", "root": root}


def test_every_metric_of_the_store_agrees_with_its_reference(smoke: dict[str, Path]) -> None:
    found = verify_store(smoke["store"], 2, 0, smoke["models"])
    assert set(found) == set(METRICS)  # AbPC of IROF is stored as "abpc"
    for metric, s in found.items():
        assert s.rows >= 1, (metric, s.skipped)
        assert s.score <= TOL, (metric, s.score)
        assert s.curve <= TOL, (metric, s.curve)
    skipped = {why for s in found.values() for why in s.skipped}
    assert skipped <= {"Quantus' PixelFlipping has no reversed order, and no map gives it"}


def test_the_sample_never_draws_a_row_no_reference_can_recompute(smoke: dict[str, Path]) -> None:
    from mtlx_core.faithfulness.crosscheck import NO_REFERENCE
    from mtlx_core.verify import KEY, sample_keys

    with open_readonly(smoke["store"]) as con:
        stored = {tuple(r) for r in con.execute("SELECT DISTINCT metric, ordering FROM faithfulness").fetchall()}
        assert ("pixelflip", "lerf") in stored  # the store has such rows
        drawn = {(k[KEY.index("metric")], k[KEY.index("ordering")]) for seed in range(20)
                 for k in sample_keys(con, 2, seed)}
    assert not drawn & set(NO_REFERENCE)
    assert {m for m, _ in drawn} == set(METRICS)


def test_main_prints_the_largest_differences_and_exits_0(smoke: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mtlx_core.verify"):
        code = main(["--store", str(smoke["store"]), "--models-dir", str(smoke["models"]), "--sample", "1",
                     "--seed", "3"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("max_score_diff=")
    diffs = dict(part.split("=") for part in last.split())
    assert float(diffs["max_score_diff"]) <= TOL
    assert float(diffs["max_curve_diff"]) <= TOL
    assert int(diffs["rows"]) >= len(METRICS)
    assert any("max |score diff|" in r.getMessage() and "road" in r.getMessage() for r in caplog.records)


def test_missing_store_is_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["--store", str(tmp_path / "none.duckdb")]) == 2
    assert "no study store at" in caplog.text


def test_missing_model_is_a_clear_error(smoke: dict[str, Path], tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "copy.duckdb"
    shutil.copy(smoke["store"], store)
    assert main(["--store", str(store), "--models-dir", str(tmp_path / "no_models"), "--sample", "1"]) == 2
    assert "does not exist in" in caplog.text


@pytest.mark.parametrize("name", [n for n in METRICS if n != "abpc"])
def test_a_metric_is_rebuilt_from_its_recorded_settings(name: str) -> None:
    shape = (32, 48)
    for options in ({}, {"fill": "fixed"} if name in ("irof", "deletion", "region", "pixelflip") else {}):
        metric = build_metrics([name], {name: options} if options else None)[0]
        recorded = metric.settings_dict(shape)
        assert metric_of(metric.label, recorded).settings_dict(shape) == recorded


def test_each_row_is_checked_against_its_own_explainers_map(tmp_path: Path) -> None:
    """Issue 21: a faithfulness row of Grad-CAM++ is recomputed on Grad-CAM++'s stored map, not on Grad-CAM's of
    the same target (the app's smoke store has both explainers on every model)."""
    from _app_store import smoke_store_path

    con = open_readonly(smoke_store_path())
    try:
        cols = [c[0] for c in con.execute("DESCRIBE faithfulness").fetchall()]
        sm = StoreModels(con, tmp_path, None)  # saliency reads the store only
        for name in ("gradcam", "gradcampp"):
            row = dict(zip(cols, con.execute(
                "SELECT f.* FROM faithfulness f JOIN explanations e USING (model_id, image_id, task, target_id, "
                "explainer, layer) WHERE f.explainer = ? AND f.ordering = 'morf' AND f.layer_role = 'primary' "
                "AND NOT e.is_zero "
                "ORDER BY ALL LIMIT 1", [name]).fetchone(), strict=True))
            own, other = (decode_array(b) for (b,) in con.execute(
                "SELECT saliency FROM explanations WHERE model_id = ? AND image_id = ? AND task = ? AND "
                "target_id = ? AND layer = ? ORDER BY explainer <> ?",
                [row["model_id"], row["image_id"], row["task"], row["target_id"], row["layer"], name]).fetchall())
            got = sm.saliency(row, own.shape)
            assert np.array_equal(got, own)
            assert not np.array_equal(got, other)
    finally:
        con.close()
