"""Top-K ranking metrics, vectorised over a batch of users (pure numpy).

Conventions (the report states them):
- Ranking order is score descending; items with equal scores are ordered by a seeded random key
  per (user id, movie id) (``TieOrder``), so a tie never rewards a model: a constant-score model
  ranks like a random one. Breaking ties by lowest movie index instead would rank popular titles
  (low ids on MovieLens) first and let a constant model beat random about 3x. The key is a hash,
  so the order does not depend on batching, threads or the sort algorithm. Without a TieOrder
  (``top_k(scores, k)``) ties go to the lower catalogue index: the deterministic rule serving uses.
- Items scored ``-inf`` are excluded (the caller sets training items to ``-inf``); they are never
  recommended, so a list can be shorter than K when K exceeds the candidate count.
- Recall@K = hits in the top K / |relevant|; NDCG@K uses binary gains and the ideal DCG of
  min(|relevant|, K) hits; HR@K = 1 if any hit; MRR@K = 1 / rank of the first hit (0 if none).
- Precision@K = hits in the top K / K, and MAP@K = (1 / min(|relevant|, K)) * sum over ranks j <= K
  of hit_j * Precision@j: RecBole's definitions (``recbole.evaluator.metrics.Precision`` and ``MAP``).
- Beyond accuracy (``ItemPopularity``, ``popularity_metrics``, ``gini_index``), the popularity-bias
  measures of Elliot (Anelli et al., SIGIR 2021: ARP, APLT, Gini, EFD) and RecBole (Zhao et al., CIKM
  2021: AveragePopularity, TailPercentage, GiniIndex), with the popularity of a movie = its positives
  in the log behind the profile (training; training + validation when scoring test):
  ARP@K = mean popularity of a user's top-K movies; Tail@K = the share of those that lie outside the
  short head, the most popular movies that together hold 80% of the positives (Elliot's rule, after
  Abdollahpouri et al., RecSys 2017); Novelty@K = mean -log2(popularity / all positives) of a user's
  top-K movies (self-information: Zhou et al., PNAS 2010; Vargas & Castells, RecSys 2011, without
  relevance or rank weighting), a movie without a positive counting as the least popular one that has
  some (as Elliot's EFD does); Gini@K = the Gini coefficient of how often each rankable movie is
  recommended over all users' top-K lists (RecBole's GiniIndex: 0 when every movie is recommended
  equally often, towards 1 when a few take every slot).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

METRIC_NAMES = ("recall", "ndcg", "hr", "mrr", "precision", "map")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # A counter-based hash: the value for an input depends on nothing else.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def pair_hash(seed: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """uint64 hash of (seed, user, item), broadcast over ``users`` and ``items``."""
    with np.errstate(over="ignore"):
        salt = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        return _splitmix64(_splitmix64(np.asarray(users, dtype=np.uint64) + salt) + np.asarray(items, np.uint64))


# Mixed into the evaluation seed so that tie keys are never the random ranker's scores.
_TIE_SALT = 0x7469652D6F72646572  # "tie-order"


class TieOrder:
    """Seeded random order among tied items: item i precedes j at equal scores iff key(u, i) < key(u, j).

    Keys hash (seed, user id, movie id), so a user's order among tied movies is the same whatever
    the batch, the catalogue order or the model.
    """

    def __init__(self, seed: int, user_ids: np.ndarray, item_ids: np.ndarray):
        self.seed = (int(seed) ^ _TIE_SALT) & 0xFFFFFFFFFFFFFFFF
        self.user_ids = np.asarray(user_ids, dtype=np.int64)  # (B,) the rows of the score block
        self.item_ids = np.asarray(item_ids, dtype=np.int64)  # (I,) the columns

    def keys(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Keys (R, C) of ``columns`` (R, C) in ``rows`` (R,) of the block; all columns when None."""
        items = self.item_ids[None, :] if columns is None else self.item_ids[columns]
        return pair_hash(self.seed, self.user_ids[rows][:, None], items)


def top_k(scores: np.ndarray, k: int, ties: TieOrder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row: (indices (B, k'), valid (B, k')), k' = min(k, n_items), by score descending,
    then ``ties``' key (default: lower catalogue index).

    ``valid`` is False where the slot holds an excluded (-inf) item.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    # torch.topk is several times faster than np.partition on CPU, but which of several items
    # tied at the k-th value it keeps is unspecified. Keep its answer only for rows where no
    # item outside the selection ties with the k-th value; redo the others exactly. Such an item
    # exists iff the (k+1)-th largest value equals the k-th, so one more value from topk answers
    # it without another pass over the (B, I) block (~30 % of top_k at the ML-32M shape).
    extra = int(k < n_items)
    values, indices = torch.topk(torch.from_numpy(scores), k + extra, dim=1, sorted=True)
    values, indices = values.numpy(), indices.numpy()
    if extra:
        straddles = values[:, k] == values[:, k - 1]
        indices = np.ascontiguousarray(indices[:, :k])
    else:
        straddles = np.zeros(n_rows, dtype=bool)
    if straddles.any():
        rows = np.flatnonzero(straddles)
        keys = None if ties is None else ties.keys(rows)
        indices[straddles] = _exact_top_k_candidates(scores[straddles], k, keys)
    chosen_scores = np.take_along_axis(scores, indices, axis=1)
    secondary = indices if ties is None else ties.keys(np.arange(n_rows), indices)
    order = np.lexsort((secondary, -chosen_scores), axis=1)  # score desc, then the tie key
    indices = np.take_along_axis(indices, order, axis=1)
    valid = np.isfinite(np.take_along_axis(chosen_scores, order, axis=1))
    return indices, valid


def _exact_top_k_candidates(scores: np.ndarray, k: int, keys: np.ndarray | None = None) -> np.ndarray:
    """The k best items of each row (unordered); ties at the k-th value go to the smallest keys
    (``keys`` (R, I)), or to the lowest indices without keys."""
    n_rows = scores.shape[0]
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # (R, 1)
    above = scores > kth
    at = scores == kth
    need = k - above.sum(axis=1, keepdims=True)  # (R, 1)
    if keys is None:
        chosen = above | (at & (np.cumsum(at, axis=1) <= need))
    else:
        tied_keys = np.where(at, keys, np.iinfo(np.uint64).max)  # (R, I)
        rank = np.argsort(np.argsort(tied_keys, axis=1, kind="stable"), axis=1, kind="stable")
        chosen = above | (at & (rank < need))
    return np.nonzero(chosen)[1].reshape(n_rows, k)


def hits_matrix(indices: np.ndarray, valid: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """hits[b, j] = item indices[b, j] is relevant for row b of ``truth`` (B x n_items CSR)."""
    truth = truth.tocsr()
    truth.sort_indices()
    n_items = truth.shape[1]
    truth_rows = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(truth.indptr))
    truth_keys = truth_rows * n_items + truth.indices  # sorted: row-major with sorted indices
    if truth_keys.size == 0:
        return np.zeros(indices.shape, dtype=bool)
    ranked_keys = np.arange(indices.shape[0], dtype=np.int64)[:, None] * n_items + indices
    pos = np.minimum(np.searchsorted(truth_keys, ranked_keys), truth_keys.size - 1)
    return (truth_keys[pos] == ranked_keys) & valid


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-row metrics {"recall@10": (B,), ...} from a hits matrix (B, L) and relevant counts (B,).

    Rows with no relevant item get NaN so the caller can drop them explicitly.
    """
    n_rows, depth = hits.shape
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    has_relevant = n_relevant > 0
    max_k = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    ideal_cumulative = np.r_[0.0, np.cumsum(discounts)]
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    # Running sums over the ranks, read at each K: hits so far, and sum of hit_j * Precision@j (MAP).
    cumulative_hits = np.cumsum(hits, axis=1, dtype=np.float64)
    precision_sum = np.cumsum(hits * (cumulative_hits / np.arange(1, depth + 1)), axis=1)

    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in ks:
            top = hits[:, : min(k, depth)]
            n_hits = top.sum(axis=1)
            dcg = top @ discounts[: top.shape[1]]
            ideal = ideal_cumulative[np.minimum(n_relevant, k).astype(np.int64)]
            out[f"recall@{k}"] = np.where(has_relevant, n_hits / n_relevant, np.nan)
            out[f"ndcg@{k}"] = np.where(has_relevant, dcg / ideal, np.nan)
            out[f"hr@{k}"] = np.where(has_relevant, (n_hits > 0).astype(np.float64), np.nan)
            out[f"mrr@{k}"] = np.where(has_relevant & (first_hit < k), 1.0 / (first_hit + 1.0),
                                       np.where(has_relevant, 0.0, np.nan))
            # RecBole divides by K even when fewer than K movies could be ranked; so do we.
            out[f"precision@{k}"] = np.where(has_relevant, n_hits / k, np.nan)
            ap = precision_sum[:, min(k, depth) - 1] if depth else np.zeros(n_rows)
            out[f"map@{k}"] = np.where(has_relevant, ap / np.minimum(n_relevant, k), np.nan)
    return out


def share_of_slots(indices: np.ndarray, valid: np.ndarray, marked: np.ndarray, ks: tuple[int, ...],
                   prefix: str) -> dict[str, np.ndarray]:
    """{"PREFIX@k": (B,)}: the share of each row's filled top-k slots that hold a ``marked`` item
    (``marked`` (I,) bool); NaN for a row with no filled slot."""
    out = {}
    hit = marked[indices] & valid  # (B, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            filled = valid[:, :k].sum(axis=1)
            out[f"{prefix}@{k}"] = np.where(filled > 0, hit[:, :k].sum(axis=1) / filled, np.nan)
    return out


@dataclasses.dataclass(frozen=True)
class ItemPopularity:
    """Per catalogue column: its positives in the log behind the profile (``counts``), whether it lies
    in the long tail (``tail``) and its self-information in bits (``information``)."""

    counts: np.ndarray  # (I,) float64
    tail: np.ndarray  # (I,) bool
    information: np.ndarray  # (I,) float64

    @classmethod
    def of(cls, counts: np.ndarray, head_share: float = 0.8) -> ItemPopularity:
        """The short head is the smallest set of most popular movies (ties in catalogue order) whose
        positives reach ``head_share`` of all positives (Elliot's ``Popularity.get_short_head``); the
        long tail is every other movie, those without a positive included."""
        counts = np.asarray(counts, dtype=np.float64)
        total = counts.sum()
        tail = np.ones(counts.size, dtype=bool)
        if total <= 0:  # nothing liked: no head, and no movie is more novel than another
            return cls(counts, tail, np.zeros(counts.size))
        order = np.argsort(-counts, kind="stable")
        head_size = int(np.searchsorted(np.cumsum(counts[order]), head_share * total, side="left")) + 1
        tail[order[:head_size]] = False
        floor = counts[counts > 0].min()  # a movie nobody liked counts as the least popular liked one
        return cls(counts, tail, -np.log2(np.maximum(counts, floor) / total))


def popularity_metrics(indices: np.ndarray, valid: np.ndarray, popularity: ItemPopularity,
                       ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per row: ``arp@k`` (mean popularity), ``tail@k`` (long-tail share) and ``novelty@k`` (mean
    self-information) of the filled top-k slots; NaN for a row with no filled slot."""
    filled = np.cumsum(valid, axis=1)
    sums = {name: np.cumsum(np.where(valid, values[indices], 0.0), axis=1)
            for name, values in (("arp", popularity.counts), ("tail", popularity.tail),
                                 ("novelty", popularity.information))}
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            column = min(k, indices.shape[1]) - 1
            n = filled[:, column]
            for name, running in sums.items():
                out[f"{name}@{k}"] = np.where(n > 0, running[:, column] / n, np.nan)
    return out


def gini_index(exposure: np.ndarray) -> float:
    """Gini coefficient of ``exposure`` (how often each rankable movie was recommended; zeros count):
    sum_j (2j - n - 1) x_(j) / (n sum x) over the n values sorted ascending (RecBole's GiniIndex);
    NaN when nothing was recommended."""
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    return float(np.dot(2 * np.arange(1, n + 1) - n - 1, x) / (n * total))


def intra_list_diversity(indices: np.ndarray, valid: np.ndarray, item_genres: sp.csr_matrix,
                         k: int) -> np.ndarray:
    """Mean pairwise genre Jaccard distance within each top-k list (B,); NaN for lists < 2 items.

    Two items that both have no genre are at distance 0 from each other (nothing distinguishes
    them); one with and one without genres are at distance 1.
    """
    idx = indices[:, :k]
    ok = valid[:, :k]
    genres = item_genres.toarray().astype(np.float32)  # (I, G); G is small
    g = genres[idx] * ok[..., None]  # (B, k, G)
    inter = g @ g.transpose(0, 2, 1)  # (B, k, k)
    sizes = g.sum(axis=2)
    union = sizes[:, :, None] + sizes[:, None, :] - inter
    distance = np.where(union > 0, 1.0 - inter / np.maximum(union, 1e-12), 0.0)
    pair_ok = ok[:, :, None] & ok[:, None, :] & ~np.eye(idx.shape[1], dtype=bool)[None]
    n_pairs = pair_ok.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pairs > 0, (distance * pair_ok).sum(axis=(1, 2)) / n_pairs, np.nan)


def _bootstrap_means(per_user: dict[str, np.ndarray], n_samples: int, seed: int,
                     chunk: int = 200) -> dict[str, np.ndarray]:
    """Means of each vector over ``n_samples`` resamples of the users, the same resamples for all.

    Resampling in chunks keeps memory at chunk x n_users, whatever n_samples is. Every metric's
    resampled means come from one sparse product: a gather per metric made the bootstrap grow with
    the thirty-odd metrics the evaluator reports.
    """
    names = list(per_user)
    values = np.stack([np.asarray(per_user[name], dtype=np.float64) for name in names], axis=1)  # (U, M)
    n_users = values.shape[0]
    # NaN marks a user a metric is undefined for (diversity of a list shorter than two items): that
    # metric's mean skips the user, as nanmean would.
    defined = ~np.isnan(values)
    filled = np.where(defined, values, 0.0)
    rng = np.random.default_rng(seed)
    means: list[np.ndarray] = [np.zeros((0, len(names)))]
    for start in range(0, n_samples, chunk):
        rows = min(chunk, n_samples - start)
        sample = rng.integers(0, n_users, size=(rows, n_users))
        # Row r of this sparse matrix holds a 1 per draw of resample r (a user drawn twice, twice):
        # its product with the values sums each resample. scipy's product runs on one thread, where
        # a dense BLAS product of this small size was slower on a busy machine.
        draws = sp.csr_matrix((np.ones(sample.size), sample.ravel(), np.arange(0, sample.size + 1, n_users)),
                              shape=(rows, n_users))
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append((draws @ filled) / (draws @ defined.astype(np.float64)))
    stacked = np.concatenate(means)
    return {name: stacked[:, j] for j, name in enumerate(names)}


def bootstrap_ci(per_user: dict[str, np.ndarray], n_samples: int, confidence: float,
                 seed: int) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of the mean for several metric vectors over the same users.

    All vectors are resampled with the same user indices, so CIs computed with the same seed
    and user order are paired across metrics and models.
    """
    if n_samples == 0:
        return {name: (float("nan"), float("nan")) for name in per_user}
    alpha = (1.0 - confidence) / 2.0
    return {name: (float(np.quantile(m, alpha)), float(np.quantile(m, 1 - alpha)))
            for name, m in _bootstrap_means(per_user, n_samples, seed).items()}


def paired_bootstrap_difference(a: np.ndarray, b: np.ndarray, n_samples: int, confidence: float,
                                seed: int) -> tuple[float, tuple[float, float], float]:
    """Mean of a - b over the same users, its bootstrap CI, and the share of resamples with a <= b."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = _bootstrap_means({"diff": diff}, n_samples, seed)["diff"]
    alpha = (1.0 - confidence) / 2.0
    return (float(diff.mean()), (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))),
            float((means <= 0).mean()))
