"""Training-budget controls (issue 18): the dense model fine-tuned with exactly the pruned models' schedule at 0 %."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtlx_core.models.surgery import count_params
from mtlx_core.prune import control_run, prune_run
from mtlx_core.prune.masks import weight_sparsity
from mtlx_core.prune.record import PruningRecord
from mtlx_core.runs import load_run
from mtlx_core.train import resolve_config, train


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def parents(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    from mtlx_core.data.synth import generate_synth

    root = tmp_path_factory.mktemp("control")
    data = root / "data"
    generate_synth(data, n_train=4, n_val=2, height=32, width=64, seed=1, progress=False)
    out = {}
    for preset in ("demo_deeplab", "demo_segnet_mtan_famo"):
        kw = {"arch_kwargs": {"head_hidden": 8}} if preset == "demo_deeplab" else {}
        cfg = resolve_config(preset, data_root=str(data), iterations=2, batch_size=2, width=0.0625,
                             checkpoint_every=2, device="cpu", **kw)
        out[preset] = train(cfg, root / "runs", progress=False).run_id
    return root / "runs", out


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


@pytest.mark.parametrize(("preset", "method", "variant"), [("demo_segnet_mtan_famo", "netslim", None),
                                                           ("demo_deeplab", "disparse", "magnitude"),
                                                           ("demo_deeplab", "hrank", None)])
def test_control_fine_tunes_with_exactly_the_pruned_runs_training_config(parents, preset: str, method: str,
                                                                          variant: str | None) -> None:
    models, ids = parents
    pruned = prune_run(ids[preset], method, 0.5, variant=variant, finetune_iterations=2, models_dir=models)
    control = control_run(ids[preset], method, variant=variant, finetune_iterations=2, models_dir=models)
    p, c = _config(pruned.path), _config(control.path)
    assert c["train"] == p["train"]  # iterations, lr, schedule, bn_l1, optimizer, weighting, seed: all of it
    assert (c["kind"], c["role"], c["parent_id"]) == ("control", "control", ids[preset])
    rec = PruningRecord.from_dict(c["pruning"])
    assert (rec.method, rec.target_sparsity, rec.achieved_sparsity) == ("control", 0.0, 0.0)
    assert rec.details["control_of"] == method
    assert rec.finetune == PruningRecord.from_dict(p["pruning"]).finetune
    dense = load_run(ids[preset], models).model
    run = load_run(control.run_id, models).model
    assert count_params(run) == count_params(dense) == rec.params_after == rec.params_before
    assert weight_sparsity(run) < 0.01  # nothing masked


def test_netslim_decoupled_control_has_no_bn_l1_while_fine_tuning(parents, tmp_path: Path) -> None:
    from mtlx_core.prune.netslim import netslim_training

    models, _ = parents
    base = resolve_config("demo_segnet_mtan_famo")
    cfg = resolve_config("demo_segnet_mtan_famo", data_root=str(models.parent / "data"), iterations=2, batch_size=2,
                         width=0.0625, checkpoint_every=2, device="cpu", **netslim_training(base, "decoupled"))
    parent = train(cfg, tmp_path, progress=False).run_id
    assert cfg.bn_l1 > 0
    control = control_run(parent, "netslim", variant="decoupled", finetune_iterations=2, models_dir=tmp_path)
    assert _config(control.path)["train"]["bn_l1"] == 0.0


def test_control_run_is_idempotent(parents) -> None:
    models, ids = parents
    first = control_run(ids["demo_deeplab"], "disparse", variant="magnitude", finetune_iterations=2,
                        models_dir=models)
    stamp = (first.path / "model.pt").stat().st_mtime_ns
    again = control_run(ids["demo_deeplab"], "disparse", variant="magnitude", finetune_iterations=2,
                        models_dir=models)
    assert again.run_id == first.run_id
    assert (again.path / "model.pt").stat().st_mtime_ns == stamp


def test_control_of_an_unknown_method_lists_the_valid_ones(parents) -> None:
    models, ids = parents
    with pytest.raises(ValueError, match="valid methods: disparse, netslim, hrank, l1_filter"):
        control_run(ids["demo_deeplab"], "nope", models_dir=models)
