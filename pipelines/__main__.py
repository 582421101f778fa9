"""`armor <stage> ...` / `python -m pipelines <stage> ...`: every stage of the ARMoR pipeline."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from armor import __version__
from pipelines.cli import run_command

# Stage name -> (module, one-line help). Only the stage being run is imported (to build its
# parser): `armor --help` imports none, and no stage imports Ray, torch or pandas to parse flags.
STAGES = {
    "data": ("pipelines.data", "prepare MovieLens, generate synthetic worlds, split"),
    "scrape": ("pipelines.scrape", "enrich movies from TMDB on Ray Data (overview, poster, trailer thumbnail)"),
    "tmdb-fixture": ("pipelines.tmdb_fixture", "serve a local TMDB-compatible API for tests and offline demos"),
    "encode": ("pipelines.encode", "embed overviews, posters and thumbnails into a feature store on Ray Data"),
    "train": ("pipelines.train", "train a model with Ray Train (or --local), early-stopped on validation"),
    "tune": ("pipelines.tune", "sweep margin, dimension, learning rate and variant with Ray Tune (ASHA)"),
    "register": ("pipelines.register", "register a trained model in MLflow; promote it if it beats the champion"),
    "recommend": ("pipelines.recommend", "answer a history from a registered model (models:/...@champion)"),
    "serve": ("pipelines.serve", "serve the registry's champion over HTTP on Ray Serve, following the alias"),
    "evaluate": ("pipelines.evaluate", "evaluate a baseline or a saved model under full ranking"),
    "report": ("pipelines.report", "Table 1, figures, cold start and diversity: test scored once per model"),
    "demo": ("pipelines.demo", "run the whole pipeline end to end on the embedded ML-100K"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``argv``, only the stage it names gets its flags (the others are listed
    by name and help), so that parsing one stage imports one stage module. Without: every stage."""
    parser = argparse.ArgumentParser(
        prog="armor", description="ARMoR: multimodal movie retrieval on Ray, MLflow and FAISS.",
        epilog="Run `armor <stage> --help` for a stage's options.")
    parser.add_argument("--version", action="version", version=f"armor {__version__}")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (module_name, help_text) in STAGES.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        stage = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(stage)
        if hasattr(module, "run"):  # stages with sub-commands set func on each leaf
            stage.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
