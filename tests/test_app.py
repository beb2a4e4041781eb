"""Every page of the Streamlit app under AppTest on a smoke store: it runs, its widgets exist, selections change it."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from _app_store import smoke_store_path
from PIL import Image
from streamlit.testing.v1 import AppTest

from mtlx_core.store import query

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 300
TASK_LABELS = {"segmentation": "Segmentation", "depth": "Depth", "normals": "Surface normals"}  # as the pages say


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = smoke_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def widget_keys(at: AppTest) -> set[str]:
    kinds = ("selectbox", "radio", "multiselect", "slider", "toggle", "button", "file_uploader")
    return {w.key for kind in kinds for w in getattr(at, kind)}


@pytest.mark.parametrize(("page", "title", "keys"), [
    (None, "Faithfulness of explanations under pruning", {"ov_fill", "ov_value", "ov_x", "ov_baselines", "ov_model"}),
    ("pages/compare.py", "Compare explanations across sparsity",
     {"cmp_arm", "cmp_models", "cmp_task", "cmp_layer", "cmp_image", "cmp_target", "cmp_slic"}),
    ("pages/layers.py", "Faithfulness by layer", {"ly_arm", "ly_fill", "ly_value"}),
    ("pages/irof_steps.py", "IROF step by step",
     {"st_arm", "st_model", "st_task", "st_layer", "st_order", "st_image", "st_target", "st_k"}),
    ("pages/models.py", "Models", {"md_arm"}),
    ("pages/live.py", "Live: explain your own image", {"lv_source", "lv_upload"}),
])
def test_every_page_runs_and_shows_its_widgets(store_env: Path, page: str | None, title: str, keys: set[str]) -> None:
    at = run_page(page)
    assert at.title[0].value == title
    assert keys <= widget_keys(at)
    assert not at.error


def test_overview_plots_figure4_per_task_and_the_aoc_choice_changes_it(store_env: Path) -> None:
    at = run_page()
    tasks = {t for (t,) in query.open_store(store_env).rows("SELECT DISTINCT task FROM irof")}
    before = figures(at)
    assert len(before) == 2 * len(tasks)  # AOC and performance per task
    at.radio(key="ov_value").set_value("aoc").run()
    after = figures(at)
    assert before[0]["data"][0]["y"] != after[0]["data"][0]["y"]


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
        "Download the chance check (CSV)", "Download AOC aggregates (CSV)", "Download per-image AOC (CSV)",
        "Download task performance (CSV)"]


ALERTS = {"clearly beats chance": "success", "beats chance": "info", "no better than chance": "warning",
          "worse than chance": "error"}


def test_overview_says_for_each_dense_model_and_task_whether_it_beats_chance(store_env: Path) -> None:
    store = query.open_store(store_env)
    chance = query.beats_chance(store, query.fill_modes(store)[0], "aoc_norm")  # the page's defaults
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
    margins = query.margin_by_layer(store, query.fill_modes(store)[0], "aoc_norm")
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
        for table in ("explanations", "irof"):
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


def test_irof_steps_slider_moves_the_perturbed_image_and_the_curve_marker(store_env: Path) -> None:
    at = run_page("pages/irof_steps.py")
    before = figures(at)
    at.slider(key="st_k").set_value(at.slider(key="st_k").max).run()
    after = figures(at)
    assert not at.exception
    assert before[1] != after[1]
    assert before[2] != after[2]
    n = int(at.slider(key="st_k").max)
    assert at.metric[0].value == f"{n} / {n}"


def test_models_page_lists_every_model(store_env: Path) -> None:
    at = run_page("pages/models.py")
    n = len(query.models(query.open_store(store_env)))
    assert len(at.dataframe[0].value) == n


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
