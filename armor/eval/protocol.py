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
"""

from __future__ import annotations

import dataclasses
import logging
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
    coverage: dict[str, float]  # "coverage@10" -> share of the catalogue recommended to anyone
    ci: dict[str, tuple[float, float]]

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
    is_new = _column_mask(data.n_items, new)
    users = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    max_k = max(config.ks)
    model_name = name or model.name

    parts: dict[str, list[np.ndarray]] = {}
    recommended = {k: np.zeros(data.n_items, dtype=bool) for k in config.ks}
    shown = Progress(f"evaluate {model_name} on {split}", total=int(users.size), unit="user",
                     mode=None if progress else "off")
    for batch in iter_user_batches(users, data.n_items, config.batch_size):
        history = profile_all[batch]
        # The contract lets us write into the returned array; copy only if it is not ours to change.
        scores = np.require(model.score(batch, history), np.float32, ["C", "W", "O"])  # (B, I)
        if scores.shape != (batch.size, data.n_items):
            raise ArmorError(f"model {model_name} returned scores of shape {scores.shape}, "
                             f"expected {(batch.size, data.n_items)}")
        # One summing pass is much cheaper than isnan over the block; look closer only if it fails.
        if not np.isfinite(scores.sum()) and np.isnan(scores).any():
            raise ArmorError(f"model {model_name} returned NaN scores for users "
                             f"{data.user_ids[batch[np.isnan(scores).any(axis=1)]][:5].tolist()}")
        mask_rows(scores, history)
        if outside is not None:
            scores[:, outside] = -np.inf
        indices, valid = M.top_k(scores, max_k, M.TieOrder(config.seed, data.user_ids[batch], data.item_ids))
        truth = truth_all[batch]
        hits = M.hits_matrix(indices, valid, truth)
        batch_metrics = M.ranking_metrics(hits, np.diff(truth.indptr), config.ks)
        if is_new is not None:
            batch_metrics.update(M.share_of_slots(indices, valid, is_new, config.ks, prefix="new"))
        if data.item_genres is not None and data.item_genres.shape[1] > 0:
            for k in config.ks:
                batch_metrics[f"diversity@{k}"] = M.intra_list_diversity(indices, valid, data.item_genres, k)
        for key, values in batch_metrics.items():
            parts.setdefault(key, []).append(values)
        for k in config.ks:
            recommended[k][indices[:, :k][valid[:, :k]]] = True
        shown.update(batch.size)
    shown.close()

    per_user = {key: np.concatenate(chunks) for key, chunks in parts.items()}
    coverage = {f"coverage@{k}": float(recommended[k].mean()) for k in config.ks}
    ci = M.bootstrap_ci(per_user, config.bootstrap, config.confidence, config.seed) if users.size else {}
    return EvaluationResult(model=model_name, split=split, users=users, per_user=per_user,
                            coverage=coverage, ci=ci)


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
