"""The faithfulness references (decision D28): ROAD's imputation, every library call, exact replays, RISE's loop.

The replay tests are the spec (``docs/metrics_reference.md``) in executable form: each rebuilds a library's
curve from the documented order, fill and random draws and must match it exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from _explain_models import photos
from torch import nn

from mtlx_core.faithfulness import reference as R
from mtlx_core.faithfulness import reference_orders as O
from mtlx_core.faithfulness.road_fill import noisy_linear_impute, quantus_noisy_linear_impute

pytest.importorskip("quantus")
pytest.importorskip("pytorch_grad_cam")

C, H, W = 3, 24, 32


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return photos((H, W))[0].numpy()


@pytest.fixture(scope="module")
def saliency() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    a = np.maximum(0.0, 1.0 - np.hypot(yy - 8, xx - 20) / 10).astype(np.float32)  # a zero plateau: ties
    return a


@pytest.fixture(scope="module")
def toy_f() -> R.ScalarFn:
    """A tiny seeded conv net's mean sigmoid output over a fixed pixel set."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()
    pixels = torch.zeros(H, W, dtype=torch.bool)
    pixels[4:14, 12:28] = True

    def f(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = torch.sigmoid(net(torch.from_numpy(np.ascontiguousarray(x))))[:, 0]
        return out[:, pixels].double().mean(dim=1).numpy()

    return f


def test_road_fill_equals_pytorch_grad_cam_imputer_given_the_same_seed() -> None:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    rng = np.random.default_rng(1)
    img = rng.random((3, 17, 23), dtype=np.float32)
    removed = rng.random((17, 23)) < 0.5
    torch.manual_seed(3)
    theirs = NoisyLinearImputer()(torch.from_numpy(img), torch.from_numpy((~removed).astype(np.float32))).numpy()
    assert np.abs(noisy_linear_impute(img, removed, seed=3) - theirs).max() <= 1e-5
    torch.manual_seed(3)
    assert np.abs(noisy_linear_impute(img, removed) - theirs).max() <= 1e-5  # global generator, as the library


def test_quantus_road_fill_equals_quantus_imputation_given_the_same_seed() -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(2)
    img = rng.random((3, 17, 23), dtype=np.float32)
    indices = rng.permutation(17 * 23)[:150]
    np.random.seed(4)
    theirs = noisy_linear_imputation(arr=img, indices=indices, noise=0.01)
    ours = quantus_noisy_linear_impute(img, indices, 0.01, rs=np.random.RandomState(4))
    assert np.abs(ours - theirs).max() <= 1e-5


def n_slic_segments(x: np.ndarray) -> int:
    from skimage.segmentation import slic

    return int(slic(np.moveaxis(x, 0, -1).astype(np.float64), start_label=0).max()) + 1


CASES = {
    "irof": (R.quantus_irof_ref, {}, lambda x: n_slic_segments(x)),
    "region_perturbation": (R.quantus_region_perturbation_ref, {"patch_size": 6},
                            lambda x: min(100, math.ceil(H / 6) * math.ceil(W / 6))),
    "pixel_flipping": (R.quantus_pixel_flipping_ref, {"features_in_step": 16}, lambda x: C * H * W // 16),
    "quantus_road": (R.quantus_road_ref, {}, lambda x: 50),
    "faithfulness_correlation": (R.quantus_faithfulness_correlation_ref, {"nr_runs": 20, "subset_size": 30},
                                 lambda x: 20),
    "gradcam_road": (R.gradcam_road_ref, {}, lambda x: 9),
    "gradcam_road_combined": (R.gradcam_road_combined_ref, {}, lambda x: 18),
    "deletion": (R.rise_deletion_ref, {"step": 50}, lambda x: (H * W + 49) // 50 + 1),
    "insertion": (R.rise_insertion_ref, {"step": 50}, lambda x: (H * W + 49) // 50 + 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_reference_returns_a_curve_of_the_documented_length(name: str, image: np.ndarray,
                                                                 saliency: np.ndarray, toy_f: R.ScalarFn) -> None:
    fn, kwargs, expected = CASES[name]
    res = fn(toy_f, image, saliency, keep_images=True, **kwargs)
    assert res.curve.shape == (expected(image),)
    assert res.extras["images"].shape == (expected(image), C, H, W)
    assert np.isfinite(res.score)
    assert res.clean == pytest.approx(float(toy_f(image[None])[0]))


def replay(f: R.ScalarFn, images: list[np.ndarray]) -> np.ndarray:
    return np.array([float(f(img[None])[0]) for img in images])


@pytest.mark.parametrize(("order", "baseline"), [("morf", "black"), ("lerf", "uniform")])
def test_region_perturbation_replays_from_grid_order_and_fill(order: str, baseline: str, image: np.ndarray,
                                                              saliency: np.ndarray, toy_f: R.ScalarFn) -> None:
    res = R.quantus_region_perturbation_ref(toy_f, image, saliency, patch_size=6, order=order,
                                            perturb_baseline=baseline, seed=5)
    labels, ordered = O.region_perturbation_order(saliency, image.shape, 6, order)
    rs, cur, images = np.random.RandomState(5), image.copy(), []
    for s in ordered[:100]:
        cur[:, labels == s] = image.min() if baseline == "black" else rs.uniform(0, 1, size=1)[0]
        images.append(cur.copy())
    curve = replay(toy_f, images)
    assert np.array_equal(curve, res.curve)
    assert res.score == pytest.approx((res.clean - curve).sum() / (len(curve) + 1), abs=1e-12)


def test_pixel_flipping_replays_from_feature_order(image: np.ndarray, saliency: np.ndarray,
                                                   toy_f: R.ScalarFn) -> None:
    res = R.quantus_pixel_flipping_ref(toy_f, image, saliency, features_in_step=16)  # must divide H * W
    order, cur, images = O.feature_order(saliency, C), image.reshape(-1).copy(), []
    for s in range(0, len(order), 16):
        cur[order[s:s + 16]] = image.min()
        images.append(cur.reshape(image.shape).copy())
    curve = replay(toy_f, images)
    assert np.array_equal(curve, res.curve)
    assert res.score == pytest.approx(float(np.sum(curve) - (curve[0] + curve[-1]) / 2), abs=1e-9)


def test_quantus_road_replays_from_pixels_and_numpy_noise(image: np.ndarray, saliency: np.ndarray,
                                                          toy_f: R.ScalarFn) -> None:
    res = R.quantus_road_ref(toy_f, image, saliency, seed=6)
    rs = np.random.RandomState(6)
    images = [quantus_noisy_linear_impute(image, pix, 0.01, rs=rs) for pix in O.quantus_road_pixels(saliency)]
    assert np.abs(replay(toy_f, images) - res.curve).max() <= 1e-6


def test_faithfulness_correlation_replays_from_the_exposed_subsets(image: np.ndarray, saliency: np.ndarray,
                                                                   toy_f: R.ScalarFn) -> None:
    res = R.quantus_faithfulness_correlation_ref(toy_f, image, saliency, nr_runs=20, subset_size=30, seed=7)
    subsets = O.faithfulness_correlation_subsets(7, image.size, 30, 20)
    assert np.array_equal(subsets, res.extras["subsets"])
    images = []
    for s in subsets:
        cur = image.reshape(-1).copy()
        cur[s] = image.min()
        images.append(cur.reshape(image.shape))
    curve = replay(toy_f, images)
    assert np.array_equal(curve, res.curve)
    att = np.broadcast_to(O.quantus_normalise(saliency), image.shape).reshape(-1)[subsets].sum(axis=-1)
    assert res.score == pytest.approx(scipy.stats.pearsonr(att, res.clean - curve)[0], abs=1e-6)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_gradcam_road_replays_from_masks_and_torch_noise(order: str, image: np.ndarray, saliency: np.ndarray,
                                                         toy_f: R.ScalarFn) -> None:
    res = R.gradcam_road_ref(toy_f, image, saliency, order=order, seed=8)
    gen = torch.Generator().manual_seed(8)
    images = [noisy_linear_impute(image, O.gradcam_road_removed(saliency, p, order), generator=gen)
              for p in R.GRADCAM_PERCENTILES]
    curve = replay(toy_f, images)
    assert np.abs(curve - res.curve).max() <= 1e-6
    assert res.score == pytest.approx(float(np.mean(np.float32(curve) - np.float32(res.clean))), abs=1e-6)


# RISE's loop, known answers. 8 x 8 image, region = the first 16 pixels (two rows), saliency = its indicator,
# step 4: the region goes first (RISE sorts descending), 4 pixels per step, so it is gone after 4 of 16 steps.
def region_setup() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(9)
    x = rng.uniform(0.2, 1.0, (3, 8, 8)).astype(np.float32)
    region = np.zeros((8, 8), dtype=bool)
    region[:2] = True
    return x, region, region.astype(np.float32)


def test_rise_deletion_of_the_explained_region_gives_the_hand_computed_auc() -> None:
    x, region, a = region_setup()
    x[:, region] = 1.0

    def region_mean(b: np.ndarray) -> np.ndarray:
        return b[:, :, region].mean(axis=(1, 2)).astype(np.float64)

    res = R.rise_deletion_ref(region_mean, x, a, step=4)
    expected = np.array([1.0, 0.75, 0.5, 0.25] + [0.0] * 13)  # 16 steps + 1 points
    assert np.allclose(res.curve, expected, atol=1e-7)
    assert res.score == pytest.approx((2.5 - 0.5 - 0.0) / 16)  # = 16 / (2 * 64): the triangle's area


def test_rise_insertion_of_the_explained_region_gives_the_hand_computed_auc() -> None:
    x, region, a = region_setup()

    def share_restored(b: np.ndarray) -> np.ndarray:  # share of the region's values back at their clean value
        return (b[:, :, region] == x[None][:, :, region]).mean(axis=(1, 2)).astype(np.float64)

    res = R.rise_insertion_ref(share_restored, x, a, step=4)
    expected = np.array([0.0, 0.25, 0.5, 0.75] + [1.0] * 13)
    assert np.allclose(res.curve, expected)
    assert res.score == pytest.approx(1 - 16 / (2 * 64))


def test_rise_steps_cover_every_pixel_once_with_a_partial_last_step() -> None:
    x, _, _ = region_setup()
    a = np.random.default_rng(10).random((8, 8)).astype(np.float32)
    res = R.rise_deletion_ref(lambda b: b.mean(axis=(1, 2, 3)).astype(np.float64), x, a, step=5, keep_images=True)
    changed = (res.extras["images"] != x[None]).all(axis=1).reshape(len(res.curve), -1).sum(axis=1)
    assert changed.tolist() == [min(5 * i, 64) for i in range(14)]  # (64 + 4) // 5 = 13 steps
