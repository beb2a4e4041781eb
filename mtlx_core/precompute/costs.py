"""What each unit of a precompute plan costs: measured in a store's ``units`` journal, or estimated from MACs.

Public API::

    model = CostModel.from_store("models_store/study.duckdb")  # measured means, the estimate as last fallback
    model = CostModel(device="gpu")                            # estimates only (``cpu`` or ``gpu``)
    costs = model.costs(nodes)                                 # {node key: seconds}; model.source(node): from where
    model.estimate(node)                                       # seconds from MACs and sample counts
    info.update(explain_facts(preset.explain))                 # the curve counts of explain / layer nodes
    model_macs(arch, dataset, tasks, input_shape, width=1.0, arch_kwargs=None)   # cached MAC count

Measured: the mean wall seconds of the store's units of the node's (kind, arm_id), else of its kind, else the
estimate. The store's seconds are what its machine took (a CPU store predicts CPU runs).

Estimate: ``overhead_s + passes x MACs / (macs_per_s x ARCH_EFFICIENCY[arch])`` with MACs of one forward of one
image of the architecture (``info["macs"]`` when the planner knows it, e.g. a structurally pruned model's; else
the dense model built at ``input_shape``: an upper bound for channel-pruned models). Passes (forward-equivalents):

- ``train`` / ``prune`` / ``control``: iterations x batch_size x 3 (forward + backward ~ 2 forwards), at ``crop``;
- ``targets``: images (one forward each);
- ``explain``: per image 1 + T x E x 2 (a backward per target and explainer) + the metrics' perturbed forwards:
  per curve metric ``steps x (T x E x ranked + random)`` (MoRF/LeRF curves per target and explainer; the random
  orderings are shared by every target and explainer of an image), T = targets per image over the tasks;
- ``layer``: per image and layer 1 + T x 2 + T x steps (MoRF only);
- ``sanity``: per image E x (1 + max_steps + tasks + n_noise) x (1 + 2 T) (every randomised model's maps);
- ``images`` (SLIC, CPU) and ``seed_similarity`` (map comparisons, CPU): seconds per image, no MACs.

T: ``targets_per_image`` per task (None: ``TARGETS_PER_TASK_ALL``, the demo's mean number of candidates). Curves:
``info["curves"]`` = ``explain_facts(settings)["curves"]``; without it the metrics' defaults (``ExplainSettings``
with ``info["metrics"]``: 100 segments, MoRF + LeRF and 5 random orderings).

Calibration of ``DEVICES["cpu"]`` and ``ARCH_EFFICIENCY`` (once, against a finished ``demo`` store built on 2
cores, torch 2.14: 308 units, 1738.8 s measured): nodes rebuilt from its ``units`` rows with the demo preset's
facts (dense MACs, ``explain_facts``), then ``seconds = overhead + passes x MACs x w_arch`` fitted by least squares
per class (shared overhead, one rate per architecture). Training kinds (19 units): overhead 6.68 s, DeepLab
3.90e10 MAC/s, SegNet-MTAN 9.79e9 (x0.251); explain kinds (278 units): overhead 1.70 s, DeepLab 5.16e11 MAC/s
(the demo's ``rounding="tie_safe"``: BN folded, 2.6x faster than exact), SegNet-MTAN 1.13e11 (x0.219); one
efficiency 0.235 for both; layer units' overhead 0.55 s (mean 0.68 s at 0.13 s of passes); SLIC 1.07 s per
megapixel. Estimate / measured per kind: train 1.04, prune 1.08, control 0.96, explain 0.88, layer 0.99, targets
1.38, images 1.00; total 1651.6 / 1738.8 s = 0.95; per unit 10/50/90 % quantiles 0.58 / 0.97 / 1.48.
Explanation settings and architectures far from the demo's (paper-size images, exact rounding) are extrapolations.
The ``gpu`` constants are NOT measured (no GPU here): assumed effective rates (an H100 at a few % of its fp32 peak:
demo-size models are launch-bound) and overheads; a store built on the GPU (``CostModel.from_store``) replaces them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlx_core.precompute.schedule import KINDS, PlanNode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Throughput:
    """Effective rates of one device class: MACs per second per kind class (``train`` = autograd training,
    ``infer`` = no-grad / Grad-CAM passes), fixed seconds per unit per kind class (a ``layer`` unit reuses its
    explain unit's setup), CPU seconds per image."""

    train_macs_per_s: float
    infer_macs_per_s: float
    train_overhead_s: float
    infer_overhead_s: float
    layer_overhead_s: float
    slic_s_per_mpixel: float = 1.07  # images: SLIC + PNG per megapixel (demo: 0.026 s per 4 images of 64 x 96)
    similarity_s_per_image: float = 0.05  # seed_similarity: not measured (no such unit in the demo store)


#: calibrated on the demo store (module docstring); ``gpu``: assumed, to be calibrated on a GPU store
DEVICES: dict[str, Throughput] = {
    "cpu": Throughput(train_macs_per_s=3.9e10, infer_macs_per_s=5.2e11, train_overhead_s=6.7, infer_overhead_s=1.7,
                      layer_overhead_s=0.55),
    "gpu": Throughput(train_macs_per_s=2.0e12, infer_macs_per_s=4.0e12, train_overhead_s=5.0, infer_overhead_s=2.0,
                      layer_overhead_s=0.5),
}
#: MAC rate of an architecture relative to the rate of ``DEVICES`` (SegNet-MTAN's attention, unpooling and small
#: channel counts do fewer MACs per second than DeepLab's ResNet); unknown architectures: 1.0
ARCH_EFFICIENCY: dict[str, float] = {"deeplab_resnet34": 1.0, "segnet_mtan": 0.235}
TARGETS_PER_TASK_ALL = 4.0
TRAIN_KINDS = ("train", "prune", "control")


def _device(name: str) -> Throughput:
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError(f"unknown device class {name!r}; valid: {', '.join(DEVICES)}") from None


@functools.lru_cache(maxsize=64)
def _macs(arch: str, dataset: str, tasks: tuple[str, ...], input_shape: tuple[int, ...], width: float,
          arch_kwargs: str) -> int:
    from mtlx_core.data.layout import get_dataset_spec
    from mtlx_core.models import build_model, task_channels
    from mtlx_core.models.surgery import count_macs
    from mtlx_core.tasks import build_tasks

    model = build_model(arch, task_channels(build_tasks(get_dataset_spec(dataset), list(tasks))), width,
                        **json.loads(arch_kwargs))
    return count_macs(model, input_shape)


def model_macs(arch: str, dataset: str, tasks: Sequence[str], input_shape: Sequence[int], width: float = 1.0,
               arch_kwargs: Mapping[str, Any] | None = None) -> int:
    """MACs of one forward of one ``input_shape`` (C, H, W) image through the dense ``arch`` (cached)."""
    return _macs(arch, dataset, tuple(tasks), tuple(int(s) for s in input_shape), float(width),
                 json.dumps(dict(arch_kwargs or {}), sort_keys=True))


def explain_facts(settings: Any) -> dict[str, Any]:
    """``info`` entries of explain / layer nodes from an ``ExplainSettings``: ``curves`` = one
    ``[steps, ranked curves, random curves]`` per curve metric run (each IROF fill mode its own), ``segments``."""
    from mtlx_core.faithfulness.evaluate import FamilySettings, own_orderings
    from mtlx_core.precompute.faith_rows import metric_sets

    family = FamilySettings(orderings=tuple(settings.orderings), n_random=int(settings.n_random))
    segments = int(settings.slic.n_segments)
    curves = []
    for metric_set in metric_sets(settings):
        for m in metric_set:
            if m.kind != "curve":
                continue
            orderings, n_random = own_orderings(m, family)
            steps = next((int(getattr(m.settings, a)) for a in ("n_steps", "target_steps", "regions_evaluation",
                                                                  "nr_runs") if getattr(m.settings, a, None)), None)
            if steps is None:
                steps = len(m.percentiles()) if hasattr(m, "percentiles") else segments
            curves.append([steps, sum(o != "random" for o in orderings), n_random if "random" in orderings else 0])
    return {"curves": curves, "segments": segments}


@functools.lru_cache(maxsize=32)
def _default_curves(metrics: tuple[str, ...]) -> list[list[int]]:
    from mtlx_core.precompute.presets import ExplainSettings

    return list(explain_facts(ExplainSettings(metrics=metrics))["curves"])


def _targets(info: Mapping[str, Any]) -> float:
    """Targets per image over the node's tasks."""
    k = info.get("targets_per_image")
    per_task = TARGETS_PER_TASK_ALL if k is None else float(k)
    return per_task * max(1, len(info.get("tasks", ())))


def passes(node: PlanNode) -> float:
    """Forward-equivalent passes of one image through the model (module docstring); 0 for the CPU kinds.
    KeyError when ``node.info`` lacks a fact the kind needs; ValueError for an unknown kind."""
    i, kind = node.info, node.kind
    if kind not in KINDS:
        raise ValueError(f"unknown plan node kind {kind!r} of {node.key!r}; valid kinds: {', '.join(KINDS)}")
    if kind in TRAIN_KINDS:
        return float(i["iterations"]) * float(i["batch_size"]) * 3.0
    if kind in ("images", "seed_similarity"):
        return 0.0
    images = float(i["images"])
    if kind == "targets":
        return images
    t = _targets(i)
    e = float(len(i.get("explainers", ("gradcam",))))
    curves = (i.get("curves") or _default_curves(tuple(i["metrics"]))) if kind in ("explain", "layer") else []
    if kind == "explain":
        perturbed = sum(s * (t * e * ranked + rnd) for s, ranked, rnd in curves)
        return images * (1.0 + 2.0 * t * e + perturbed)
    if kind == "layer":
        morf = sum(s for s, ranked, _ in curves if ranked)
        return images * float(i.get("layers", 1)) * (1.0 + 2.0 * t + t * morf)
    from mtlx_core.explain.sanity import SanitySettings  # sanity: the original and every randomised model's maps

    s = SanitySettings()
    models = 1 + int(i.get("max_steps", s.max_steps)) + len(i.get("tasks", ())) + int(i.get("n_noise", s.n_noise))
    return images * e * models * (1.0 + 2.0 * t)


@dataclass
class CostModel:
    """Seconds per plan node: ``measured`` per (kind, arm_id) and ``per_kind`` (from a store), else ``estimate``."""

    device: str = "cpu"
    measured: dict[tuple[str, str], float] = field(default_factory=dict)
    per_kind: dict[str, float] = field(default_factory=dict)
    store: Path | None = None

    def __post_init__(self) -> None:
        _device(self.device)

    @classmethod
    def from_store(cls, path: str | Path, device: str = "cpu") -> CostModel:
        """Mean measured wall seconds per (kind, arm_id) and per kind of the store's ``units`` journal."""
        from mtlx_core.store.snapshot import open_readonly

        con = open_readonly(path)
        try:
            has_units = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'units'"
                                    ).fetchone()
            if not has_units or not has_units[0]:
                raise ValueError(f"{path} has no units table: it is not a precompute study store")
            by_arm = con.execute("SELECT kind, arm_id, avg(seconds) FROM units WHERE seconds IS NOT NULL "
                                 "GROUP BY kind, arm_id").fetchall()
            by_kind = con.execute("SELECT kind, avg(seconds) FROM units WHERE seconds IS NOT NULL GROUP BY kind"
                                  ).fetchall()
        finally:
            con.close()
        logger.info("unit costs of %d kinds measured in %s", len(by_kind), path)
        return cls(device=device, measured={(str(k), str(a)): float(s) for k, a, s in by_arm},
                   per_kind={str(k): float(s) for k, s in by_kind}, store=Path(path))

    def estimate(self, node: PlanNode) -> float:
        """Seconds of ``node`` alone on this device class, from MACs and sample counts (module docstring)."""
        try:
            return self._estimate(node, _device(self.device), node.info)
        except KeyError as exc:
            raise ValueError(f"plan node {node.key!r} ({node.kind}) lacks info {exc} for a cost estimate") from None

    @staticmethod
    def _estimate(node: PlanNode, d: Throughput, i: Mapping[str, Any]) -> float:
        if node.kind == "images":
            _, h, w = i["input_shape"]
            return float(i["images"]) * h * w / 1e6 * d.slic_s_per_mpixel
        if node.kind == "seed_similarity":
            return float(i["images"]) * d.similarity_s_per_image
        shape = list(i["input_shape"])
        train = node.kind in TRAIN_KINDS
        if train and i.get("crop"):
            shape = [shape[0], *i["crop"]]
        macs = float(i.get("macs") or model_macs(i["arch"], i["dataset"], i["tasks"], shape, i.get("width", 1.0),
                                                  i.get("arch_kwargs")))
        rate = (d.train_macs_per_s if train else d.infer_macs_per_s) * ARCH_EFFICIENCY.get(i["arch"], 1.0)
        overhead = d.train_overhead_s if train else d.layer_overhead_s if node.kind == "layer" else d.infer_overhead_s
        return overhead + passes(node) * macs / rate

    def source(self, node: PlanNode) -> str:
        """``measured`` (this arm's units of the kind), ``kind mean`` (other arms') or ``estimate``."""
        if (node.kind, node.arm_id) in self.measured:
            return "measured"
        return "kind mean" if node.kind in self.per_kind else "estimate"

    def cost(self, node: PlanNode) -> float:
        src = self.source(node)
        if src == "measured":
            return self.measured[(node.kind, node.arm_id)]
        return self.per_kind[node.kind] if src == "kind mean" else self.estimate(node)

    def costs(self, nodes: Sequence[PlanNode]) -> dict[str, float]:
        """``{key: seconds}`` of every node."""
        return {n.key: self.cost(n) for n in nodes}
