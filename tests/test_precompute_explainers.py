"""Issue 21: which explainers precompute runs on which models (``ExplainSettings.explainers``,
``extra_explainers_on``), the presets' choices and ``--explainers`` on the command line."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from mtlx_core.explain.explainers import EXPLAINERS
from mtlx_core.precompute.__main__ import main
from mtlx_core.precompute.presets import ExplainSettings, get_study_preset


def test_default_settings_keep_the_key_of_stores_built_before_explainers() -> None:
    default = ExplainSettings()
    assert "explainers" not in default.key_fields()
    assert "extra_explainers_on" not in default.key_fields()
    assert ExplainSettings(explainers=("gradcam",), extra_explainers_on="dense").key() == default.key()
    assert ExplainSettings(explainers=("gradcam", "gradcampp")).key() != default.key()


def test_all_selects_every_registered_explainer_with_gradcam_first() -> None:
    assert ExplainSettings(explainers=("all",)).explainers == tuple(EXPLAINERS)
    assert ExplainSettings(explainers=("hirescam,gradcam",)).explainers == ("gradcam", "hirescam")


def test_explainers_without_gradcam_or_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="must include gradcam"):
        ExplainSettings(explainers=("gradcampp",))
    with pytest.raises(ValueError, match="valid explainers: all, gradcam"):
        ExplainSettings(explainers=("gradcam", "nope"))
    with pytest.raises(ValueError, match="valid: all, dense, dense_and_first_level"):
        ExplainSettings(extra_explainers_on="pruned")


def test_extra_explainers_scope_picks_the_models() -> None:
    e = ExplainSettings(explainers=("gradcam", "gradcampp", "hirescam"), extra_explainers_on="dense_and_first_level")
    every = ("gradcam", "gradcampp", "hirescam")
    assert e.explainers_for(True, None) == every
    assert e.explainers_for(False, 0) == every
    assert e.explainers_for(False, 1) == ("gradcam",)
    assert e.explainers_for(False, None) == ("gradcam",)  # the training-budget control
    dense = dataclasses.replace(e, extra_explainers_on="dense")
    assert dense.explainers_for(True, None) == every
    assert dense.explainers_for(False, 0) == ("gradcam",)
    assert dataclasses.replace(e, extra_explainers_on="all").explainers_for(False, 3) == every


def test_presets_choose_their_explainers() -> None:
    demo = get_study_preset("demo").explain
    assert demo.explainers == ("gradcam", "gradcampp", "hirescam")
    assert demo.extra_explainers_on == "dense_and_first_level"
    for name in ("paper", "paper_nyuv2", "paper_cityscapes"):
        paper = get_study_preset(name).explain
        assert paper.explainers == tuple(EXPLAINERS)
        assert paper.extra_explainers_on == "all"
    smoke = get_study_preset("smoke").explain
    assert smoke.explainers == ("gradcam", "gradcampp")
    assert smoke.extra_explainers_on == "all"


def test_cli_unknown_explainer_lists_the_valid_ones_and_writes_nothing(caplog: pytest.LogCaptureFixture,
                                                                       tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    with caplog.at_level(logging.ERROR):
        assert main(["--preset", "smoke", "--explainers", "gradcam,nope", "--store", str(store),
                     "--models-dir", str(tmp_path / "m"), "--no-progress"]) == 2
    assert "unknown explainer(s) nope; valid explainers: all, gradcam" in caplog.text
    assert not store.exists()
    assert not (tmp_path / "m").exists()


def test_abpc_takes_the_curves_of_its_base_metric_which_must_be_selected() -> None:
    from mtlx_core.precompute.faith_rows import metric_sets

    of_deletion = (("abpc", (("of", "deletion"),)),)
    labels = [m.label for m in metric_sets(ExplainSettings(metrics=("irof", "deletion", "abpc"),
                                                           metric_options=of_deletion))[0]]
    assert labels.count("abpc_deletion") == 1
    assert "abpc" not in labels
    with pytest.raises(ValueError, match="abpc is computed from deletion's curves: select deletion too"):
        metric_sets(ExplainSettings(metrics=("irof", "abpc"), metric_options=of_deletion))
    with pytest.raises(ValueError, match="abpc is computed from irof's curves: select irof too"):
        metric_sets(ExplainSettings(metrics=("deletion", "abpc")))
    # the demo: AbPC of Deletion, whose least relevant first it computes; IROF without it
    demo = get_study_preset("demo").explain
    assert [m.label for m in metric_sets(demo)[0] if m.name == "abpc"] == ["abpc_deletion"]
    assert demo.options()["deletion"]["orderings"] == ("morf", "lerf", "random")
    assert demo.options()["irof"]["orderings"] == ("morf", "random")
