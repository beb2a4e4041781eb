"""A small synthetic study store with two seeds and a control model per seed, for the verdict's store tests.

Arm ``A`` (segmentation): dense ``d0`` / ``d1`` (seeds 0 / 1), each with a control ``c<s>`` (fine-tuned, 0 %)
and pruned ``p<s>_50`` (no effect) and ``p<s>_90`` (margin 0.1 lower on every target; target 1 of the first 10
images gone; target 0's map all zero on every fourth image; task metric below the trivial predictor's).
Every model: ``N_IMAGES`` images, 2 targets each, IROF with 2 random orderings.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np

from mtlx_core.store.schema import DDL, SCHEMA_VERSION

N_IMAGES = 30
MODELS = {  # model: (parent, target sparsity, seed, margin shift, miou)
    "d0": (None, 0.0, 0, 0.0, 0.5), "d1": (None, 0.0, 1, 0.0, 0.5),
    "c0": ("d0", 0.0, 0, 0.0, 0.5), "c1": ("d1", 0.0, 1, 0.0, 0.5),
    "p0_50": ("d0", 0.5, 0, 0.0, 0.45), "p1_50": ("d1", 0.5, 1, 0.0, 0.45),
    "p0_90": ("d0", 0.9, 0, -0.1, 0.05), "p1_90": ("d1", 0.9, 1, -0.1, 0.05),
}
TRIVIAL_MIOU = 0.1


def build(path: Path) -> Path:
    con = duckdb.connect(str(path))
    for ddl in DDL:
        con.execute(ddl)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('preset', 'synthetic')", [str(SCHEMA_VERSION)])
    con.execute("INSERT INTO arms VALUES ('A', 'arm A', 'segnet_mtan', 'synth', ['segmentation'], 'equal', "
                "'netslim', 'd0', 0)")
    rng = np.random.default_rng(0)
    base = 0.2 + rng.normal(0, 0.05, (N_IMAGES, 2))  # the image-target's true margin, shared by every model
    for m, (parent, level, seed, shift, miou) in MODELS.items():
        method = None if parent is None else ("control" if level == 0 else "netslim")
        con.execute("INSERT INTO models (model_id, arm_id, run_id, arch, dataset, tasks, pruning_method, "
                    "target_sparsity, params, macs, parent_id, checkpoint_sha256, config, seed) VALUES "
                    "(?, 'A', ?, 'segnet_mtan', 'synth', ['segmentation'], ?, ?, ?, ?, ?, ?, ?, ?)",
                    [m, m, method, level, int(1000 * (1 - level)), int(5000 * (1 - level)), parent, f"sha-{m}",
                     json.dumps({"seed": seed}), seed])
        con.execute("INSERT INTO task_metrics VALUES (?, 'segmentation', 'miou', ?, true, 'val', true)", [m, miou])
        noise = rng.normal(0, 0.02, (N_IMAGES, 2))
        for i in range(N_IMAGES):
            for t in range(2):
                if m.endswith("_90") and t == 1 and i < 10:
                    continue  # the target disappeared
                zero = m.endswith("_90") and i % 4 == 0 and t == 0
                con.execute("INSERT INTO explanations (model_id, image_id, task, target_id, target, layer, is_zero, "
                            "layer_label, layer_role) VALUES (?, ?, 'segmentation', ?, ?, 'l', ?, 'l', 'primary')",
                            [m, f"img{i:02d}", t, f"class{t}", zero])
                rnd = 0.3 + rng.normal(0, 0.02, 2)
                score = rnd.mean() + base[i, t] + shift + noise[i, t]
                rows = [("gradcam", "morf", 0, score, "l", "primary")]
                rows += [("random", "random", j, rnd[j], "", "baseline") for j in range(2)]
                for explainer, ordering, rep, v, layer, role in rows:
                    con.execute("INSERT INTO faithfulness (model_id, image_id, task, target_id, target, explainer, "
                                "layer, layer_label, layer_role, metric, variant, ordering, replicate, seed, "
                                "settings_key, n_steps, score, score_norm, status) VALUES (?, ?, 'segmentation', ?, "
                                "?, ?, ?, ?, ?, 'irof', 'fill=quantus', ?, ?, ?, 'k', 5, ?, ?, 'ok')",
                                [m, f"img{i:02d}", t, f"class{t}", explainer, layer, layer, role, ordering, rep,
                                 rep, float(v), float(v)])
    con.execute("INSERT INTO task_metrics VALUES ('trivial:synth', 'segmentation', 'miou', ?, true, 'val', true)",
                [TRIVIAL_MIOU])
    con.close()
    return path
