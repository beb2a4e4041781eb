"""External checkpoints of a registered model: plain, structurally pruned, torch.nn.utils.prune, Torch-Pruning."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from mtlx_core import plugins
from mtlx_core.models.external import ExternalCheckpointError, load_external_checkpoint
from mtlx_core.models.plugin_model import PluginModel

TASKS = {"segmentation": 3, "depth": 1}


class TinyNet(nn.Module):
    """Conv trunk with a depthwise and (optionally) a grouped conv, and one 1x1 head per task."""

    def __init__(self, task_channels: dict[str, int], hidden: int = 8, grouped: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                   nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.BatchNorm2d(hidden),
                                   nn.ReLU()]
        if grouped:
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1, groups=2), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({t: nn.Conv2d(hidden, c, 1) for t, c in task_channels.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x)
        return {t: h(f) for t, h in self.heads.items()}


@pytest.fixture(autouse=True)
def tiny_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins.model_names()
    monkeypatch.setattr(plugins, "_MODELS", dict(plugins._MODELS))
    plugins.register_model("tinyext", TinyNet, explain_layer="trunk.3", task_modules={"{task}": ("heads.{task}",)})


def trained(hidden: int = 8, grouped: bool = True, seed: int = 0) -> TinyNet:
    """A TinyNet with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    net = TinyNet(TASKS, hidden, grouped)
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, 32, 32))
    return net.eval()


def same_outputs(model: nn.Module, net: nn.Module) -> bool:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), net(x)
    return all(torch.allclose(a[t], b[t], atol=1e-6) for t in TASKS)


def files(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*")}


def test_plain_state_dict_and_its_wrappers_load_unchanged(tmp_path: Path) -> None:
    net = trained()
    sd = net.state_dict()
    for i, obj in enumerate([sd, {"state_dict": sd, "epoch": 3}, {"model": sd},
                             {f"module.{k}": v for k, v in sd.items()}]):
        path = tmp_path / f"c{i}.pt"
        torch.save(obj, path)
        model, info = load_external_checkpoint("tinyext", TASKS, path)
        assert isinstance(model, PluginModel)
        assert not model.training
        assert same_outputs(model, net)
        assert (info.format, info.weight_sparsity, info.channel_sparsity) == ("plain", 0.0, 0.0)
        assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert info.params == sum(p.numel() for p in net.parameters())


def test_structurally_pruned_checkpoint_rebuilds_grouped_and_depthwise_convs(tmp_path: Path) -> None:
    small = trained(hidden=6)  # 8 -> 6 channels everywhere: conv, BN, depthwise (groups 6), grouped (groups 2)
    torch.save(small.state_dict(), tmp_path / "pruned.pt")
    model, info = load_external_checkpoint("tinyext", TASKS, tmp_path / "pruned.pt")
    assert (model.net.trunk[3].groups, model.net.trunk[3].in_channels) == (6, 6)
    assert (model.net.trunk[6].groups, model.net.trunk[6].in_channels) == (2, 6)
    assert same_outputs(model, small)
    assert info.format == "structured"
    dense = 8 + 8 + 8 + 3 + 1  # output channels of the factory's convs
    assert info.channel_sparsity == pytest.approx(1 - (6 + 6 + 6 + 3 + 1) / dense)


def test_torch_nn_utils_prune_pairs_are_folded(tmp_path: Path) -> None:
    net = trained()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for m in convs:
        prune.l1_unstructured(m, "weight", amount=0.5)
    sd = net.state_dict()
    assert any(k.endswith("weight_orig") for k in sd)
    assert any(k.endswith("weight_mask") for k in sd)
    torch.save(sd, tmp_path / "masked.pt")
    model, info = load_external_checkpoint("tinyext", TASKS, tmp_path / "masked.pt")
    assert info.format == "torch_prune"
    assert same_outputs(model, net)
    zeros = sum(int((m.weight == 0).sum()) for m in convs)
    assert info.weight_sparsity == pytest.approx(zeros / sum(m.weight.numel() for m in convs))
    assert info.weight_sparsity > 0.45


def torch_pruned() -> TinyNet:
    net = trained(grouped=False)
    pruner = tp.pruner.BasePruner(net, torch.rand(1, 3, 32, 32), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=list(net.heads.values()))
    pruner.step()
    assert net.trunk[3].groups == net.trunk[0].out_channels == 4  # the depthwise conv followed its input
    return net.eval()


def test_torch_pruning_outputs_load_as_state_dict_and_as_its_own_state_dict(tmp_path: Path) -> None:
    plugins._MODELS.pop("tinyext")
    plugins.register_model("tinyext", lambda tc: TinyNet(tc, grouped=False), explain_layer="trunk.3",
                           task_modules={"{task}": ("heads.{task}",)})
    net = torch_pruned()
    torch.save(net.state_dict(), tmp_path / "tp_sd.pt")
    tp.save(tp.state_dict(net), tmp_path / "tp_full.pt")
    with pytest.raises(Exception, match="Unsupported global"):  # not loadable with weights_only as it is
        torch.load(tmp_path / "tp_full.pt", weights_only=True)
    for name, fmt in (("tp_sd.pt", "structured"), ("tp_full.pt", "torch_pruning")):
        model, info = load_external_checkpoint("tinyext", TASKS, tmp_path / name)
        assert info.format == fmt
        assert same_outputs(model, net)
        assert info.channel_sparsity == pytest.approx(1 - (4 + 4 + 3 + 1) / (8 + 8 + 3 + 1))


def test_a_pickled_whole_model_is_refused_with_how_to_save_weights(tmp_path: Path) -> None:
    torch.save(trained(), tmp_path / "whole.pt")
    with pytest.raises(ExternalCheckpointError, match=r"pickled model .*TinyNet.*torch.save\(model.state_dict\(\)"):
        load_external_checkpoint("tinyext", TASKS, tmp_path / "whole.pt")


def test_errors_name_the_first_missing_and_unexpected_keys_and_unbuildable_shape_and_write_nothing(
        tmp_path: Path) -> None:
    sd = trained().state_dict()
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "trunk.0.bias"},
                    r"1 missing key\(s\), first 'trunk.0.bias'; no unexpected key"),
        "unexpected": ({**sd, "extra.weight": torch.zeros(1)},
                       r"no missing key; 1 unexpected key\(s\), first 'extra.weight'"),
        "kernel": ({**sd, "trunk.0.weight": torch.zeros(8, 3, 5, 5)}, r"trunk.0.weight has kernel \(5, 5\)"),
        "depthwise": ({**sd, "trunk.3.weight": torch.zeros(6, 2, 3, 3)},
                      r"cannot rebuild the depthwise conv trunk.3"),
        "grouped": ({**sd, "trunk.6.weight": torch.zeros(5, 4, 3, 3)},
                    r"5 output channels do not divide into its 2 groups"),
        "bias": ({**sd, "trunk.0.bias": torch.zeros(7)},
                 r"cannot rebuild 'trunk.0.bias' \(Conv2d\) to the checkpoint's shape \(7,\)"),
    }
    for name, (state, _) in cases.items():
        torch.save(state, tmp_path / f"{name}.pt")
    before = files(tmp_path)
    for name, (_, message) in cases.items():
        with pytest.raises(ExternalCheckpointError, match=message):
            load_external_checkpoint("tinyext", TASKS, tmp_path / f"{name}.pt")
    assert files(tmp_path) == before
    with pytest.raises(ExternalCheckpointError, match="does not exist"):
        load_external_checkpoint("tinyext", TASKS, tmp_path / "absent.pt")
