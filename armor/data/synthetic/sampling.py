"""Exact samplers of the synthetic world: counts with a fixed total, and successive sampling.

Successive sampling (drawing without replacement, each draw proportional to the weights of what
is left) has two exact implementations here. :func:`_first_distinct_draws` draws with replacement
and keeps the first k distinct movies, cheap when k is small next to the catalogue;
:func:`_gumbel_top_k` takes the k smallest ``Exp(1) / w`` keys, for heavy users whose repeats would
swamp the draws. Both give the same distribution.
"""

from __future__ import annotations

import numpy as np

from armor.errors import ConfigError

_MAX_ROUNDS = 30


def _allocate_counts(activity: np.ndarray, total: int, lo: int, hi: int) -> np.ndarray:
    """Integer counts in [lo, hi], roughly proportional to ``activity``, summing to ``total``."""
    def filled(scale: float) -> np.ndarray:
        return np.clip(scale * activity, lo, hi)

    a, b = 0.0, hi / activity.min()
    for _ in range(200):
        mid = 0.5 * (a + b)
        if filled(mid).sum() < total:
            a = mid
        else:
            b = mid
    x = filled(b)
    counts = np.floor(x).astype(np.int64)
    deficit = total - int(counts.sum())
    # Hand the remainder to the users closest to the next integer, never crossing the bounds.
    if deficit > 0:
        room = np.flatnonzero(counts < hi)
        best = room[np.argsort(-(x[room] - counts[room]), kind="stable")[:deficit]]
        counts[best] += 1
    elif deficit < 0:
        room = np.flatnonzero(counts > lo)
        best = room[np.argsort(x[room] - counts[room], kind="stable")[:-deficit]]
        counts[best] -= 1
    if int(counts.sum()) != total:  # unreachable after validation; guards the arithmetic
        raise ConfigError(f"synthetic.n_ratings: could not allocate {total} ratings")
    return counts


def _gumbel_top_k(rng: np.random.Generator, w: np.ndarray, k: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` movie indices; the first k[r] are a successive sample ∝ w[r]."""
    n = w.shape[1]
    with np.errstate(divide="ignore", over="ignore"):
        keys = rng.standard_exponential(w.shape, dtype=np.float32) / w  # smallest k win
    kmax = int(k.max())
    if kmax < n:
        cand = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax]
    else:
        cand = np.broadcast_to(np.arange(n), keys.shape).copy()
    cand = np.take_along_axis(cand, np.argsort(np.take_along_axis(keys, cand, 1), 1), 1)
    out = np.zeros((len(k), width), dtype=np.int64)
    out[:, :kmax] = cand
    return out


def _first_distinct_draws(rng: np.random.Generator, w: np.ndarray,
                          k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose first k[r] entries are the first k[r] distinct draws (with replacement) ∝ w[r].

    Drawing with replacement and skipping repeats is successive sampling without replacement.
    All rows share one flat CDF: row r owns the interval [cdf[r-1], cdf[r]) of it. Also returns
    which rows completed; a row still short after ``_MAX_ROUNDS`` rounds is left to the caller.
    """
    nb, n = w.shape
    cdf = np.cumsum(w.ravel(), dtype=np.float64)
    row_end = cdf[n - 1 :: n]
    row_start = np.concatenate([[0.0], row_end[:-1]])
    keys = np.empty(0, dtype=np.int64)  # row * n + movie, in draw order
    have = np.zeros(nb, dtype=np.int64)
    rate = np.full(nb, 1.3)  # draws per new distinct movie, learnt per round
    for _ in range(_MAX_ROUNDS):
        short = np.flatnonzero(have < k)
        if short.size == 0:
            break
        m = np.ceil((k[short] - have[short]) * rate[short]).astype(np.int64) + 4
        rows = np.repeat(short, m)
        u = row_start[rows] + rng.random(rows.size) * (row_end[rows] - row_start[rows])
        flat = np.searchsorted(cdf, u, side="right")
        flat = np.clip(flat, rows * n, rows * n + n - 1)
        keys = np.concatenate([keys, flat])
        distinct, first = np.unique(keys, return_index=True)
        new_have = np.bincount(distinct // n, minlength=nb)
        gained = np.maximum(new_have[short] - have[short], 1)
        rate[short] = np.clip(m / gained, 1.0, 64.0) * 1.2
        have = new_have
    order = np.argsort(first, kind="stable")  # distinct keys in order of first draw
    distinct = distinct[order]
    row = distinct // n
    order = np.argsort(row, kind="stable")
    distinct, row = distinct[order], row[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=nb))[:-1]])
    rank = np.arange(distinct.size) - starts[row]
    keep = rank < k[row]
    out = np.zeros((nb, int(k.max())), dtype=np.int64)
    out[row[keep], rank[keep]] = distinct[keep] - row[keep] * n
    return out, have >= k
