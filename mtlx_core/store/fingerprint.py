"""A content fingerprint of a study store: equal for two stores that computed the same thing.

Every base table is hashed row by row in a fixed order (its primary key; a table without one by the canonical
bytes of its rows), so the order in which units were committed (a sequential run, a merge, a distributed run)
does not matter. Each value is hashed in a canonical, type-tagged form: floats as little-endian float64 bytes
(every NaN as the one quiet NaN, so a 1-ulp change shows), integers in decimal, strings as UTF-8, BLOBs as
their bytes, lists element by element, JSON columns parsed and re-serialised with sorted keys.

Left out, because they differ between two runs that computed the same thing:

- timings: ``units.seconds``, ``units.finished_at`` (wall clock), ``units.cpu_seconds``;
- latencies measured on the machine: ``models.latency_cpu_ms`` and ``models.latency_gpu_ms`` (medians of timed
  forwards, different on every run), and in ``models.cost_settings`` the host's ``cpu`` and ``gpu`` names (the
  measurement settings it records, runs, warm-up, threads, form, input shape and torch version, are kept);
- locations: ``models.checkpoint`` (a path under ``--models-dir``; ``checkpoint_sha256`` is the content) and
  ``data_root`` inside ``models.config``;
- the code version: every ``code_version`` column and JSON key (a commit landing between two runs changes only
  the recorded version, as in the precompute tests' store comparison);
- meta keys about the run rather than its results: ``writer.VOLATILE_META`` (created/updated/published times,
  status, arms planned and complete), ``code_version``, ``host`` and ``paths``.

Public API::

    store_fingerprint(path)      # {table: sha256, ..., "store": sha256}
    table_fingerprints(path)     # [TableFingerprint(table, rows, sha256), ...] in the store's table order

``python -m mtlx_core.store fingerprint S`` prints them (``mtlx_core.store.__main__``). Opening goes through
``snapshot.open_readonly``: ``StoreMissingError``, ``StoreBusyError`` or ``StoreError`` for a file that is not a
study store; nothing is ever written.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from mtlx_core.store.errors import StoreError
from mtlx_core.store.reader import REQUIRED_TABLES
from mtlx_core.store.snapshot import open_readonly
from mtlx_core.store.writer import TABLES, VOLATILE_META

#: columns left out per table (timings, measured latencies, paths); ``code_version`` is left out everywhere
SKIP_COLUMNS: dict[str, frozenset[str]] = {
    "units": frozenset({"seconds", "finished_at", "cpu_seconds"}),
    "models": frozenset({"checkpoint", "latency_cpu_ms", "latency_gpu_ms"}),
}
SKIP_EVERYWHERE: frozenset[str] = frozenset({"code_version"})
#: JSON keys dropped at any depth of a JSON column, per (table, column); ``code_version`` in every JSON column
SKIP_JSON_KEYS: dict[tuple[str, str], frozenset[str]] = {
    ("models", "config"): frozenset({"data_root"}),
    ("models", "cost_settings"): frozenset({"cpu", "gpu"}),
}
SKIP_META: frozenset[str] = VOLATILE_META | {"code_version", "host", "paths"}

_FETCH = 1024
_NAN = struct.pack("<d", math.nan)


@dataclass(frozen=True)
class TableFingerprint:
    """One table's hash and how many rows went into it."""

    table: str
    rows: int
    sha256: str


def _length(n: int) -> bytes:
    return struct.pack("<Q", n)


def _float(x: float) -> bytes:
    return _NAN if math.isnan(x) else struct.pack("<d", x)


def _drop_keys(obj: Any, keys: frozenset[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop_keys(v, keys) for v in obj]
    return obj


def canonical_json(text: str, drop: frozenset[str] = frozenset()) -> str:
    """``text`` re-serialised with sorted keys and fixed separators, without the keys ``drop`` (any depth);
    text that is not JSON is returned unchanged."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    return json.dumps(_drop_keys(obj, drop), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_value(v: Any) -> bytes:
    """Canonical, type-tagged bytes of one value as DuckDB returns it."""
    if v is None:
        return b"N"
    if isinstance(v, bool):
        return b"T" if v else b"F"
    if isinstance(v, int):
        s = str(v).encode()
        return b"I" + _length(len(s)) + s
    if isinstance(v, float):
        return b"D" + _float(v)
    if isinstance(v, str):
        s = v.encode("utf-8")
        return b"S" + _length(len(s)) + s
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        return b"B" + _length(len(b)) + b
    if isinstance(v, list | tuple):
        return b"L" + _length(len(v)) + b"".join(encode_value(x) for x in v)
    if isinstance(v, dict):  # STRUCT / MAP
        items = sorted((str(k), encode_value(x)) for k, x in v.items())
        return b"M" + _length(len(items)) + b"".join(encode_value(k) + x for k, x in items)
    s = f"{type(v).__name__}:{v.isoformat() if hasattr(v, 'isoformat') else v}".encode()
    return b"X" + _length(len(s)) + s  # dates, times, decimals, UUIDs


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                                       "AND table_type = 'BASE TABLE'").fetchall()}
    return [t for t in TABLES if t in names] + sorted(names - set(TABLES))


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    rows = con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'main' "
                       "AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()
    skip = SKIP_COLUMNS.get(table, frozenset()) | SKIP_EVERYWHERE
    return [(str(c), str(t)) for c, t in rows if c not in skip]


def _primary_key(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    row = con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE schema_name = 'main' "
                      "AND table_name = ? AND constraint_type = 'PRIMARY KEY'", [table]).fetchone()
    return [] if row is None else [str(c) for c in row[0]]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(con: duckdb.DuckDBPyConnection, table: str, cols: list[tuple[str, str]]) -> Iterator[bytes]:
    """Canonical bytes of every row of ``table``, in the fixed order."""
    json_drop = {i: SKIP_JSON_KEYS.get((table, c), frozenset()) | SKIP_EVERYWHERE
                 for i, (c, t) in enumerate(cols) if t == "JSON"}
    names = [c for c, _ in cols]
    sql = f"SELECT {', '.join(map(_quote, names))} FROM {_quote(table)}"
    params: list[Any] = []
    if table == "meta":
        sql += f" WHERE key NOT IN ({', '.join('?' * len(SKIP_META))})"
        params = sorted(SKIP_META)
    pk = [c for c in _primary_key(con, table) if c in names]
    if pk:
        sql += f" ORDER BY {', '.join(map(_quote, pk))}"

    def encode(row: tuple[Any, ...]) -> bytes:
        vals = [canonical_json(v, json_drop[i]) if i in json_drop and isinstance(v, str) else v
                for i, v in enumerate(row)]
        return encode_value(vals)

    cur = con.cursor()
    try:
        cur.execute(sql, params)
        if not pk:  # no key: the canonical bytes themselves give the order
            yield from sorted(encode(r) for r in cur.fetchall())
            return
        while batch := cur.fetchmany(_FETCH):
            yield from (encode(r) for r in batch)
    finally:
        cur.close()


def _table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> TableFingerprint:
    cols = _columns(con, table)
    h = hashlib.sha256()
    h.update(encode_value([table, [list(c) for c in cols]]))
    n = 0
    for row in _rows(con, table, cols):
        h.update(row)
        n += 1
    return TableFingerprint(table, n, h.hexdigest())


def _open(path: str | Path) -> duckdb.DuckDBPyConnection:
    con = open_readonly(path)
    tables = set(_tables(con))
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        con.close()
        raise StoreError(f"{path} is not a study store (missing tables: {', '.join(missing)})")
    return con


def table_fingerprints(path: str | Path) -> list[TableFingerprint]:
    """Every table's fingerprint, in the writer's table order (then any other tables by name)."""
    con = _open(path)
    try:
        return [_table_fingerprint(con, t) for t in _tables(con)]
    finally:
        con.close()


def combine(tables: list[TableFingerprint]) -> str:
    """The store's hash: SHA-256 of the ``table rows sha256`` lines."""
    text = "".join(f"{t.table} {t.rows} {t.sha256}\n" for t in tables)
    return hashlib.sha256(text.encode()).hexdigest()


def store_fingerprint(path: str | Path) -> dict[str, str]:
    """``{table: sha256, ..., "store": sha256}`` of the store at ``path`` (see the module docstring)."""
    tables = table_fingerprints(path)
    return {**{t.table: t.sha256 for t in tables}, "store": combine(tables)}
