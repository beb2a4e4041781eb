"""The example's Network Slimming recipe (``examples/own_model``): mtlx's BN-L1 sparsity training and global
``|gamma|`` threshold on a model mtlx does not ship, through the channel plan derived from Torch-Pruning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mtlx_core.data.dataset import MTLDataset
from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.data.synth import generate_synth
from mtlx_core.models import build_model
from mtlx_core.prune.derived_plan import derive_channel_plan
from mtlx_core.prune.netslim import bn_scores

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
ARGS = {"backbone": "small", "width": 0.25, "inter_channels": 16}
TASKS = ("segmentation", "depth")


def test_the_examples_network_slimming_zeroes_scale_factors_and_removes_the_smallest(tmp_path: Path) -> None:
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    from own_model import MODEL_NAME, build
    from own_model.recipes import prune_mtlx_netslim

    generate_synth(tmp_path / "data", n_train=16, n_val=2, height=32, width=64, seed=0, progress=False)
    spec = get_dataset_spec("synth")
    data = MTLDataset(tmp_path / "data", spec, "train", tasks=TASKS)
    channels = {"segmentation": spec.num_classes, "depth": 1}
    example = data[0]["image"][None]
    torch.manual_seed(0)
    net = build(channels, **ARGS).eval()
    dense_state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.random.fork_rng():
        small, info = prune_mtlx_netslim(net, MODEL_NAME, channels, 0.5, example, ARGS, data, iterations=30,
                                         lr=3e-3)
    # the user's network is untouched; the pruned one is the user's class with fewer channels
    assert all(torch.equal(v, dense_state[k]) for k, v in net.state_dict().items())
    assert type(small) is type(net)
    # the sparsity training drove scale factors to zero: none was before, many are after
    assert info["near_zero_before"] == 0.0
    assert info["near_zero_after"] > 0.3
    # every kept channel's |gamma| is above the global threshold (or is its group's best), and half of the rated
    # channels are gone
    wrapped = build_model(MODEL_NAME, channels, **ARGS).eval()
    wrapped.net = small
    plan = derive_channel_plan(wrapped, example)
    kept = torch.cat(list(bn_scores(wrapped, plan).values()))
    singles = sum(1 for s in bn_scores(wrapped, plan).values() if s.numel() == 1)
    assert int((kept < info["threshold"]).sum()) <= singles
    full = derive_channel_plan(build_model(MODEL_NAME, channels, **ARGS).eval(), example)
    removed = 1 - sum(g.size for g in plan.prunable("bn")) / sum(g.size for g in full.prunable("bn"))
    assert removed == pytest.approx(0.5, abs=0.05)
    with torch.no_grad():
        out = small(example)
    assert set(out) == set(TASKS)
    assert out["segmentation"].shape[1] == spec.num_classes
