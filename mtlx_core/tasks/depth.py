"""Depth (metres, or inverse depth for Cityscapes): L1 on valid pixels, pooled abs and relative error."""

from __future__ import annotations

from typing import ClassVar

import torch

from mtlx_core.tasks.base import (
    DEFAULT_SCORE_OPTIONS,
    ExplanationTarget,
    MetricAccumulator,
    ScoreOptions,
    Task,
    masked_mean,
)

#: explanation bins of the clean predicted depth (D13) and their valid modes
N_DEPTH_BINS = 5
DEPTH_BIN_MODES: tuple[str, ...] = ("equal_width", "empirical_quantile")
#: floor of |d_0| in the relative error of the depth IROF scalar (D17)
REL_EPS = 1e-6
#: share of the clean prediction's range used as the floor in ``depth_floor="range"`` (D29)
RANGE_FLOOR = 0.01


def valid_depth(target: torch.Tensor) -> torch.Tensor:
    """Mask ``(B, 1, H, W)`` of pixels with a depth measurement (``0`` = invalid)."""
    return target.sum(dim=1, keepdim=True) != 0


class DepthErrors(MetricAccumulator):
    """Absolute and relative error pooled over every valid pixel of a split."""

    def __init__(self) -> None:
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        mask = valid_depth(target)
        p = pred.detach()[mask].double().cpu()
        g = target[mask].double().cpu()
        err = (p - g).abs()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / g.abs()).sum())
        self.count += int(mask.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"abs_err": float("nan"), "rel_err": float("nan")}
        return {"abs_err": self.abs_sum / self.count, "rel_err": self.rel_sum / self.count}


class DepthTask(Task):
    """Dense depth regression; ``kind`` is ``metric`` (metres) or ``inverse`` (Cityscapes).

    ``bins`` chooses the explanation bins (D13): ``equal_width`` (the clean prediction min-max normalised to
    [0, 1], five bins of width 0.2, the last one closed) or ``empirical_quantile`` (per-image quintiles of the
    clean prediction, the authors' code).
    """

    name = "depth"
    higher_is_better: ClassVar[dict[str, bool]] = {"abs_err": False, "rel_err": False}
    primary_metric = "rel_err"
    display_name = "Depth"
    display_kind = "scalar"

    def __init__(self, kind: str = "metric", bins: str = "equal_width") -> None:
        if kind not in ("metric", "inverse"):
            raise ValueError(f"unknown depth kind {kind!r}; valid kinds: metric, inverse")
        if bins not in DEPTH_BIN_MODES:
            raise ValueError(f"unknown depth bin mode {bins!r}; valid modes: {', '.join(DEPTH_BIN_MODES)}")
        self.kind = kind
        self.bins = bins

    @property
    def out_channels(self) -> int:
        return 1

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = valid_depth(target).to(pred.dtype)
        n = mask.sum()
        if n == 0:
            return pred.sum() * 0.0
        return ((pred - target).abs() * mask).sum() / n

    def new_metric(self) -> DepthErrors:
        return DepthErrors()

    # --- explanations -----------------------------------------------------------------------------------

    def bin_name(self, q: int) -> str:
        """Stable display name of bin ``q``: ``bin 2 [0.4, 0.6)`` or, for quantile bins, ``bin 2 [p40, p60)``."""
        close = "]" if q == N_DEPTH_BINS - 1 else ")"
        if self.bins == "equal_width":
            return f"bin {q} [{q / N_DEPTH_BINS:.1f}, {(q + 1) / N_DEPTH_BINS:.1f}{close}"
        step = 100 // N_DEPTH_BINS
        return f"bin {q} [p{q * step}, p{(q + 1) * step}{close}"

    def bin_index(self, depth: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """Bin of every pixel of a clean depth map ``(H, W)`` and the six edges in depth units (D13)."""
        d = depth.detach().double()
        if self.bins == "equal_width":
            lo, hi = d.min(), d.max()
            span = hi - lo
            z = (d - lo) / span if span > 0 else torch.zeros_like(d)
            idx = (z * N_DEPTH_BINS).floor().clamp(0, N_DEPTH_BINS - 1).long()
            edges = [float(lo + span * q / N_DEPTH_BINS) for q in range(N_DEPTH_BINS + 1)]
            return idx, edges
        qs = torch.quantile(d.flatten(), torch.linspace(0, 1, N_DEPTH_BINS + 1, dtype=torch.float64))
        idx = torch.searchsorted(qs[1:-1].contiguous(), d.contiguous(), right=True)
        return idx, [float(v) for v in qs]

    def explanation_targets(self, pred: torch.Tensor) -> list[ExplanationTarget]:
        """One target per non-empty bin of the clean predicted depth (D13)."""
        idx, edges = self.bin_index(pred[0])
        return [ExplanationTarget(self.name, q, self.bin_name(q), idx == q, self.bins, (edges[q], edges[q + 1]))
                for q in torch.unique(idx).tolist()]

    def gradcam_objective(self, pred: torch.Tensor, target: ExplanationTarget) -> torch.Tensor:
        """Sum of the predicted depth over the bin's clean pixels (D13)."""
        return (pred[0] * target.mask).sum()

    def perturbation_score(self, pred: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor,
                           target_ids: torch.Tensor, options: ScoreOptions = DEFAULT_SCORE_OPTIONS) -> torch.Tensor:
        """``1 - mean(clip(|d - d0| / max(|d0|, eps), 0, 1))`` over the bin's clean pixels (D17); 1 when clean.

        ``eps`` = 1e-6 (``options.depth_floor == "absolute"``, D17) or 1 % of the clean prediction's range over
        the image (``"range"``, D29; never below 1e-6)."""
        d, d0 = pred[:, 0], clean[:, 0]
        if options.depth_floor == "range":
            flat = d0.flatten(1)
            eps = (RANGE_FLOOR * (flat.amax(1) - flat.amin(1))).clamp_min(REL_EPS).view(-1, 1, 1)
            denom = torch.maximum(d0.abs(), eps)
        else:
            denom = d0.abs().clamp_min(REL_EPS)
        err = ((d - d0).abs() / denom).clamp(0.0, 1.0)
        return 1.0 - masked_mean(err, masks)
