"""`armor tmdb-fixture ...`: serve a local TMDB-compatible API until Ctrl-C (or SIGTERM).

For offline scrapes, demos and integration tests: point the scraper at the printed URLs.
The catalogue is a synthetic world (`synthetic:SIZE`) or a prepared workspace (its
movies.parquet, with stand-in overviews and genre-cued images). Faults are optional and
deterministic given --fault-seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from pipelines.cli import add_common, stage_main

log = logging.getLogger("armor.tmdb_fixture")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", required=True, metavar="synthetic:SIZE|WORKSPACE_DIR",
                        help="synthetic:tiny|small|ml-100k|ml-1m|ml-10m|ml-32m, or a workspace holding movies.parquet")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free one)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic world and stand-in content (default 0)")
    parser.add_argument("--token", default="fixture-token",
                        help="bearer token the API accepts (give the client the same as TMDB_API_TOKEN; default "
                             "fixture-token)")
    parser.add_argument("--api-key", default="fixture-key", help="v3 api_key the API accepts (default fixture-key)")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without credentials")
    faults = parser.add_argument_group("faults (all off by default)")
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the random faults (default 0)")
    for flag, kind, default, text in (
            ("--latency", float, 0.0, "seconds added to every request"),
            ("--share-429", float, 0.0, "share of requests answered 429"),
            ("--retry-after", float, 1.0, "Retry-After seconds sent with 429/503"),
            ("--share-5xx", float, 0.0, "share answered 500/502/503/504"),
            ("--share-drop", float, 0.0, "share whose connection is dropped"),
            ("--share-corrupt", float, 0.0, "share of images corrupted"),
            ("--share-truncated", float, 0.0, "share of images truncated"),
            ("--share-no-trailer", float, 0.0, "share of movies without a trailer"),
            ("--fail-first", int, 0, "fail the first N attempts at every URL")):
        faults.add_argument(flag, type=kind, default=default, help=f"{text} (default %(default)s)")
    faults.add_argument("--fail-mode", default="503", help="how --fail-first fails: 429, 500, 502, 503, 504, "
                        "drop or stall (default 503)")
    faults.add_argument("--bomb-ids", default="", metavar="IDS", help="tmdb ids whose poster is a pixel bomb "
                        "(comma list, lo-hi ranges; default none)")
    faults.add_argument("--malicious-ids", default="", metavar="IDS",
                        help="tmdb ids with a hostile poster_path (default none)")
    faults.add_argument("--wrong-type-ids", default="", metavar="IDS",
                        help="tmdb ids whose poster is text/html (default none)")
    faults.add_argument("--not-found-ids", default="", metavar="IDS", help="tmdb ids that always 404 (default none)")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from armor.tmdb.fixture import Faults, FixtureServer, faults_json, parse_ids
    from armor.tmdb.standin import load_catalogue

    faults = Faults(seed=args.fault_seed, latency=args.latency, share_429=args.share_429,
                    retry_after=args.retry_after, share_5xx=args.share_5xx, share_drop=args.share_drop,
                    share_corrupt=args.share_corrupt, share_truncated=args.share_truncated,
                    share_no_trailer=args.share_no_trailer, fail_first=args.fail_first, fail_mode=args.fail_mode,
                    bomb_ids=parse_ids(args.bomb_ids), malicious_path_ids=parse_ids(args.malicious_ids),
                    wrong_type_ids=parse_ids(args.wrong_type_ids), not_found_ids=parse_ids(args.not_found_ids))
    movies = load_catalogue(args.catalogue, seed=args.seed)
    server = FixtureServer(movies, faults=faults, token=None if args.no_auth else args.token,
                           api_key=None if args.no_auth else args.api_key, host=args.host, port=args.port)

    async def serve() -> None:
        # Handlers before the URL is announced: whoever reads it may signal at once.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Explicit handlers: a process started in the background inherits an ignored SIGINT,
            # and `docker stop` / `kill` send SIGTERM; both should stop the server cleanly.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await server.start()
        urls = server.client_urls()
        log.info("tmdb_api_url=%s tmdb_image_url=%s thumbnail_url=%s", urls["tmdb_api_url"], urls["tmdb_image_url"],
                 urls["thumbnail_url"])
        log.info("auth: %s", "none" if args.no_auth else "the --token bearer token or the --api-key key")
        log.info("faults: %s", faults_json(faults))
        try:
            await stop.wait()
        finally:
            await server.stop()
        log.info("stopped after %d requests", len(server.requests))

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        log.info("stopped after %d requests", len(server.requests))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.tmdb_fixture", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
