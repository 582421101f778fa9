"""Bayesian Personalized Ranking (Rendle et al., 2009) through the ``implicit`` library.

implicit >= 0.5 trains on a **user x item** CSR (older releases took item x user). Passing the
transpose does not fail inside implicit: it silently learns factors for the wrong axes. The
wrapper therefore checks the matrix against the split it is told about and checks every
``history`` handed to ``score`` against the catalogue size it was fit on.

implicit appends a bias column to both factor matrices: the users' last column is fixed at 1 and
the items' last column is a learned item bias. Scoring with the full (factors + 1)-wide matrices
is what ``implicit``'s own ``recommend`` does, so our scores rank exactly as implicit's would.

Early stopping: when a validation matrix (or a ``SplitData``) is given, training runs in chunks of
``eval_every`` iterations (implicit resumes from its current factors when ``fit`` is called again),
validation NDCG@10 is measured after each chunk, and the factors of the best chunk are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from armor.config import BPRConfig, EvalConfig, from_dict
from armor.data.splits import SplitData
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.base import Recommender
from armor.models.tuning import SELECT_METRIC, selection_score, validation_data

log = logging.getLogger(__name__)

# A small grid that is sensible on ML-100K / ML-1M (about 1k-6k users, 1.7k-3.7k items).
# Iterations are an upper bound: early stopping on validation picks the count. Measured on ML-100K
# (random 80/10/10): validation NDCG@10 peaks after ~50-250 iterations and then falls as BPR
# overfits; learning rates >= 0.05 overshoot (peak 0.10-0.14 against 0.16 at 0.005-0.01), below
# 0.005 the loss sits on a popularity-like plateau for ~100 iterations before it personalises
# (hence a patience of 10 evaluations); small regularisation wins, factors matter little.
DEFAULT_GRID: dict[str, list[Any]] = {
    "factors": [64, 128],
    "learning_rate": [0.005, 0.01, 0.02],
    "regularization": [0.001, 0.01],
    "iterations": [500],
}


class OrientationError(DataError):
    """A user x item matrix was expected and its transpose (or another shape) was given."""


def _has_cuda() -> bool:
    try:
        import implicit.gpu
    except ImportError:  # pragma: no cover - implicit is a hard dependency of this module
        return False
    return bool(implicit.gpu.HAS_CUDA)


def _as_config(config: BPRConfig | Mapping[str, Any] | None) -> BPRConfig:
    if config is None:
        return BPRConfig()
    if isinstance(config, BPRConfig):
        return config
    return from_dict(BPRConfig, config, where="bpr")


class BPR(Recommender):
    """Matrix factorisation trained with the BPR pairwise loss (implicit's CPU or GPU kernel).

    ``eval_every`` and ``patience`` are counted in iterations and in evaluations respectively and
    only matter when validation data is given to ``fit``. ``num_threads=1`` makes CPU training
    deterministic for a seed (implicit's multi-threaded SGD is Hogwild and races). ``use_gpu``:
    None picks implicit's CUDA kernel when implicit was built with CUDA (the PyPI wheel is not),
    which is faster on ML-1M-sized data but not bit-reproducible.
    """

    kind = "bpr"

    def __init__(self, config: BPRConfig | Mapping[str, Any] | None = None, *, eval_every: int = 10,
                 patience: int = 10, num_threads: int = 1, use_gpu: bool | None = None) -> None:
        self.config = _as_config(config)
        if eval_every < 1:
            raise ConfigError(f"bpr eval_every: must be >= 1, got {eval_every}")
        if patience < 1:
            raise ConfigError(f"bpr patience: must be >= 1, got {patience}")
        if num_threads < 0:
            raise ConfigError(f"bpr num_threads: must be >= 0 (0: all cores), got {num_threads}")
        self.eval_every = int(eval_every)
        self.patience = int(patience)
        self.num_threads = int(num_threads)
        self.use_gpu = use_gpu
        self.user_factors: np.ndarray | None = None  # (U, factors + 1), last column 1
        self.item_factors: np.ndarray | None = None  # (I, factors + 1), last column item bias
        self.history: list[dict[str, float]] = []
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.fit_seconds: float | None = None

    # ------------------------------------------------------------------------------------------
    def _implicit_model(self, iterations: int, random_state: int) -> Any:
        gpu = _has_cuda() if self.use_gpu is None else bool(self.use_gpu)
        if gpu and not _has_cuda():
            raise ConfigError("bpr use_gpu=True but implicit has no CUDA support here; "
                              "pass use_gpu=None (auto) or False")
        if gpu:
            import implicit.gpu.bpr

            return implicit.gpu.bpr.BayesianPersonalizedRanking(
                self.config.factors, self.config.learning_rate, self.config.regularization,
                iterations=iterations, random_state=random_state)
        import implicit.cpu.bpr

        return implicit.cpu.bpr.BayesianPersonalizedRanking(
            self.config.factors, self.config.learning_rate, self.config.regularization,
            dtype=np.float32, iterations=iterations, num_threads=self.num_threads,
            random_state=random_state)

    @staticmethod
    def _factors(model: Any) -> tuple[np.ndarray, np.ndarray]:
        cpu = model.to_cpu() if hasattr(model, "to_cpu") else model
        return (np.array(cpu.user_factors, dtype=np.float32),  # (U, f + 1)
                np.array(cpu.item_factors, dtype=np.float32))  # (I, f + 1)

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None,
            data: SplitData | None = None, eval_config: EvalConfig | None = None) -> BPR:
        """Train on the (users x items) ``train``; with ``valid`` or ``data``, stop early on
        validation NDCG@10. ``data.test`` is never read."""
        train = sp.csr_matrix(train, dtype=np.float32)
        if data is not None and train.shape != data.train.shape:
            raise OrientationError(
                f"train has shape {train.shape} but the split is {data.train.shape} (users x items); "
                "implicit >= 0.5 expects user x item: did you pass the transpose?")
        if data is None and valid is not None:
            data = validation_data(train, valid)
        started = time.perf_counter()
        self.history = []
        if data is None:
            model = self._implicit_model(self.config.iterations, self.config.seed)
            model.fit(train, show_progress=False)
            self.user_factors, self.item_factors = self._factors(model)
            self.best_iteration, self.best_score = self.config.iterations, None
        else:
            self._fit_early_stopping(train, data, eval_config)
        self.fit_seconds = time.perf_counter() - started
        return self

    def _fit_early_stopping(self, train: sp.csr_matrix, data: SplitData,
                            eval_config: EvalConfig | None) -> None:
        model = self._implicit_model(self.eval_every, self.config.seed)
        best: tuple[np.ndarray, np.ndarray] | None = None
        best_score, best_iteration, stale, done, chunk = -np.inf, 0, 0, 0, 0
        while done < self.config.iterations and stale < self.patience:
            step = min(self.eval_every, self.config.iterations - done)
            model.iterations = step
            # implicit re-seeds its sampler from random_state on every fit call: without a new
            # seed per chunk every chunk would replay the same (user, pos, neg) samples.
            model.random_state = np.random.default_rng([self.config.seed, chunk])
            model.fit(train, show_progress=False)
            done += step
            chunk += 1
            self.user_factors, self.item_factors = self._factors(model)
            score = selection_score(self, data, eval_config)
            self.history.append({"iteration": done, SELECT_METRIC: score})
            log.debug("bpr iteration %d: valid %s %.4f", done, SELECT_METRIC, score)
            if score > best_score:
                best_score, best_iteration, stale = score, done, 0
                best = (self.user_factors.copy(), self.item_factors.copy())
            else:
                stale += 1
        assert best is not None
        self.user_factors, self.item_factors = best
        self.best_iteration, self.best_score = best_iteration, float(best_score)

    # ------------------------------------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if self.user_factors is None or self.item_factors is None:
            raise ArmorError("BPR.score called before fit (or load)")
        n_items = self.item_factors.shape[0]
        if history.shape[1] != n_items:
            raise OrientationError(
                f"history has {history.shape[1]} items but the model was fit on {n_items}; "
                "implicit >= 0.5 expects a user x item matrix in fit: was it given item x user?")
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < self.user_factors.shape[0])
        vectors = np.zeros((users.size, self.user_factors.shape[1]), dtype=np.float32)  # (B, f + 1)
        # Users absent at fit time have no factors; zeros rank them by nothing (all ties).
        vectors[known] = self.user_factors[users[known]]
        return vectors @ self.item_factors.T  # (B, I)

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "eval_every": self.eval_every,
                "patience": self.patience, "num_threads": self.num_threads, "use_gpu": self.use_gpu}

    def arrays(self) -> dict[str, np.ndarray]:
        if self.user_factors is None or self.item_factors is None:
            return {}
        out = {"user_factors": self.user_factors, "item_factors": self.item_factors}
        if self.best_iteration is not None:
            out["best_iteration"] = np.array(self.best_iteration)
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"].astype(np.float32, copy=False)
        self.item_factors = arrays["item_factors"].astype(np.float32, copy=False)
        if "best_iteration" in arrays:
            self.best_iteration = int(arrays["best_iteration"])
