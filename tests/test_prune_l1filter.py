"""L1-norm filter pruning (Li et al. 2017): the registry's worked example of a new method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtlx_core.models import build_model
from mtlx_core.prune import __main__ as prune_cli
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.l1filter import filter_norms, l1_filter_keep
from mtlx_core.prune.presets import find_prune_preset
from mtlx_core.prune.record import PruningRecord
from mtlx_core.prune.registry import get_method

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_l1_filter_removes_the_smallest_norm_filters_of_every_group():
    torch.manual_seed(0)
    model = build_model("segnet_mtan", {"segmentation": 7, "depth": 1}, 0.125)
    conv = model.encoder_block[0][0]  # writes group enc0.first alone (8 filters)
    norms = torch.tensor([5.0, 1.0, 7.0, 2.0, 8.0, 3.0, 6.0, 4.0])
    with torch.no_grad():
        conv.weight.copy_(norms.view(8, 1, 1, 1).expand_as(conv.weight) / conv.weight[0].numel())
    plan = channel_plan(model)
    assert torch.allclose(filter_norms(model, plan)["enc0.first"], norms)
    keep = l1_filter_keep(model, plan, 0.5)
    assert keep["enc0.first"].tolist() == [0, 2, 4, 6]  # norms 5, 7, 8, 6 stay
    for g in plan.prunable():
        assert keep[g.name].numel() == g.size - min(int(g.size * 0.5), g.size - 1)


def test_l1_filter_is_a_registered_structured_method_with_a_preset():
    method = get_method("l1_filter")
    assert method.structured
    preset = find_prune_preset("demo_segnet_mtan", "l1_filter", None)
    assert preset is not None
    assert preset.sparsities == method.grid


def test_cli_prunes_with_l1_filter_and_records_it(tmp_path: Path, capsys):
    from mtlx_core.data.synth import generate_synth
    from mtlx_core.train import resolve_config, train

    generate_synth(tmp_path / "data", n_train=4, n_val=2, height=32, width=64, seed=1, progress=False)
    cfg = resolve_config("demo_segnet_mtan", data_root=str(tmp_path / "data"), iterations=1, batch_size=2,
                         width=0.0625, checkpoint_every=1, device="cpu")
    parent = train(cfg, tmp_path / "runs", progress=False).run_id
    argv = ["--from", parent, "--method", "l1_filter", "--sparsity", "0.7", "--finetune-iters", "1",
            "--models-dir", str(tmp_path / "runs"), "--no-progress"]
    assert prune_cli.main(argv) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    record = PruningRecord.from_dict(json.loads((tmp_path / "runs" / run_id / "config.json").read_text())["pruning"])
    assert (record.method, record.structured, record.preset) == ("l1_filter", True, "demo_segnet_mtan_l1_filter")
    assert record.macs_after < record.macs_before
    shares = record.removed_share()
    assert shares["trunk_encoder"] == pytest.approx(0.7, abs=0.1)  # the same rate in every group
    assert shares["heads"] == 0.0
