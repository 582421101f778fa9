"""Non-personalised reference points: most-popular and uniformly random ranking."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from armor.models.base import Recommender


class Popularity(Recommender):
    """Ranks items by their number of training positives (ties: lower item index first)."""

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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # A counter-based hash: the score of (user, item) is fixed by the seed alone, so it does not
    # depend on batch size or on the order users are scored in.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


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
        users = np.asarray(users, dtype=np.uint64)[:, None]
        items = np.arange(self.n_items, dtype=np.uint64)[None, :]
        with np.errstate(over="ignore"):
            bits = _splitmix64(_splitmix64(users + _splitmix64(np.uint64(self.seed))) + items)
        return ((bits >> np.uint64(40)).astype(np.float32) / np.float32(2**24))

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.n_items is None else {"n_items": np.array(self.n_items)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.n_items = int(arrays["n_items"])
