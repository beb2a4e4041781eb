"""``report.md``: the verdict grid per reference as Markdown tables, the notes, and the files beside it."""

from __future__ import annotations

import pandas as pd

from mtlx_core.store.verdict import StudyVerdict

SYMBOLS = {"lower": "▼ lower", "higher": "▲ higher", "equivalent": "= equivalent", "inconclusive": "? inconclusive"}


def grid_md(cells: pd.DataFrame, reference: str) -> str:
    c = cells[cells["primary"] & (cells["reference"] == reference)]
    if c.empty:
        return f"No cell compared with the {reference} model.\n"
    c = c.assign(col=c["task"] + " / " + c["metric"],
                 row=c["arm_id"] + " " + (c["level"] * 100).map(lambda x: f"{x:g} %"),
                 text=[f"{SYMBOLS[v]} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' (x)' if t else ''}"
                       for v, d, lo, hi, t in c[["verdict", "mean_delta", "ci_low", "ci_high",
                                                 "no_better_than_trivial"]].itertuples(index=False)])
    wide = c.pivot_table(index="row", columns="col", values="text", aggfunc="first", sort=False).fillna("no data")
    head = "| arm, level | " + " | ".join(wide.columns) + " |"
    lines = [head, "|" + "---|" * (len(wide.columns) + 1)]
    lines += ["| " + str(idx) + " | " + " | ".join(row) + " |" for idx, row in zip(wide.index, wide.to_numpy(),
                                                                                strict=True)]
    return "\n".join(lines) + "\n"


def report_md(v: StudyVerdict, files: list[str], notes: list[str]) -> str:
    parts = ["# Verdict: does pruning change the faithfulness of the explanations?\n",
             "Each cell: the verdict (docs/verdict.md), mean delta of the margin over chance (model minus "
             "reference, per image) and its 95 % interval; (x): the model's task metric is no better than the "
             "trivial predictor's.\n"]
    for ref in sorted(set(v.cells["reference"])):
        parts += [f"## Compared with the {ref} model\n", grid_md(v.cells, ref)]
        if f"verdict_grid_{ref}.png" in files:
            parts.append(f"![verdict grid vs {ref}](verdict_grid_{ref}.png)\n")
    if notes:
        parts += ["## Notes\n", *[f"- {n}" for n in notes], ""]
    parts += ["## Files\n", *[f"- `{f}`" for f in files], ""]
    return "\n".join(parts)
