"""The MTAN-layout loader: reading, task subsets and clear errors on bad datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtlx_core.data.dataset import DatasetError, MTLDataset, validate_dataset


def write_frame(root: Path, split: str, i: int, h: int = 8, w: int = 12, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + i)
    arrays = {
        "image": rng.random((h, w, 3), dtype=np.float32),
        "label": rng.integers(-1, 13, (h, w)).astype(np.float32),
        "depth": (rng.random((h, w, 1)) * 5).astype(np.float32),
        "normal": np.tile(np.array([0, 0, 1], np.float32), (h, w, 1)),
    }
    arrays["depth"][0, 0] = 0
    arrays["normal"][0, 0] = 0
    for name, arr in arrays.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        np.save(root / split / name / f"{i}.npy", arr)


@pytest.fixture
def nyu_like(tmp_path: Path) -> Path:
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_frame(tmp_path, split, i)
    return tmp_path


def test_loader_returns_all_tasks_with_mtan_conventions(nyu_like: Path):
    ds = MTLDataset(nyu_like, "nyuv2", "train")
    assert len(ds) == 3
    s = ds[1]
    assert s["image"].shape == (3, 8, 12)
    assert s["image"].dtype == torch.float32
    assert s["segmentation"].shape == (8, 12)
    assert s["segmentation"].dtype == torch.int64
    assert s["depth"].shape == (1, 8, 12)
    assert s["normals"].shape == (3, 8, 12)
    raw = np.load(nyu_like / "train" / "label" / "1.npy")
    assert np.array_equal(s["segmentation"].numpy(), raw.astype(np.int64))
    assert int(s["index"]) == 1


def test_loader_task_subset_reads_only_those_folders(nyu_like: Path):
    ds = MTLDataset(nyu_like, "nyuv2", "val", tasks=("segmentation", "normals"))
    assert set(ds[0]) == {"image", "segmentation", "normals", "index"}


def test_missing_folder_is_named(nyu_like: Path):
    import shutil

    shutil.rmtree(nyu_like / "val" / "depth")
    with pytest.raises(DatasetError, match=r"missing folder .*val/depth"):
        MTLDataset(nyu_like, "nyuv2", "val")


def test_different_counts_across_folders_are_reported(nyu_like: Path):
    (nyu_like / "train" / "normal" / "2.npy").unlink()
    with pytest.raises(DatasetError, match="different frame counts"):
        MTLDataset(nyu_like, "nyuv2", "train")


def test_wrong_shape_names_the_file(nyu_like: Path):
    np.save(nyu_like / "train" / "depth" / "0.npy", np.ones((8, 12), np.float32))
    with pytest.raises(DatasetError, match=r"train/depth/0\.npy: expected shape \(8, 12, 1\)"):
        MTLDataset(nyu_like, "nyuv2", "train")


def test_wrong_dtype_names_the_file(nyu_like: Path):
    np.save(nyu_like / "val" / "image" / "1.npy", np.ones((8, 12, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"val/image/1\.npy: image must be HxWx3 float"):
        MTLDataset(nyu_like, "nyuv2", "val")


def test_label_out_of_range_names_the_file(nyu_like: Path):
    lab = np.load(nyu_like / "train" / "label" / "2.npy")
    lab[0, 0] = 13
    np.save(nyu_like / "train" / "label" / "2.npy", lab)
    with pytest.raises(DatasetError, match=r"train/label/2\.npy: labels must be in -1\.\.12"):
        MTLDataset(nyu_like, "nyuv2", "train")


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_nan_or_negative_depth_names_the_file(nyu_like: Path, bad: float):
    d = np.load(nyu_like / "val" / "depth" / "0.npy")
    d[1, 1] = bad
    np.save(nyu_like / "val" / "depth" / "0.npy", d)
    with pytest.raises(DatasetError, match=r"val/depth/0\.npy"):
        validate_dataset(nyu_like, "nyuv2")


def test_truncated_file_names_the_file(nyu_like: Path):
    p = nyu_like / "train" / "image" / "1.npy"
    p.write_bytes(p.read_bytes()[:50])
    ds = MTLDataset(nyu_like, "nyuv2", "train")
    with pytest.raises(DatasetError, match=r"cannot read .*train/image/1\.npy"):
        ds[1]


def test_non_contiguous_indices_are_reported(nyu_like: Path):
    for sub in ("image", "label", "depth", "normal"):
        (nyu_like / "train" / sub / "2.npy").rename(nyu_like / "train" / sub / "5.npy")
    with pytest.raises(DatasetError, match="not contiguous"):
        MTLDataset(nyu_like, "nyuv2", "train")


def test_missing_root_is_reported(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        MTLDataset(tmp_path / "nope", "nyuv2", "train")
