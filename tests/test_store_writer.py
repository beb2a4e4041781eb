"""The study store's writer, snapshots and reader errors (no models involved: fast)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from mtlx_core.store.errors import StoreBusyError, StoreError, StoreMissingError
from mtlx_core.store.snapshot import open_readonly, publish, work_path
from mtlx_core.store.writer import StoreConflictError, StoreWriter, UnitRows, merge_store


def _image_row(i: int) -> dict:
    return {"image_id": f"img{i}", "dataset": "synth", "split": "val", "idx": i, "height": 2, "width": 2,
            "image": b"png"}


def _unit(i: int) -> UnitRows:
    return UnitRows(f"images:{i}", "images", {"images": [_image_row(i)]}, arm_id="a", detail={"i": i})


def _hold_lock(path: Path) -> subprocess.Popen:
    """A second process that holds DuckDB's write lock on ``path`` until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys, duckdb
        con = duckdb.connect({str(path)!r})
        con.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        print("locked", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_commit_writes_rows_and_journal_together(tmp_path: Path) -> None:
    w = StoreWriter.open(tmp_path / "s.duckdb")
    w.commit(_unit(1))
    assert w.done_units() == {"images:1": None}
    assert w.con.execute("SELECT count(*) FROM images").fetchone()[0] == 1
    w.close()


def test_failed_commit_leaves_no_rows(tmp_path: Path) -> None:
    w = StoreWriter.open(tmp_path / "s.duckdb")
    w.commit(_unit(1))
    dup = UnitRows("images:1", "images", {"images": [_image_row(2)]})  # journal row clashes: whole unit rolls back
    with pytest.raises(duckdb.ConstraintException):
        w.commit(dup)
    assert w.con.execute("SELECT list(image_id ORDER BY image_id) FROM images").fetchone()[0] == ["img1"]
    w.close()


def test_publish_makes_a_readable_snapshot_of_committed_units(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = StoreWriter.open(store)
    w.commit(_unit(1))
    assert w.publish()
    w.commit(_unit(2))  # committed after the snapshot: not in it
    con = open_readonly(store)
    assert con.execute("SELECT count(*) FROM units").fetchone()[0] == 1
    con.close()
    assert w.publish()
    w.close(remove_work=True)
    assert not work_path(store).exists()
    con = open_readonly(store)
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 2
    con.close()


def test_reopen_continues_from_published_store(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = StoreWriter.open(store)
    w.commit(_unit(1))
    w.publish()
    w.close(remove_work=True)
    w = StoreWriter.open(store)
    assert w.done_units() == {"images:1": None}
    assert not w.publish()  # nothing changed: the store is left alone
    w.close(remove_work=True)


def test_open_readonly_missing_store_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(StoreMissingError, match=r"python -m mtlx_core\.precompute"):
        open_readonly(tmp_path / "nope.duckdb")


def test_reader_of_a_locked_file_gets_store_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    proc = _hold_lock(path)
    try:
        with pytest.raises(StoreBusyError, match="store is being written"):
            open_readonly(path)
    finally:
        proc.communicate("")


def test_reader_before_first_snapshot_gets_store_busy_error(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    proc = _hold_lock(work_path(store))
    try:
        with pytest.raises(StoreBusyError, match="no snapshot published yet"):
            open_readonly(store)
    finally:
        proc.communicate("")
    with pytest.raises(StoreMissingError, match="interrupted precompute"):  # lock released: a leftover work file
        open_readonly(store)


def test_second_writer_gets_store_busy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mtlx_core.store.writer as writer

    monkeypatch.setattr(writer, "LOCK_WAIT_S", 0.5)
    store = tmp_path / "s.duckdb"
    proc = _hold_lock(work_path(store))
    try:
        with pytest.raises(StoreBusyError, match="another precompute"):
            StoreWriter.open(store)
    finally:
        proc.communicate("")


def test_writer_waits_for_a_brief_reader_of_the_work_file(tmp_path: Path) -> None:
    """The app's status probe opens the work file read-only for a moment; a (resuming) precompute that starts
    at that moment must wait for it, not fail with "another precompute is writing"."""
    store = tmp_path / "s.duckdb"
    w = StoreWriter.open(store)
    w.close()
    code = textwrap.dedent(f"""
        import time, duckdb
        con = duckdb.connect({str(work_path(store))!r}, read_only=True)
        print("reading", flush=True)
        time.sleep(1.0)
        con.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "reading"
    try:
        w = StoreWriter.open(store)
        w.close()
    finally:
        proc.wait()


def test_store_errors_share_a_base_class() -> None:
    assert issubclass(StoreBusyError, StoreError)
    assert issubclass(StoreMissingError, StoreError)


def test_ensure_meta_refuses_other_settings(tmp_path: Path) -> None:
    w = StoreWriter.open(tmp_path / "s.duckdb")
    w.ensure_meta({"preset": "smoke", "settings_key": "abc"})
    w.ensure_meta({"preset": "smoke", "settings_key": "abc"})
    with pytest.raises(StoreConflictError, match="settings_key"):
        w.ensure_meta({"preset": "smoke", "settings_key": "xyz"})
    w.close()


def test_merge_store_adds_only_missing_units(tmp_path: Path) -> None:
    shard = tmp_path / "shard.duckdb"
    w = StoreWriter.open(shard)
    w.commit(_unit(1))
    w.commit(_unit(2))
    w.publish()
    w.close(remove_work=True)
    main = StoreWriter.open(tmp_path / "main.duckdb")
    main.commit(_unit(1))
    assert merge_store(main.con, shard) == 1
    assert merge_store(main.con, shard) == 0
    assert sorted(main.done_units()) == ["images:1", "images:2"]
    assert main.con.execute("SELECT count(*) FROM images").fetchone()[0] == 2
    main.close()


def test_publish_replaces_atomically_while_a_reader_is_open(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = StoreWriter.open(store)
    w.commit(_unit(1))
    w.publish()
    reader = open_readonly(store)
    w.commit(_unit(2))
    publish(w.con, w.work, store)
    assert reader.execute("SELECT count(*) FROM images").fetchone()[0] == 1  # the old snapshot, intact
    reader.close()
    fresh = open_readonly(store)
    assert fresh.execute("SELECT count(*) FROM images").fetchone()[0] == 2
    fresh.close()
    w.close()


def test_build_status_says_running_interrupted_or_complete(tmp_path: Path) -> None:
    from mtlx_core.store import query

    store = tmp_path / "s.duckdb"
    w = StoreWriter.open(store)
    w.set_meta({"status": "running", "arms_planned": '["a", "b"]', "arms_complete": '["a"]'})
    w.commit(_unit(1))
    w.publish()
    w.close()  # the work file stays, unlocked: as after a killed precompute
    assert query.build_status(query.open_store(store)) == {"status": "interrupted", "arms_planned": ["a", "b"],
                                                            "arms_complete": ["a"]}
    proc = _hold_lock(work_path(store))  # a precompute writing more
    try:
        assert query.build_status(query.open_store(store))["status"] == "running"
    finally:
        proc.communicate("")
    w = StoreWriter.open(store)
    w.set_meta({"status": "complete", "arms_complete": '["a", "b"]'})
    w.publish()
    w.close(remove_work=True)
    assert query.build_status(query.open_store(store)) == {"status": "complete", "arms_planned": ["a", "b"],
                                                            "arms_complete": ["a", "b"]}


def test_columnar_insert_stores_exactly_what_row_by_row_insert_stores() -> None:
    from mtlx_core.store.writer import _insert

    ddl = ("CREATE TABLE t (k VARCHAR PRIMARY KEY, x DOUBLE, n INTEGER, flag BOOLEAN, blob BLOB, curve DOUBLE[], "
           "note VARCHAR)")
    rows = [{"k": "a", "x": 1, "n": 3, "flag": True, "blob": b"\x00\x01", "curve": [0.5, 1], "note": None},
            {"k": "b", "x": 0.25, "n": None, "flag": False, "blob": b"", "curve": None, "note": "z"},
            {"k": "c", "x": None, "n": 7, "flag": None, "blob": None, "curve": [], "note": None}]
    fast, slow = duckdb.connect(), duckdb.connect()
    for con in (fast, slow):
        con.execute(ddl)
    _insert(fast, "t", rows)
    cols = list(rows[0])
    slow.executemany(f"INSERT INTO t ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [[r[c] for c in cols] for r in rows])
    everything = "SELECT * FROM t ORDER BY k"
    assert fast.execute(everything).fetchall() == slow.execute(everything).fetchall()
    _insert(fast, "t", [{**rows[0], "x": 9.0}])  # OR IGNORE: the first row of a key stays
    assert fast.execute("SELECT x FROM t WHERE k = 'a'").fetchone()[0] == 1.0
