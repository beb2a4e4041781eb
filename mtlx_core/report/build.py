"""Write the study's report into a folder, atomically: everything goes to a temporary sibling folder first and is
moved in only when all of it is written, so an error leaves the folder as it was.

Files: ``verdict`` and ``per_image`` tables with exactly the issue's columns (``VERDICT_COLUMNS``,
``PER_IMAGE_COLUMNS``), ``verdict_details`` (every statistic of every row: rank-biserial, mean margins, seed,
primary, trivial flag, task metric and costs), ``sensitivity`` (the same on the (image, target) pairs both models
have), ``trend`` (Page's test), ``slopes`` (delta faithfulness on delta task metric), in the chosen format
(``csv``, ``parquet``; ``md`` writes CSV tables plus ``report.md``); figures as PNG and SVG (``verdict_grid_<ref>``,
``figure4``, ``pareto_<cost axis>``); ``manifest.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mtlx_core.report import figures, manifest, markdown
from mtlx_core.stats.verdict import VERDICT_COLUMNS, VerdictSettings
from mtlx_core.store import query
from mtlx_core.store.verdict import StudyVerdict, compute_verdict

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "parquet", "md")
PER_IMAGE_COLUMNS: tuple[str, ...] = ("arm", "model_id", "reference", "seed", "image_id", "task", "metric",
                                      "margin_model", "margin_reference", "delta")


@dataclass
class ReportResult:
    folder: Path
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _write_table(df: pd.DataFrame, folder: Path, name: str, fmt: str) -> str:
    if fmt == "parquet":
        df.to_parquet(folder / f"{name}.parquet", index=False)
        return f"{name}.parquet"
    df.to_csv(folder / f"{name}.csv", index=False, float_format="%.10g")
    return f"{name}.csv"


def tables(v: StudyVerdict) -> dict[str, pd.DataFrame]:
    """The report's tables from a verdict."""
    per = v.per_image.rename(columns={"arm_id": "arm"})
    out = {"verdict": v.cells[list(VERDICT_COLUMNS)], "per_image": per[list(PER_IMAGE_COLUMNS)],
           "verdict_details": v.cells, "trend": v.trend, "slopes": v.slopes}
    if v.sensitivity is not None:
        out["sensitivity"] = v.sensitivity
    return out


def _figures(store: query.Store, v: StudyVerdict, folder: Path, pareto_metric: str | None,
             notes: list[str]) -> list[str]:
    written: list[Path] = []
    for ref in sorted(set(v.cells["reference"])):
        written += figures.save(figures.grid_figure(v.cells, ref), folder, f"verdict_grid_{ref}")
    frames = []
    for metric, variant, label in v.labels:
        f4 = query.figure4(store, metric, variant)
        frames.append(f4[f4["series"] == "margin"].assign(metric=label))
    f4 = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not f4.empty:
        tasks = sorted(set(f4["task"]))
        written += figures.save(figures.figure4(f4, tasks, [lab for _, _, lab in v.labels]), folder, "figure4")
    models = v.models
    costs = [c for c in models.columns if c in ("params", "macs") or "latency" in c]
    absent = [a for a in ("params", "macs") if a not in costs]
    absent += [] if any("latency" in c for c in costs) else ["latency"]
    for axis in absent:
        notes.append(f"no {axis} column in the store's models table: its Pareto view is skipped")
        logger.info("%s", notes[-1])
    pmetric = pareto_metric or (v.labels[0][2] if v.labels else None)
    if pmetric is None or models.empty:
        return [p.name for p in written]
    front_cost: str | None = "macs" if "macs" in costs else (costs[0] if costs else None)
    if front_cost is None:
        return [p.name for p in written]
    if pmetric not in {lab for _, _, lab in v.labels}:
        raise ValueError(f"unknown --pareto-metric {pmetric!r}; valid: {', '.join(lab for _, _, lab in v.labels)}")
    points = figures.pareto_points(models, v.model_margins, pmetric, front_cost)
    for axis in [*costs, "level"]:  # the cost axes, then the nominal sparsity
        if points[axis].notna().any():
            written += figures.save(figures.pareto_figure(points, axis, pmetric, sorted(set(points["task"]))),
                                    folder, f"pareto_{axis}")
        else:
            notes.append(f"{axis} is empty for every model: its Pareto view is skipped")
            logger.info("%s", notes[-1])
    return [p.name for p in written]


def _move_into(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder's files into ``out`` (a rename when ``out`` does not exist yet)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for p in sorted(tmp.iterdir()):
        os.replace(p, out / p.name)
    tmp.rmdir()


def write_report(store_path: Path, out: Path, fmt: str = "csv", settings: VerdictSettings | None = None,
                 value: str = "score_norm", variants: str = "default", pareto_metric: str | None = None,
                 sensitivity: bool = True) -> ReportResult:
    """Compute the verdict of the store at ``store_path`` and write the report into ``out`` (see the module
    docstring). Raises ``StoreMissingError`` / ``StoreError`` for a missing or unreadable (old schema) store and
    ``ValueError`` for a bad option; ``out`` is untouched then."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    store = query.open_store(store_path)
    s = settings or VerdictSettings()
    v = compute_verdict(store, s, value, variants, sensitivity=sensitivity)
    if v.cells.empty:
        logger.warning("%s has no pruned model with faithfulness scores yet: the tables are empty", store.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    result = ReportResult(out)
    try:
        for name, df in tables(v).items():
            result.files.append(_write_table(df, tmp, name, "parquet" if fmt == "parquet" else "csv"))
        result.files += _figures(store, v, tmp, pareto_metric, result.notes)
        if fmt == "md":
            (tmp / "report.md").write_text(markdown.report_md(v, result.files, result.notes))
            result.files.append("report.md")
        manifest.write(tmp / "manifest.json", store, v, fmt, result.files, result.notes)
        result.files.append("manifest.json")
        _move_into(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
