"""Resumable, exactly-once storage for a stage's per-movie rows."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armor.io import atomic_path

log = logging.getLogger(__name__)


class PartStore:
    """A directory of Parquet parts holding rows keyed by ``movie_id`` with a ``status``.

    Each part is written under a hidden temporary name and renamed when complete, so readers
    never see half a part. A movie can appear in several parts after a rerun (a retry, or a run
    killed before it compacted); ``compact`` keeps one row per movie -- the ``ok`` one if any,
    else the latest by ``time_column`` -- rewriting only the parts that hold superseded rows.
    Compaction is idempotent and deterministic, so it converges whenever it is interrupted.
    """

    def __init__(self, directory: str | Path, schema: pa.Schema, *, time_column: str):
        self.directory = Path(directory)
        self.schema = schema
        self.time_column = time_column

    def parts(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.glob("part-*.parquet") if p.is_file())

    def write_part(self, table: pa.Table) -> Path:
        first = int(pc.min(table["movie_id"]).as_py()) if table.num_rows else 0
        path = self.directory / f"part-{first:09d}-{uuid.uuid4().hex[:12]}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table.cast(self.schema), tmp)
        return path

    def _index(self) -> pa.Table:
        """movie_id, status, time, part, row for every stored row (no payload columns read)."""
        pieces = []
        for number, path in enumerate(self.parts()):
            t = pq.read_table(path, columns=["movie_id", "status", self.time_column]).rename_columns(
                ["movie_id", "status", "time"])
            pieces.append(t.append_column("part", pa.array(np.full(t.num_rows, number, np.int32)))
                           .append_column("row", pa.array(np.arange(t.num_rows, dtype=np.int32))))
        if not pieces:
            return pa.table({"movie_id": pa.array([], pa.int32()), "status": pa.array([], pa.string()),
                             "time": pa.array([], self.schema.field(self.time_column).type),
                             "part": pa.array([], pa.int32()), "row": pa.array([], pa.int32())})
        return pa.concat_tables(pieces)

    def statuses(self) -> dict[int, str]:
        """movie_id -> status of its winning row."""
        index = self._winners(self._index())
        return dict(zip(index["movie_id"].to_pylist(), index["status"].to_pylist()))

    @staticmethod
    def _winners(index: pa.Table) -> pa.Table:
        if index.num_rows == 0:
            return index
        not_ok = pc.not_equal(index["status"], "ok").cast(pa.int8())
        order = pc.sort_indices(
            index.append_column("not_ok", not_ok),
            sort_keys=[("movie_id", "ascending"), ("not_ok", "ascending"), ("time", "descending"),
                       ("part", "descending"), ("row", "descending")])
        ranked = index.take(order)
        movie = ranked["movie_id"].to_numpy()
        first = np.r_[True, movie[1:] != movie[:-1]]
        return ranked.filter(pa.array(first))

    def compact(self) -> int:
        """Drop superseded rows so each movie appears once; returns how many rows were dropped."""
        parts = self.parts()
        index = self._index()
        winners = self._winners(index)
        keep = {(p, r) for p, r in zip(winners["part"].to_pylist(), winners["row"].to_pylist())}
        dropped = index.num_rows - winners.num_rows
        if dropped == 0:
            return 0
        by_part: dict[int, list[int]] = {}
        for p, r in zip(index["part"].to_pylist(), index["row"].to_pylist()):
            by_part.setdefault(p, [])
            if (p, r) in keep:
                by_part[p].append(r)
        for number, rows in by_part.items():
            path = parts[number]
            total = pq.ParquetFile(path).metadata.num_rows
            if len(rows) == total:
                continue
            if not rows:
                path.unlink()
                continue
            table = pq.read_table(path).take(pa.array(rows))
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
        log.info("compacted %s: dropped %d superseded rows", self.directory, dropped)
        return dropped

    def read(self, columns: Iterable[str] | None = None) -> pa.Table:
        """Every stored row (call ``compact`` first for one row per movie)."""
        parts = self.parts()
        if not parts:
            return self.schema.empty_table() if columns is None else \
                pa.schema([self.schema.field(c) for c in columns]).empty_table()
        return pa.concat_tables(pq.read_table(p, columns=list(columns) if columns else None) for p in parts)
