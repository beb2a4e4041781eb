"""DiSparse: calibrated global sparsity, backbone = union of task masks, pruned weights stay exactly zero."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.models import build_model
from mtlx_core.models.base import SHARED
from mtlx_core.prune.disparse import calibrated_masks, disparse_masks, magnitude_scores, snip_scores
from mtlx_core.prune.masks import MaskCallback, apply_masks, prunable_weights, weight_sparsity
from mtlx_core.tasks import build_tasks
from mtlx_core.train import resolve_config, train

TASKS = ("segmentation", "depth", "normals")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def fake_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        normals = torch.randn(2, 3, 32, 64, generator=g)
        out.append({"image": torch.rand(2, 3, 32, 64, generator=g),
                    "segmentation": torch.randint(0, 7, (2, 32, 64), generator=g),
                    "depth": torch.rand(2, 1, 32, 64, generator=g) + 0.5,
                    "normals": normals / normals.norm(dim=1, keepdim=True)})
    return out


def tiny_mtan(width: float = 0.0625) -> nn.Module:
    torch.manual_seed(0)
    return build_model("segnet_mtan", {"segmentation": 7, "depth": 1, "normals": 3}, width)


@pytest.mark.parametrize("target", [0.5, 0.7, 0.8, 0.9])
def test_disparse_reaches_target_sparsity_within_half_a_point(target: float):
    model = tiny_mtan(0.125)
    tasks = build_tasks(get_dataset_spec("synth"), TASKS)
    scores = snip_scores(model, fake_batches(2), tasks)
    masks, cal = calibrated_masks(model, scores, target)
    apply_masks(model, masks)
    assert abs(weight_sparsity(model) - target) <= 0.005
    assert abs(cal.sparsity - target) <= 0.005


def test_snip_scores_are_abs_grad_times_weight_per_task():
    model = tiny_mtan()
    tasks = build_tasks(get_dataset_spec("synth"), TASKS)
    batch = fake_batches(1)[0]
    scores = snip_scores(model, [batch], tasks)
    for t, task in tasks.items():
        model.zero_grad()
        task.loss(model(batch["image"])[t], batch[t]).backward()
        for name, w in prunable_weights(model).items():
            if model.module_owner(name) in (SHARED, t):
                torch.testing.assert_close(scores[t][name], (w.grad * w).abs().detach(), rtol=1e-4, atol=1e-9)
            else:
                assert name not in scores[t]


def test_backbone_mask_is_the_union_of_task_masks_and_heads_keep_their_own():
    model = tiny_mtan()
    scores = magnitude_scores(model)  # any per-task scores; make them differ per task
    g = torch.Generator().manual_seed(3)
    scores = {t: {n: s * torch.rand(s.shape, generator=g) for n, s in sc.items()} for t, sc in scores.items()}
    keep = 0.3
    masks = disparse_masks(model, scores, keep)
    # independent per-task top-k: threshold at the k-th largest score of the task's sub-network
    task_masks = {}
    for t, sc in scores.items():
        flat = torch.cat([s.flatten() for s in sc.values()])
        kth = flat.sort(descending=True).values[round(keep * flat.numel()) - 1]
        task_masks[t] = {n: s >= kth for n, s in sc.items()}
    shared = [n for n in prunable_weights(model) if model.module_owner(n) == SHARED]
    assert shared
    for name in prunable_weights(model):
        owner = model.module_owner(name)
        if owner == SHARED:
            expected = task_masks["segmentation"][name] | task_masks["depth"][name] | task_masks["normals"][name]
        else:
            expected = task_masks[owner][name]
        assert torch.equal(masks[name], expected), name
    union = torch.cat([masks[n].flatten() for n in shared]).float().mean()
    single = torch.cat([task_masks["depth"][n].flatten() for n in shared]).float().mean()
    assert union > single  # the union really densifies the shared trunk


def test_pruned_weights_stay_zero_under_adam_with_momentum_and_weight_decay():
    model = tiny_mtan()
    tasks = build_tasks(get_dataset_spec("synth"), TASKS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    batches = fake_batches(4)

    def step(callback: MaskCallback | None, batch: dict[str, torch.Tensor], it: int) -> None:
        opt.zero_grad()
        out = model(batch["image"])
        sum(task.loss(out[t], batch[t]) for t, task in tasks.items()).backward()
        if callback:
            callback.after_backward(model, it)
        opt.step()
        if callback:
            callback.after_step(model, it, 1e-2)

    for i in range(2):  # dense steps first: Adam's moments are non-zero everywhere
        step(None, batches[i], i)
    masks, _ = calibrated_masks(model, magnitude_scores(model), 0.7)
    apply_masks(model, masks)
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    callback = MaskCallback(masks)
    for i in range(2, 4):
        step(callback, batches[i], i)
    for name, w in prunable_weights(model).items():
        assert torch.all(w[~masks[name]] == 0), name
    assert any(not torch.equal(w, before[n]) for n, w in prunable_weights(model).items())


class KillAfter:
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_backward(self, model: nn.Module, iteration: int) -> None:
        pass

    def after_step(self, model: nn.Module, iteration: int, lr: float) -> None:
        if iteration == self.iteration:
            raise KeyboardInterrupt("killed")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_masks_survive_training_and_resume_from_the_checkpoint(tmp_path: Path):
    from mtlx_core.data.synth import generate_synth

    data = tmp_path / "data"
    generate_synth(data, n_train=4, n_val=2, height=32, width=64, seed=1, progress=False)
    cfg = resolve_config("demo_segnet_mtan", data_root=str(data), iterations=4, batch_size=2, width=0.0625,
                         checkpoint_every=2, device="cpu")
    model = tiny_mtan()
    masks, _ = calibrated_masks(model, magnitude_scores(model), 0.8)
    apply_masks(model, masks)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "runs", model=model, callbacks=[MaskCallback(masks), KillAfter(2)], run_id="masked",
              progress=False)
    # the resumed run gets an empty callback: the masks come back from the checkpoint
    result = train(cfg, tmp_path / "runs", model=tiny_mtan(), callbacks=[MaskCallback(), KillAfter(-1)],
                   run_id="masked", progress=False)
    state = torch.load(result.path / "model.pt", weights_only=True)
    for name, mask in masks.items():
        assert torch.all(state[name][~mask] == 0), name
    assert abs(sum(int((state[n] == 0).sum()) for n in masks) / sum(m.numel() for m in masks.values()) - 0.8) < 0.005
