"""``--executor processes`` and ``--executor ray`` (a local Ray instance started by the run itself), 2 workers: the
same store as the sequential run (store fingerprint); on Ray a SIGKILLed worker is retried and a SIGKILLed driver
resumes from the journal.

Every process a test starts is found by PID (the run's process tree, read from /proc) and only those are killed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from _smoke import smoke_args

from mtlx_core.precompute.executors import ExecutorSettings, parse_shares
from mtlx_core.store.fingerprint import store_fingerprint

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the ray executor's tests need Ray (pip install 'mtlx[ray]')")

ROOT = Path(__file__).resolve().parents[1]
RAY = ["--executor", "ray", "--workers", "2"]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start(store: Path, models: Path, data: Path, log: Path, executor: list[str] = RAY) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mtlx_core.precompute", *smoke_args(store, models, data), *executor]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    try:
        rc = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            _kill([*descendants(proc.pid), proc.pid])
    assert rc == 0, log.read_text()[-3000:]


def _units(store: Path) -> list[str]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return [u for (u,) in con.execute("SELECT unit_id FROM units").fetchall()]
    finally:
        con.close()


def _same_store(store: Path, reference: Path) -> None:
    assert store_fingerprint(store) == store_fingerprint(reference)


def test_two_worker_processes_build_the_sequential_store(smoke_reference: dict[str, Path], tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    proc = _start(tmp_path / "s.duckdb", tmp_path / "m", smoke_reference["data"], log,
                  ["--executor", "processes", "--workers", "2"])
    _finish(proc, log)
    _same_store(tmp_path / "s.duckdb", smoke_reference["store"])
    assert "process pool: 2 workers, 1 torch thread(s) each" in log.read_text()


@needs_ray
def test_ray_with_two_workers_builds_the_sequential_store(smoke_reference: dict[str, Path], tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    proc = _start(tmp_path / "s.duckdb", tmp_path / "m", smoke_reference["data"], log)
    _finish(proc, log)
    _same_store(tmp_path / "s.duckdb", smoke_reference["store"])
    assert "ray cluster: 2 CPUs" in log.read_text()


@needs_ray
def test_a_sigkilled_worker_is_retried_and_the_store_is_the_sequential_one(smoke_reference: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    store, log = tmp_path / "s.duckdb", tmp_path / "log.txt"
    proc = _start(store, tmp_path / "m", smoke_reference["data"], log)
    killed, t0 = None, time.monotonic()
    try:
        while killed is None and proc.poll() is None and time.monotonic() - t0 < 600:
            busy = [p for p in descendants(proc.pid) if _title(p).startswith("ray::mtlx:explain")]
            if busy and "unit done: explain:" in log.read_text():
                time.sleep(0.3)  # inside the unit
                killed = busy[0]
                _kill([killed])
            time.sleep(0.1)
    finally:
        _finish(proc, log)
    assert killed is not None, "no explain worker was seen running"
    units = _units(store)
    assert len(units) == len(set(units)) == len(_units(smoke_reference["store"]))
    _same_store(store, smoke_reference["store"])


@needs_ray
@pytest.mark.slow  # two smoke runs on Ray (about 4 min on 2 cores)
def test_a_sigkilled_driver_resumes_from_the_journal(smoke_reference: dict[str, Path], tmp_path: Path) -> None:
    store, models, log = tmp_path / "s.duckdb", tmp_path / "m", tmp_path / "log.txt"
    proc = _start(store, models, smoke_reference["data"], log)
    t0 = time.monotonic()
    try:
        while log.read_text().count("unit done:") < 8 and time.monotonic() - t0 < 600:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        started = descendants(proc.pid)  # the Ray instance the run started: killed with it, by PID
        _kill([proc.pid, *started])
        proc.wait()
    proc = _start(store, models, smoke_reference["data"], tmp_path / "log2.txt")
    _finish(proc, tmp_path / "log2.txt")
    assert "already done" in (tmp_path / "log2.txt").read_text()
    _same_store(store, smoke_reference["store"])


def test_executor_settings_reject_bad_shares_and_local_only_options() -> None:
    with pytest.raises(ValueError, match="unknown unit kind 'explian'; valid: train, prune"):
        ExecutorSettings("ray", gpus={"explian": 0.5})
    with pytest.raises(ValueError, match="apply to --executor ray"):
        ExecutorSettings("local", workers=2)
    with pytest.raises(ValueError, match="--executor processes takes --workers"):
        ExecutorSettings("processes", gpus={"explain": 0.5})
    with pytest.raises(ValueError, match="expected KIND=SHARE"):
        parse_shares(["explain:0.5"], "--gpus")
    assert parse_shares(["train=1", "explain=0.25"], "--gpus") == {"train": 1.0, "explain": 0.25}
