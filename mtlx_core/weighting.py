"""Multi-task loss weighting: equal weights and FAMO (decision D6, algorithms section 3).

One training step with a weighting ``w = build_weighting(name, task_names, **kwargs)``::

    optimizer.zero_grad()
    losses = torch.stack([tasks[t].loss(pred[t], batch[t]) for t in task_names])   # (K,), graph attached
    total = w.backward(losses, parameters=model.shared_parameters())               # clips if max_norm is set
    optimizer.step()
    with torch.no_grad():                                                           # FAMO only; no-op for equal
        w.update(torch.stack([...losses of the same batch, re-forwarded...]))
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

EPS = 1e-8


class Weighting(ABC):
    """Turns the per-task losses ``(K,)`` into one objective and back-propagates it."""

    def __init__(self, task_names: Sequence[str], max_norm: float | None = None) -> None:
        if not task_names or len(set(task_names)) != len(task_names):
            raise ValueError(f"task_names must be non-empty and unique, got {list(task_names)}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be positive or None, got {max_norm!r}")
        self.task_names = tuple(task_names)
        self.max_norm = max_norm

    def _check(self, losses: torch.Tensor) -> None:
        if losses.dim() != 1 or losses.numel() != len(self.task_names):
            raise ValueError(f"expected losses of shape ({len(self.task_names)},) for tasks {self.task_names}, "
                             f"got {tuple(losses.shape)}")

    @abstractmethod
    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar whose gradient trains the model."""

    def backward(self, losses: torch.Tensor, parameters: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
        """Back-propagate the weighted objective; clip ``parameters``' gradient norm to ``max_norm`` afterwards.

        Returns the detached objective.
        """
        self._check(losses)
        obj = self.objective(losses)
        obj.backward()
        if self.max_norm is not None:
            if parameters is None:
                raise ValueError("max_norm is set: pass the parameters to clip to backward(losses, parameters=...)")
            torch.nn.utils.clip_grad_norm_(list(parameters), self.max_norm)
        return obj.detach()

    def update(self, new_losses: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Called after ``optimizer.step()`` with the losses of the same batch under the updated model."""

    @abstractmethod
    def weights(self) -> dict[str, float]:
        """Current effective weight of every task (the factor multiplying its loss gradient)."""

    def state_dict(self) -> dict[str, Any]:
        return {"task_names": list(self.task_names)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state.get("task_names", [])) != list(self.task_names):
            raise ValueError(f"weighting state is for tasks {state.get('task_names')}, not {list(self.task_names)}")


class EqualWeighting(Weighting):
    """Sum of the task losses (every weight 1), MTAN's "equal" and "without FAMO"."""

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.sum()

    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.task_names, 1.0)


class FAMO(Weighting):
    """Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023, https://arxiv.org/abs/2306.03792).

    Task logits ``w`` (init 0) with their own Adam (lr ``w_lr``, weight decay ``gamma``); ``z = softmax(w)``.
    Objective ``sum_i z_i log(D_i) / c`` with ``D_i = l_i - min_i + 1e-8`` and ``c = sum_i z_i / D_i`` (detached),
    so task i's gradient is weighted by ``z_i / (c D_i)`` (these sum to 1). ``update`` moves ``w`` by one Adam
    step on the gradient ``J^T delta``, ``J`` the Jacobian of softmax, ``delta_i`` the decrease of
    ``log(l_i - min_i + 1e-8)`` from ``backward`` to ``update``: tasks whose loss falls less gain weight.

    As in the reference, a task loss at (or below) its minimum makes ``D_i`` tiny and that task takes almost
    all the weight for the step; ``min_losses`` default to 0. The objective's own gradient w.r.t. ``w`` is
    discarded in the reference (``update`` overwrites it); here ``z`` is detached in the objective instead.
    """

    def __init__(self, task_names: Sequence[str], gamma: float = 0.001, w_lr: float = 0.025,
                 max_norm: float | None = None, min_losses: Sequence[float] | None = None) -> None:
        super().__init__(task_names, max_norm)
        k = len(self.task_names)
        self.w = torch.zeros(k, requires_grad=True)
        self.w_opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)
        self.min_losses = torch.zeros(k) if min_losses is None else torch.as_tensor(min_losses, dtype=torch.float32)
        if self.min_losses.shape != (k,):
            raise ValueError(f"min_losses must have {k} values, got {tuple(self.min_losses.shape)}")
        self.prev_losses: torch.Tensor | None = None
        self._last_weights: torch.Tensor | None = None

    def _d(self, losses: torch.Tensor) -> torch.Tensor:
        return losses - self.min_losses.to(losses.device, losses.dtype) + EPS

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        z = F.softmax(self.w.detach(), dim=-1).to(losses.device, losses.dtype)
        d = self._d(losses)
        c = (z / d).sum().detach()
        self.prev_losses = losses.detach().clone()
        self._last_weights = (z / (c * d)).detach()
        return (z * d.log() / c).sum()

    def update(self, new_losses: torch.Tensor) -> None:
        """One Adam step on the task logits from the log-loss decreases since ``backward``."""
        self._check(new_losses)
        if self.prev_losses is None:
            raise RuntimeError("FAMO.update called before backward")
        prev = self.prev_losses.float().cpu()
        new = new_losses.detach().float().cpu()
        delta = self._d(prev).log() - self._d(new).log()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(F.softmax(self.w, dim=-1), self.w, grad_outputs=delta)
        self.w_opt.zero_grad()
        self.w.grad = grad
        self.w_opt.step()

    def softmax_weights(self) -> dict[str, float]:
        """``z = softmax(w)``, FAMO's task weights before the per-loss normalisation."""
        z = F.softmax(self.w.detach(), dim=-1)
        return {t: float(v) for t, v in zip(self.task_names, z, strict=True)}

    def weights(self) -> dict[str, float]:
        """``z_i / (c D_i)`` of the last ``backward`` (``z`` before the first one)."""
        if self._last_weights is None:
            return self.softmax_weights()
        return {t: float(v) for t, v in zip(self.task_names, self._last_weights.cpu(), strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "w": self.w.detach().clone(),
            "w_opt": copy.deepcopy(self.w_opt.state_dict()),
            "min_losses": self.min_losses.clone(),
            "prev_losses": None if self.prev_losses is None else self.prev_losses.clone(),
            "last_weights": None if self._last_weights is None else self._last_weights.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.w_opt.load_state_dict(copy.deepcopy(state["w_opt"]))
        self.min_losses = state["min_losses"].clone()
        self.prev_losses = None if state["prev_losses"] is None else state["prev_losses"].clone()
        self._last_weights = None if state["last_weights"] is None else state["last_weights"].clone()


WEIGHTINGS: dict[str, type[Weighting]] = {"equal": EqualWeighting, "famo": FAMO}


def build_weighting(name: str, task_names: Sequence[str], **kwargs: Any) -> Weighting:
    """Weighting ``name`` for ``task_names`` (kwargs: ``max_norm``; FAMO also ``gamma``, ``w_lr``, ``min_losses``)."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; valid weightings: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](task_names, **kwargs)
