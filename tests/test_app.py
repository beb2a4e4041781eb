"""Every page of the Streamlit app under AppTest on a smoke store: it runs, its widgets exist, selections change it."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from _app_store import smoke_store_path
from _apptest import array, figures, run_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from mtlx_core.store import query

TASK_LABELS = {"segmentation": "Segmentation", "depth": "Depth", "normals": "Surface normals"}  # as the pages say


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = smoke_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path




def widget_keys(at: AppTest) -> set[str]:
    kinds = ("selectbox", "radio", "multiselect", "slider", "toggle", "button", "file_uploader")
    return {w.key for kind in kinds for w in getattr(at, kind)}


@pytest.mark.parametrize(("page", "title", "keys"), [
    (None, "Faithfulness of explanations under pruning",
     {"ov_metric", "ov_variant", "ov_value", "ov_x", "ov_margin", "ov_baselines", "ov_model"}),
    ("pages/compare.py", "Compare explanations across sparsity",
     {"cmp_arm", "cmp_models", "cmp_task", "cmp_layer", "cmp_image", "cmp_target", "cmp_slic", "cmp_metric",
      "cmp_variant", "cmp_value"}),
    ("pages/layers.py", "Faithfulness by layer", {"ly_arm", "ly_metric", "ly_variant", "ly_value"}),
    ("pages/irof_steps.py", "Perturbation steps",
     {"st_arm", "st_model", "st_task", "st_layer", "st_metric", "st_variant", "st_order", "st_image", "st_target",
      "st_k"}),
    ("pages/models.py", "Models", {"md_arm"}),
    ("pages/live.py", "Live: explain your own image", {"lv_source", "lv_upload"}),
])
def test_every_page_runs_and_shows_its_widgets(store_env: Path, page: str | None, title: str, keys: set[str]) -> None:
    at = run_page(page)
    assert at.title[0].value == title
    assert keys <= widget_keys(at)
    assert not at.error


def test_overview_plots_figure4_per_task_and_the_value_choice_changes_it(store_env: Path) -> None:
    at = run_page()
    tasks = {t for (t,) in query.open_store(store_env).rows("SELECT DISTINCT task FROM faithfulness")}
    before = figures(at)
    sim_tasks = {t for (t,) in query.open_store(store_env).rows("SELECT DISTINCT task FROM similarity")}
    pairs = query.cross_task_vs_sparsity(query.open_store(store_env))[["task_a", "task_b"]].drop_duplicates()
    # faithfulness and performance per task; similarity per task; cross-task similarity per task pair
    assert len(before) == 2 * len(tasks) + len(sim_tasks) + len(pairs)
    at.radio(key="ov_value").set_value("score").run()
    after = figures(at)
    assert not np.array_equal(array(before[0]["data"][0]["y"]), array(after[0]["data"][0]["y"]))


def test_overview_similarity_chart_shows_each_pruned_models_mean_similarity_to_its_dense_model(
        store_env: Path) -> None:
    at = run_page()
    store = query.open_store(store_env)
    tasks = [t for t in TASK_LABELS if t in {r[0] for r in store.rows("SELECT DISTINCT task FROM faithfulness")}]
    sim_tasks = [t for t in TASK_LABELS if t in {r[0] for r in store.rows("SELECT DISTINCT task FROM similarity")}]
    at.radio(key="ov_sim").set_value("ssim").run()
    chart = figures(at)[2 * len(tasks)]  # the first task's similarity chart follows every Figure 4 chart
    want = query.similarity_vs_sparsity(store, "ssim")
    want = want[(want["task"] == sim_tasks[0]) & (want["role"] == "pruned")]
    arm = query.arms(store).iloc[0]
    label = str(arm["label"])
    got = {d["name"]: array(d["y"]) for d in chart["data"]}
    expected = want[want["arm_id"] == arm["arm_id"]].sort_values("target_sparsity")["mean"].to_numpy()
    np.testing.assert_allclose(got[label], expected)


def figure4_traces(at: AppTest, store: query.Store, task: str) -> dict[str, np.ndarray]:
    """The Figure 4 chart of ``task`` on the Overview: ``{trace name: y}``."""
    tasks = [t for t in TASK_LABELS if t in {r[0] for r in store.rows("SELECT DISTINCT task FROM faithfulness")}]
    chart = figures(at)[2 * tasks.index(task)]
    return {d["name"]: array(d["y"]) for d in chart["data"]}


def expected_series(store: query.Store, fig4: pd.DataFrame, arm_id: str, task: str, series: str) -> np.ndarray:
    s = fig4[(fig4["arm_id"] == arm_id) & (fig4["task"] == task) & (fig4["series"] == series)]
    return s.sort_values("target_sparsity")["mean"].to_numpy()


def test_overview_metric_selector_switches_figure4_to_that_metrics_scores(store_env: Path) -> None:
    store = query.open_store(store_env)
    arm = query.arms(store).iloc[0]
    task = next(t for t in TASK_LABELS if t in list(arm["tasks"]))
    name = f"{arm['label']} · Grad-CAM"
    at = run_page()
    assert at.selectbox(key="ov_metric").value == "irof"
    assert at.selectbox(key="ov_variant").value == query.default_variant(store, "irof")
    shown = {}
    for metric in ("irof", "deletion"):
        at.selectbox(key="ov_metric").set_value(metric).run()
        assert not at.exception
        traces = figure4_traces(at, store, task)
        want = expected_series(store, query.figure4(store, metric), arm["arm_id"], task, "explainer")
        np.testing.assert_allclose(traces[name], want)
        shown[metric] = traces[name]
        assert f"{arm['label']} · random ordering (mean of K)" in traces
    assert not np.allclose(shown["irof"], shown["deletion"])
    chart = figures(at)[0]
    assert "Deletion" in chart["layout"]["yaxis"]["title"]["text"]
    assert [b.proto.label for b in at.get("download_button")][1:3] == [
        "Download Deletion aggregates (CSV)", "Download per-image Deletion (CSV)"]


def test_overview_margin_toggle_shows_the_margin_over_chance(store_env: Path) -> None:
    store = query.open_store(store_env)
    arm = query.arms(store).iloc[0]
    task = next(t for t in TASK_LABELS if t in list(arm["tasks"]))
    at = run_page()
    at.toggle(key="ov_margin").set_value(True).run()
    assert not at.exception
    traces = figure4_traces(at, store, task)
    assert all(n.endswith("· margin over chance") for n in traces)
    want = expected_series(store, query.figure4(store), arm["arm_id"], task, "margin")
    np.testing.assert_allclose(traces[f"{arm['label']} · margin over chance"], want)


def test_overview_map_and_derived_metrics_draw_figure4_too(store_env: Path) -> None:
    at = run_page()
    for metric in ("abpc", "rma"):
        at.selectbox(key="ov_metric").set_value(metric).run()
        assert not at.exception
        assert not at.error
        assert any(d["name"].endswith("· Grad-CAM") for d in figures(at)[0]["data"])


def test_overview_open_in_compare_drills_down_to_that_model(store_env: Path) -> None:
    store = query.open_store(store_env)
    pruned = query.models(store).dropna(subset=["pruning_method"]).iloc[-1]
    at = run_page()
    at.selectbox(key="ov_model").set_value(pruned["model_id"])
    at.button(key="ov_open").click().run()
    assert at.title[0].value == "Compare explanations across sparsity"
    assert pruned["model_id"] in at.multiselect(key="cmp_models").value
    assert at.selectbox(key="cmp_arm").value == pruned["arm_id"]


def test_overview_offers_four_csv_downloads(store_env: Path) -> None:
    at = run_page()
    assert [b.proto.label for b in at.get("download_button")] == [
        "Download the chance check (CSV)", "Download IROF aggregates (CSV)", "Download per-image IROF (CSV)",
        "Download task performance (CSV)"]


ALERTS = {"clearly beats chance": "success", "beats chance": "info", "no better than chance": "warning",
          "worse than chance": "error"}


def test_overview_says_for_each_dense_model_and_task_whether_it_beats_chance(store_env: Path) -> None:
    store = query.open_store(store_env)
    chance = query.beats_chance(store)  # the page's defaults: IROF's default variant, normalised scores
    assert not chance.empty
    at = run_page()
    lines = {kind: [a.value for a in getattr(at, kind) if "Grad-CAM at layer" in a.value]
             for kind in set(ALERTS.values())}
    assert sum(len(v) for v in lines.values()) == len(chance)  # one line per dense model x task
    for r in chance.itertuples():
        words = f"— {TASK_LABELS[r.task]}: Grad-CAM at layer `{r.layer_label}` **{r.verdict}**"
        assert sum(words in line for line in lines[ALERTS[r.verdict]]) == 1, words
    cells = {(a.arm_id, t) for a in query.arms(store).itertuples() for t in a.tasks}
    no_verdict = cells - set(zip(chance["arm_id"], chance["task"], strict=True))
    assert sum("no verdict" in w.value for w in at.warning) == len(no_verdict)
    n_beat = int(chance["verdict"].isin(["clearly beats chance", "beats chance"]).sum())
    summary = f"**The dense explanations beat chance for {n_beat} of {len(chance)} model × task cells**"
    assert sum(m.value.startswith(summary) for m in at.markdown) == 1


def test_layers_page_draws_one_chart_per_task_of_the_arm_with_one_trace_per_model(store_env: Path) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/layers.py")
    arm = query.arms(store).set_index("arm_id").loc[at.selectbox(key="ly_arm").value]
    margins = query.margin_by_layer(store)  # the page's defaults: IROF's default variant, normalised scores
    margins = margins[margins["arm_id"] == arm.name]
    charts = figures(at)
    assert len(charts) == len(arm["tasks"])
    levels = query.arm_models(store, arm.name)
    for task, chart in zip([t for t in TASK_LABELS if t in list(arm["tasks"])], charts, strict=True):
        with_rows = levels[levels["model_id"].isin(margins.loc[margins["task"] == task, "model_id"])]
        expected = ["dense" if r.is_dense else f"{r.target_sparsity * 100:g} %" for r in with_rows.itertuples()]
        assert [d["name"].split(" (achieved")[0] for d in chart["data"]] == expected
    assert len(at.dataframe[0].value) == len(margins)


def test_layers_page_tells_how_to_add_layers_when_only_the_primary_is_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "study.duckdb"
    shutil.copy(smoke_store_path(), path)
    with duckdb.connect(str(path)) as con:  # the store as precompute writes it without ablation layers
        for table in ("explanations", "faithfulness"):
            con.execute(f"DELETE FROM {table} WHERE layer_role = 'ablation'")
    monkeypatch.setenv("MTLX_STORE", str(path))
    store = query.open_store(path)
    at = run_page("pages/layers.py")
    preset = query.overview(store)["meta"]["preset"]
    assert any(f"python -m mtlx_core.precompute --preset {preset} --layers all" in i.value for i in at.info)
    lay = query.layers(store, query.arm_models(store, at.selectbox(key="ly_arm").value)["model_id"].tolist())
    assert lay["layer_role"].tolist() == ["primary"]
    assert figures(at)[0]["layout"]["xaxis"]["ticktext"] == [f"{lay['layer_label'].iloc[0]} (primary)"]


def test_compare_shows_a_map_per_level_and_changing_the_target_changes_them(store_env: Path) -> None:
    at = run_page("pages/compare.py")
    chosen = at.multiselect(key="cmp_models").value
    maps = [f for f in figures(at) if f["data"][0]["type"] == "image" and len(f["data"]) > 1]
    assert len(maps) >= len(chosen) - 1  # a model without this target shows a note instead
    target = at.selectbox(key="cmp_target")
    before = figures(at)
    if len(target.options) > 1:
        target.select_index(0 if target.index else 1).run()
    else:  # one target here: another task has other maps
        at.selectbox(key="cmp_task").select_index(1).run()
    assert not at.exception
    assert figures(at) != before


def test_compare_slic_toggle_adds_the_boundaries(store_env: Path) -> None:
    at = run_page("pages/compare.py")
    n_before = sum(len(f["data"]) for f in figures(at))
    at.toggle(key="cmp_slic").set_value(True).run()
    assert sum(len(f["data"]) for f in figures(at)) > n_before


def test_compare_needs_two_levels(store_env: Path) -> None:
    at = run_page("pages/compare.py")
    at.multiselect(key="cmp_models").set_value(at.multiselect(key="cmp_models").value[:1]).run()
    assert any("at least two" in i.value for i in at.info)


def curve_chart(at: AppTest) -> dict | None:
    """The Compare page's chart of perturbation curves (the first chart of lines), if any."""
    return next((f for f in figures(at) if f["data"] and f["data"][0]["type"] == "scatter"), None)


def select_explained_target(at: AppTest, store: query.Store, metric: str) -> Callable[[], pd.DataFrame]:
    """Select the first image and target on the Compare page where a chosen model's map is not all zero (tiny
    smoke models have such maps: no ``ok`` row); returns a function giving the ``ok`` most-relevant-first rows."""
    chosen = at.multiselect(key="cmp_models").value

    def ok_curves() -> pd.DataFrame:
        curves = query.faithfulness_curves(store, chosen, at.radio(key="cmp_image").value,
                                           at.selectbox(key="cmp_task").value, at.selectbox(key="cmp_target").value,
                                           metric)
        return curves[(curves["status"] == "ok") & (curves["ordering"] == "morf")]

    for image in at.radio(key="cmp_image").options:
        at.radio(key="cmp_image").set_value(image).run()
        for target in at.selectbox(key="cmp_target").options:
            at.selectbox(key="cmp_target").set_value(target).run()
            if not ok_curves().empty:
                return ok_curves
    return ok_curves


def test_compare_curves_shade_the_area_between_morf_and_lerf_over_the_share_perturbed(store_env: Path) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/compare.py")
    at.selectbox(key="cmp_metric").set_value("deletion").run()
    assert not at.exception
    ok_curves = select_explained_target(at, store, "deletion")
    ok = ok_curves()
    assert not ok.empty
    chart = curve_chart(at)
    assert chart is not None
    traces = chart["data"]
    morf = [d for d in traces if " · most relevant first (" in d["name"]]
    assert len(morf) == len(ok)
    for d in morf:  # morf fills to the lerf curve drawn just before it
        assert d["fill"] == "tonexty"
        assert " · least relevant first (" in traces[traces.index(d) - 1]["name"]
    np.testing.assert_allclose(array(morf[0]["x"]), ok["x"].iloc[0])  # x: the share of the image perturbed
    assert any("random (mean of" in d["name"] for d in traces)


def test_compare_map_and_derived_metrics_show_numbers_and_say_why_there_is_no_curve(store_env: Path) -> None:
    at = run_page("pages/compare.py")
    select_explained_target(at, query.open_store(store_env), "irof")
    for metric, why in (("rma", "so it has no curve"), ("abpc", "has no curve of its own")):
        at.selectbox(key="cmp_metric").set_value(metric).run()
        assert not at.exception
        assert curve_chart(at) is None
        assert any(why in m.value for m in at.markdown)
        assert "Grad-CAM" in at.dataframe[0].value.columns


def image_z(fig: dict) -> np.ndarray:
    """The RGB pixels of a picture figure."""
    return array(fig["data"][0]["z"])


def test_steps_slider_moves_the_perturbed_image_and_the_curve_marker(store_env: Path) -> None:
    at = run_page("pages/irof_steps.py")
    before = figures(at)
    at.slider(key="st_k").set_value(at.slider(key="st_k").max).run()
    after = figures(at)
    assert not at.exception
    assert before[1] != after[1]
    assert before[2] != after[2]
    n = int(at.slider(key="st_k").max)
    assert at.metric[0].value == f"{n} / {n}"


@pytest.mark.parametrize("metric", ["deletion", "irof"])
def test_steps_page_renders_the_perturbed_images_of_a_curve_metric(store_env: Path, metric: str) -> None:
    store = query.open_store(store_env)
    at = run_page("pages/irof_steps.py")
    at.selectbox(key="st_metric").set_value(metric).run()
    assert not at.exception
    assert not at.warning
    clean = query.image(store, at.radio(key="st_image").value)
    at.slider(key="st_k").set_value(0).run()
    first = image_z(figures(at)[1])
    assert first.shape == clean.shape
    changed = np.any(first != clean, axis=-1)
    if metric == "deletion":  # the curve starts at the clean image
        assert not changed.any()
    else:  # IROF's first point: one segment removed
        labels = query.superpixels(store, at.radio(key="st_image").value)
        assert changed.any()
        assert len(np.unique(labels[changed])) == 1
    at.slider(key="st_k").set_value(at.slider(key="st_k").max).run()
    last = image_z(figures(at)[1])
    assert np.mean(np.any(last != clean, axis=-1)) > 0.5  # everything perturbed (bar pixels equal to the fill)
    assert at.metric[1].value == "100.0%"


def test_steps_page_picks_a_random_replicate(store_env: Path) -> None:
    at = run_page("pages/irof_steps.py")
    at.selectbox(key="st_order").set_value("random").run()
    assert not at.exception
    reps = at.selectbox(key="st_rep")
    assert len(reps.options) > 1
    at.slider(key="st_k").set_value(1).run()
    first = image_z(figures(at)[1])
    reps.set_value(1).run()
    assert not at.exception
    assert not np.array_equal(image_z(figures(at)[1]), first)  # another seed, another order


def test_models_page_lists_every_model(store_env: Path) -> None:
    at = run_page("pages/models.py")
    n = len(query.models(query.open_store(store_env)))
    assert len(at.dataframe[0].value) == n


def test_models_page_shows_per_module_kind_what_each_method_removed(store_env: Path) -> None:
    at = run_page("pages/models.py")
    removed = next(d.value for d in at.dataframe if "trunk encoder" in d.value.columns)
    store = query.open_store(store_env)
    assert len(removed) == len(query.models(store).dropna(subset=["pruning_method"]))
    by_module = query.pruning_by_module(store)
    row = by_module[(by_module["method"] == "netslim") & (by_module["module"] == "trunk decoder")].iloc[0]
    shown = removed.set_index("model_id").loc[row["model_id"], "trunk decoder"]
    assert shown == pytest.approx(row["removed"])


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_live_upload_shows_dense_and_pruned_maps(store_env: Path) -> None:
    at = run_page("pages/live.py")
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    at.file_uploader(key="lv_upload").upload("room.png", png_bytes(img), "image/png").run()
    assert not at.exception
    assert not at.error
    maps = [f for f in figures(at) if f["data"][0]["type"] == "image" and len(f["data"]) > 1]
    assert len(maps) + sum("predicts no pixel" in i.value for i in at.info) == 2
    assert any("Grad-CAM took" in c.value for c in at.caption)


def test_live_bundled_photo_runs_irof_with_a_progress_bar(store_env: Path) -> None:
    at = run_page("pages/live.py")
    at.radio(key="lv_source").set_value("Bundled photo").run()
    assert not at.exception
    at.button(key="lv_irof").click().run()
    assert not at.exception
    curves = figures(at)[-1]
    assert {d["name"].split(" · ")[1].split(" ")[0] for d in curves["data"]} <= {"gradcam", "random", "reversed"}
    assert len(at.get("progress")) == 1


NOISE = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("notes.txt", b"just some text, not an image", "is not an image"),
    ("cut.png", png_bytes(NOISE)[:2000], "truncated or corrupted"),
    ("tiny.png", png_bytes(NOISE[:8, :8]), "at least 32 x 32"),
], ids=["not-an-image", "truncated", "tiny"])
def test_live_bad_upload_shows_an_error_and_does_not_crash(store_env: Path, name: str, data: bytes,
                                                           message: str) -> None:
    at = run_page("pages/live.py")
    at.file_uploader(key="lv_upload").upload(name, data, "application/octet-stream").run()
    assert not at.exception
    assert any(message in e.value for e in at.error)


def test_live_grayscale_upload_is_converted_with_a_note(store_env: Path) -> None:
    at = run_page("pages/live.py")
    gray = (np.random.default_rng(1).random((48, 64)) * 255).astype(np.uint8)
    at.file_uploader(key="lv_upload").upload("gray.png", png_bytes(gray), "image/png").run()
    assert not at.exception
    assert not at.error
    assert any("grayscale" in i.value for i in at.info)


def test_without_a_store_every_page_explains_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLX_STORE", str(tmp_path / "none.duckdb"))
    for page in (None, "pages/compare.py", "pages/layers.py", "pages/irof_steps.py", "pages/models.py",
                 "pages/live.py"):
        at = run_page(page)
        assert any("python -m mtlx_core.precompute --preset demo" in i.value for i in at.info), page


def test_a_store_being_written_gives_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "study.duckdb"
    shutil.copy(smoke_store_path(), path)
    monkeypatch.setenv("MTLX_STORE", str(path))
    writer = duckdb.connect(str(path))  # holds the file the way a writer would
    try:
        at = run_page()
        assert any("being written" in w.value for w in at.warning)
    finally:
        writer.close()
