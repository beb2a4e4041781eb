"""Sanity checks of explanations of multi-task models: do the maps depend on the model, the target, the head?

Every check explains the SAME targets (fixed from the original model's clean prediction, D15) with any registered
explainer (``mtlx_core.explain.explainers``) and reports, per step and per map, the similarity of the new map to
the original one (``mtlx_core.explain.similarity``: Spearman rank correlation and SSIM of the input-resolution
maps). A map that is all zero on the original model is left out (NaN); an original map compared with an all-zero
(constant) map has Spearman 0 (no rank association).

- ``model_randomisation`` (Adebayo et al., NeurIPS 2018, https://arxiv.org/abs/1810.03292): the parameterised
  layers that serve the task, in reverse order of execution (its head first, then towards the input; other tasks'
  modules skipped), are re-initialised cumulatively in ``max_steps`` groups (``reset_parameters`` under
  ``seed``). BatchNorm running statistics are a recorded setting: ``keep`` (the trained statistics), ``reset``
  (mean 0, variance 1) or ``recompute`` (re-estimated on the explained images). Passes when the original maps are
  not all zero and every step's mean Spearman is below ``threshold`` (an explainer whose maps survive the head's
  randomisation explains the input, not the model). Its last step has every module re-initialised, which gives
  eMPRT (Hedstrom et al., 2023, https://arxiv.org/abs/2401.06465) per map: the relative rise of the map's
  discrete entropy (``entropy_bins`` equal-width bins, Quantus' ``discrete_entropy``) from the original to the
  fully randomised model.
- ``random_target_check``: each target's map against the map of another target of the same image (seeded).
- ``head_randomisation``: re-initialise one task's head (``heads.<task>``; ``scope="task"``: every module the task
  owns) and compare every task's maps; ``identical`` says whether a task's maps are bit-identical (they must be
  for the other tasks of a hard-shared model with disjoint heads).
- ``noise_floor``: the maps' similarity to themselves under Gaussian input noise (``noise_sigma``, ``n_noise``
  seeded draws, not clamped): how much a map changes anyway.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import entropy
from torch import nn

from mtlx_core.explain.explainers.base import Explainer
from mtlx_core.explain.gradcam import Explanation
from mtlx_core.explain.similarity import map_similarity
from mtlx_core.tasks.base import ExplanationTarget, Task

BN_MODES = ("keep", "reset", "recompute")
HEAD_SCOPES = ("head", "task")


@dataclass(frozen=True)
class SanitySettings:
    """What makes a sanity check reproducible; recorded with its results."""

    seed: int = 0
    bn_stats: str = "keep"
    max_steps: int = 8
    threshold: float = 0.5  # model randomisation passes when every step's mean Spearman is below it
    noise_sigma: float = 0.02
    n_noise: int = 2
    entropy_bins: int = 100
    images: int = 4  # how many images precompute's sanity unit explains (the first of the study's first batch)

    def __post_init__(self) -> None:
        if self.bn_stats not in BN_MODES:
            raise ValueError(f"unknown BatchNorm statistics mode {self.bn_stats!r}; valid modes: {', '.join(BN_MODES)}")
        if (self.max_steps < 1 or self.n_noise < 1 or self.noise_sigma < 0 or self.entropy_bins < 1
                or self.images < 1):
            raise ValueError("need max_steps >= 1, n_noise >= 1, noise_sigma >= 0, entropy_bins >= 1 and images >= 1, "
                             f"got {self}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


DEFAULT_SANITY = SanitySettings()


@dataclass(frozen=True)
class Similarities:
    """Per-map similarity to the original maps (order of the original explanations)."""

    label: str
    spearman: tuple[float, ...]
    ssim: tuple[float, ...]
    identical: bool  # every map bit-identical to the original

    @property
    def mean_spearman(self) -> float:
        return _nanmean(self.spearman)

    @property
    def mean_ssim(self) -> float:
        return _nanmean(self.ssim)


@dataclass(frozen=True)
class RandomisationResult:
    explainer: str
    task: str
    steps: tuple[Similarities, ...]  # step i re-initialised the modules of steps 0..i
    modules: tuple[tuple[str, ...], ...]  # the modules each step adds
    n_maps: int
    n_zero: int  # original maps that are all zero (left out)
    emprt: tuple[float, ...]  # per map: (H(fully randomised) - H(original)) / H(original); NaN where undefined
    passed: bool
    reason: str
    settings: SanitySettings


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def discrete_entropy(m: np.ndarray, n_bins: int) -> float:
    """Shannon entropy (nats) of the histogram of a map's values in ``n_bins`` equal-width bins."""
    counts, _ = np.histogram(m, bins=n_bins)
    return float(entropy(counts))


def emprt(original: Sequence[Explanation], randomised: Sequence[Explanation], n_bins: int) -> tuple[float, ...]:
    """eMPRT per map: the relative rise in discrete entropy from the original to the randomised model's map."""
    out = []
    for a, b in zip(original, randomised, strict=True):
        h0 = discrete_entropy(a.map_input, n_bins)
        out.append(float("nan") if a.is_zero or h0 == 0 else (discrete_entropy(b.map_input, n_bins) - h0) / h0)
    return tuple(out)


def compare(original: Sequence[Explanation], new: Sequence[Explanation], label: str) -> Similarities:
    """Similarity of each new map to the original map of the same (image, target)."""
    if [(e.image_index, e.target_id) for e in original] != [(e.image_index, e.target_id) for e in new]:
        raise ValueError("the maps to compare explain different targets")
    rho, ssim = [], []
    for a, b in zip(original, new, strict=True):
        if a.is_zero:
            rho.append(float("nan"))
            ssim.append(float("nan"))
            continue
        s = map_similarity(b.map_input, a.map_input)
        rho.append(0.0 if b.is_zero or math.isnan(s.spearman) else s.spearman)
        ssim.append(s.ssim)
    identical = all(np.array_equal(a.map_input, b.map_input) for a, b in zip(original, new, strict=True))
    return Similarities(label, tuple(rho), tuple(ssim), identical)


def _targets(exps: Sequence[Explanation], n_images: int) -> list[list[ExplanationTarget]]:
    out: list[list[ExplanationTarget]] = [[] for _ in range(n_images)]
    for e in exps:
        out[e.image_index].append(e.target)
    return out


def cascade_order(model: nn.Module, images: torch.Tensor, task: str) -> list[str]:
    """Parameterised leaf modules that serve ``task`` in a forward, last executed first: the executions up to the
    task's last own module (its head), without other tasks' modules (a module is a task's when the task's output
    name is one component of its dotted name; a shared module run in several task branches counts where it last
    ran before the head)."""
    seen: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(lambda mod, _i, _o: seen.append(names[mod]))
               for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            out = model.eval()(images[:1])
    finally:
        for h in handles:
            h.remove()
    others = set(out) - {task}
    owned = [i for i, n in enumerate(seen) if task in n.split(".")]
    if owned:  # what runs after the task's last own module (other tasks' branches) does not serve it
        seen = seen[:owned[-1] + 1]
    order = [n for n in dict.fromkeys(reversed(seen)) if not others & set(n.split("."))]
    if not order:
        raise ValueError(f"no parameterised module runs for task {task!r}: nothing to randomise")
    return order


def reinitialise(model: nn.Module, names: Sequence[str], bn_stats: str, images: torch.Tensor) -> None:
    """Re-initialise the modules ``names`` of ``model`` in place (``reset_parameters``), BatchNorm statistics as
    ``bn_stats`` says (the global RNG is the caller's to seed)."""
    modules = [(name, model.get_submodule(name)) for name in names]
    for name, module in modules:
        if not callable(getattr(module, "reset_parameters", None)):
            raise ValueError(f"module {name} ({type(module).__name__}) has no reset_parameters to randomise it")
    bns = []
    for _, module in modules:
        stats = [b.clone() for b in module.buffers(recurse=False)] if bn_stats == "keep" else []
        module.reset_parameters()  # type: ignore[operator]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            bns.append(module)
        with torch.no_grad():  # "keep": the buffers (BatchNorm statistics) as they were
            for b, kept in zip(module.buffers(recurse=False), stats, strict=False):
                b.copy_(kept)
    if bn_stats == "recompute" and bns:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            model(images)
    model.eval()


def model_randomisation(model: nn.Module, images: torch.Tensor, task: Task, explainer: Explainer,
                        layer: str | None = None, settings: SanitySettings = DEFAULT_SANITY) -> RandomisationResult:
    """Cascading parameter randomisation from the task's head towards the input; ``model`` is not modified."""
    original = explainer.explain(model, images, task, layer)
    targets = _targets(original, len(images))
    order = cascade_order(model, images, task.name)
    groups = [tuple(g.tolist()) for g in np.array_split(np.array(order, dtype=object), min(settings.max_steps,
                                                                                             len(order)))]
    work = copy.deepcopy(model)
    steps = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for i, group in enumerate(groups):
            reinitialise(work, group, settings.bn_stats, images)
            last = explainer.explain(work, images, task, layer, targets)
            steps.append(compare(original, last, f"step {i + 1}: {group[0]} .. {group[-1]}"))
    n_zero = sum(e.is_zero for e in original)
    if n_zero == len(original):
        passed, reason = False, "every original map is all zero"
    else:
        worst = max(range(len(steps)), key=lambda i: steps[i].mean_spearman)
        passed = steps[worst].mean_spearman < settings.threshold
        reason = f"largest mean Spearman {steps[worst].mean_spearman:.3f} at {steps[worst].label}"
    return RandomisationResult(explainer.name, task.name, tuple(steps), tuple(groups), len(original), n_zero,
                               emprt(original, last, settings.entropy_bins), passed, reason, settings)


def head_modules(model: nn.Module, task: str, scope: str = "head") -> list[str]:
    """Parameterised leaf modules of ``task``'s head (``heads.<task>``) or, ``scope="task"``, of every module
    whose dotted name has the task as one component."""
    if scope not in HEAD_SCOPES:
        raise ValueError(f"unknown head scope {scope!r}; valid scopes: {', '.join(HEAD_SCOPES)}")
    found = []
    for name, m in model.named_modules():
        if list(m.children()) or not any(True for _ in m.parameters(recurse=False)):
            continue
        parts = name.split(".")
        if (parts[:2] == ["heads", task]) if scope == "head" else task in parts:
            found.append(name)
    if not found:
        raise ValueError(f"model has no {scope} modules for task {task!r}")
    return found


def head_randomisation(model: nn.Module, images: torch.Tensor, tasks: dict[str, Task], head_task: str,
                       explainer: Explainer, layer: str | None = None, scope: str = "head",
                       settings: SanitySettings = DEFAULT_SANITY) -> dict[str, Similarities]:
    """Re-initialise ``head_task``'s head and compare every task's maps with the original model's, by task."""
    names = head_modules(model, head_task, scope)
    original = {t: explainer.explain(model, images, task, layer) for t, task in tasks.items()}
    work = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        reinitialise(work, names, settings.bn_stats, images)
    return {t: compare(original[t], explainer.explain(work, images, task, layer, _targets(original[t], len(images))),
                       f"{head_task} {scope} re-initialised") for t, task in tasks.items()}


def random_target_check(exps: Sequence[Explanation], seed: int = 0) -> Similarities:
    """Each map against the map of another target of the same image, drawn with ``seed``; images with a single
    target are skipped (NaN). ``label`` lists the pairs as ``image:target>other``."""
    rng = np.random.default_rng(seed)
    rho, ssim, pairs = [], [], []
    for e in exps:
        others = [o for o in exps if o.image_index == e.image_index and o.target_id != e.target_id]
        if e.is_zero or not others:
            rho.append(float("nan"))
            ssim.append(float("nan"))
            continue
        o = others[int(rng.integers(len(others)))]
        s = map_similarity(o.map_input, e.map_input)
        rho.append(0.0 if o.is_zero or math.isnan(s.spearman) else s.spearman)
        ssim.append(s.ssim)
        pairs.append(f"{e.image_index}:{e.target_id}>{o.target_id}")
    return Similarities(" ".join(pairs), tuple(rho), tuple(ssim), identical=False)


def noise_floor(model: nn.Module, images: torch.Tensor, task: Task, explainer: Explainer, layer: str | None = None,
                settings: SanitySettings = DEFAULT_SANITY) -> list[Similarities]:
    """The maps under ``n_noise`` draws of Gaussian input noise against the clean maps (same targets), per draw."""
    original = explainer.explain(model, images, task, layer)
    targets = _targets(original, len(images))
    g = torch.Generator(device="cpu").manual_seed(settings.seed)
    out = []
    for d in range(settings.n_noise):
        noise = torch.randn(images.shape, generator=g).to(images.device, images.dtype) * settings.noise_sigma
        out.append(compare(original, explainer.explain(model, images + noise, task, layer, targets),
                           f"noise {d + 1} sigma {settings.noise_sigma}"))
    return out
