"""Non-personalised reference points: most-popular, uniformly random, and "new first" ranking."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from armor.eval.metrics import pair_hash
from armor.models.base import Recommender


class Popularity(Recommender):
    """Ranks items by their number of training positives (ties: the evaluator's tie order)."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> Popularity:
        self.counts = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("Popularity.score called before fit")
        return np.broadcast_to(self.counts, (len(users), self.counts.size)).copy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.counts is None else {"counts": self.counts}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"]


class RandomRanker(Recommender):
    """Uniformly random, but reproducible, scores per (seed, user, item)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.n_items: int | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> RandomRanker:
        self.n_items = train.shape[1]
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if self.n_items is None:
            raise RuntimeError("RandomRanker.score called before fit")
        bits = pair_hash(self.seed, np.asarray(users)[:, None], np.arange(self.n_items)[None, :])
        return (bits >> np.uint64(40)).astype(np.float32) / np.float32(2**24)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.n_items is None else {"n_items": np.array(self.n_items)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.n_items = int(arrays["n_items"])


class NewFirst(Recommender):
    """The item cold start's flag-only reference: movies without a positive in the training matrix
    first, everything else after, in random order within each group (all scores tie, and the
    evaluator orders ties at random). It knows which movies are new to the log and nothing else,
    so a model ranking the whole catalogue must beat it to show it learned something about them."""

    name = "new-first"

    def __init__(self) -> None:
        self.new: np.ndarray | None = None  # (I,) bool

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> NewFirst:
        self.new = np.diff(sp.csc_matrix(train).indptr) == 0
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if self.new is None:
            raise RuntimeError("NewFirst.score called before fit")
        return np.broadcast_to(self.new.astype(np.float32), (len(users), self.new.size)).copy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.new is None else {"new": self.new}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.new = np.asarray(arrays["new"], dtype=bool)
