"""Readable snapshots of the study store while precompute writes it.

Precompute writes into a *work file* next to the store (``study.duckdb.work``, locked by DuckDB while it
runs) and publishes a consistent copy to the store path after each finished arm, every few minutes and at
the end: ``CHECKPOINT`` (everything committed is in the main file, the WAL is empty), copy to a temporary
file in the same folder, ``fsync``, ``os.replace``. A reader that opened the previous snapshot keeps reading
it (the old inode); a new reader sees the new one. Nothing ever holds the store path itself open for writing.

Public API::

    con = open_readonly(path)       # read-only DuckDB connection; StoreBusyError / StoreMissingError
    publish(con, work, store)       # atomic snapshot of the work file's committed state
    work_path(store)                # the work file of a store path
    writer_active(store)            # is a precompute writing more into it right now?
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import duckdb

from mtlx_core.atomic import atomic_file
from mtlx_core.store.errors import StoreBusyError, StoreError, StoreMissingError

logger = logging.getLogger(__name__)

WORK_SUFFIX = ".work"
_LOCK_MARKERS = ("could not set lock", "conflicting lock", "different configuration", "database is locked")


def work_path(store: str | Path) -> Path:
    """The work file precompute writes while ``store`` stays readable."""
    store = Path(store)
    return store.with_name(store.name + WORK_SUFFIX)


def is_lock_error(exc: BaseException) -> bool:
    """True when a DuckDB error means another connection holds the file (another process or this one)."""
    return isinstance(exc, duckdb.Error) and any(m in str(exc).lower() for m in _LOCK_MARKERS)


def writer_active(store: str | Path) -> bool:
    """True while a precompute holds the work file of ``store`` (it is computing more for this store)."""
    work = work_path(store)
    if not work.is_file():
        return False
    try:
        duckdb.connect(str(work), read_only=True).close()
    except duckdb.Error as exc:
        return is_lock_error(exc)
    return False


def open_readonly(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a store.

    Raises :class:`StoreMissingError` (with how to build it) when there is no file,
    :class:`StoreBusyError` ("store is being written ...") when a writer holds it, including the case where
    no snapshot exists yet but a precompute is writing the first one, and :class:`StoreError` for a file DuckDB
    cannot read. Never anything else.
    """
    path = Path(path)
    if not path.is_file():
        work = work_path(path)
        if work.is_file():
            try:
                duckdb.connect(str(work), read_only=True).close()
            except duckdb.Error as exc:
                if is_lock_error(exc):
                    raise StoreBusyError(str(path), "no snapshot published yet; the first one appears when the "
                                                    "first arm is finished") from exc
                # not locked but unreadable read-only (a killed writer's WAL): the next precompute replays it
            raise StoreMissingError(str(path), f"an interrupted precompute left {work}: run the same "
                                               "python -m mtlx_core.precompute command again to finish it")
        raise StoreMissingError(str(path))
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise StoreBusyError(str(path), str(exc).splitlines()[0]) from exc
        raise StoreError(f"{path} is not a readable DuckDB study store ({str(exc).splitlines()[0]}); rebuild it with "
                         f"python -m mtlx_core.precompute") from exc


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (``mtlx_core.atomic``): a reader of ``dst`` sees the old file or the
    whole new one, never a part."""
    with atomic_file(dst) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


def publish(con: duckdb.DuckDBPyConnection, work: str | Path, store: str | Path) -> Path:
    """Copy the committed state of ``work`` (open in ``con``) to ``store`` atomically; returns ``store``.

    Must be called between transactions (nothing uncommitted); the copy is taken right after ``CHECKPOINT``
    while this process, the only writer, writes nothing.
    """
    work, store = Path(work), Path(store)
    con.execute("CHECKPOINT")
    # a WAL next to the store would be replayed into the new snapshot by its next reader: never ours
    store.with_name(store.name + ".wal").unlink(missing_ok=True)
    copy_atomic(work, store)
    _fsync_dir(store.parent)
    logger.debug("published %s (%.1f MB)", store, store.stat().st_size / 2**20)
    return store


def remove_stale_temps(store: str | Path) -> int:
    """Delete temporary snapshot files a killed publish left next to ``store``; returns how many."""
    store = Path(store)
    n = 0
    for p in store.parent.glob(f".{store.name}.*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n
