"""Sanity rows (``mtlx_core.precompute.sanity_unit``) through the store and its queries (``mtlx_core.store.sanity``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _explain_models import TinyMTL, photos, tasks_for

from mtlx_core.explain.sanity import SanitySettings
from mtlx_core.precompute.sanity_unit import sanity_key, sanity_rows
from mtlx_core.store import query
from mtlx_core.store.writer import StoreWriter, UnitRows

SETTINGS = SanitySettings(max_steps=3, n_noise=2)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    tasks = {t: task for t, task in tasks_for().items() if t in ("segmentation", "depth")}
    layers = dict.fromkeys(tasks, "body.1")
    images = torch.stack(photos((32, 48))[:2])
    key = sanity_key(SETTINGS, ["gradcam"], ["a", "b"], layers)
    return sanity_rows("tiny", TinyMTL(), images, tasks, ["gradcam"], layers, SETTINGS, key)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def store(rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> query.Store:
    path = tmp_path_factory.mktemp("sanity") / "study.duckdb"
    w = StoreWriter.open(path)
    w.commit(UnitRows("sanity:tiny:k", "sanity", {"sanity": rows}, None, "tiny"))
    w.publish()
    w.close(remove_work=True)
    return query.open_store(path)


def _same(a: float | None, b: float | None) -> bool:
    return (a is None or (isinstance(a, float) and math.isnan(a))) == (b is None or (isinstance(b, float)
                                                                                      and math.isnan(b))) and (
        a is None or math.isnan(a) or a == pytest.approx(b, abs=1e-12))


def test_rows_cover_every_check_task_and_step(rows: list[dict[str, Any]]) -> None:
    kinds = {(r["check_name"], r["task"], r["variant"], r["step"]) for r in rows}
    n_mr = sum(1 for k in kinds if k[0] == "model_randomisation" and k[1] == "depth")
    assert n_mr == SETTINGS.max_steps
    assert {k[2] for k in kinds if k[0] == "head_randomisation"} == {"segmentation", "depth"}
    assert sum(1 for k in kinds if k[0] == "noise_floor" and k[1] == "segmentation") == SETTINGS.n_noise
    assert {k[1] for k in kinds if k[0] == "random_target"} == {"segmentation", "depth"}


def test_round_trip_keeps_the_values_and_the_per_map_lists(store: query.Store, rows: list[dict[str, Any]]) -> None:
    curve = query.sanity_randomisation(store, "tiny", "gradcam")
    written = [r for r in rows if r["check_name"] == "model_randomisation"]
    assert len(curve) == len(written)
    for r in written:
        got = curve[(curve["task"] == r["task"]) & (curve["step"] == r["step"])].iloc[0]
        assert _same(got["spearman"], r["spearman"])
        assert _same(got["ssim"], r["ssim"])
        assert _same(got["emprt"], r["emprt"])
        assert list(got["modules"]) == r["modules"]
        assert bool(got["passed"]) == r["passed"]
    per_map = store.rows("SELECT spearman_per_map FROM sanity WHERE check_name = 'noise_floor' AND task = 'depth' "
                         "AND step = 1")[0][0]
    want = next(r for r in rows if r["check_name"] == "noise_floor" and r["task"] == "depth" and r["step"] == 1)
    assert len(per_map) == want["n_maps"]
    assert all(_same(a, b) for a, b in zip(per_map, want["spearman_per_map"], strict=True))


def test_another_tasks_head_leaves_a_hard_shared_models_maps_bit_identical(store: query.Store) -> None:
    heads = query.sanity_heads(store, "tiny", "gradcam")
    other = heads[heads["head_task"] != heads["task"]]
    assert len(other) == 2
    assert other["identical"].all()
    assert other["passed"].all()
    assert (other["spearman"] == 1.0).all()
    own = heads[heads["head_task"] == heads["task"]]
    assert not own["identical"].any()


def test_summary_has_one_verdict_per_check_and_counts_its_parts(store: query.Store, rows: list[dict[str, Any]]
                                                                ) -> None:
    summary = query.sanity_summary(store)
    assert list(summary["check_name"]) == ["model_randomisation", "head_randomisation", "random_target"]
    heads = summary[summary["check_name"] == "head_randomisation"].iloc[0]
    assert heads["n"] == 4  # two heads x two explained tasks
    assert heads["n_passed"] == sum(1 for r in rows if r["check_name"] == "head_randomisation" and r["passed"])
    ref = query.sanity_reference(store, "tiny", "gradcam")
    assert set(ref["check_name"]) == {"random_target", "noise_floor"}
    assert ref.loc[ref["check_name"] == "noise_floor", "draws"].tolist() == [SETTINGS.n_noise] * 2


def test_a_store_without_the_table_gives_empty_frames(tmp_path: Path) -> None:
    w = StoreWriter.open(tmp_path / "s.duckdb")
    w.con.execute("DROP TABLE sanity")
    w.publish()
    w.close(remove_work=True)
    store = query.open_store(tmp_path / "s.duckdb")
    assert query.sanity_summary(store).empty
    assert list(query.sanity_heads(store, "m", "gradcam").columns)[:2] == ["head_task", "task"]
