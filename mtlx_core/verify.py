"""Recompute a seeded random sample of a study store's faithfulness scores with the reference libraries.

    python -m mtlx_core.verify --store study.duckdb [--sample 3] [--seed 0] [--models-dir models_store] [--data D]

``--sample N`` rows per metric (status ``ok``), drawn with ``numpy.random.default_rng(seed)``. Each row is rebuilt
from the store and the run folders alone: the model (``runs.load_run``), the image (the dataset frame whose
content hash is the stored ``image_id`` when the run's data folder, or ``--data``, is there; else the stored PNG,
8-bit, which moves scores by more than rounding: logged), the map (``explanations.saliency``, or
``metric.random_map(seed, shape)`` for random rows), the target's pixel set (the task's
``explanation_targets`` on the model's clean prediction), the superpixels (``superpixels`` table) and the metric
with its recorded settings. Curve metrics are recomputed by their references (Quantus 0.6.0 for IROF, Region
Perturbation, Pixel-Flipping, ROAD's Quantus convention and Faithfulness Correlation, pytorch-grad-cam for ROAD,
RISE's loop for Deletion and Insertion: ``faithfulness.crosscheck``), localisation metrics from the stored map,
AbPC from the stored curves it derives from. Logs the largest |difference| of score and curve per metric; the
last stdout line is ``max_score_diff=X max_curve_diff=Y rows=N``. Exit 0; 2 for a missing store or model.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlx_core.faithfulness.crosscheck import NO_REFERENCE, reference_check, scalar_fn
from mtlx_core.faithfulness.metric import Metric, random_map
from mtlx_core.faithfulness.registry import METRICS
from mtlx_core.plugins import PluginError, add_plugin_argument, load_cli_plugins
from mtlx_core.runs import DEFAULT_MODELS_DIR, LoadedRun, RunError, load_run
from mtlx_core.store.codec import array_hash, decode_array, decode_png
from mtlx_core.store.errors import StoreError
from mtlx_core.store.snapshot import open_readonly
from mtlx_core.tasks.base import ExplanationTarget, ScoreOptions, Task

logger = logging.getLogger(__name__)
KEY = ("model_id", "image_id", "task", "target_id", "explainer", "layer", "metric", "ordering", "replicate",
       "settings_key")


@dataclass
class Summary:
    """Per metric: rows recomputed, largest differences, rows that could not be (with why)."""

    rows: int = 0
    score: float = 0.0
    curve: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)


def metric_of(label: str, recorded: dict[str, Any] | None) -> Metric:
    """The metric object of a stored row: its registry class with the recorded settings that are arguments."""
    name = "abpc" if label.startswith("abpc") else label
    if name not in METRICS:
        raise ValueError(f"unknown metric {label!r} in the store; this code knows: {', '.join(METRICS)}")
    make = METRICS[name]
    params = inspect.signature(make).parameters
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (recorded or {}).items() if k in params}
    return make(**kwargs)


def sample_keys(con: Any, n: int, seed: int) -> list[tuple[Any, ...]]:
    """Keys of ``n`` seeded random ``ok`` rows per metric, among the rows a reference can recompute (not the
    (metric, ordering) pairs of ``crosscheck.NO_REFERENCE``)."""
    keys = [k for k in con.execute(f"SELECT {', '.join(KEY)} FROM faithfulness WHERE status = 'ok' "
                                   f"ORDER BY {', '.join(KEY)}").fetchall()
            if (k[KEY.index("metric")], k[KEY.index("ordering")]) not in NO_REFERENCE]
    rng = np.random.default_rng(seed)
    out: list[tuple[Any, ...]] = []
    for metric in sorted({k[6] for k in keys}):
        mine = [k for k in keys if k[6] == metric]
        out += [mine[i] for i in sorted(rng.choice(len(mine), min(n, len(mine)), replace=False))]
    return out


class StoreModels:
    """Models, tasks, images, targets and superpixels of one store, loaded once each."""

    def __init__(self, con: Any, models_dir: Path, data: Path | None) -> None:
        self.con, self.models_dir, self.data = con, models_dir, data
        self.runs: dict[str, LoadedRun] = {}
        self.images: dict[tuple[str, str], np.ndarray] = {}
        self.png_warned = False

    def run(self, model_id: str) -> LoadedRun:
        if model_id not in self.runs:
            row = self.con.execute("SELECT run_id FROM models WHERE model_id = ?", [model_id]).fetchone()
            if row is None:
                raise RunError(f"model {model_id!r} is not in the store's models table")
            self.runs[model_id] = load_run(row[0], self.models_dir)
        return self.runs[model_id]

    def tasks(self, model_id: str, task: str) -> Task:
        from mtlx_core.data.layout import get_dataset_spec
        from mtlx_core.tasks import DepthTask, build_tasks

        run = self.run(model_id)
        spec = get_dataset_spec(run.config["dataset"])
        built = build_tasks(spec, run.config["tasks"])
        if task == "depth":  # the target rule precompute used (D13), as recorded with the explanations
            rule = self.con.execute("SELECT settings FROM explanations WHERE model_id = ? AND task = 'depth' "
                                    "LIMIT 1", [model_id]).fetchone()
            bins = json.loads(rule[0]).get("target_rule", "equal_width") if rule else "equal_width"
            built["depth"] = DepthTask(spec.depth_kind, bins=bins)
        return built[task]

    def image(self, model_id: str, image_id: str) -> np.ndarray:
        """``(3, H, W)`` float32: the dataset frame with the stored content hash, else the stored PNG."""
        if (model_id, image_id) not in self.images:
            dataset, split, idx, png = self.con.execute("SELECT dataset, split, idx, image FROM images WHERE "
                                                        "image_id = ?", [image_id]).fetchone()
            img = self._frame(model_id, dataset, split, idx, image_id)
            if img is None:
                if not self.png_warned:
                    logger.warning("dataset frames not found (give --data): using the stored 8-bit PNGs, which "
                                   "differ from the scored float images by up to 1/510 per pixel")
                    self.png_warned = True
                img = np.moveaxis(decode_png(png), -1, 0).astype(np.float32) / 255.0
            self.images[(model_id, image_id)] = img
        return self.images[(model_id, image_id)]

    def _frame(self, model_id: str, dataset: str, split: str, idx: int, image_id: str) -> np.ndarray | None:
        from mtlx_core.data.dataset import DatasetError, MTLDataset

        root = self.data or Path(str(self.run(model_id).config.get("train", {}).get("data_root", "")))
        try:
            img = MTLDataset(root, dataset, split)[int(idx)]["image"].float().numpy()
        except (DatasetError, IndexError, OSError, ValueError):
            return None
        return np.ascontiguousarray(img) if array_hash(img) == image_id else None

    def target(self, model_id: str, image: np.ndarray, task: Task, target_id: int) -> ExplanationTarget:
        model = self.run(model_id).model.eval()
        with torch.inference_mode():
            pred = model(torch.from_numpy(image)[None])[task.name][0].float()
        found = [t for t in task.explanation_targets(pred) if t.target_id == target_id]
        if not found:
            raise ValueError(f"target {target_id} of {task.name} is not among the clean prediction's targets")
        return found[0]

    def labels(self, image_id: str, settings: dict[str, Any]) -> np.ndarray | None:
        for blob, recorded in self.con.execute("SELECT labels, settings FROM superpixels WHERE image_id = ?",
                                               [image_id]).fetchall():
            if json.loads(recorded) == settings.get("superpixels"):
                return decode_array(blob).astype(np.int64)
        return None

    def saliency(self, row: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
        if row["explainer"] == "random":
            return random_map(int(row["seed"]), shape)
        got = self.con.execute("SELECT saliency FROM explanations WHERE model_id = ? AND image_id = ? AND task = ? "
                               "AND target_id = ? AND explainer = ? AND layer = ?",
                               [row["model_id"], row["image_id"], row["task"], row["target_id"], row["explainer"],
                                row["layer"]]).fetchone()
        if got is None:
            raise ValueError("its explanation is not in the store")
        return decode_array(got[0]).astype(np.float32)


def derived_diff(con: Any, row: dict[str, Any], settings: dict[str, Any]) -> float:
    """|AbPC - (score_norm(MoRF) - score_norm(LeRF))| from the stored rows of its base metric."""
    base = settings["metric"]
    found = {}
    for o, norm, s in con.execute("SELECT ordering, score_norm, settings FROM faithfulness WHERE model_id = ? AND "
                                  "image_id = ? AND task = ? AND target_id = ? AND explainer = ? AND layer = ? AND "
                                  "metric = ? AND ordering IN ('morf', 'lerf')",
                                  [row[k] for k in KEY[:6]] + [base["of"]]).fetchall():
        s = json.loads(s)
        if s.get("metric") == base.get("base") and s.get("score") == settings.get("score"):
            found[o] = norm
    if set(found) != {"morf", "lerf"}:
        raise ValueError("the curves it derives from are not in the store")
    return abs(row["score"] - (found["morf"] - found["lerf"]))


def verify_row(sm: StoreModels, row: dict[str, Any]) -> tuple[float, float]:
    """``(|score difference|, max |curve difference|)`` of one stored row; ValueError: not recomputable."""
    settings = json.loads(row["settings"])
    metric = metric_of(row["metric"], settings.get("metric"))
    if metric.kind == "derived":
        return derived_diff(sm.con, row, settings), 0.0
    task = sm.tasks(row["model_id"], row["task"])
    image = sm.image(row["model_id"], row["image_id"])
    target = sm.target(row["model_id"], image, task, int(row["target_id"]))
    sal = sm.saliency(row, image.shape[1:])
    if metric.kind == "map":
        score, _ = metric.score_map(sal, target.mask.cpu().numpy().astype(bool))
        return abs(score - row["score"]), 0.0
    options = ScoreOptions(**settings.get("score", {}))
    f = scalar_fn(sm.run(row["model_id"]).model, task, target, image, options, divisor=row["clean_score"])
    check = reference_check(metric, f, image, sal, row["ordering"], sm.labels(row["image_id"], settings))
    if not check.ok:
        raise ValueError(check.note)
    curve = np.asarray(row["curve"], dtype=np.float64)
    if curve.shape != check.curve.shape:
        raise ValueError(f"stored curve has {len(curve)} points, the reference {len(check.curve)}")
    return abs(check.score - row["score"]), float(np.abs(curve - check.curve).max(initial=0.0))


def verify_store(store: Path, sample: int, seed: int, models_dir: Path, data: Path | None = None
                 ) -> dict[str, Summary]:
    con = open_readonly(store)
    try:
        sm = StoreModels(con, models_dir, data)
        cols = [c[0] for c in con.execute("DESCRIBE faithfulness").fetchall()]
        out: dict[str, Summary] = {}
        for key in sample_keys(con, sample, seed):
            values = con.execute(f"SELECT * FROM faithfulness WHERE {' AND '.join(f'{k} = ?' for k in KEY)}",
                                 list(key)).fetchone()
            if values is None:  # cannot happen in a read-only snapshot; keeps the types honest
                continue
            row = dict(zip(cols, values, strict=True))
            s = out.setdefault(row["metric"], Summary())
            try:
                ds, dc = verify_row(sm, row)
            except RunError:
                raise
            except ValueError as exc:  # this row cannot be recomputed: counted, with why
                s.skipped[str(exc)] = s.skipped.get(str(exc), 0) + 1
                continue
            s.rows, s.score, s.curve = s.rows + 1, max(s.score, ds), max(s.curve, dc)
        return out
    finally:
        con.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtlx_core.verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, type=Path, help="the study store (study.duckdb)")
    ap.add_argument("--sample", type=int, default=3, help="rows per metric (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help="run folders of the store's models")
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (default: each run's data_root)")
    add_plugin_argument(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.sample < 1:
        ap.error(f"--sample must be at least 1, got {args.sample}")
    try:
        load_cli_plugins(args)
        found = verify_store(args.store, args.sample, args.seed, args.models_dir, args.data)
    except (StoreError, RunError, PluginError) as exc:
        logger.error("%s", exc)
        return 2
    if not found:
        logger.warning("%s has no faithfulness row with status ok: nothing to verify", args.store)
    for metric, s in sorted(found.items()):
        logger.info("%-10s rows %3d  max |score diff| %.3g  max |curve diff| %.3g%s", metric, s.rows, s.score,
                    s.curve, "".join(f"  (skipped {n}: {why})" for why, n in s.skipped.items()))
    checked = [s for s in found.values() if s.rows]
    sys.stdout.write(f"max_score_diff={max((s.score for s in checked), default=0.0):.3g} "
                     f"max_curve_diff={max((s.curve for s in checked), default=0.0):.3g} "
                     f"rows={sum(s.rows for s in checked)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
