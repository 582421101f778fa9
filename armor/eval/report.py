"""Tables of evaluation results: Markdown for people, CSV for tools."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from armor.eval.protocol import EvaluationResult

DEFAULT_COLUMNS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def _short(metric: str) -> str:
    name, k = metric.split("@")
    return {"recall": "R", "ndcg": "N", "hr": "HR", "mrr": "MRR", "coverage": "Cov",
            "diversity": "Div"}.get(name, name) + f"@{k}"


def markdown_table(results: Sequence[EvaluationResult], columns: Sequence[str] = DEFAULT_COLUMNS,
                   with_ci: bool = True) -> str:
    """One row per result: the metric mean and, below it in brackets, its 95 % bootstrap CI."""
    header = "| Model | " + " | ".join(_short(c) for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for result in results:
        row = result.row()
        cells = []
        for column in columns:
            value = row.get(column, float("nan"))
            cell = f"{value:.4f}"
            if with_ci and f"{column}_lo" in row:
                cell += f" [{row[f'{column}_lo']:.4f}, {row[f'{column}_hi']:.4f}]"
            cells.append(cell)
        lines.append(f"| {result.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: Sequence[EvaluationResult], extra: dict[str, str] | None = None) -> str:
    rows = []
    for result in results:
        row: dict[str, object] = {"model": result.model, "split": result.split, **(extra or {})}
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
