"""Run ids name the data by its content, not by where it is mounted (``TrainConfig.data_identity``,
``mtlx_core.data.manifest``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from mtlx_core.data import manifest
from mtlx_core.data.dataset import DatasetError
from mtlx_core.data.synth import generate_synth
from mtlx_core.prune import prune_run
from mtlx_core.runs import load_run
from mtlx_core.train import resolve_config, train
from mtlx_core.train.config import synth_cache

SMALL = {"n_train": 2, "n_val": 2, "height": 32, "width": 64, "seed": 0}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset in the MTAN layout (the synthetic rooms' files, which NYUv2 shares)."""
    root = tmp_path_factory.mktemp("source") / "data"
    generate_synth(root, **SMALL, progress=False)
    return root


def mount(source: Path, at: Path) -> Path:
    """A copy of the dataset's splits at another path, as another machine would mount it."""
    for split in ("train", "val"):
        shutil.copytree(source / split, at / split)
    return at


def nyuv2(root: Path | str) -> str:
    return resolve_config("nyuv2_segnet_mtan", data_root=str(root)).run_id()


def test_same_dataset_at_two_mount_points_has_the_same_run_id(source: Path, tmp_path: Path):
    a, b = mount(source, tmp_path / "data" / "nyuv2"), mount(source, tmp_path / "mnt" / "nyuv2")
    assert nyuv2(a) == nyuv2(b)
    assert resolve_config("nyuv2_segnet_mtan", data_root=str(a), lr=1e-3).run_id() != nyuv2(a)


def test_one_val_file_of_another_size_changes_the_run_id(source: Path, tmp_path: Path):
    same, changed = mount(source, tmp_path / "same"), mount(source, tmp_path / "changed")
    with (changed / "val" / "depth" / "1.npy").open("ab") as f:
        f.write(b"\0")
    assert nyuv2(changed) != nyuv2(same)


def test_manifest_is_cached_until_a_split_folder_changes(source: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    root = mount(source, tmp_path / "nyuv2")
    walks: list[str] = []
    real_walk = os.walk

    def counting_walk(top, *args, **kwargs):  # type: ignore[no-untyped-def]
        walks.append(str(top))
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(manifest.os, "walk", counting_walk)
    first = nyuv2(root)
    assert nyuv2(root) == first
    assert len(walks) == 2  # one walk per split, once
    extra = root / "val" / "image" / "2.npy"
    shutil.copy(root / "val" / "image" / "0.npy", extra)
    later = (root / "val" / "image").stat().st_mtime_ns + 10**9  # a distinct folder time on any clock
    os.utime(root / "val" / "image", ns=(later, later))
    assert nyuv2(root) != first
    assert len(walks) == 4


def test_missing_real_dataset_is_an_error_naming_the_folder_and_the_converter(source: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match=r"data folder .*nowhere does not exist.*convert-nyuv2"):
        nyuv2(tmp_path / "nowhere")
    root = mount(source, tmp_path / "no_val")
    shutil.rmtree(root / "val")
    with pytest.raises(DatasetError, match=r"data folder .*no_val.val does not exist"):
        nyuv2(root)


def test_synth_run_id_ignores_the_data_root_and_follows_the_request(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)

    def demo(data_root: str, synth: dict[str, int] = SMALL) -> str:
        return resolve_config("demo_segnet_mtan", synth=synth, data_root=data_root).run_id()

    generate_synth(tmp_path / "generated", **SMALL, progress=False)
    ids = {demo(synth_cache(SMALL)), demo("/nonexistent/elsewhere"), demo(str(tmp_path / "generated"))}
    assert len(ids) == 1
    assert demo(synth_cache(SMALL)) != demo(synth_cache({**SMALL, "seed": 1}), {**SMALL, "seed": 1})
    assert demo(synth_cache(SMALL)) != demo(synth_cache({**SMALL, "n_val": 3}), {**SMALL, "n_val": 3})
    monkeypatch.setattr(manifest, "GENERATOR_VERSION", "999")  # a new generator: new ids
    assert demo(synth_cache(SMALL)) not in ids


def test_synth_folder_used_as_it_is_is_named_by_its_manifest(source: Path, tmp_path: Path):
    """A synthetic preset run on a folder that does not hold its request (``--data``): the folder's manifest."""
    a, b = mount(source, tmp_path / "a"), mount(source, tmp_path / "b")
    ids = [resolve_config("demo_segnet_mtan", data_root=str(root)).run_id() for root in (a, b)]
    assert ids[0] == ids[1]
    assert ids[0] != resolve_config("demo_segnet_mtan", data_root="/nonexistent/demo").run_id()


def test_runs_are_reused_from_another_mount_and_old_ids_still_load(source: Path, tmp_path: Path, one_thread: None):
    a, b = mount(source, tmp_path / "node_a" / "data"), mount(source, tmp_path / "node_b" / "data")
    models = tmp_path / "runs"
    kw = {"iterations": 1, "batch_size": 2, "width": 0.0625, "checkpoint_every": 1, "device": "cpu"}
    dense = train(resolve_config("demo_segnet_mtan", data_root=str(a), **kw), models, progress=False)
    again = train(resolve_config("demo_segnet_mtan", data_root=str(b), **kw), models, progress=False)
    assert again.run_id == dense.run_id
    assert again.metrics == dense.metrics
    pruned = prune_run(dense.run_id, "l1_filter", 0.5, finetune_iterations=1, models_dir=models, data_root=str(a))
    folders = sorted(p.name for p in models.iterdir())
    assert prune_run(dense.run_id, "l1_filter", 0.5, finetune_iterations=1, models_dir=models,
                     data_root=str(b)).run_id == pruned.run_id
    assert sorted(p.name for p in models.iterdir()) == folders
    # a folder named by the old scheme (data_root hashed) loads by its stored id: nothing recomputes it
    old = models / "demo_segnet_mtan-0123456789"
    shutil.copytree(dense.path, old)
    run = load_run(old.name, models)
    assert run.metrics == dense.metrics
    assert set(run.model(torch.rand(1, 3, 32, 64))) == {"segmentation", "depth", "normals"}
