"""Shared command-line plumbing: logging, error reporting, and stage entrypoints."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from armor.errors import ArmorError

log = logging.getLogger("armor")


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # Libraries this project drives are chatty at INFO; their warnings still show.
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "httpx", "faiss", "alembic", "mlflow.store",
                  "sentence_transformers", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    setup_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        return int(func(args) or 0)
    except ArmorError as exc:
        print(f"armor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("armor: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def stage_main(add_arguments: Callable[[argparse.ArgumentParser], None],
               func: Callable[[argparse.Namespace], int | None], prog: str, description: str,
               argv: Sequence[str] | None = None) -> int:
    """Entrypoint for `python -m pipelines.<stage>` (what `ray job submit` runs)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return run_command(func, parser.parse_args(argv))
