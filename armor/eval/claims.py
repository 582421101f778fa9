"""What a reviewer asks of a result table: several training seeds, paired comparisons that are
claims only when they hold in every seed, the tuning budget each model got, and the best model
named by validation.

A model trained with several seeds (``armor train --seeds``: NAME, NAME.seedS, ...) is one row:
its per-user test metrics are averaged over the seeds (so its bootstrap CI is that of the
seed-averaged metric) and the row also gives the mean and standard deviation of the seed means.
"A beats B" is claimed only when the paired bootstrap CI of the seed-averaged per-user difference
lies above 0 and the difference has the same sign in every seed; with one seed nothing is claimed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from armor.eval.metrics import bootstrap_ci, paired_bootstrap_difference
from armor.eval.protocol import EvaluationResult

CLAIM_METRIC = "ndcg@10"


def seed_average(results: Sequence[EvaluationResult], bootstrap: int, seed: int,
                 confidence: float = 0.95) -> EvaluationResult:
    """One result whose per-user values are the mean over ``results`` (the same model trained with
    different seeds, scored on the same users); CIs by bootstrap over users of those means."""
    first = results[0]
    for other in results[1:]:
        if not np.array_equal(other.users, first.users):
            raise ValueError(f"{first.model}: seeds were scored on different users")
    with np.errstate(invalid="ignore"):
        per_user = {name: np.nanmean(np.stack([r.per_user[name] for r in results]), axis=0)
                    if any(np.isnan(r.per_user[name]).any() for r in results)
                    else np.mean(np.stack([r.per_user[name] for r in results]), axis=0)
                    for name in first.per_user}
    coverage = {name: float(np.mean([r.coverage[name] for r in results])) for name in first.coverage}
    ci = bootstrap_ci(per_user, bootstrap, confidence, seed) if first.users.size else {}
    return dataclasses.replace(first, per_user=per_user, coverage=coverage, ci=ci,
                               score_seconds=float(np.mean([r.score_seconds for r in results])))


def seed_spread(results: Sequence[EvaluationResult], metric: str = CLAIM_METRIC) -> tuple[float, float]:
    """(mean, standard deviation with ddof=1; 0 for one seed) of the seeds' test means."""
    means = np.array([r.means[metric] for r in results])
    return float(means.mean()), float(means.std(ddof=1)) if means.size > 1 else 0.0


@dataclasses.dataclass(frozen=True)
class Comparison:
    ours: str
    reference: str
    difference: float  # seed-averaged per-user mean difference
    ci: tuple[float, float]
    per_seed: tuple[float, ...]  # seed i of ours minus seed i of the reference

    @property
    def seeds(self) -> int:
        return len(self.per_seed)

    @property
    def verdict(self) -> str:
        if self.seeds < 2:
            return "one training seed: not a claim"
        if self.ci[0] > 0 and all(d > 0 for d in self.per_seed):
            return f"better: CI above 0 and positive in all {self.seeds} seeds"
        if self.ci[1] < 0 and all(d < 0 for d in self.per_seed):
            return f"worse: CI below 0 and negative in all {self.seeds} seeds"
        signs = sum(d > 0 for d in self.per_seed)
        return f"not shown: CI [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}], positive in {signs} of {self.seeds} seeds"


def compare(ours: Sequence[EvaluationResult], reference: Sequence[EvaluationResult], bootstrap: int, seed: int,
            metric: str = CLAIM_METRIC) -> Comparison:
    """Paired comparison of two models' seeds on the same users (their first ``min`` seeds pair up)."""
    n = min(len(ours), len(reference))
    a = np.mean([r.per_user[metric] for r in ours[:n]], axis=0)
    b = np.mean([r.per_user[metric] for r in reference[:n]], axis=0)
    difference, ci, _ = paired_bootstrap_difference(a, b, max(bootstrap, 1), 0.95, seed)
    per_seed = tuple(float(np.mean(x.per_user[metric] - y.per_user[metric])) for x, y in zip(ours[:n], reference[:n]))
    return Comparison(ours[0].model, reference[0].model, difference, ci, per_seed)


def comparison_lines(comparisons: Sequence[Comparison], metric: str = CLAIM_METRIC) -> str:
    lines = [f"- {c.ours} minus {c.reference}, test {metric.upper()}: {c.difference:+.4f} [95% CI "
             f"{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]; per seed {', '.join(f'{d:+.4f}' for d in c.per_seed)}: "
             f"**{c.verdict}**" for c in comparisons]
    return "\n".join(lines) + "\n" if lines else ""


def best_by_validation(meta: Mapping[str, Mapping[str, Any]], metric: str = CLAIM_METRIC) -> str | None:
    """The model with the highest validation ``metric`` recorded at training (None if none has one)."""
    scored = {name: m["valid"][metric] for name, m in meta.items() if m and metric in m.get("valid", {})}
    return max(scored, key=lambda name: scored[name]) if scored else None


def best_per_family(meta: Mapping[str, Mapping[str, Any]], family: Mapping[str, str],
                    metric: str = CLAIM_METRIC) -> dict[str, str]:
    """Family -> its model with the highest validation ``metric`` (families in first-seen order of
    ``family``; a family none of whose models has a validation score is left out)."""
    chosen = {}
    for group in dict.fromkeys(family.values()):
        best = best_by_validation({n: m for n, m in meta.items() if family.get(n) == group}, metric)
        if best is not None:
            chosen[group] = best
    return chosen


def inference_per_thousand(result: EvaluationResult) -> float | None:
    """Seconds ``model.score`` took per 1,000 users in ``result``'s evaluation (None without users)."""
    return result.score_seconds / result.users.size * 1000 if result.users.size else None


# How `armor tune` names the search behind a sweep's retrained winner (pipelines.tune.record_sweep).
SWEEP = "Ray Tune sweep"


def budget_rows(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str],
                inference: Mapping[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Per model: trials, chosen settings, values at the edge of their range, epochs (best / run / cap,
    and whether training stopped at the cap), refit, seeds, training time (search + refit of the first
    seed, from metrics.json) and ``inference`` (seconds to score 1,000 test users, measured here)."""
    rows = []
    for name, m in meta.items():
        if not m:
            continue
        search = m.get("search") or {}
        cap, run, best = m.get("epoch_cap"), m.get("epochs_run") or 0, m.get("best_epoch") or 0
        # Stopped by its cap while validation could still have improved: the best epoch lies within
        # the patience window before the cap (after a longer plateau early stopping would have ended it).
        at_cap = bool(cap) and run >= cap and cap - best < (m.get("patience") or 1)
        rows.append({"name": name, "label": labels.get(name, name), "trials": search.get("trials", 0),
                     "pruned": search.get("pruned", 0), "sweep": str(search.get("space_name", "")).startswith(SWEEP),
                     "chosen": search.get("chosen", {}), "at_edge": search.get("at_edge", []),
                     "best_epoch": best if cap else None, "epochs_run": run if cap else None,
                     "epoch_cap": cap, "at_cap": at_cap, "refit": m.get("refit"),
                     "seeds": m.get("seeds", 1), "seconds": m.get("seconds"),
                     "select_seconds": m.get("select_seconds"), "inference": (inference or {}).get(name),
                     "valid": m.get("valid", {}).get(CLAIM_METRIC)})
    return rows


def budget_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The tuning-budget table, with a flag on every value at the edge of its range and every run
    that stopped at its epoch cap; "trials" counts those the median stopping rule ended early."""
    lines = ["| Model | trials | chosen on validation | validation N@10 | epochs (best / run / cap) | refit | seeds "
             "| training s (search + refit) | scoring s / 1,000 users |",
             "|---|---:|---|---:|---|---|---:|---:|---:|"]
    flags = []
    for row in rows:
        chosen = ", ".join(f"{k.split('.', 1)[-1]}={_short(v)}" for k, v in row["chosen"].items()) or "-"
        epochs = "-" if row["epoch_cap"] is None else f"{row['best_epoch']} / {row['epochs_run']} / {row['epoch_cap']}"
        if row["at_cap"]:
            epochs += " (at cap)"
            flags.append(f"- {row['label']}: training ran to its epoch cap ({row['epoch_cap']}) with validation "
                         f"still improving within its patience (best epoch {row['best_epoch']}): it may not have "
                         "converged.")
        flags += [f"- {row['label']}: {edge}: the optimum may lie outside the range." for edge in row["at_edge"]]
        refit = "-" if not row["refit"] else f"train+valid, {row['refit'].get('epochs') or 'one fit'}"
        valid = "-" if row["valid"] is None else f"{row['valid']:.4f}"
        trials = f"{row['trials']} ({row['pruned']} stopped early)" if row.get("pruned") else str(row["trials"])
        lines.append(f"| {row['label']} | {trials} | {chosen} | {valid} | {epochs} | {refit} | {row['seeds']} "
                     f"| {_seconds(row['seconds'], row['select_seconds'])} | {_number(row['inference'], '.3g')} |")
    text = "\n".join(lines) + "\n"
    if flags:
        text += "\nFlags:\n\n" + "\n".join(flags) + "\n"
    return text


def _seconds(total: float | None, search: float | None) -> str:
    """Training time, with the search's share when it is known."""
    if total is None:
        return "-"
    return f"{total:.1f}" + (f" ({search:.1f} + {max(total - search, 0.0):.1f})" if search is not None else "")


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
