"""The study store: one DuckDB file (default ``models_store/study.duckdb``) that the app reads.

Keys are content-addressed where it helps: ``image_id`` = hash of the image array, ``models.checkpoint_sha256``
= hash of ``model.pt``'s tensors, superpixel ``settings_key`` = hash of the SLIC settings. Arrays are ``.npy`` bytes
(``mtlx_core.store.codec``), images PNG bytes. Every row records what makes it reproducible.

Tables
- ``meta``: key/value facts about the store (schema version, preset, code version, created/updated).
- ``arms``: one row per study arm (architecture x dataset x tasks x weighting x pruning method).
- ``models``: every model (dense and pruned) with its provenance and size.
- ``task_metrics``: validation metrics per model, task and metric (plus the trivial predictors' as
  ``model_id = 'trivial:<dataset>'``).
- ``images``: the evaluated images (PNG) and their split/index.
- ``superpixels``: SLIC labels per image and settings (computed once, reused by every model and target).
- ``predictions``: each model's clean prediction per image and task (argmax labels, depth, normals).
- ``explanations``: maps per (model, image, task, target, explainer, layer) at input and layer resolution.
- ``faithfulness``: one score per (model, image, task, target, explainer, layer, metric, ordering, random
  replicate, settings key): the curve (task scalar over its clean value at ``x``, the share of the image
  perturbed), ``score`` (the metric's own number: IROF's AOC, RISE's AUC, ...), ``score_norm`` (scaled to
  [0, 1] for a curve within [0, 1] and oriented: higher = more faithful), ``status``; only ``ok`` rows have
  scores, every other status has NULL scores (never NaN). ``ordering``: ``morf`` (the explainer's),
  ``lerf`` (reversed), ``random`` (``explainer = 'random'``, ``layer = ''``, ``layer_role = 'baseline'``,
  replicate j with seed ``seed``: common random numbers across models). ``variant`` names the settings that
  distinguish runs of one metric (``fill=quantus``, ``depth_floor=range``), ``settings`` holds them all.
- ``target_draws``: every candidate target of the dense model per image and task, and whether it was drawn
  (seeded, stratified, region-size blind: ``mtlx_core.explain.target_draw``); ``position`` = the image's place
  in the seeded image sample (D26). Pruned models explain the dense model's drawn targets.
- ``similarity``: how far each pruned explanation moved from the dense one (Spearman, SSIM, top-k IoU).
- ``sanity``: the sanity checks of each dense model's explanations (``mtlx_core.precompute.sanity_unit``): one row
  per (model, explainer, explained task, check, variant, step, settings key); ``check_name`` is ``model_randomisation``
  (step i = the cascade's i-th cumulative group, ``modules`` it added; ``emprt`` on the last step),
  ``head_randomisation`` (``variant`` = the task whose head was re-initialised), ``random_target`` or
  ``noise_floor`` (step = noise draw); ``spearman``/``ssim`` are the means over maps (NULL when every map is all
  zero), ``*_per_map`` the per-map values (NULL for a left-out map); ``passed``/``reason`` the check's verdict
  (NULL for the noise floor, a reference); ``settings`` the ``SanitySettings`` JSON with the layer.
- ``units``: the journal of finished work units (one transaction each) that makes precompute resumable.

Note for readers (added by the precompute writer, ``mtlx_core.store.writer``; existing columns unchanged):
- Added columns: ``explanations.settings`` (Grad-CAM settings JSON), ``similarity.topk_pixels`` (k in pixels;
  ``topk`` is the fraction, 0.2), ``similarity.code_version`` and
  ``units.cpu_seconds`` (process CPU time of the unit; ``seconds`` is wall time).
- ``superpixels.labels`` are uint16. ``models.model_id`` is the run id (folder in
  ``models_store``); ``checkpoint_sha256`` hashes the checkpoint's tensors (``precompute.units.state_hash``:
  torch's zip embeds file names, so file bytes differ between identical trainings). Dense models have
  ``target_sparsity = 0`` and ``parent_id`` NULL. Predictions: segmentation uint8 argmax ``(H, W)``, depth
  float16 ``(H, W)``, normals float16 ``(3, H, W)``. Explanation maps are float32 in [0, 1].
- Schema 5 (issue 21): ``explanations`` carries ``explainer`` (a name of
  ``mtlx_core.explain.explainers.EXPLAINERS``: ``gradcam``, ``gradcampp``, ...) in its key; ``faithfulness`` rows
  carry the explainer whose map was scored (every metric runs on every explainer; random rows stay shared,
  ``explainer = 'random'``). Which models have which explainers is a preset's choice
  (``ExplainSettings.explainers`` and ``extra_explainers_on``): Grad-CAM is on every model, the ablation layers are
  Grad-CAM's only, and ``similarity`` rows (dense vs pruned, seed vs seed) compare Grad-CAM's maps (their key has no
  explainer). Readers default to ``explainer = 'gradcam'``.
- Schema 4 (issue 18, D27): ``models`` carries the cost axes: ``params`` and ``macs`` (at the study's input size;
  a pruned or control model's from its ``PruningRecord``, a dense model's counted), ``latency_cpu_ms`` (deployed
  form, batch 1, one thread, median of ``cost_settings.runs`` forwards after warm-up; ``mtlx_core.prune.latency``),
  ``latency_gpu_ms`` (the same on the GPU when precompute runs on CUDA, else NULL) and ``cost_settings`` (JSON:
  runs, warm-up, threads, batch, form, device). A training-budget control (``mtlx_core.prune.control``) is a model
  with ``pruning_method = 'control'``, ``target_sparsity = 0``, a ``parent_id`` and ``"role": "control"`` in its
  config.
- Schema 3 (issue 17): the ``irof`` table became ``faithfulness`` (IROF is metric ``irof``: ``score`` = AOC,
  ``score_norm`` = AOC / segments); ``task_metrics.is_primary`` marks each task's primary metric. A store of an
  earlier schema is refused with a message to rebuild it.
- Schema 2 (issue 16): ``explanations`` and ``irof`` carry ``layer_label`` (the registered label of the layer,
  ``mtlx_core.models.layers``) and ``layer_role``: ``primary`` (the study's layer; every baseline row) or
  ``ablation`` (the layer ablation: Grad-CAM rows only; its margin over chance uses the primary random rows).
  ``irof``'s key includes ``layer``. ``images.idx`` is the index in the split of a seeded random sample (D26).
- Readers open the published snapshot with ``mtlx_core.store.snapshot.open_readonly`` (errors in
  ``mtlx_core.store.errors``); ``meta`` holds ``preset``, ``settings`` and ``settings_key`` of the build, and
  ``tasks``: ``{task: Task.describe()}`` (label, display kind, primary metric) of every task of the preset's
  arms, which the app reads instead of importing the tasks (stores without it: the built-in tasks' values,
  ``query.BUILTIN_TASKS``). A task's ``predictions`` rows are ``Task.stored_prediction``'s arrays.
"""

from __future__ import annotations

SCHEMA_VERSION = 5

DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS arms (
        arm_id VARCHAR PRIMARY KEY, label VARCHAR, arch VARCHAR, dataset VARCHAR, tasks VARCHAR[],
        weighting VARCHAR, pruning_method VARCHAR, dense_model_id VARCHAR, position INTEGER)""",
    """CREATE TABLE IF NOT EXISTS models (
        model_id VARCHAR PRIMARY KEY, arm_id VARCHAR, run_id VARCHAR, arch VARCHAR, dataset VARCHAR,
        tasks VARCHAR[], weighting VARCHAR, pruning_method VARCHAR, target_sparsity DOUBLE,
        achieved_sparsity DOUBLE, channel_sparsity DOUBLE, params BIGINT, macs BIGINT, parent_id VARCHAR,
        checkpoint VARCHAR, checkpoint_sha256 VARCHAR, config JSON, seed INTEGER, code_version VARCHAR,
        latency_cpu_ms DOUBLE, latency_gpu_ms DOUBLE, cost_settings JSON)""",
    """CREATE TABLE IF NOT EXISTS task_metrics (
        model_id VARCHAR, task VARCHAR, metric VARCHAR, value DOUBLE, higher_is_better BOOLEAN, split VARCHAR,
        is_primary BOOLEAN, PRIMARY KEY (model_id, task, metric))""",
    """CREATE TABLE IF NOT EXISTS images (
        image_id VARCHAR PRIMARY KEY, dataset VARCHAR, split VARCHAR, idx INTEGER, height INTEGER,
        width INTEGER, image BLOB)""",
    """CREATE TABLE IF NOT EXISTS superpixels (
        image_id VARCHAR, settings_key VARCHAR, settings JSON, n_segments INTEGER, labels BLOB,
        PRIMARY KEY (image_id, settings_key))""",
    """CREATE TABLE IF NOT EXISTS predictions (
        model_id VARCHAR, image_id VARCHAR, task VARCHAR, prediction BLOB,
        PRIMARY KEY (model_id, image_id, task))""",
    """CREATE TABLE IF NOT EXISTS explanations (
        model_id VARCHAR, image_id VARCHAR, task VARCHAR, target_id INTEGER, target VARCHAR, layer VARCHAR,
        n_pixels INTEGER, is_zero BOOLEAN, saliency BLOB, saliency_layer BLOB, code_version VARCHAR,
        settings JSON, layer_label VARCHAR, layer_role VARCHAR, explainer VARCHAR DEFAULT 'gradcam',
        PRIMARY KEY (model_id, image_id, task, target_id, explainer, layer))""",
    """CREATE TABLE IF NOT EXISTS faithfulness (
        model_id VARCHAR, image_id VARCHAR, task VARCHAR, target_id INTEGER, target VARCHAR, explainer VARCHAR,
        layer VARCHAR, layer_label VARCHAR, layer_role VARCHAR, metric VARCHAR, variant VARCHAR, ordering VARCHAR,
        replicate INTEGER, seed INTEGER, settings_key VARCHAR, n_steps INTEGER, clean_score DOUBLE,
        curve DOUBLE[], x DOUBLE[], score DOUBLE, score_norm DOUBLE, status VARCHAR, settings JSON,
        code_version VARCHAR,
        PRIMARY KEY (model_id, image_id, task, target_id, explainer, layer, metric, ordering, replicate,
                     settings_key))""",
    """CREATE TABLE IF NOT EXISTS target_draws (
        model_id VARCHAR, image_id VARCHAR, task VARCHAR, target_id INTEGER, target VARCHAR, n_pixels INTEGER,
        drawn BOOLEAN, position INTEGER, rule VARCHAR, k INTEGER, seed INTEGER, code_version VARCHAR,
        PRIMARY KEY (model_id, image_id, task, target_id))""",
    """CREATE TABLE IF NOT EXISTS similarity (
        model_id VARCHAR, reference_id VARCHAR, image_id VARCHAR, task VARCHAR, target_id INTEGER,
        layer VARCHAR, spearman DOUBLE, ssim DOUBLE, topk_iou DOUBLE, topk DOUBLE,
        topk_pixels INTEGER, code_version VARCHAR,
        PRIMARY KEY (model_id, reference_id, image_id, task, target_id, layer))""",
    """CREATE TABLE IF NOT EXISTS sanity (
        model_id VARCHAR, explainer VARCHAR, task VARCHAR, check_name VARCHAR, variant VARCHAR, step INTEGER,
        label VARCHAR, modules VARCHAR[], n_maps INTEGER, n_zero INTEGER, spearman DOUBLE, ssim DOUBLE,
        spearman_per_map DOUBLE[], ssim_per_map DOUBLE[], identical BOOLEAN, emprt DOUBLE, passed BOOLEAN,
        reason VARCHAR, layer VARCHAR, settings_key VARCHAR, settings JSON, code_version VARCHAR,
        PRIMARY KEY (model_id, explainer, task, check_name, variant, step, settings_key))""",
    """CREATE TABLE IF NOT EXISTS units (
        unit_id VARCHAR PRIMARY KEY, kind VARCHAR, arm_id VARCHAR, model_id VARCHAR, detail JSON,
        seconds DOUBLE, finished_at TIMESTAMP, cpu_seconds DOUBLE)""",
)
