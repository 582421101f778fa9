"""The scrape stage without Ray: what one batch of movies costs, and where rows are kept.

Rows go to a PartStore (armor/parts.py): one Parquet part per scraped batch, compacted to one
row per movie, so a run killed at any moment and run again ends with every movie exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from armor.config import ScrapeConfig
from armor.parts import PartStore
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


def make_client(config: ScrapeConfig, credentials: Credentials, *,
                rate_limiter: RateLimiter | None = None) -> TMDBClient:
    """A client for ``config``. Ray workers are handed the driver's credentials, since their
    environment need not hold them."""
    return TMDBClient(config, credentials, rate_limiter=rate_limiter)


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


class ScrapeStore(PartStore):
    """The ``tmdb/`` directory of a workspace."""

    def __init__(self, directory: str | Path):
        super().__init__(directory, SCRAPE_SCHEMA, time_column="scraped_at")


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
