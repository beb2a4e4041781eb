"""The embedded synthetic RGB-D dataset: layout, validity, determinism, resume and geometric truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mtlx_core.data.synth as synth
from mtlx_core.data.layout import SPLITS, SYNTH_CLASSES
from mtlx_core.data.synth import FOLDERS, generate_synth, render_synth_frame, summarize_dataset

H, W, SEED, N_TRAIN, N_VAL = 48, 64, 3, 6, 2
PLANAR = [SYNTH_CLASSES.index(c) for c in ("floor", "wall", "ceiling", "box")]


def _frames(root: Path) -> list[dict[str, np.ndarray]]:
    return [{f: np.load(root / split / f / f"{i}.npy") for f in FOLDERS}
            for split, n in (("train", N_TRAIN), ("val", N_VAL)) for i in range(n)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = generate_synth(out, N_TRAIN, N_VAL, height=H, width=W, seed=SEED, progress=False)
    return out, summary


def test_layout_meta_dtypes_shapes_and_ranges(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    assert not root.with_name("ds.partial").exists()
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        for f in FOLDERS:
            assert sorted(p.name for p in (root / split / f).iterdir()) == sorted(f"{i}.npy" for i in range(n))
    meta = json.loads((root / "meta.json").read_text())
    assert meta["dataset"] == "synth"
    assert meta["classes"] == list(SYNTH_CLASSES)
    assert set(meta["intrinsics"]) == {"fx", "fy", "cx", "cy"}
    assert (meta["seed"], meta["height"], meta["width"], meta["n_train"], meta["n_val"]) == (SEED, H, W, N_TRAIN,
                                                                                             N_VAL)
    assert meta["generator_version"] == synth.GENERATOR_VERSION
    assert meta["code_version"]
    assert summary["counts"] == {"train": N_TRAIN, "val": N_VAL}
    assert summary["created"]
    for fr in _frames(root):
        assert fr["image"].shape == (H, W, 3)
        assert fr["label"].shape == (H, W)
        assert fr["depth"].shape == (H, W, 1)
        assert fr["normal"].shape == (H, W, 3)
        assert all(a.dtype == np.float32 for a in fr.values())
        assert fr["image"].min() >= 0.0
        assert fr["image"].max() <= 1.0
        assert set(np.unique(fr["label"])) <= set(range(-1, len(SYNTH_CLASSES)))
        assert np.isfinite(fr["depth"]).all()
        assert fr["depth"].min() >= 0
        assert fr["depth"].max() < 15
        norm = np.linalg.norm(fr["normal"], axis=-1)
        valid = fr["depth"][..., 0] > 0
        np.testing.assert_allclose(norm[valid], 1.0, atol=1e-5)


def test_at_least_six_classes_present(dataset: tuple[Path, dict]) -> None:
    present = set().union(*(np.unique(fr["label"]).astype(int).tolist() for fr in _frames(dataset[0])))
    assert len(present - {-1}) >= 6


def test_invalid_pixels_exist_and_are_consistent(dataset: tuple[Path, dict]) -> None:
    frames = _frames(dataset[0])
    n_invalid = n_ignore = 0
    for fr in frames:
        no_depth = fr["depth"][..., 0] == 0
        no_normal = (fr["normal"] == 0).all(axis=-1)
        ignore = fr["label"] == -1
        np.testing.assert_array_equal(no_depth, no_normal)
        assert no_depth[ignore].all()  # window glass: ignore label, no depth, no normal
        n_invalid, n_ignore = n_invalid + no_depth.sum(), n_ignore + ignore.sum()
    assert n_ignore > 0
    assert n_invalid > n_ignore
    shares = dataset[1]["splits"]["train"]
    assert sum(shares["class_share"].values()) + shares["ignore_share"] == pytest.approx(1.0)


def test_same_seed_is_byte_identical_and_frames_rerender_alone(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root = dataset[0]
    generate_synth(tmp_path / "again", N_TRAIN, N_VAL, height=H, width=W, seed=SEED, progress=False)
    assert _files(tmp_path / "again") == _files(root)
    frame = render_synth_frame(SEED, "val", 1, H, W)
    for f in FOLDERS:
        assert frame[f].tobytes() == np.load(root / "val" / f / "1.npy").tobytes()


def test_different_seed_or_split_differs() -> None:
    a = render_synth_frame(SEED, "train", 0, H, W)
    for other in (render_synth_frame(SEED + 1, "train", 0, H, W), render_synth_frame(SEED, "val", 0, H, W)):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["depth"], other["depth"])


def test_resume_completes_partial_folder_and_equals_one_shot(dataset: tuple[Path, dict], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    calls = {"n": 0}
    real = synth.render_synth_frame

    def interrupted(*args: object, **kw: object) -> dict[str, np.ndarray]:
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(synth, "render_synth_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_synth(out, N_TRAIN, N_VAL, height=H, width=W, seed=SEED, progress=False)
    partial = tmp_path / "ds.partial"
    assert not out.exists()
    assert len(list((partial / "train" / "image").glob("*.npy"))) == 4
    (partial / "train" / "depth" / "3.npy").unlink()  # frame 3 half written
    (partial / "train" / "image" / "4.npy.tmp").write_bytes(b"truncated")
    monkeypatch.setattr(synth, "render_synth_frame", real)
    summary = generate_synth(out, N_TRAIN, N_VAL, height=H, width=W, seed=SEED, progress=False)
    assert (summary["frames_resumed"], summary["frames_rendered"]) == (3, N_TRAIN + N_VAL - 3)
    assert not partial.exists()
    assert _files(out) == _files(dataset[0])
    assert summary["splits"] == dataset[1]["splits"]


def test_existing_dataset_is_reused_or_refused(dataset: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, first = dataset

    def no_work(*args: object, **kw: object) -> None:
        raise AssertionError("rendered a frame for an existing dataset")

    monkeypatch.setattr(synth, "render_synth_frame", no_work)
    again = generate_synth(root, N_TRAIN, N_VAL, height=H, width=W, seed=SEED, progress=False)
    assert not again["created"]
    assert again["frames_rendered"] == 0
    assert again["splits"] == first["splits"]
    assert again["depth_range"] == first["depth_range"]
    with pytest.raises(FileExistsError, match="n_train"):
        generate_synth(root, N_TRAIN + 1, N_VAL, height=H, width=W, seed=SEED, progress=False)
    with pytest.raises(FileExistsError, match="seed"):
        generate_synth(root, N_TRAIN, N_VAL, height=H, width=W, seed=SEED + 1, progress=False)


def test_summarize_dataset_matches_generation_summary(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    again = summarize_dataset(root)
    assert again["counts"] == summary["counts"]
    for split in SPLITS:
        for k, v in summary["splits"][split].items():
            assert again["splits"][split][k] == (pytest.approx(v) if not isinstance(v, dict) else v)


@pytest.mark.parametrize(("kw", "name"), [({"n_train": 0}, "n_train"), ({"height": 4}, "height"),
                                          ({"seed": -1}, "seed"), ({"width": 64.0}, "width")])
def test_bad_arguments_are_named(tmp_path: Path, kw: dict, name: str) -> None:
    args = {"n_train": 2, "n_val": 1, "height": H, "width": W, "seed": 0} | kw
    with pytest.raises(ValueError, match=name):
        generate_synth(tmp_path / "x", progress=False, **args)


def test_geometric_truth_normals_from_depth_agree_with_stored(tmp_path: Path) -> None:
    # At the default 96x128 (at 48x64 the creases and same-class occlusions inside 3x3 windows are ~4 % of the
    # "planar" pixels, too close to the 5 % that the 95th percentile allows).
    root = tmp_path / "geo"
    generate_synth(root, 8, 0, seed=SEED, progress=False)
    meta = json.loads((root / "meta.json").read_text())
    k, h, w = meta["intrinsics"], meta["height"], meta["width"]
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    angles = []
    for i in range(meta["n_train"]):
        fr = {f: np.load(root / "train" / f / f"{i}.npy") for f in FOLDERS}
        z = fr["depth"][..., 0].astype(np.float64)
        pts = np.stack([(uu - k["cx"]) * z / k["fx"], (vv - k["cy"]) * z / k["fy"], z], axis=-1)
        stored = fr["normal"].astype(np.float64)
        valid = z > 0
        assert (np.einsum("hwc,hwc->hw", stored, pts)[valid] < 0).all()  # normals face the camera
        n = np.cross(pts[2:, 1:-1] - pts[:-2, 1:-1], pts[1:-1, 2:] - pts[1:-1, :-2])  # down x right
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
        n *= np.where(np.einsum("hwc,hwc->hw", n, pts[1:-1, 1:-1]) > 0, -1.0, 1.0)[..., None]
        lab = fr["label"]
        same = np.ones((h - 2, w - 2), bool)  # 3x3 neighbourhood: one label, valid depth
        for dv in (0, 1, 2):
            for du in (0, 1, 2):
                same &= (lab[dv:dv + h - 2, du:du + w - 2] == lab[1:-1, 1:-1]) & valid[dv:dv + h - 2, du:du + w - 2]
        planar = same & np.isin(lab[1:-1, 1:-1], PLANAR)
        cos = np.einsum("hwc,hwc->hw", n, stored[1:-1, 1:-1])[planar]
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    a = np.concatenate(angles)
    assert a.size > 30000
    assert np.median(a) < 2.0
    assert np.percentile(a, 95) < 5.0
