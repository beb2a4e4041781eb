"""Joint augmentation (D2): exact results for forced scale/crop/flip on known arrays."""

from __future__ import annotations

import pytest
import torch

from mtlx_core.data.augment import JointAugment, random_flip, random_scale_crop

H, W = 6, 9


def _sample() -> dict[str, torch.Tensor]:
    rows = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    image = torch.stack([rows / 10, cols / 10, (rows + cols) / 20])  # linear ramps: bilinear is exact on them
    seg = (torch.arange(H * W).reshape(H, W) % 5) - 1  # values -1..3
    depth = (1.0 + rows * W + cols)[None].clone()
    depth[0, 2, 3] = 0.0  # one invalid pixel
    normals = torch.stack([cols - 4, rows - 2, torch.full((H, W), 3.0)])
    return {"image": image, "segmentation": seg, "depth": depth, "normals": normals, "index": torch.tensor(7)}


def test_scale_one_without_flip_leaves_sample_unchanged() -> None:
    s = _sample()
    out = random_flip(random_scale_crop(s, None, scale=1.0), None, flip=False)
    for k in s:
        assert out[k].dtype == s[k].dtype
        assert torch.equal(out[k], s[k]), k
    same = JointAugment("metric", scales=(1.0,), flip_p=0.0)(s, torch.Generator().manual_seed(0))
    assert all(torch.equal(same[k], s[k]) for k in s)


def test_forced_flip_reverses_columns_and_negates_normal_x() -> None:
    s = _sample()
    out = random_flip(s, None, flip=True)
    for k in ("image", "segmentation", "depth"):
        assert torch.equal(out[k], s[k].flip(-1)), k
    assert torch.equal(out["normals"][0], -s["normals"][0].flip(-1))
    assert torch.equal(out["normals"][1:], s["normals"][1:].flip(-1))
    assert torch.equal(s["normals"][0, 0], torch.arange(W, dtype=torch.float32) - 4)  # input untouched


# F.interpolate(mode="nearest") from 4 to 6 rows and 6 to 9 columns takes source index floor(i * in / out).
NEAREST_ROWS = [0, 0, 1, 2, 2, 3]
NEAREST_COLS = [0, 0, 1, 2, 2, 3, 4, 4, 5]


def test_forced_scale_1_5_crops_by_hand_and_divides_metric_depth() -> None:
    s = _sample()
    top, left = 1, 2  # crop h = int(6 / 1.5) = 4, w = int(9 / 1.5) = 6
    out = random_scale_crop(s, None, depth_kind="metric", scale=1.5, top=top, left=left)
    rows = torch.tensor([top + r for r in NEAREST_ROWS])
    cols = torch.tensor([left + c for c in NEAREST_COLS])
    assert torch.equal(out["segmentation"], s["segmentation"][rows[:, None], cols[None, :]])
    assert torch.allclose(out["depth"], s["depth"][:, rows[:, None], cols[None, :]] / 1.5)
    # bilinear, align_corners=True: output pixel i maps to source row top + i * (4 - 1) / (6 - 1), col likewise.
    src_r = top + torch.arange(H, dtype=torch.float32)[:, None] * 3 / 5
    src_c = left + torch.arange(W, dtype=torch.float32)[None, :] * 5 / 8
    assert torch.allclose(out["image"][0], (src_r / 10).expand(H, W), atol=1e-6)
    assert torch.allclose(out["image"][1], (src_c / 10).expand(H, W), atol=1e-6)
    assert torch.allclose(out["image"][2], (src_r + src_c) / 20, atol=1e-6)
    assert torch.allclose(out["normals"][0], (src_c - 4).expand(H, W), atol=1e-5)
    assert torch.allclose(out["normals"][2], torch.full((H, W), 3.0))
    assert torch.equal(out["index"], s["index"])


def test_forced_scale_multiplies_inverse_depth() -> None:
    s = _sample()
    metric = random_scale_crop(s, None, depth_kind="metric", scale=1.5, top=2, left=3)
    inverse = random_scale_crop(s, None, depth_kind="inverse", scale=1.5, top=2, left=3)
    assert torch.allclose(inverse["depth"], metric["depth"] * 1.5 * 1.5)
    assert torch.equal(inverse["segmentation"], metric["segmentation"])


def test_invalid_depth_stays_zero_after_scale() -> None:
    s = _sample()
    out = random_scale_crop(s, None, scale=1.2, top=1, left=2)  # crop 5x7 covering the zero at (2, 3)
    assert (out["depth"] == 0).any()
    assert (out["depth"] >= 0).all()


def test_labels_stay_integer_valued() -> None:
    s = _sample()
    gen = torch.Generator().manual_seed(3)
    aug = JointAugment("metric")
    allowed = set(s["segmentation"].unique().tolist())
    for _ in range(20):
        out = aug(s, gen)
        assert out["segmentation"].dtype == torch.long
        assert set(out["segmentation"].unique().tolist()) <= allowed


def test_same_generator_seed_gives_same_augmentation() -> None:
    s = _sample()
    a = JointAugment("inverse")(s, torch.Generator().manual_seed(11))
    b = JointAugment("inverse")(s, torch.Generator().manual_seed(11))
    assert all(torch.equal(a[k], b[k]) for k in s)


def test_subset_of_keys_is_augmented() -> None:
    s = _sample()
    only = {"image": s["image"], "depth": s["depth"]}
    out = random_flip(random_scale_crop(only, None, scale=1.5, top=0, left=0), None, flip=True)
    assert set(out) == {"image", "depth"}
    assert out["image"].shape == (3, H, W)


def test_bad_arguments_raise() -> None:
    s = _sample()
    with pytest.raises(ValueError, match="depth_kind"):
        JointAugment("disparity")
    with pytest.raises(ValueError, match="outside"):
        random_scale_crop(s, None, scale=1.5, top=3, left=0)
    bad = dict(s, depth=torch.zeros(1, H + 1, W))
    with pytest.raises(ValueError, match="spatial size"):
        random_scale_crop(bad, None, scale=1.0)
