"""The scrape stage without Ray: what one batch of movies costs, and the resumable store.

The store is a directory of Parquet parts, one per scraped batch, each written to a hidden
temporary name and renamed when complete. A movie can appear in several parts after a rerun
(a retry of a failed movie, or a run killed before it compacted); ``compact`` keeps one row per
movie -- the ``ok`` one if any, else the latest -- by rewriting only the parts that hold
superseded rows. Compaction is idempotent, so a run killed at any moment and run again ends with
every movie exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armor.config import ScrapeConfig
from armor.io import atomic_path
from armor.tmdb.client import AuthError, Credentials, RateLimiter, TMDBClient
from armor.tmdb.linking import link_movie

log = logging.getLogger(__name__)

STATUSES = ("ok", "no_poster", "no_trailer", "not_found", "failed")

SCRAPE_SCHEMA = pa.schema([
    pa.field("movie_id", pa.int32(), nullable=False),
    pa.field("tmdb_id", pa.int32()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("overview", pa.string()),
    pa.field("release_date", pa.string()),
    pa.field("genres", pa.list_(pa.string())),
    pa.field("poster_path", pa.string()),
    pa.field("poster", pa.binary()),
    pa.field("trailer_key", pa.string()),
    pa.field("thumbnail", pa.binary()),
    pa.field("error", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("link_confidence", pa.float32()),  # null when the id came from links.csv
    pa.field("link_query", pa.string()),
    pa.field("scraped_at", pa.timestamp("ms", tz="UTC"), nullable=False),
])

# What each worker is given per movie: the movies table's columns that linking needs.
REQUEST_COLUMNS = ("movie_id", "title", "year", "tmdb_id")


def make_client(config: ScrapeConfig, credentials: Credentials | None = None, *,
                rate_limiter: RateLimiter | None = None) -> TMDBClient:
    """A client for ``config``; credentials from the environment unless given (Ray workers are
    handed the driver's, since their environment need not hold them)."""
    token = credentials.token if credentials else None
    api_key = credentials.api_key if credentials else None
    return TMDBClient(token=token, api_key=api_key, api_url=config.api_url, image_url=config.image_url, thumbnail_url=config.thumbnail_url,
                      poster_size=config.poster_size, rate=config.rate_limit, burst=config.burst,
                      rate_limiter=rate_limiter, max_connections=config.max_connections,
                      max_attempts=config.max_attempts)


async def scrape_movie(client: TMDBClient, request: dict[str, Any], link_threshold: float) -> dict[str, Any]:
    """One movie: link it by title and year when it has no TMDB id, then fetch its content."""
    movie_id = int(request["movie_id"])
    tmdb_id = request.get("tmdb_id")
    link: dict[str, Any] = {"link_confidence": None, "link_query": None}
    if tmdb_id is None:
        linked = await link_movie(client, movie_id, request["title"], request.get("year"), threshold=link_threshold)
        link = {"link_confidence": linked["confidence"], "link_query": linked["query"]}
        tmdb_id = linked["tmdb_id"]
        if tmdb_id is None:
            return {"movie_id": movie_id, "tmdb_id": None, "status": "not_found", "genres": [],
                    "error": f"not linked to TMDB: {linked['reason']}", "attempts": linked["searches"], **link}
    row = await client.fetch_movie_row(movie_id, int(tmdb_id))
    row.update(link)
    return row


async def scrape_batch(client: TMDBClient, requests: list[dict[str, Any]], link_threshold: float) -> pa.Table:
    """All movies of a batch concurrently (the client's connection cap and rate limit pace them)."""
    rows = await asyncio.gather(*(scrape_movie(client, r, link_threshold) for r in requests),
                                return_exceptions=True)
    now = pa.scalar(int(time.time() * 1000), pa.timestamp("ms", tz="UTC"))
    for row in rows:
        if isinstance(row, AuthError):
            raise row
    out = []
    for request, row in zip(requests, rows):
        if isinstance(row, BaseException):
            # A bug or an unexpected payload: record it for this movie, keep the batch.
            row = {"movie_id": int(request["movie_id"]), "tmdb_id": request.get("tmdb_id"), "status": "failed",
                   "genres": [], "error": f"{type(row).__name__}: {row}", "attempts": 0}
        out.append(row)
    columns = {field.name: [r.get(field.name) for r in out] for field in SCRAPE_SCHEMA if field.name != "scraped_at"}
    columns["scraped_at"] = [now.value] * len(out)
    return pa.table(columns, schema=SCRAPE_SCHEMA)


class ScrapeStore:
    """The ``tmdb/`` directory of a workspace."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def parts(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.glob("part-*.parquet") if p.is_file())

    def write_part(self, table: pa.Table) -> Path:
        first = int(pc.min(table["movie_id"]).as_py()) if table.num_rows else 0
        path = self.directory / f"part-{first:09d}-{uuid.uuid4().hex[:12]}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table.cast(SCRAPE_SCHEMA), tmp)
        return path

    def _index(self) -> pa.Table:
        """movie_id, status, scraped_at, part, row for every stored row (no image bytes read)."""
        pieces = []
        for number, path in enumerate(self.parts()):
            t = pq.read_table(path, columns=["movie_id", "status", "scraped_at"])
            pieces.append(t.append_column("part", pa.array(np.full(t.num_rows, number, np.int32)))
                           .append_column("row", pa.array(np.arange(t.num_rows, dtype=np.int32))))
        if not pieces:
            return pa.table({"movie_id": pa.array([], pa.int32()), "status": pa.array([], pa.string()),
                             "scraped_at": pa.array([], pa.timestamp("ms", tz="UTC")),
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
            sort_keys=[("movie_id", "ascending"), ("not_ok", "ascending"), ("scraped_at", "descending"),
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
            return SCRAPE_SCHEMA.empty_table() if columns is None else \
                pa.schema([SCRAPE_SCHEMA.field(c) for c in columns]).empty_table()
        return pa.concat_tables(pq.read_table(p, columns=list(columns) if columns else None) for p in parts)


def pending_requests(movies: pa.Table, store: ScrapeStore) -> pa.Table:
    """Movies still to scrape: every movie whose stored status is not ``ok`` (or that has none)."""
    done = {m for m, s in store.statuses().items() if s == "ok"}
    keep = pa.array([m not in done for m in movies["movie_id"].to_pylist()])
    return movies.select(list(REQUEST_COLUMNS)).filter(keep)


@dataclasses.dataclass(frozen=True)
class ModalityCoverage:
    movies: int
    with_text: int
    with_poster: int
    with_thumbnail: int
    complete: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def modality_presence(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean (text, poster, thumbnail) presence per row; blank overviews count as missing."""
    overview = pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(table["overview"], "")))
    text = overview.to_numpy(zero_copy_only=False) > 0
    poster = pc.is_valid(table["poster"]).to_numpy(zero_copy_only=False)
    thumbnail = pc.is_valid(table["thumbnail"]).to_numpy(zero_copy_only=False)
    return text, poster, thumbnail


def modality_coverage(table: pa.Table) -> ModalityCoverage:
    text, poster, thumb = modality_presence(table)
    return ModalityCoverage(movies=table.num_rows, with_text=int(text.sum()), with_poster=int(poster.sum()),
                            with_thumbnail=int(thumb.sum()), complete=int((text & poster & thumb).sum()))


def multimodal_movie_ids(table: pa.Table, policy: str) -> np.ndarray:
    """Movie ids in the multimodal benchmark: all three modalities ("exclude", the paper), or
    at least one of them ("impute": the missing ones are filled downstream)."""
    has = modality_presence(table)
    keep = np.logical_and.reduce(has) if policy == "exclude" else np.logical_or.reduce(has)
    return np.sort(table["movie_id"].to_numpy()[keep])
