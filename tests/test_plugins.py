"""Plugins: registries of models and tasks, the ways to load a plugin, the PluginModel adapter and its checks."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core import plugins
from mtlx_core.data.augment import random_flip
from mtlx_core.data.dataset import MTLDataset
from mtlx_core.data.layout import DatasetSpec, get_dataset_spec
from mtlx_core.models import build_model, task_channels
from mtlx_core.models.layers import resolve_layer_name
from mtlx_core.models.plugin_model import PluginModel, PluginModelError
from mtlx_core.runs import RunError, load_run
from mtlx_core.tasks import TASK_NAMES, build_tasks
from mtlx_core.tasks.base import (
    DEFAULT_SCORE_OPTIONS,
    ExplanationTarget,
    MetricAccumulator,
    ScoreOptions,
    Task,
    masked_mean,
)
from mtlx_core.train.batches import eval_batches, training_batches
from mtlx_core.train.evaluate import evaluate


class TinyNet(nn.Module):
    """Conv trunk (with a depthwise conv) and one 1x1 head per task; ``drop``/``channels`` break the contract."""

    def __init__(self, task_channels: dict[str, int], hidden: int = 4, drop: str = "", extra: int = 0) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                   nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.ReLU())
        self.heads = nn.ModuleDict({t: nn.Conv2d(hidden, c + extra, 1) for t, c in task_channels.items()})
        self.drop = drop

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        return {t: h(f) for t, h in self.heads.items() if t != self.drop}


def register_tiny(name: str = "tiny", **over: object) -> plugins.ModelEntry:
    kw: dict = {"explain_layer": "trunk.3", "task_modules": {"{task}": ("heads.{task}",)}, **over}
    return plugins.register_model(name, TinyNet, **kw)


@pytest.fixture(autouse=True)
def clean_registry(plugin_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the built-in registrations only, and leaves nothing registered or loaded behind."""
    monkeypatch.setattr(plugins, "_entry_points_scanned", False)
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for plugin modules written by the test (removed from sys.modules afterwards)."""
    folder = tmp_path / "plugs"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("plug_"):
            del sys.modules[name]


PLUGIN_SRC = """
from torch import nn
from mtlx_core.plugins import register_model


class Net(nn.Module):
    def __init__(self, task_channels):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.heads = nn.ModuleDict({{t: nn.Conv2d(4, c, 1) for t, c in task_channels.items()}})

    def forward(self, x):
        f = self.body(x)
        return {{t: h(f) for t, h in self.heads.items()}}


def register():
    register_model("{name}", Net, explain_layer="body", task_modules={{"{{task}}": ("heads.{{task}}",)}})


if __name__ != "__never__" and {on_import}:
    register()
"""


def write_plugin(folder: Path, module: str, model: str, on_import: bool = True) -> None:
    (folder / f"{module}.py").write_text(PLUGIN_SRC.format(name=model, on_import=on_import))
    importlib.invalidate_caches()


# --- registries ----------------------------------------------------------------------------------------------


def test_builtin_models_and_tasks_are_registered_with_their_source() -> None:
    assert plugins.model_names()[:2] == ["segnet_mtan", "deeplab_resnet34"]
    assert plugins.get_model_entry("segnet_mtan").source == plugins.BUILTIN
    assert plugins.get_model_entry("segnet_mtan").input_multiple == 32
    assert tuple(plugins.task_names()[:3]) == TASK_NAMES
    assert plugins.get_task_entry("depth").source == plugins.BUILTIN


def test_unknown_model_and_task_errors_list_registered_names_and_sources() -> None:
    register_tiny()
    # other test modules of the same process may have registered their own models before this one
    with pytest.raises(ValueError, match=r"valid models: segnet_mtan, deeplab_resnet34, (\w+, )*tiny[,( ].*"
                                         r"registered: segnet_mtan from mtlx_core \(built in\).*tiny from test_\w+"):
        build_model("resnet50", {"segmentation": 3})
    with pytest.raises(ValueError, match=r"unknown task 'edges' for dataset 'synth'; valid tasks: segmentation, "
                                         r"depth, normals; registered tasks: segmentation \(mtlx_core"):
        build_tasks(plugins_spec(), ["edges"])


def test_registering_another_factory_under_a_taken_name_names_the_first_source() -> None:
    entry = register_tiny()
    assert register_tiny() is entry  # the same registration again is a no-op
    with pytest.raises(plugins.PluginError, match="model 'tiny' is already registered by test_plugins"):
        plugins.register_model("tiny", lambda tc: TinyNet(tc), explain_layer="trunk.3", task_modules={})


# --- PluginModel -----------------------------------------------------------------------------------------------


def test_plugin_model_wraps_the_module_with_declared_ownership_layers_and_config() -> None:
    register_tiny()
    model = build_model("tiny", {"depth": 1, "segmentation": 3}, hidden=6)
    assert isinstance(model, PluginModel)
    assert model.task_names == ("segmentation", "depth")
    out = model(torch.rand(2, 3, 16, 24))
    assert {t: tuple(y.shape) for t, y in out.items()} == {"segmentation": (2, 3, 16, 24), "depth": (2, 1, 16, 24)}
    assert model.module_owner("net.heads.depth.weight") == "depth"
    assert model.module_owner("net.trunk.0.weight") == "shared"
    assert [p.shape for p in model.task_parameters("depth")] == [torch.Size([1, 6, 1, 1]), torch.Size([1])]
    assert resolve_layer_name(model, None, "depth") == "net.trunk.3"
    assert model.arch_config == {"arch": "tiny", "task_channels": {"segmentation": 3, "depth": 1}, "width": 1.0,
                                 "plugin": "test_plugins", "hidden": 6}


def test_per_task_explain_layers_resolve_per_task() -> None:
    register_tiny(explain_layer={"segmentation": "trunk.0", "depth": "trunk.3"})
    model = build_model("tiny", {"segmentation": 3, "depth": 1})
    assert resolve_layer_name(model, None, "segmentation") == "net.trunk.0"
    assert resolve_layer_name(model, "d11", "depth") == "net.trunk.3"
    with pytest.raises(ValueError, match="per task"):
        resolve_layer_name(model, None)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"drop": "depth"}, r"missing: \['depth'\]"),
    ({"extra": 1}, "output of task 'segmentation' has 4 channels, declared 3"),
])
def test_outputs_that_do_not_match_the_declared_tasks_say_which(kwargs: dict, message: str) -> None:
    register_tiny()
    with pytest.raises(PluginModelError, match=message):
        build_model("tiny", {"segmentation": 3, "depth": 1}, **kwargs)


def test_output_at_another_size_than_the_input_is_rejected() -> None:
    def factory(tc: dict[str, int]) -> nn.Module:
        net = TinyNet(tc)
        net.trunk.append(nn.MaxPool2d(2))
        return net

    plugins.register_model("half", factory, explain_layer="trunk.3", task_modules={})
    with pytest.raises(PluginModelError, match=r"output of task 'depth' is \(16, 16\), it must be at the input size"):
        build_model("half", {"depth": 1})


def test_missing_explain_layer_lists_candidates_and_unknown_task_modules_are_errors() -> None:
    register_tiny("badlayer", explain_layer="trunk.9")
    with pytest.raises(PluginModelError, match=r"explain layer 'trunk.9' does not exist; closest: .*trunk.3"):
        build_model("badlayer", {"depth": 1})
    register_tiny("badmods", task_modules={"depth": ("head.depth",)})
    with pytest.raises(PluginModelError, match=r"task_modules\['depth'\] names module 'head.depth', which does not "
                                               r"exist; closest: heads.depth"):
        build_model("badmods", {"depth": 1})


# --- loading plugins -------------------------------------------------------------------------------------------


def test_env_var_and_module_list_load_plugins_once(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "plug_a", "model_a")
    write_plugin(plugin_dir, "plug_b", "model_b")
    monkeypatch.setenv(plugins.ENV_VAR, " plug_b , ")
    assert plugins.load_plugins(["plug_a"]) == ["plug_a", "plug_b"]
    assert plugins.load_plugins(["plug_a"]) == []
    assert plugins.get_model_entry("model_a").source == "--plugin plug_a"
    assert plugins.get_model_entry("model_b").source == "MTLX_PLUGINS=plug_b"


def test_entry_points_register_by_module_or_by_callable(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "plug_ep", "model_ep")
    write_plugin(plugin_dir, "plug_call", "model_call", on_import=False)
    eps = [importlib.metadata.EntryPoint("ep", "plug_ep", plugins.ENTRY_POINT_GROUP),
           importlib.metadata.EntryPoint("call", "plug_call:register", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [e for e in eps if e.group == kw.get("group")])
    entry = plugins.get_model_entry("model_call")  # an unknown name loads the entry points once
    assert entry.source == "entry point call = plug_call:register"
    assert plugins.get_model_entry("model_ep").source == "entry point ep = plug_ep"


def test_a_plugin_that_fails_to_import_is_named(plugin_dir: Path) -> None:
    (plugin_dir / "plug_broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(plugins.PluginError, match=r"plugin 'plug_broken' \(--plugin plug_broken\) failed to import: "
                                                  r"RuntimeError: boom"):
        plugins.load_plugins(["plug_broken"])


def test_every_cli_takes_plugin(plugin_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mtlx_core.data.__main__ import _parser as data_parser
    from mtlx_core.demo import build_parser as demo_parser
    from mtlx_core.precompute.__main__ import build_parser as precompute_parser
    from mtlx_core.prune.__main__ import build_parser as prune_parser
    from mtlx_core.report.__main__ import build_parser as report_parser
    from mtlx_core.train.__main__ import build_parser as train_parser
    from mtlx_core.verify import main as verify_main

    for parser in (data_parser, demo_parser, precompute_parser, prune_parser, report_parser, train_parser):
        flags = [a for a in parser()._actions if a.option_strings == ["--plugin"]]
        assert len(flags) == 1, parser.__module__
        assert isinstance(flags[0], argparse._AppendAction), parser.__module__
    write_plugin(plugin_dir, "plug_cli", "model_cli")
    from mtlx_core.data.__main__ import main as data_main

    empty = tmp_path / "nodata"
    assert data_main(["--plugin", "plug_cli", "check", str(empty), "--dataset", "synth"]) == 2  # no data: exit 2
    assert plugins.get_model_entry("model_cli").source == "--plugin plug_cli"
    with caplog.at_level(logging.ERROR):
        assert verify_main(["--store", str(tmp_path / "s.duckdb"), "--plugin", "plug_missing"]) == 2
    assert "plugin 'plug_missing' (--plugin plug_missing) failed to import" in caplog.text


# --- a registered task ------------------------------------------------------------------------------------------


class EdgeAccuracy(MetricAccumulator):
    def __init__(self) -> None:
        self.right = self.total = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.right += int(((pred > 0).float() == target).sum())
        self.total += target.numel()

    def compute(self) -> dict[str, float]:
        return {"edge_acc": self.right / self.total}


class EdgeTask(Task):
    """Binary edges of the segmentation labels (a pixel whose left or upper neighbour has another label)."""

    name = "edges"
    higher_is_better: ClassVar[dict[str, bool]] = {"edge_acc": True}
    primary_metric = "edge_acc"
    sources = ("segmentation",)

    @property
    def out_channels(self) -> int:
        return 1

    def derive_target(self, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        seg = labels["segmentation"]
        edge = torch.zeros(seg.shape, dtype=torch.bool)
        edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
        edge[1:, :] |= seg[1:, :] != seg[:-1, :]
        return edge.float()[None]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(pred, target)

    def new_metric(self) -> EdgeAccuracy:
        return EdgeAccuracy()

    def explanation_targets(self, pred: torch.Tensor) -> list[ExplanationTarget]:
        on = pred.detach()[0] > 0
        return [ExplanationTarget(self.name, i, n, m, "sign") for i, n, m in ((0, "flat", ~on), (1, "edge", on))
                if m.any()]

    def gradcam_objective(self, pred: torch.Tensor, target: ExplanationTarget) -> torch.Tensor:
        return (1 if target.target_id else -1) * (pred[0] * target.mask).sum()

    def perturbation_score(self, pred: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor,
                           target_ids: torch.Tensor, options: ScoreOptions = DEFAULT_SCORE_OPTIONS) -> torch.Tensor:
        p = torch.sigmoid(pred[:, 0])
        return masked_mean(torch.where(target_ids.view(-1, 1, 1) == 1, p, 1 - p), masks)


def plugins_spec() -> DatasetSpec:
    return get_dataset_spec("synth")


def write_frames(root: Path, n: int = 2, size: int = 32) -> None:
    for split in ("train", "val"):
        for i in range(n):
            label = np.zeros((size, size), np.float32)
            label[:, size // 2:] = 3
            arrays = {"image": np.random.default_rng(i).random((size, size, 3)).astype(np.float32), "label": label,
                      "depth": np.full((size, size, 1), 2.0, np.float32),
                      "normal": np.tile(np.array([0, 0, 1], np.float32), (size, size, 1))}
            for folder, arr in arrays.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", arr)


def test_registered_task_derives_its_target_and_runs_loss_metrics_explanations_and_scores(tmp_path: Path) -> None:
    from mtlx_core.explain import explain

    plugins.register_task("edges", lambda spec: EdgeTask())
    register_tiny()
    write_frames(tmp_path)
    ds = MTLDataset(tmp_path, "synth", "val", tasks=("edges", "depth"))
    sample = ds[0]
    expected = torch.zeros(1, 32, 32)
    expected[0, :, 16] = 1
    assert torch.equal(sample["edges"], expected)
    tasks = build_tasks(ds.spec, ["edges", "depth"])
    assert list(tasks) == ["depth", "edges"]
    torch.manual_seed(0)
    model = build_model("tiny", task_channels(tasks)).eval()
    assert model.task_names == ("depth", "edges")
    batch = next(iter(eval_batches(ds, 2)))
    out = model(batch["image"])
    assert torch.isfinite(tasks["edges"].loss(out["edges"], batch["edges"]))
    metrics = evaluate(model, ds, tasks)
    assert set(metrics) == {"depth", "edges"}
    assert 0 <= metrics["edges"]["edge_acc"] <= 1
    exps = explain(model, batch["image"], tasks["edges"])
    targets = [t for i in range(2) for t in tasks["edges"].explanation_targets(out["edges"][i])]
    assert sorted(e.target.name for e in exps) == sorted(t.name for t in targets)
    assert exps[0].map_input.shape == (32, 32)
    t = targets[0]
    score = tasks["edges"].perturbation_score(out["edges"][:1], out["edges"][:1], t.mask[None],
                                              torch.tensor([t.target_id]))
    assert score.shape == (1,)
    assert 0 <= float(score.detach()) <= 1


def test_derived_targets_follow_the_augmented_labels(tmp_path: Path) -> None:
    plugins.register_task("edges", lambda spec: EdgeTask())
    write_frames(tmp_path)
    ds = MTLDataset(tmp_path, "synth", "train", tasks=("edges",))

    def flip(sample: dict, g: torch.Generator) -> dict:
        label = sample["segmentation"].clone()
        label[:, :8] = 5  # a second boundary, at column 8, that only the augmented labels have
        return random_flip({**sample, "segmentation": label}, g, flip=True)

    batch = next(iter(training_batches(ds, 1, 0, 0, 1, flip)))
    assert torch.equal(batch["edges"][0], EdgeTask().derive_target({"segmentation": batch["segmentation"][0]}))
    assert batch["edges"][0, 0, 0].nonzero().flatten().tolist() == [16, 24]


# --- runs ----------------------------------------------------------------------------------------------------


def test_load_run_rebuilds_a_plugin_model_and_names_the_plugin_when_it_is_not_loaded(tmp_path: Path) -> None:
    register_tiny()
    torch.manual_seed(0)
    model = build_model("tiny", {"segmentation": 3, "depth": 1}, hidden=5).eval()
    run = tmp_path / "run1"
    run.mkdir()
    torch.save(model.state_dict(), run / "model.pt")
    (run / "config.json").write_text(json.dumps({"architecture": model.arch_config}))
    (run / "metrics.json").write_text("{}")
    loaded = load_run("run1", tmp_path).model
    x = torch.rand(1, 3, 32, 32)
    assert isinstance(loaded, PluginModel)
    assert torch.equal(loaded(x)["depth"], model(x)["depth"])
    del plugins._MODELS["tiny"]
    with pytest.raises(RunError, match=r"model 'tiny' comes from plugin 'test_plugins', which is not loaded: load "
                                       r"the plugin that registers it with --plugin MODULE"):
        load_run("run1", tmp_path)
