"""The paper's Table 1 and figures, reproduced on a workspace, with test scored once per model.

Reads the models trained into WORKSPACE/models/ (by `armor train`), evaluates each on the test
split of the same benchmark catalogue, and writes WORKSPACE/report/: report.md, table1.csv,
Recall/NDCG bar charts (the paper's Figures 3-5), the top-5 for a query title with posters for
the fused, text-only and image-only models (Figures 2, 6, 7), a t-SNE of the overview embeddings
coloured by primary genre (Figure 8), diversity and coverage per model, a cold-start table,
and the fused model's attention shares per modality.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from armor.eval.report import ReportConfig, make_report
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.tracking import Tracking, add_tracking_arguments, stage_run, tracking_from_args

log = logging.getLogger("armor.report")


def report(workspace: Path, config: ReportConfig = ReportConfig(), out: Path | None = None,
           tracking: Tracking = Tracking()) -> Path:
    """Write the report (see the module docstring) and log it to MLflow; returns its directory."""
    with stage_run("report", workspace, dataclasses.asdict(config), tracking=tracking) as tracked:
        directory = make_report(workspace, config, out)
        if tracked is not None:
            tracked.log_artifacts(directory, artifact_path="report")
    return directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path)
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
