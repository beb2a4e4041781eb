"""A plugin model through the whole pipeline: trained by our trainer, pruned by ``python -m mtlx_core.prune``
(L1 filter, 50 %) through the channel plan derived from Torch-Pruning's graph, and reloaded at its smaller size."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtlx_core import plugins
from mtlx_core.models.plugin_model import PluginModel
from mtlx_core.models.surgery import count_params
from mtlx_core.prune import __main__ as prune_cli
from mtlx_core.prune.record import module_kind
from mtlx_core.runs import RunError, load_run
from mtlx_core.train import resolve_config, train

PLUGIN = "plug_prune_e2e"
PLUGIN_SRC = '''
import torch
from torch import nn
from mtlx_core.plugins import register_model


class ResNetLite(nn.Module):
    """Stem, a residual block (an addition couples its channels) and one head per task."""

    def __init__(self, task_channels, hidden=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.BatchNorm2d(hidden))
        self.heads = nn.ModuleDict({t: nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1),
                                                     nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, c, 1))
                                    for t, c in task_channels.items()})

    def forward(self, x):
        f = self.stem(x)
        f = torch.relu(f + self.block(f))
        return {t: h(f) for t, h in self.heads.items()}


register_model("resnet_lite", ResNetLite, explain_layer="block.3", task_modules={"{task}": ("heads.{task}",)})
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The plugin module on sys.path; the registries are restored afterwards."""
    plugins.model_names()
    for attr in ("_MODELS", "_TASKS", "_LOADED"):
        monkeypatch.setattr(plugins, attr, dict(getattr(plugins, attr)))
    monkeypatch.setattr(plugins, "_entry_points_scanned", True)  # no entry points of the environment
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    folder = tmp_path / "plugs"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_SRC)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield PLUGIN
    sys.modules.pop(PLUGIN, None)


def test_plugin_model_trains_prunes_with_the_derived_plan_and_reloads(plugin: str, tmp_path: Path,
                                                                      one_thread: None) -> None:
    from mtlx_core.data.synth import generate_synth

    generate_synth(tmp_path / "data", n_train=4, n_val=2, height=32, width=64, seed=1, progress=False)
    plugins.load_plugins([plugin], entry_points=False, env=False)
    cfg = resolve_config("demo_segnet_mtan", data_root=str(tmp_path / "data"), iterations=2, batch_size=2,
                         checkpoint_every=2, device="cpu", arch="resnet_lite", width=1.0, arch_kwargs={})
    runs = tmp_path / "runs"
    parent = train(cfg, runs, progress=False)
    dense = load_run(parent.run_id, runs).model
    assert isinstance(dense, PluginModel)
    assert dense.arch_config["plugin"] == plugin  # what load_run needs to be told to load

    assert prune_cli.main(["--from", parent.run_id, "--method", "l1_filter", "--sparsity", "0.5",
                           "--finetune-iters", "2", "--models-dir", str(runs), "--no-progress",
                           "--plugin", plugin]) == 0
    child = next(p for p in runs.iterdir() if p.name != parent.run_id and (p / "config.json").is_file())
    config = json.loads((child / "config.json").read_text())
    pruning = config["pruning"]
    assert (config["kind"], config["parent_id"], pruning["structured"]) == ("prune", parent.run_id, True)
    run = load_run(child.name, runs)
    model = run.model
    assert isinstance(model, PluginModel)
    # the residual addition ties the stem's and the block's second conv: both keep the same, smaller width
    assert model.net.stem[0].out_channels == model.net.block[3].out_channels < 8
    assert model.net.block[0].out_channels < 8
    assert {t: model.net.heads[t][3].out_channels for t in model.task_names} == dict(model.task_channels)
    assert count_params(model) == pruning["params_after"] < pruning["params_before"] == count_params(dense)
    assert pruning["channels_removed"] == pytest.approx(0.5, abs=0.15)
    kinds = {m["kind"]: m for m in pruning["removed_by_kind"]}
    assert set(kinds) == {"shared", "heads"}
    assert kinds["shared"]["after"] < kinds["shared"]["before"]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 64))
    assert {t: tuple(o.shape) for t, o in out.items()} == {t: (2, c, 32, 64) for t, c in model.task_channels.items()}


def test_module_kind_of_a_plugin_model_follows_its_declared_task_modules(plugin: str) -> None:
    from mtlx_core.models import build_model

    plugins.load_plugins([plugin], entry_points=False, env=False)
    model = build_model("resnet_lite", {"segmentation": 3, "depth": 1})
    assert module_kind("net.block.0", model) == "shared"
    assert module_kind("net.heads.depth.0", model) == "heads"
    assert module_kind("encoder_block.0.0", model) == "trunk_encoder"  # our architectures' names keep their kind
    with pytest.raises(ValueError, match="no module kind"):
        module_kind("net.block.0")


def test_a_plugin_run_without_its_plugin_names_it(plugin: str, tmp_path: Path, one_thread: None) -> None:
    from mtlx_core.data.synth import generate_synth

    generate_synth(tmp_path / "data", n_train=2, n_val=2, height=32, width=32, seed=1, progress=False)
    plugins.load_plugins([plugin], entry_points=False, env=False)
    cfg = resolve_config("demo_segnet_mtan", data_root=str(tmp_path / "data"), iterations=1, batch_size=2,
                         checkpoint_every=1, device="cpu", arch="resnet_lite", width=1.0, arch_kwargs={})
    run_id = train(cfg, tmp_path / "runs", progress=False).run_id
    plugins._MODELS.pop("resnet_lite")
    with pytest.raises(RunError, match=f"comes from plugin '{plugin}', which is not loaded"):
        load_run(run_id, tmp_path / "runs")
