"""The synthetic world written in the MovieLens-1M file format, plus its content as Parquet."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armor.data.synthetic.world import CONTENT_SCHEMA, SyntheticWorld
from armor.io import atomic_path

log = logging.getLogger(__name__)


def _dat_bytes(columns: Sequence[pa.Array]) -> pa.Buffer:
    """``a::b::c\\n`` lines of the given columns, as one buffer, without a Python loop."""
    strings = [pc.cast(c, pa.string()) for c in columns]
    joined = pc.binary_join_element_wise(*strings, "::")
    lines = pc.binary_join_element_wise(joined, "", "\n")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return lines.buffers()[2].slice(start, end - start)


def write_movielens(world: SyntheticWorld, out_dir: str | Path, *, content: bool = True,
                    chunk_users: int = 8192, content_chunk: int = 256) -> Path:
    """Write ``world`` in the ML-1M file format (plus ``content.parquet``) under ``out_dir``.

    Each file is written to a temporary sibling and renamed when complete, so a failure leaves
    earlier files whole and the failing one absent. Text files are Latin-1, like ML-1M's.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = world.config

    movies = world.movies()
    lines = [
        f"{mid}::{title} ({year})::{'|'.join(genres)}\n"
        for mid, title, year, genres in zip(
            movies["movie_id"].to_pylist(), movies["title"].to_pylist(),
            movies["year"].to_pylist(), movies["genres"].to_pylist())
    ]
    with atomic_path(out / "movies.dat") as tmp:
        tmp.write_bytes("".join(lines).encode("latin-1"))

    users = world.users()
    with atomic_path(out / "users.dat") as tmp, open(tmp, "wb") as f:
        f.write(_dat_bytes([users[c] for c in users.column_names]))

    with atomic_path(out / "ratings.dat") as tmp, open(tmp, "wb") as f:
        written = 0
        for table in world.iter_interactions(chunk_users=chunk_users):
            f.write(_dat_bytes([table["user_id"], table["movie_id"],
                                pc.cast(table["rating"], pa.int32()), table["timestamp"]]))
            written += table.num_rows
        log.info("wrote %d ratings to %s", written, out / "ratings.dat")

    if content:
        with atomic_path(out / "content.parquet") as tmp:
            with pq.ParquetWriter(tmp, CONTENT_SCHEMA) as writer:
                for first in range(1, cfg.n_movies + 1, content_chunk):
                    ids = range(first, min(first + content_chunk, cfg.n_movies + 1))
                    writer.write_table(world.content(ids))
    return out
