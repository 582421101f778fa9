"""Tables of evaluation results: Markdown for people, CSV for tools; the paper's Table 1 for reference."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from armor.eval.protocol import EvaluationResult

DEFAULT_COLUMNS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def _short(metric: str) -> str:
    name, k = metric.split("@")
    return {"recall": "R", "ndcg": "N", "hr": "HR", "mrr": "MRR", "coverage": "Cov", "diversity": "Div",
            "precision": "P", "map": "MAP", "arp": "ARP", "tail": "Tail", "novelty": "Nov",
            "gini": "Gini"}.get(name, name) + f"@{k}"


def markdown_table(results: Sequence[EvaluationResult], columns: Sequence[str] = DEFAULT_COLUMNS,
                   with_ci: bool = True) -> str:
    """One row per result: the metric mean and, below it in brackets, its 95 % bootstrap CI."""
    header = "| Model | " + " | ".join(_short(c) for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for result in results:
        row = result.row()
        cells = []
        for column in columns:
            spec = ".1f" if column.startswith("arp@") else ".4f"  # ARP is a count of positives
            cell = format(row.get(column, float("nan")), spec)
            low, high = row.get(f"{column}_lo", math.nan), row.get(f"{column}_hi", math.nan)
            if with_ci and not (math.isnan(low) or math.isnan(high)):  # no bootstrap, no interval
                cell += f" [{low:{spec}}, {high:{spec}}]"
            cells.append(cell)
        lines.append(f"| {result.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: Sequence[EvaluationResult], extra: dict[str, str] | None = None) -> str:
    return csv_rows([(result, extra or {}) for result in results])


def csv_rows(results: Sequence[tuple[EvaluationResult, dict[str, str]]]) -> str:
    """One CSV row per (result, extra columns), every metric with its CI bounds; columns in first-seen order."""
    rows = []
    for result, extra in results:
        row: dict[str, object] = {"model": result.model, "split": result.split, **extra}
        row.update(result.row())
        rows.append(row)
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# The paper's Table 1 (ML-1M + TMDB, its own split), for reference beside our numbers.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "text": {"recall@5": 0.018, "recall@10": 0.043, "recall@20": 0.107,
             "ndcg@5": 0.0070, "ndcg@10": 0.0160, "ndcg@20": 0.0320},
    "image": {"recall@5": 0.052, "recall@10": 0.122, "recall@20": 0.196,
              "ndcg@5": 0.0260, "ndcg@10": 0.0480, "ndcg@20": 0.0650},
    "fused": {"recall@5": 0.004, "recall@10": 0.012, "recall@20": 0.036,
              "ndcg@5": 0.0025, "ndcg@10": 0.0050, "ndcg@20": 0.0105},
    "bpr": {"recall@5": 0.017, "recall@10": 0.035, "recall@20": 0.073,
            "ndcg@5": 0.0100, "ndcg@10": 0.0156, "ndcg@20": 0.0250},
    "lightgcn": {"recall@5": 0.010, "recall@10": 0.030, "recall@20": 0.065,
                 "ndcg@5": 0.0055, "ndcg@10": 0.0110, "ndcg@20": 0.0201},
}


def paper_table_markdown(rows: Sequence[tuple[str, str]], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """The paper's rows for (our label, paper key) pairs; keys the paper does not report are skipped."""
    lines = ["| Model (paper, ML-1M) | " + " | ".join(_short(c) for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, key in rows:
        if key in PAPER_TABLE1:
            lines.append(f"| {label} | " + " | ".join(f"{PAPER_TABLE1[key][c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"
