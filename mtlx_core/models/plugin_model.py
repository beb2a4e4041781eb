"""``PluginModel``: a registered model (``mtlx_core.plugins.register_model``) as a ``MultiTaskModel``.

The user's module is held as ``self.net`` (its parameters are ``net.<name>``); the forward returns the user's
dict, tasks in the canonical order, normals scaled to unit length (``finish_prediction``). Ownership of modules
comes from the declared ``task_modules`` (a module and everything under it belongs to its task; the rest is
shared), Grad-CAM layers from ``explain_layer`` (one module for every task, or one per task), and
``arch_config`` records the model name, task channels, factory arguments and the plugin, so ``load_run`` rebuilds
it once the plugin is loaded.

At build time a forward of a ``1 x 3 x S x S`` zero image (``S`` the smallest multiple of ``input_multiple``
that is at least 32) must return exactly the declared tasks with the declared channels at ``S x S``; an explain
layer or task module that does not exist lists the module names it could be.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mtlx_core.models.base import SHARED, MultiTaskModel, finish_prediction
from mtlx_core.plugins import ModelEntry, plugin_module

logger = logging.getLogger(__name__)

PREFIX = "net."
#: smallest side of the build-time check's dummy input
CHECK_SIZE = 32


class PluginModelError(ValueError):
    """A registered model that does not honour its declaration (outputs, layers, task modules)."""


def _candidates(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.4)
    shown = close or names[:30]
    more = "" if close or len(names) <= 30 else f", ... ({len(names)} modules)"
    return f"{'closest' if close else 'candidates'}: {', '.join(shown) or 'none'}{more}"


class PluginModel(MultiTaskModel):
    """A registered plugin model wrapped as a ``MultiTaskModel`` (see the module docstring)."""

    def __init__(self, entry: ModelEntry, task_channels: Mapping[str, int], width: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(task_channels, width, **kwargs)
        self.entry = entry
        self.arch_name = entry.name
        self.input_multiple = entry.input_multiple
        factory_kwargs = {**kwargs, **({} if self.width == 1.0 else {"width": width})}
        try:
            net = entry.factory(dict(self.task_channels), **factory_kwargs)
        except Exception as exc:
            raise PluginModelError(f"model {entry.name!r} ({entry.source}): factory(task_channels="
                                   f"{self.task_channels}, **{factory_kwargs}) failed: {type(exc).__name__}: "
                                   f"{exc}") from exc
        if not isinstance(net, nn.Module):
            raise PluginModelError(f"model {entry.name!r} ({entry.source}): factory returned "
                                   f"{type(net).__name__}, not an nn.Module")
        self.net = net
        self.arch_config = {"arch": entry.name, "task_channels": dict(self.task_channels), "width": self.width,
                            "plugin": plugin_module(entry.source), **kwargs}
        try:
            json.dumps(self.arch_config)
        except TypeError as exc:
            raise PluginModelError(f"model {entry.name!r}: model arguments must be JSON values (they are recorded "
                                   f"to rebuild the model): {exc}") from exc
        names = [n for n, _ in net.named_modules() if n]
        self.owned: dict[str, tuple[str, ...]] = self._task_modules(entry, names)
        layers = self._explain_layers(entry, names)
        self.default_gradcam_layer = next(iter(layers.values()))
        self.task_gradcam_layers = layers if isinstance(entry.explain_layer, Mapping) else {}
        self.check_outputs()

    # --- declaration checks -------------------------------------------------------------------------------

    def _task_modules(self, entry: ModelEntry, names: list[str]) -> dict[str, tuple[str, ...]]:
        owned: dict[str, tuple[str, ...]] = {}
        claimed: dict[str, str] = {}
        for task in self.task_names:
            declared = [*entry.task_modules.get(task, ()),
                        *(m.format(task=task) for m in entry.task_modules.get("{task}", ()))]
            for m in declared:
                if m not in names:
                    raise PluginModelError(f"model {entry.name!r}: task_modules[{task!r}] names module {m!r}, "
                                           f"which does not exist; {_candidates(m, names)}")
                if m in claimed and claimed[m] != task:
                    raise PluginModelError(f"model {entry.name!r}: module {m!r} is declared for tasks "
                                           f"{claimed[m]!r} and {task!r}; a task module belongs to one task")
                claimed[m] = task
            owned[task] = tuple(declared)
        return owned

    def _explain_layers(self, entry: ModelEntry, names: list[str]) -> dict[str, str]:
        spec = entry.explain_layer
        if isinstance(spec, Mapping):
            missing = [t for t in self.task_names if t not in spec]
            if missing:
                raise PluginModelError(f"model {entry.name!r}: explain_layer has no layer for task(s) "
                                       f"{', '.join(missing)} (it names {', '.join(spec)})")
            wanted = {t: spec[t] for t in self.task_names}
        else:
            wanted = dict.fromkeys(self.task_names, spec)
        for layer in dict.fromkeys(wanted.values()):
            if layer not in names:
                raise PluginModelError(f"model {entry.name!r}: explain layer {layer!r} does not exist; "
                                       f"{_candidates(layer, names)}")
        return {t: PREFIX + layer for t, layer in wanted.items()}

    def check_size(self) -> int:
        """Side of the build-time check's input: the smallest multiple of ``input_multiple`` >= 32."""
        return self.input_multiple * math.ceil(CHECK_SIZE / self.input_multiple)

    def check_outputs(self) -> None:
        """Forward a zero image; the outputs must be exactly the declared tasks, channels and input size."""
        s = self.check_size()
        param = next(self.parameters(), None)
        x = torch.zeros(1, 3, s, s, device=param.device if param is not None else None,
                        dtype=param.dtype if param is not None else None)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.net(x)
        except Exception as exc:
            raise PluginModelError(f"model {self.arch_name!r}: forward of a 1x3x{s}x{s} input failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.train(was_training)
        if not isinstance(out, Mapping):
            raise PluginModelError(f"model {self.arch_name!r}: forward must return a dict task -> tensor, "
                                   f"got {type(out).__name__}")
        missing = [t for t in self.task_names if t not in out]
        extra = [str(k) for k in out if k not in self.task_channels]
        if missing or extra:
            raise PluginModelError(f"model {self.arch_name!r}: outputs {sorted(map(str, out))} do not match the "
                                   f"declared tasks {list(self.task_names)} (missing: {missing or 'none'}; "
                                   f"undeclared: {extra or 'none'})")
        for t in self.task_names:
            y = out[t]
            if not isinstance(y, torch.Tensor) or y.dim() != 4:
                raise PluginModelError(f"model {self.arch_name!r}: output of task {t!r} must be a (B, C, H, W) "
                                       f"tensor, got {getattr(y, 'shape', type(y).__name__)}")
            if y.shape[1] != self.task_channels[t]:
                raise PluginModelError(f"model {self.arch_name!r}: output of task {t!r} has {y.shape[1]} "
                                       f"channels, declared {self.task_channels[t]}")
            if tuple(y.shape[-2:]) != (s, s):
                raise PluginModelError(f"model {self.arch_name!r}: output of task {t!r} is "
                                       f"{tuple(y.shape[-2:])}, it must be at the input size ({s}, {s})")

    # --- MultiTaskModel -----------------------------------------------------------------------------------

    def module_owner(self, name: str) -> str:
        """The task whose declared module holds ``name`` (a module or parameter name), else ``"shared"``."""
        if not name.startswith(PREFIX):
            return SHARED
        rel = name[len(PREFIX):]
        for task, modules in self.owned.items():
            for m in modules:
                if rel == m or rel.startswith(m + "."):
                    return task
        return SHARED

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {t: finish_prediction(t, out[t]) for t in self.task_names}
