"""Evaluate any Recommender on a split under full ranking over the whole catalogue.

The profile a model scores a user from (the paper's rule, §5): on validation, the training
positives; on test, every positive except the test items (training and validation positives).
The items of the part being scored never leak into it. Models that learned user vectors in
training (BPR, LightGCN) ignore the profile and use those vectors. Excluded from the ranking: the
profile's items (training positives; and validation items when scoring test). Every other
catalogue item is a candidate, including items nobody liked in training. Ties in a model's
scores are ordered at random per (seed, user, movie) (``armor.eval.metrics.TieOrder``).

The item cold start: a movie is **new** when the log a model scoring ``split`` learned from has no
positive for it (``new_items``: train on validation, train + validation on test, as the profile),
decided from that matrix alone and the same for every model. ``candidates`` restricts what a user
ranks (the **cold** setting ranks only new movies); ``new_items`` adds each user's share of top-K
slots that go to new movies (``new@K``).

Beyond accuracy (``armor.eval.metrics`` states the definitions and their sources): precision and MAP
per user; the popularity of each user's top K (ARP@K), its long-tail share (tail@K) and novelty
(novelty@K), with popularity counted in the same log as ``new_items``; and over all users, coverage
and the Gini index of how often each rankable movie is recommended (gini@K). ``score_seconds`` is the
time spent in ``model.score`` alone, for the report's inference cost.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Literal

import numpy as np
import scipy.sparse as sp

from armor.config import EvalConfig
from armor.data.splits import SplitData
from armor.errors import ArmorError
from armor.eval import metrics as M
from armor.models.base import Recommender
from armor.progress import Progress

log = logging.getLogger(__name__)

# Dense score blocks are batch x n_items float32; cap them so memory stays bounded on
# catalogues of any size (about 256 MiB per block).
MAX_BLOCK_ELEMENTS = 1 << 26


@dataclasses.dataclass
class EvaluationResult:
    model: str
    split: str
    users: np.ndarray  # dense user indices that had at least one relevant item
    per_user: dict[str, np.ndarray]  # metric -> (n_users,) values, aligned with `users`
    coverage: dict[str, float]  # over all users: "coverage@10" (share of the catalogue recommended), "gini@10"
    ci: dict[str, tuple[float, float]]
    score_seconds: float = 0.0  # wall time inside model.score for these users

    @property
    def means(self) -> dict[str, float]:
        return {name: float(np.nanmean(v)) if v.size else float("nan") for name, v in self.per_user.items()}

    def row(self) -> dict[str, float]:
        """Metric means, CI bounds and coverage flattened into one table row."""
        out: dict[str, float] = {}
        for name, value in self.means.items():
            out[name] = value
            low, high = self.ci.get(name, (float("nan"), float("nan")))
            out[f"{name}_lo"] = low
            out[f"{name}_hi"] = high
        out.update(self.coverage)
        out["n_users"] = float(self.users.size)
        return out


def iter_user_batches(users: np.ndarray, n_items: int, batch_size: int) -> Iterator[np.ndarray]:
    step = max(1, min(batch_size, MAX_BLOCK_ELEMENTS // max(n_items, 1)))
    for start in range(0, users.size, step):
        yield users[start : start + step]


def profile(data: SplitData, split: Literal["valid", "test"]) -> sp.csr_matrix:
    """Each user's profile when scoring ``split``: train on validation, train + validation on test."""
    if split == "valid":
        return data.train
    merged = (data.train + data.valid).tocsr()
    merged.data[:] = 1.0
    return merged


def new_items(data: SplitData, split: Literal["valid", "test"]) -> np.ndarray:
    """Catalogue columns without a positive in the log behind ``split``'s profile (sorted)."""
    return np.flatnonzero(np.diff(profile(data, split).tocsc().indptr) == 0)


def mask_rows(scores: np.ndarray, excluded: sp.csr_matrix) -> None:
    """Set ``scores[b, i] = -inf`` wherever ``excluded[b, i]`` is non-zero (in place)."""
    coo = excluded.tocoo()
    scores[coo.row, coo.col] = -np.inf


def evaluate(model: Recommender, data: SplitData, split: Literal["valid", "test"],
             config: EvalConfig = EvalConfig(), name: str | None = None,
             progress: bool = False, relevant_items: np.ndarray | None = None,
             candidates: np.ndarray | None = None, new: np.ndarray | None = None) -> EvaluationResult:
    """``relevant_items`` (column indices) restricts what counts as a hit; ``candidates`` (column
    indices) restricts what is ranked (default: the whole catalogue); with ``new`` (column indices)
    each user's share of top-K slots holding one of them is reported as ``new@K``. ``progress``
    shows users scored (a bar on a terminal, periodic lines elsewhere: ``armor.progress``)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    truth_all = _only(_only(data.valid if split == "valid" else data.test, relevant_items), candidates)
    profile_all = profile(data, split)
    outside = _column_mask(data.n_items, candidates, inverse=True)
    lists = _ListMetrics(config.ks, data.item_genres, _column_mask(data.n_items, new),
                         M.ItemPopularity.of(np.bincount(profile_all.indices, minlength=data.n_items)))
    users = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    model_name = name or model.name

    parts: dict[str, list[np.ndarray]] = {}
    exposure = {k: np.zeros(data.n_items, dtype=np.int64) for k in config.ks}  # times each movie is in a top K
    score_seconds = 0.0
    shown = Progress(f"evaluate {model_name} on {split}", total=int(users.size), unit="user",
                     mode=None if progress else "off")
    for batch in iter_user_batches(users, data.n_items, config.batch_size):
        history = profile_all[batch]
        started = time.perf_counter()
        raw = model.score(batch, history)
        score_seconds += time.perf_counter() - started
        scores = _checked(raw, model_name, batch, data)
        mask_rows(scores, history)
        if outside is not None:
            scores[:, outside] = -np.inf
        indices, valid = M.top_k(scores, max(config.ks), M.TieOrder(config.seed, data.user_ids[batch], data.item_ids))
        for key, values in lists(indices, valid, truth_all[batch]).items():
            parts.setdefault(key, []).append(values)
        for k in config.ks:
            exposure[k] += np.bincount(indices[:, :k][valid[:, :k]], minlength=data.n_items)
        shown.update(batch.size)
    shown.close()

    per_user = {key: np.concatenate(chunks) for key, chunks in parts.items()}
    rankable = np.ones(data.n_items, dtype=bool) if outside is None else ~outside
    aggregate = {f"coverage@{k}": float((exposure[k] > 0).mean()) for k in config.ks}
    aggregate.update({f"gini@{k}": M.gini_index(exposure[k][rankable]) for k in config.ks})
    ci = M.bootstrap_ci(per_user, config.bootstrap, config.confidence, config.seed) if users.size else {}
    return EvaluationResult(model=model_name, split=split, users=users, per_user=per_user,
                            coverage=aggregate, ci=ci, score_seconds=score_seconds)


def _checked(raw: np.ndarray, model_name: str, batch: np.ndarray, data: SplitData) -> np.ndarray:
    """A model's score block as a writable float32 array, refused if its shape is wrong or it holds NaN."""
    # The contract lets us write into the returned array; copy only if it is not ours to change.
    scores = np.require(raw, np.float32, ["C", "W", "O"])  # (B, I)
    if scores.shape != (batch.size, data.n_items):
        raise ArmorError(f"model {model_name} returned scores of shape {scores.shape}, "
                         f"expected {(batch.size, data.n_items)}")
    # One summing pass is much cheaper than isnan over the block; look closer only if it fails.
    if not np.isfinite(scores.sum()) and np.isnan(scores).any():
        raise ArmorError(f"model {model_name} returned NaN scores for users "
                         f"{data.user_ids[batch[np.isnan(scores).any(axis=1)]][:5].tolist()}")
    return scores


@dataclasses.dataclass(frozen=True)
class _ListMetrics:
    """Every per-user metric of a batch's top-K lists: accuracy against ``truth``, the share of new
    movies (with ``is_new``), genre diversity (with genres) and popularity bias."""

    ks: tuple[int, ...]
    item_genres: sp.csr_matrix | None
    is_new: np.ndarray | None
    popularity: M.ItemPopularity

    def __call__(self, indices: np.ndarray, valid: np.ndarray, truth: sp.csr_matrix) -> dict[str, np.ndarray]:
        hits = M.hits_matrix(indices, valid, truth)
        out = M.ranking_metrics(hits, np.diff(truth.indptr), self.ks)
        if self.is_new is not None:
            out.update(M.share_of_slots(indices, valid, self.is_new, self.ks, prefix="new"))
        if self.item_genres is not None and self.item_genres.shape[1] > 0:
            for k in self.ks:
                out[f"diversity@{k}"] = M.intra_list_diversity(indices, valid, self.item_genres, k)
        out.update(M.popularity_metrics(indices, valid, self.popularity, self.ks))
        return out


def _column_mask(n_items: int, columns: np.ndarray | None, inverse: bool = False) -> np.ndarray | None:
    """A (n_items,) bool mask of ``columns`` (or of every other column with ``inverse``); None for None."""
    if columns is None:
        return None
    mask = np.zeros(n_items, dtype=bool)
    mask[np.asarray(columns, dtype=np.int64)] = True
    return ~mask if inverse else mask


def _only(truth: sp.csr_matrix, columns: np.ndarray | None) -> sp.csr_matrix:
    """``truth`` restricted to ``columns`` (unchanged for None)."""
    if columns is None:
        return truth
    kept = (truth @ sp.diags(_column_mask(truth.shape[1], columns).astype(np.float32))).tocsr()
    kept.eliminate_zeros()
    return kept
