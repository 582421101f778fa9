"""The paper's Table 1 and figures, reproduced on a workspace, with test scored once per model.

Reads the models trained into WORKSPACE/models/ (by `armor train`), evaluates each on the test
split of the same benchmark catalogue, and writes WORKSPACE/report/: report.md, table1.csv,
Recall/NDCG bar charts (the paper's Figures 3-5), all-pairs significance, the tuning budget with
training and scoring times, precision, MAP and popularity bias, results by user activity, learning
curves, one test user's top-5 under the best model of each family with posters (after Figures 2,
6, 7), a t-SNE of the overview embeddings coloured by primary genre (Figure 8), diversity and
coverage per model, a cold-start table, the fused model's attention shares per modality, and
provenance.json (configuration, package versions, git commit).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from armor.eval.report_config import ReportConfig
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.tracking import Tracking, add_tracking_arguments, stage_run, tracking_from_args

log = logging.getLogger("armor.report")


def report(workspace: Path, config: ReportConfig | None = None, out: Path | None = None,
           tracking: Tracking = Tracking(), job: Any = None) -> Path:
    """Write the report (see the module docstring) with ``config`` (default ReportConfig()) and log it to
    MLflow; returns its directory. ``job`` (the demo's or benchmark's job, when a stage that ran them
    calls this) is recorded in provenance.json."""
    from armor.eval.report import make_report  # the heavy part, not needed to parse flags

    config = config or ReportConfig()

    with stage_run("report", workspace, dataclasses.asdict(config), tracking=tracking) as tracked:
        directory = make_report(workspace, config, out, job=job)
        if tracked is not None:
            tracked.log_artifacts(directory, artifact_path="report")
    return directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path,
                        help="workspace whose trained models (WORKSPACE/models/SPLIT) the report scores on test")
    add_dataclass_arguments(parser, ReportConfig, exclude=("header",))
    parser.add_argument("--out", type=Path, default=None, help="default WORKSPACE/report")
    add_tracking_arguments(parser)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    out = report(args.workspace, dataclass_from_args(ReportConfig, args), args.out, tracking_from_args(args))
    print((out / "report.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.report", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
