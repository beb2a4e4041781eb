"""Read-only access to the study store for the app: one shared connection per file, swapped on republication.

Public API::

    store = open_store()          # env MTLX_STORE, default models_store/study.duckdb; checked to be a study store
    store.df(sql, params)         # a DataFrame; store.rows(sql, params): a list of tuples

The module keeps one read-only connection per store file and runs every query on its own cursor, so one ``Store``
serves several threads. When precompute publishes a new snapshot (``os.replace`` of the file) the next query
swaps the connection, so the app always reads the newest complete snapshot; ``Store.signature`` names the
snapshot a page run started from and keys the app's caches. Opening goes through ``snapshot.open_readonly``
(``StoreMissingError`` / ``StoreBusyError``); a file that is not a study store raises ``StoreError``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from mtlx_core.store.errors import StoreError, StoreMissingError
from mtlx_core.store.schema import SCHEMA_VERSION
from mtlx_core.store.snapshot import open_readonly

logger = logging.getLogger(__name__)

DEFAULT_STORE = Path("models_store") / "study.duckdb"
REQUIRED_TABLES = ("meta", "arms", "models", "task_metrics", "images", "superpixels", "predictions",
                   "explanations", "faithfulness", "similarity", "target_draws")


def store_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The store to read: ``path``, else env ``MTLX_STORE``, else ``models_store/study.duckdb``."""
    return Path(path if path is not None else os.environ.get("MTLX_STORE") or DEFAULT_STORE)


def signature(path: str | os.PathLike[str] | None = None) -> str:
    """Changes whenever the file at ``path`` is replaced or rewritten (cache key of query results)."""
    p = store_path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return f"{p}:missing"
    return f"{p}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


@dataclass
class _Connection:
    con: duckdb.DuckDBPyConnection
    signature: str
    active: int = 0  # queries running on it


_connections: dict[Path, _Connection] = {}
_cond = threading.Condition()


def _connect(p: Path) -> duckdb.DuckDBPyConnection:
    try:
        con = open_readonly(p)
    except duckdb.Error as exc:
        raise StoreError(f"{p} is not a readable DuckDB study store: {str(exc).splitlines()[0]}") from exc
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        con.close()
        raise StoreError(f"{p} is not a study store (missing tables: {', '.join(missing)})")
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if version is not None and str(version[0]) != str(SCHEMA_VERSION):
        con.close()
        raise StoreError(f"{p} has schema version {version[0]}; this code reads version {SCHEMA_VERSION}: "
                         "rebuild it with python -m mtlx_core.precompute")
    return con


def _released(p: Path, c: _Connection) -> bool:
    """``c`` has no query running, or is no longer the connection of ``p``."""
    return c.active == 0 or _connections.get(p) is not c


def _acquire(p: Path) -> _Connection:
    """The connection to the newest snapshot at ``p``, marked in use (give it back with ``_release``).

    DuckDB keeps one database instance per path in a process, so a replaced snapshot's connection must be
    closed before the new file can be opened: the swap waits (up to 30 s) for the queries running on it.
    """
    sig = signature(p)
    with _cond:
        while True:
            c = _connections.get(p)
            if c is not None and c.signature == sig:
                c.active += 1
                return c
            if c is None:
                if sig.endswith(":missing"):
                    open_readonly(p)  # StoreBusyError while the first snapshot is being built
                    raise StoreMissingError(str(p))
                c = _Connection(_connect(p), sig)
                _connections[p] = c
                continue
            _cond.wait_for(functools.partial(_released, p, c), timeout=30)
            if _connections.get(p) is c:
                del _connections[p]
                c.con.close()
                logger.info("store %s was republished; reading the new snapshot", p)


def _release(c: _Connection) -> None:
    with _cond:
        c.active -= 1
        _cond.notify_all()


@dataclass(frozen=True)
class Store:
    """A handle on the store at ``path``; every query reads its newest published snapshot.

    ``signature`` identifies the snapshot that was current when the handle was made (a cache key).
    """

    path: Path
    signature: str

    def _run(self, sql: str, params: Sequence[Any], fetch: str) -> Any:
        c = _acquire(self.path)
        try:
            cur = c.con.cursor()
            try:
                res = cur.execute(sql, list(params))
                return res.df() if fetch == "df" else res.fetchall()
            finally:
                cur.close()
        finally:
            _release(c)

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self._run(sql, params, "df")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._run(sql, params, "rows")


def open_store(path: str | os.PathLike[str] | None = None) -> Store:
    """A handle on the store at ``path`` (see ``store_path``), checked readable; raises ``StoreMissingError``,
    ``StoreBusyError`` (locked by a writer) or ``StoreError`` (not a study store)."""
    p = store_path(path).resolve()
    c = _acquire(p)
    _release(c)
    return Store(p, c.signature)
