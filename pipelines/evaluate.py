"""Evaluate reference baselines or saved models on a workspace split under full ranking.

Validation is for choosing; score `--on test` once, for the final report.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from armor.config import EvalConfig
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main

log = logging.getLogger("armor.evaluate")


def evaluate_models(workspace: Path, split: str, models: Sequence[str], on: Literal["valid", "test"] = "valid",
                    config: EvalConfig = EvalConfig()) -> list:
    """Each of ``models`` (a reference baseline's name, or a saved model directory) scored on ``on``;
    the tables go to WORKSPACE/reports/evaluate-SPLIT-ON.{md,csv}. Returns the EvaluationResults."""
    from armor.data.splits import load_split_data
    from armor.errors import ConfigError
    from armor.eval.protocol import evaluate
    from armor.eval.tables import csv_table, markdown_table
    from armor.io import write_text
    from armor.models.base import load_recommender
    from armor.models.registry import ModelSettings, build_model, names
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    data = load_split_data(ws.split_dir(split), ws.movies)
    results = []
    for spec in models:
        if spec in names("reference"):
            model = build_model(spec, ModelSettings().with_seed(config.seed)).fit(data.train)
        elif Path(spec).is_dir():
            model = load_recommender(spec)
        else:
            raise ConfigError(f"--model {spec}: neither a baseline ({', '.join(names('reference'))}) nor a "
                              "model directory")
        results.append(evaluate(model, data, on, config, progress=True))
    table = markdown_table(results, columns=[f"{m}@{k}" for m in ("recall", "ndcg") for k in config.ks])
    stem = ws.reports / f"evaluate-{split}-{on}"
    write_text(table, stem.with_suffix(".md"))
    write_text(csv_table(results, {"protocol": split}), stem.with_suffix(".csv"))
    log.info("wrote %s.{md,csv}", stem)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--split", default="random", help="split name under WORKSPACE/splits (default random)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME|DIR",
                        help="a reference baseline (popularity, random) or a saved model directory; repeatable")
    parser.add_argument("--on", choices=("valid", "test"), default="valid", help="which held-out part to score")
    add_dataclass_arguments(parser, EvalConfig, exclude=("batch_size", "confidence"))
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from armor.eval.tables import markdown_table

    config = dataclass_from_args(EvalConfig, args)
    results = evaluate_models(args.workspace, args.split, args.model, args.on, config)
    print(markdown_table(results, columns=[f"{m}@{k}" for m in ("recall", "ndcg") for k in config.ks]))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.evaluate", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
