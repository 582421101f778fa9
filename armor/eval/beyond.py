"""Beyond Table 1 in the report: precision, MAP and popularity bias per model, NDCG@10 by user
activity, and each trained model's validation curve.

Definitions of the metrics are in ``armor.eval.metrics``; the report's DEFINITIONS repeat them.
Activity is the size of a user's test profile (training + validation positives, what the models
score from), cut at its quartiles over the test users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from armor.data.splits import SplitData
from armor.eval import figures, tables
from armor.eval.metrics import bootstrap_ci
from armor.eval.protocol import EvaluationResult, profile

BEYOND_COLUMNS = ("precision@10", "map@10", "arp@10", "tail@10", "novelty@10", "gini@10", "coverage@10")
ACTIVITY_METRIC = "ndcg@10"


def beyond_accuracy(results: Sequence[EvaluationResult]) -> str:
    return ("\nBeyond accuracy at K = 10 (means; definitions above): precision and MAP; popularity bias: mean "
            "training positives of the recommended movies (ARP, lower is less popular), share of slots outside the "
            "short head (Tail), novelty in bits (Nov), the Gini index of how often each movie is recommended (0: "
            "evenly) and catalogue coverage:\n\n" + tables.markdown_table(results, BEYOND_COLUMNS, with_ci=False))


def activity_groups(data: SplitData, users: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Quartile (0-3) of each of ``users``' test-profile size, and a header per quartile. A user whose
    size equals a cut point goes to the lower quartile, so tied sizes never straddle two groups and
    the groups can differ in size."""
    sizes = np.diff(profile(data, "test").indptr)[users]
    cuts = np.quantile(sizes, [0.25, 0.5, 0.75]) if sizes.size else np.zeros(3)
    group = np.searchsorted(cuts, sizes, side="left")
    headers = []
    for q in range(4):
        member = sizes[group == q]
        span = f"{member.min()}-{member.max()}" if member.size else "-"
        headers.append(f"Q{q + 1}: {span} positives ({member.size} users)")
    return group, headers


def activity_table(results: Mapping[str, EvaluationResult], labels: Mapping[str, str], data: SplitData,
                   bootstrap: int, seed: int, metric: str = ACTIVITY_METRIC) -> str:
    """``metric`` per quartile of profile size, per model, with the 95% bootstrap CI within each quartile."""
    first = next(iter(results.values()), None)
    if first is None or first.users.size == 0:
        return ""
    group, headers = activity_groups(data, first.users)
    lines = ["| Model | " + " | ".join(headers) + " |", "|---|" + "---:|" * 4]
    for name, result in results.items():
        if not np.array_equal(result.users, first.users):
            raise ValueError(f"{name}: scored on other users than {next(iter(results))}")
        values = result.per_user[metric]
        by_group = {str(q): values[group == q] for q in range(4) if np.any(group == q)}
        ci = {q: bootstrap_ci({q: v}, bootstrap, 0.95, seed)[q] for q, v in by_group.items()} if bootstrap else {}
        cells = []
        for q in range(4):
            v = by_group.get(str(q))
            cell = "-" if v is None else f"{np.nanmean(v):.4f}"
            if v is not None and str(q) in ci:
                cell += f" [{ci[str(q)][0]:.4f}, {ci[str(q)][1]:.4f}]"
            cells.append(cell)
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return (f"\nTest {metric.upper()} by user activity: quartiles of the test profile's size (training + "
            "validation positives) over the test users [95% bootstrap CI within each quartile]:\n\n"
            + "\n".join(lines) + "\n")


def validation_curves(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]
                      ) -> dict[str, tuple[list[int], list[float], int | None]]:
    """Label -> (epochs, validation NDCG@10, best epoch) of every model whose metrics.json has a
    per-epoch history (the selected fit's, on train, before the refit)."""
    curves = {}
    for name, m in meta.items():
        points = [(int(r["epoch"]), float(r["val_ndcg@10"])) for r in (m or {}).get("history") or []
                  if "epoch" in r and r.get("val_ndcg@10") is not None]
        if points:
            curves[labels.get(name, name)] = ([e for e, _ in points], [v for _, v in points], m.get("best_epoch"))
    return curves


def learning_section(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], split: str, out: Path,
                     colours: Mapping[str, Any]) -> str:
    """One figure of every trained model's validation NDCG@10 per epoch; models fitted in one step listed."""
    curves = validation_curves(meta, labels)
    if not curves:
        return ""
    name = f"learning_{split}.png"
    figures.learning_curves(curves, out / name, f"Validation NDCG@10 per epoch (split {split})", colours)
    one_step = [labels.get(n, n) for n, m in meta.items() if m and labels.get(n, n) not in curves]
    return ("\nLearning curves: validation NDCG@10 after each epoch of the selected fit (on train, before the "
            "refit); the dot is the epoch validation chose, the one the refit trains for. "
            + (f"Fitted in one step, without epochs: {', '.join(one_step)}." if one_step else "")
            + f"\n\n![learning curves, {split}]({name})\n")
