"""Scrape throughput through the whole Ray Data job, as a share of the rate limit.

The local TMDB-compatible server adds 100 ms of latency to every request; the job runs with a
40 requests/s limit shared by its actors. Sustained throughput is measured at the server over
the middle 80 % of the requests (ramp-up and the last batches' tail excluded); the whole-run
figure is printed too. Target: sustained >= 0.95 of the limit.

``--quick``: the same job, server and figures for 40 movies (120 requests, a few seconds after
Ray's start-up); tests/integration/test_bench_quick.py runs it. The TCP connections the server saw
are printed too: each actor keeps one session, so its batches reuse its connections.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from armor.config import ScrapeConfig
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.tmdb.client import Credentials
from armor.tmdb.fixture import Faults, FixtureServer
from armor.tmdb.standin import load_catalogue

FULL_MOVIES, QUICK_MOVIES = 400, 40


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movies", type=int, default=None,
                        help=f"movies to scrape, 3 requests each (default {FULL_MOVIES}; {QUICK_MOVIES} with --quick)")
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MOVIES} movies: same job and figures, seconds")
    args = parser.parse_args(argv)
    if args.movies is None:
        args.movies = QUICK_MOVIES if args.quick else FULL_MOVIES

    from pipelines.cli import setup_logging
    from pipelines.scrape import scrape

    setup_logging(-1)
    world = SyntheticWorld(SyntheticConfig.preset("small"))
    with tempfile.TemporaryDirectory() as tmp, \
            FixtureServer(load_catalogue("synthetic:small"), faults=Faults(latency=args.latency),
                          token="bench-token") as server:
        ws = Path(tmp)
        pq.write_table(world.movies(), ws / "movies.parquet")
        config = ScrapeConfig(**server.client_urls(), rate_limit=args.rate, actors=args.actors)
        started = time.monotonic()
        summary = scrape(ws, config, Credentials(token=server.token), limit=args.movies)
        wall = time.monotonic() - started
        # The driver's credentials check precedes Ray's start-up; count the job's own requests.
        job = [r for r in server.requests if r.kind != "health" and not r.path.startswith("/3/configuration")]
        times = np.array(sorted(r.t for r in job))
        connections = len({r.peer for r in job})

    n = times.size
    lo, hi = int(0.1 * n), int(0.9 * n)
    sustained = (hi - lo) / (times[hi] - times[lo])
    whole = (n - 1) / (times[-1] - times[0])
    window = np.searchsorted(times, times + 1.0) - np.arange(n)
    print(f"{n} requests for {args.movies} movies ({summary['stored_by_status']}), "
          f"latency {args.latency * 1000:.0f} ms, {args.actors} actors, limit {args.rate:g} req/s; "
          f"job wall time {wall:.1f} s including Ray start-up")
    print(f"busiest 1 s window: {window.max()} requests (limit {args.rate:g} + burst)")
    print(f"TCP connections opened: {connections} ({n / connections:.1f} requests per connection; "
          f"{args.actors} actors x {config.max_connections} at most, kept for the actor's life)")
    print(f"whole run (first to last request): {whole:.2f} req/s = {whole / args.rate:.3f} of the limit")
    print(f"sustained (middle 80 % of requests): {sustained:.2f} req/s = {sustained / args.rate:.3f} of the limit "
          f"(target >= 0.95)")


if __name__ == "__main__":
    main()
