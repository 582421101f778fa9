"""Enrich the workspace's movies from TMDB on Ray Data: overview, poster, trailer thumbnail.

Reads WORKSPACE/movies.parquet (from `armor data prepare`), links movies without a TMDB id by
title and year, and writes one row per movie to WORKSPACE/tmdb/ (Parquet parts). Rerunning
skips movies already `ok` and retries the others; a killed run continues where it stopped.

Credentials come from TMDB_API_TOKEN (v4 read token) or TMDB_API_KEY (v3 key) in the environment of
the command; the driver hands them to the Ray actors, so the workers' environment need not hold them.
The stage function, ``scrape``, takes them as an argument.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from armor.config import ScrapeConfig
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.tracking import add_tracking_arguments, stage_run, tracking_from_args

if TYPE_CHECKING:
    import pyarrow as pa

    from armor.tmdb.client import Credentials, TMDBClient
    from armor.tmdb.scrape import ScrapeStore

log = logging.getLogger("armor.scrape")


class ScrapeWorker:
    """Ray Data actor: scrapes a batch of movies and writes it as one Parquet part.

    Writing the part here, not in a downstream writer, is what makes a killed job resumable:
    a part exists only when its batch is complete. One TMDB client lives as long as the actor: its
    rate limiter, so its share of the job's rate holds across batches, and its aiohttp session, so
    batches reuse its keep-alive connections instead of reconnecting. Ray Data deletes the actor's
    instance when the pool shuts down, and ``__del__`` closes the session.
    """

    def __init__(self, config: ScrapeConfig, store_dir: str, credentials: Credentials):
        from armor.tmdb.scrape import ScrapeStore

        self.config = config
        self.credentials = credentials
        self.store = ScrapeStore(store_dir)
        self.rate, self.burst = config.per_actor_rate()
        self.client: TMDBClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reported = (0, 0)  # the client's (requests, retries) already reported

    def _client(self) -> TMDBClient:
        if self.client is None:  # created in the actor's event loop, which its session belongs to
            from armor.tmdb.client import RateLimiter
            from armor.tmdb.scrape import make_client

            self.client = make_client(self.config, self.credentials, rate_limiter=RateLimiter(self.rate, self.burst))
            self._loop = asyncio.get_running_loop()
        return self.client

    async def __call__(self, batch: pa.Table) -> dict[str, Any]:
        import numpy as np

        from armor.tmdb.scrape import scrape_batch

        client = self._client()
        started = time.monotonic()
        table = await scrape_batch(client, batch.to_pylist(), self.config.link_threshold)
        await asyncio.get_running_loop().run_in_executor(None, self.store.write_part, table)
        # The client counts every batch so far, and an actor runs several at once: report what is
        # new since the last report, so that the job's sums are exact.
        stats = client.stats
        requests, retries = stats.requests - self._reported[0], stats.retries - self._reported[1]
        self._reported = (stats.requests, stats.retries)
        n = table.num_rows
        first_only = np.zeros(n, dtype=np.int64)
        per_row_requests, per_row_retries = first_only.copy(), first_only.copy()
        if n:
            per_row_requests[0], per_row_retries[0] = requests, retries
        else:  # nothing to carry the counts: keep them for the next batch's report
            self._reported = (stats.requests - requests, stats.retries - retries)
        return {"movie_id": table["movie_id"].to_numpy(), "status": table["status"].to_numpy(zero_copy_only=False),
                "requests": per_row_requests, "retries": per_row_retries,
                "seconds": np.full(n, time.monotonic() - started)}

    async def aclose(self) -> None:
        """Close the client's session (its connections); a later batch would open a new one."""
        if self.client is not None:
            await self.client.close()

    def __del__(self) -> None:
        """Close the session on the event loop it belongs to: Ray Data runs the actor's coroutines on
        a loop in another thread and deletes this instance from the actor's main thread."""
        loop = self._loop
        if self.client is None or loop is None or loop.is_closed():
            return
        try:
            if loop.is_running():
                try:
                    running = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                if running is loop:  # deleted from inside the loop: cannot wait on it here
                    loop.create_task(self.aclose())
                else:
                    asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=10)
            else:
                loop.run_until_complete(self.aclose())
        except Exception as exc:  # noqa: BLE001 - the actor is going away; its sockets go with it
            log.debug("scrape actor: closing its TMDB session failed: %s", exc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path, help="workspace written by `armor data prepare`")
    add_dataclass_arguments(parser, ScrapeConfig)
    parser.add_argument("--limit", type=int, default=None, help="scrape only the first N pending movies")
    add_tracking_arguments(parser)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from armor.tmdb.client import Credentials

    config = dataclass_from_args(ScrapeConfig, args)
    credentials = Credentials.resolve(environ=os.environ)  # AuthError naming both variables when neither is set
    with stage_run("scrape", args.workspace, config, tracking=tracking_from_args(args)) as tracked:
        summary = scrape(args.workspace, config, credentials, limit=args.limit)
        if tracked is not None:
            tracked.log_metrics(flat_numbers(summary))
            tracked.log_artifact(Path(args.workspace) / "tmdb" / "summary.json")
    print(format_summary(summary))
    return 0


def flat_numbers(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (nested) summary, keys joined with '.', for MLflow metrics."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(flat_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def scrape(workspace: Path, config: ScrapeConfig, credentials: Credentials, *,
           limit: int | None = None) -> dict[str, Any]:
    """Scrape the workspace's movies not yet ``ok`` (the first ``limit`` of them, when given) on Ray
    Data; returns the summary, also written to tmdb/summary.json."""
    import pyarrow.parquet as pq

    from armor.io import write_text
    from armor.tmdb.scrape import ScrapeStore, make_client, pending_requests
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    ws.require(ws.movies, hint="run `armor data prepare --out WORKSPACE` first")
    store = ScrapeStore(ws.tmdb)
    store.compact()  # a previous run may have been killed before compacting
    movies = pq.read_table(ws.movies)
    todo = pending_requests(movies, store)
    if limit is not None:
        todo = todo.slice(0, limit)
    log.info("scrape: %d movies, %d to request", movies.num_rows, todo.num_rows)

    progress = _Progress()
    if todo.num_rows:
        async def preflight() -> None:
            async with make_client(config, credentials) as client:
                await client.check_credentials()

        asyncio.run(preflight())  # a bad key fails here, before any actor starts
        _scrape_on_ray(todo, config, credentials, store, progress)
        store.compact()
    summary = _summary(movies, todo, store, config, progress, elapsed=time.monotonic() - progress.started)
    write_text(json.dumps(summary, indent=2) + "\n", ws.tmdb / "summary.json")
    return summary


@dataclasses.dataclass
class _Progress:
    """What this run's actors reported."""

    by_status: dict[str, int] = dataclasses.field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)  # reset once Ray is up


def _scrape_on_ray(todo: pa.Table, config: ScrapeConfig, credentials: Credentials, store: ScrapeStore,
                   progress: _Progress) -> None:
    """Scrape ``todo`` (a pyarrow Table of requests) with a pool of ScrapeWorker actors into ``store``."""
    import pyarrow as pa
    import ray

    from armor.progress import Progress
    from armor.tmdb.client import AuthError
    from pipelines.ray_utils import quiet_ray_data, ray_session

    with ray_session():
        quiet_ray_data()
        # Many small blocks so that every actor keeps pulling work until the end.
        step = config.batch_size
        blocks = [todo.slice(i, step) for i in range(0, todo.num_rows, step)]
        ds = ray.data.from_arrow(blocks).map_batches(
            ScrapeWorker, fn_constructor_kwargs={"config": config, "store_dir": str(store.directory),
                                                 "credentials": credentials},
            batch_size=config.batch_size, batch_format="pyarrow", num_cpus=0.25,
            compute=ray.data.ActorPoolStrategy(size=config.actors))
        # A bar on a terminal, a line every ARMOR_PROGRESS_INTERVAL seconds elsewhere (`ray job logs -f`).
        bar = Progress("scrape", total=todo.num_rows, unit="movie")
        progress.started = time.monotonic()  # rates exclude Ray's start-up
        counts = progress.by_status
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for status in batch["status"].to_pylist():
                    counts[status] = counts.get(status, 0) + 1
                progress.requests += int(pa.compute.sum(batch["requests"]).as_py() or 0)
                progress.retries += int(pa.compute.sum(batch["retries"]).as_py() or 0)
                bar.update(batch.num_rows, **_shown(counts, progress))
        except Exception as exc:  # Ray wraps worker exceptions; surface a credentials error plainly
            cause = exc
            while cause is not None and not isinstance(cause, AuthError):
                cause = cause.__cause__
            if cause is not None:
                raise AuthError(str(cause)) from None
            raise
        finally:
            bar.close()


def _shown(counts: dict[str, int], progress: _Progress) -> dict[str, Any]:
    """What the progress shows after the counts: statuses so far (ok first) and the request rate."""
    shown: dict[str, Any] = {"ok": counts.get("ok", 0)}
    shown.update(sorted((s, c) for s, c in counts.items() if s != "ok"))
    shown["req/s"] = round(progress.requests / max(time.monotonic() - progress.started, 1e-9), 1)
    shown["retries"] = progress.retries
    return shown


def _summary(movies: pa.Table, todo: pa.Table, store: ScrapeStore, config: ScrapeConfig, progress: _Progress,
             elapsed: float) -> dict[str, Any]:
    from armor.tmdb.scrape import modality_coverage, multimodal_movie_ids

    table = store.read(["movie_id", "status", "overview", "poster", "thumbnail"])
    coverage = modality_coverage(table)
    requests = progress.requests
    return {
        "movies": movies.num_rows,
        "requested_this_run": todo.num_rows,
        "this_run_by_status": progress.by_status,
        "stored_by_status": {s: int(c) for s, c in zip(*_value_counts(table["status"]))},
        "requests": requests, "retries": progress.retries, "seconds": round(elapsed, 2),
        "requests_per_second": round(requests / elapsed, 2) if elapsed > 0 and requests else 0.0,
        "rate_limit": config.rate_limit,
        "modalities": coverage.as_dict(),
        "missing_modality_policy": config.missing_modality,
        "multimodal_movies": int(multimodal_movie_ids(table, config.missing_modality).size),
    }


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    import pyarrow.compute as pc

    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def format_summary(summary: dict[str, Any]) -> str:
    stored = summary["stored_by_status"]
    modalities = summary["modalities"]
    lines = [
        f"TMDB scrape: {summary['movies']} movies; this run requested {summary['requested_this_run']} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary['this_run_by_status'].items())) or 'nothing to do'})",
        f"  stored: {', '.join(f'{k} {v}' for k, v in sorted(stored.items()))}",
        f"  requests: {summary['requests']} in {summary['seconds']} s = {summary['requests_per_second']} req/s "
        f"(limit {summary['rate_limit']:g}), retries {summary['retries']}",
        f"  modalities: text {modalities['with_text']}, poster {modalities['with_poster']}, thumbnail "
        f"{modalities['with_thumbnail']}, all three {modalities['complete']}",
        f"  multimodal benchmark ({summary['missing_modality_policy']} policy): {summary['multimodal_movies']} movies, "
        f"{summary['movies'] - summary['multimodal_movies']} left out",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.scrape", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
