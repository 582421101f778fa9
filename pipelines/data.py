"""`armor data ...`: prepare MovieLens into the canonical Parquet, generate synthetic worlds, split.

No Ray here: these are single-process steps that finish in seconds even for ML-32M-sized
inputs (pyarrow parses in parallel).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from armor.config import SplitConfig
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main

log = logging.getLogger("armor.data")

DEFAULT_CACHE = Path.home() / ".cache" / "armor" / "movielens"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{prepare,synth,split}")

    prepare = sub.add_parser("prepare", help="load a MovieLens directory or named release into Parquet",
                             description="Load MovieLens (ml-100k, ml-1m, ml-latest*, ml-20m/25m/32m, or a "
                             "directory holding any of their formats) and write interactions.parquet and "
                             "movies.parquet into the workspace.")
    prepare.add_argument("--movielens", required=True, metavar="DIR|NAME",
                         help="a directory, or a release name (ml-100k, ml-1m, ml-latest-small, ml-latest, "
                         "ml-20m, ml-25m, ml-32m) downloaded and checksum-verified; 'embedded' is the "
                         "ML-100K copy shipped in the recbole wheel")
    prepare.add_argument("--out", "--workspace", dest="workspace", required=True, type=Path,
                         help="workspace directory to write into")
    prepare.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                         help=f"where downloaded releases are kept (default {DEFAULT_CACHE})")
    prepare.add_argument("--base-url", default=None, help="mirror of files.grouplens.org/datasets/movielens")
    prepare.add_argument("--offline", action="store_true",
                         help="never download; ml-100k then uses the embedded copy")
    add_common(prepare)
    prepare.set_defaults(func=run_prepare)

    synth = sub.add_parser("synth", help="write a synthetic MovieLens-format world (ml-1m files + content)",
                           description="Generate a seeded synthetic world whose latent genres drive both "
                           "ratings and content, in the ml-1m file format plus content.parquet.")
    synth.add_argument("--size", default="tiny", help="preset: tiny, small, ml-100k, ml-1m, ml-10m, ml-32m "
                       "(default tiny)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the synthetic world: its users, movies, ratings "
                       "and content (default 0)")
    synth.add_argument("--out", required=True, type=Path, help="directory to write the ml-1m files into")
    synth.add_argument("--no-content", action="store_true", help="skip overviews and images")
    add_common(synth)
    synth.set_defaults(func=run_synth)

    split = sub.add_parser("split", help="split the workspace's positives per user",
                           description="Choose the catalogue (all movies, or the multimodal ones), keep users "
                           "with enough positives (rating >= threshold) inside it, then split each user's "
                           "positives into train/valid/test: random or temporal 80/10/10, leave-one-out (latest "
                           "positive to test, the one before it to valid; ties by timestamp, then movie id), or "
                           "the item cold start (a seeded share of movies held out entirely). Prints the funnel.")
    split.add_argument("--workspace", required=True, type=Path, help="workspace written by `armor data prepare`")
    add_dataclass_arguments(split, SplitConfig)
    split.add_argument("--name", default=None, help="split directory name (default: the method)")
    split.add_argument("--features-dir", type=Path, default=None,
                       help="feature store deciding the multimodal catalogue (default WORKSPACE/features)")
    add_common(split)
    split.set_defaults(func=run_split)


def run_prepare(args: argparse.Namespace) -> int:
    from armor.data import movielens

    kwargs = {} if args.base_url is None else {"base_url": args.base_url}
    source = movielens.resolve_movielens(args.movielens, args.cache_dir, offline=args.offline, **kwargs)
    counts = movielens.prepare(source, args.workspace)
    log.info("prepared %s -> %s: %s", source, args.workspace, counts)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from armor.data.synthetic import SyntheticConfig, SyntheticWorld, write_movielens

    world = SyntheticWorld(SyntheticConfig.preset(args.size, seed=args.seed))
    out = write_movielens(world, args.out, content=not args.no_content)
    log.info("wrote synthetic world %r (seed %d) to %s", args.size, args.seed, out)
    return 0


def split(workspace: Path, config: SplitConfig, name: str | None = None,
          features_dir: Path | None = None) -> dict[str, Any]:
    """Split the workspace's ratings into WORKSPACE/splits/NAME for the config's catalogue; returns the
    funnel (users, movies and positives kept and dropped at each step)."""
    import pyarrow.parquet as pq

    from armor.data.catalogue import select_catalogue
    from armor.data.splits import make_split, write_split
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    ws.require(ws.interactions, ws.movies, hint="run `armor data prepare` first")
    catalogue = select_catalogue(pq.read_table(ws.movies)["movie_id"].to_numpy(), config.catalogue,
                                 config.missing_modality, features_dir or ws.features)
    made = make_split(pq.read_table(ws.interactions), config, catalogue)
    out = write_split(made, ws.split_dir(name or config.method))
    log.info("split written to %s", out)
    return {"directory": str(out), "funnel": made.funnel}


def run_split(args: argparse.Namespace) -> int:
    from armor.data.catalogue import funnel_markdown

    result = split(args.workspace, dataclass_from_args(SplitConfig, args), args.name, args.features_dir)
    print(f"{result['directory']}:\n{funnel_markdown(result['funnel'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, lambda a: a.func(a), "python -m pipelines.data", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
