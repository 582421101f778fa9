"""Evaluate baselines or saved models on a workspace split under full ranking.

Validation is for choosing; score `--on test` once, for the final report.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines.cli import add_common, stage_main

log = logging.getLogger("armor.evaluate")

BASELINES = ("popularity", "random")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--split", default="random", help="split name under WORKSPACE/splits (default random)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME|DIR",
                        help=f"a baseline ({', '.join(BASELINES)}) or a saved model directory; repeatable")
    parser.add_argument("--on", choices=("valid", "test"), default="valid", help="which held-out part to score")
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    add_common(parser)


def build_baseline(name: str, seed: int):
    from armor.models.baselines import Popularity, RandomRanker

    return Popularity() if name == "popularity" else RandomRanker(seed=seed)


def run(args: argparse.Namespace) -> int:
    from armor.config import EvalConfig
    from armor.data.splits import load_split_data
    from armor.errors import ConfigError
    from armor.eval.protocol import evaluate
    from armor.eval.report import csv_table, markdown_table
    from armor.io import write_text
    from armor.models.base import load_recommender
    from armor.workspace import Workspace

    ws = Workspace(args.workspace)
    data = load_split_data(ws.split_dir(args.split), ws.movies)
    config = EvalConfig(ks=tuple(args.ks), bootstrap_samples=args.bootstrap, seed=args.seed)
    results = []
    for spec in args.model:
        if spec in BASELINES:
            model = build_baseline(spec, args.seed).fit(data.train, data.valid)
        elif Path(spec).is_dir():
            model = load_recommender(spec)
        else:
            raise ConfigError(f"--model {spec}: neither a baseline ({', '.join(BASELINES)}) nor a model directory")
        results.append(evaluate(model, data, args.on, config, progress=True))
    table = markdown_table(results, columns=[f"{m}@{k}" for m in ("recall", "ndcg") for k in args.ks])
    print(table)
    stem = ws.reports / f"evaluate-{args.split}-{args.on}"
    write_text(table, stem.with_suffix(".md"))
    write_text(csv_table(results, {"protocol": args.split}), stem.with_suffix(".csv"))
    log.info("wrote %s.{md,csv}", stem)
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.evaluate", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
