"""Evaluate reference baselines or saved models on a workspace split under full ranking.

Validation is for choosing; score `--on test` once, for the final report. A model is scored only on
the split it was trained on (it records which): another split of the same ratings may hold, among
its held-out positives, ones the model trained on. `--allow-other-split` scores it anyway and the
table names the split it came from. Tables go to WORKSPACE/report/evaluate-SPLIT-ON[-N].{md,csv},
never over an earlier evaluation.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from armor.config import EvalConfig
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main

if TYPE_CHECKING:
    from armor.data.splits import SplitData
    from armor.eval.protocol import EvaluationResult
    from armor.models.base import Recommender
    from armor.workspace import Workspace

log = logging.getLogger("armor.evaluate")


def evaluate_models(workspace: Path, split: str, models: Sequence[str], on: Literal["valid", "test"] = "valid",
                    config: EvalConfig = EvalConfig(), allow_other_split: bool = False,
                    tracking_uri: str | None = None) -> list[EvaluationResult]:
    """Each of ``models`` (a reference baseline's name, a model directory from `armor train`, or a
    registered model ``NAME@ALIAS`` / ``models:/NAME/VERSION``) scored on ``on``; returns the results
    and writes the tables under WORKSPACE/report/."""
    from armor.data.splits import load_split_data
    from armor.eval.protocol import evaluate
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    ws.require(ws.split_dir(split) / "split.json", hint=f"make the split first: armor data split --workspace "
                                                       f"{workspace} --method ...")
    data = load_split_data(ws.split_dir(split), ws.movies)
    results = []
    for spec in models:
        model, note = resolve_model(ws, spec, split, data, config.seed, allow_other_split, tracking_uri)
        result = evaluate(model, data, on, config, progress=True)
        if note:
            result.model += f" ({note})"
        results.append(result)
    write_tables(ws, split, on, config, results)
    return results


def resolve_model(ws: Workspace, spec: str, split: str, data: SplitData, seed: int, allow_other_split: bool,
                  tracking_uri: str | None) -> tuple[Recommender, str | None]:
    """(the model ``spec`` names, a note when it was trained on another split)."""
    from armor.errors import ConfigError
    from armor.eval.guard import check_model
    from armor.models.base import MODEL_FILE, load_recommender
    from armor.models.registry import ModelSettings, build_model, names

    if spec in names("reference"):
        return build_model(spec, ModelSettings().with_seed(seed)).fit(data.train), None
    directory = Path(spec) if Path(spec).is_dir() else registered_model_dir(ws, spec, tracking_uri)
    if (directory / "model" / MODEL_FILE).exists():  # the directory `armor train` prints
        directory = directory / "model"
    if not (directory / MODEL_FILE).exists():
        raise ConfigError(f"--model {spec}: neither a baseline ({', '.join(names('reference'))}), a model "
                          "directory written by `armor train`, nor a registered model NAME@ALIAS")
    model = load_recommender(directory)
    return model, check_model(model, data, directory.parent, split, allow_other_split)


def registered_model_dir(ws: Workspace, spec: str, tracking_uri: str | None) -> Path:
    """The model directory a registered version was made from (its ``armor.model_dir`` tag)."""
    from armor.tracking.registry import registered_model_dir as lookup
    from armor.tracking.runs import tracking_uri as resolve_uri

    if "@" not in spec and not spec.startswith("models:/"):
        return Path(spec)  # not a registered name: the caller says what it is not
    return lookup(spec, resolve_uri(ws.root, tracking_uri))


def write_tables(ws: Workspace, split: str, on: str, config: EvalConfig, results: list[EvaluationResult]) -> Path:
    """WORKSPACE/report/evaluate-SPLIT-ON.{md,csv}, or -2, -3, ... beside an earlier evaluation."""
    from armor.eval.tables import csv_table, markdown_table
    from armor.io import write_text

    stem = ws.report / f"evaluate-{split}-{on}"
    number = 1
    while stem.with_suffix(".md").exists() or stem.with_suffix(".csv").exists():
        number += 1
        stem = ws.report / f"evaluate-{split}-{on}-{number}"
    write_text(markdown_table(results, columns=columns(config), with_ci=config.bootstrap > 0),
               stem.with_suffix(".md"))
    write_text(csv_table(results, {"protocol": split}), stem.with_suffix(".csv"))
    log.info("wrote %s.{md,csv}", stem)
    return stem


def columns(config: EvalConfig) -> list[str]:
    return [f"{m}@{k}" for m in ("recall", "ndcg") for k in config.ks]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path, help="workspace written by `armor data prepare`")
    parser.add_argument("--split", default="random", help="split name under WORKSPACE/splits (default random)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME|DIR|NAME@ALIAS",
                        help="a reference baseline (popularity, random, new-first), a model directory from "
                             "`armor train` (WORKSPACE/models/SPLIT/NAME), or a registered model (NAME@ALIAS, "
                             "models:/NAME/VERSION); repeatable")
    parser.add_argument("--on", choices=("valid", "test"), default="valid",
                        help="which held-out part to score (default valid: test is for the final report, once)")
    parser.add_argument("--allow-other-split", action="store_true",
                        help="score a model trained on another split of these ratings (it may have trained on "
                             "this split's held-out positives); the table names its split")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI for registered models (default: $MLFLOW_TRACKING_URI, else the "
                             "workspace's sqlite)")
    add_dataclass_arguments(parser, EvalConfig, exclude=("batch_size", "confidence"))
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from armor.eval.tables import markdown_table

    config = dataclass_from_args(EvalConfig, args)
    results = evaluate_models(args.workspace, args.split, args.model, args.on, config, args.allow_other_split,
                              args.tracking_uri)
    print(markdown_table(results, columns=columns(config), with_ci=config.bootstrap > 0))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.evaluate", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
