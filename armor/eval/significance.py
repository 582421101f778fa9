"""All-pairs significance over the main metric, beside the report's paired bootstrap CIs.

For every pair of models scored on the same test users, a two-sided Wilcoxon signed-rank test on
the per-user NDCG@10 differences (scipy's ``wilcoxon``; users with no difference are dropped, its
default ``zero_method="wilcox"``), and the p-values of all pairs of a table adjusted together by
Holm's step-down method (Holm 1979), which controls the family-wise error rate without assuming
the tests independent. A model trained with several seeds enters with its seed-averaged per-user
values: the test covers the sampling of users, not of training seeds, so a significant pair is
still not a claim unless it also holds in every seed (``armor.eval.claims``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class PairTest:
    a: str
    b: str
    difference: float  # mean over users of a - b
    p: float  # two-sided Wilcoxon signed-rank p-value
    p_holm: float  # adjusted over every pair of the same table

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the input order: the i-th smallest (from 0) is multiplied by m - i,
    then made non-decreasing in that order and capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired values ``a`` and ``b`` (users where either is
    NaN are left out); 1 when no user differs."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    kept = np.isfinite(a) & np.isfinite(b)
    diff = a[kept] - b[kept]
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def all_pairs(per_user: Mapping[str, np.ndarray]) -> list[PairTest]:
    """Every unordered pair of ``per_user`` (name -> values over the same users), in input order,
    with Holm's adjustment over all of them."""
    names = list(per_user)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    raw = [wilcoxon_p(per_user[a], per_user[b]) for a, b in pairs]
    adjusted = holm(raw) if raw else np.zeros(0)
    return [PairTest(a, b, float(np.nanmean(np.asarray(per_user[a]) - np.asarray(per_user[b]))), p, float(q))
            for (a, b), p, q in zip(pairs, raw, adjusted)]


def _cell(test: PairTest, row_is_a: bool) -> str:
    better = (test.difference > 0) == row_is_a
    mark = "" if test.difference == 0 else ("+" if better else "−")
    text = "<0.001" if test.p_holm < 0.001 else f"{test.p_holm:.3f}"
    return f"**{mark}{text}**" if test.significant else f"{mark}{text}"


def matrix_markdown(tests: Sequence[PairTest], labels: Mapping[str, str], metric: str = "NDCG@10",
                    seeds: int = 1) -> str:
    """The lower triangle of Holm-adjusted p-values, rows and columns numbered; a cell's sign says
    whether the row's model has the higher mean; bold below ``ALPHA``. ``seeds``: the fewest
    training seeds behind a row (the caption says what a significant cell means then)."""
    names = list(dict.fromkeys([t.a for t in tests] + [t.b for t in tests]))
    if not names:
        return ""
    found = {(t.a, t.b): t for t in tests}
    lines = ["| Model | " + " | ".join(str(j + 1) for j in range(len(names) - 1)) + " |",
             "|---|" + "---:|" * (len(names) - 1)]
    for i, row in enumerate(names):
        cells = []
        for j, column in enumerate(names[:-1]):
            test = found.get((column, row)) or found.get((row, column))
            cells.append("" if j >= i or test is None else _cell(test, row_is_a=test.a == row))
        lines.append(f"| {i + 1}. {labels.get(row, row)} | " + " | ".join(cells) + " |")
    significant = sum(t.significant for t in tests)
    return (f"\nAll pairs, test {metric} (two-sided Wilcoxon signed-rank test on per-user values, Holm-adjusted "
            f"over the {len(tests)} pairs; + / − the row's model has the higher / lower mean; **bold**: adjusted "
            f"p < {ALPHA}, {significant} of {len(tests)} pairs). {_unit_note(seeds)}\n\n" + "\n".join(lines) + "\n")


def _unit_note(seeds: int) -> str:
    if seeds < 2:
        return "Users are the sampling unit and some rows had one training seed: a significant pair is no claim."
    return (f"Per-user values are the mean over {seeds} or more training seeds and users are the sampling unit, so "
            "the seed-to-seed spread is not in these p-values: claims are the paired comparisons above (CI and the "
            "sign in every seed).")
