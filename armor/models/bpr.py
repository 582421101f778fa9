"""Bayesian Personalized Ranking (Rendle et al., 2009) through the ``implicit`` library.

implicit >= 0.5 trains on a **user x item** CSR (older releases took item x user). Passing the
transpose does not fail inside implicit: it silently learns factors for the wrong axes. The
wrapper therefore checks the matrix against the split it is told about and checks every
``history`` handed to ``score`` against the catalogue size it was fit on.

implicit appends a bias column to both factor matrices: the users' last column is fixed at 1 and
the items' last column is a learned item bias. Scoring with the full (factors + 1)-wide matrices
is what ``implicit``'s own ``recommend`` does, so our scores rank exactly as implicit's would.

Early stopping: training runs in chunks of ``eval_every`` iterations, one trainer epoch each
(implicit resumes from its current factors when ``fit`` is called again); the trainer measures
validation NDCG@10 after each chunk and keeps the factors of the best one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from armor.config import BPRConfig, from_dict
from armor.errors import ArmorError, ConfigError, DataError, OrientationError
from armor.models.base import TrainableRecommender
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams

log = logging.getLogger(__name__)

# What shaped BPR's search space (armor.models.registry). Iterations are an upper bound: early
# stopping on validation picks the count. Measured on ML-100K
# (random 80/10/10): validation NDCG@10 peaks after ~50-250 iterations and then falls as BPR
# overfits; learning rates >= 0.05 overshoot (peak 0.10-0.14 against 0.16 at 0.005-0.01), below
# 0.005 the loss sits on a popularity-like plateau for ~100 iterations before it personalises
# (hence a patience of 10 evaluations); small regularisation wins, factors matter little.


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


class BPR(TrainableRecommender):
    """Matrix factorisation trained with the BPR pairwise loss (implicit's CPU or GPU kernel).

    One trainer epoch is a chunk of ``eval_every`` implicit iterations (implicit resumes from its
    current factors when ``fit`` is called again), so validation and ``patience`` (counted in
    evaluations) work as for every other model. ``num_threads=1`` makes CPU training
    deterministic for a seed (implicit's multi-threaded SGD is Hogwild and races). ``use_gpu``:
    None picks implicit's CUDA kernel when implicit was built with CUDA (the PyPI wheel is not),
    which is faster on ML-1M-sized data but not bit-reproducible.
    """

    name = "bpr"

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

    @property
    def best_iteration(self) -> int | None:
        """Implicit iterations behind the kept factors."""
        if self.best_epoch is None:
            return None
        return min(self.best_epoch * self.eval_every, self.config.iterations)

    # ------------------------------------------------------------------------------------------
    def _implicit_model(self, iterations: int, random_state: Any) -> Any:
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

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        return Schedule(epochs=math.ceil(self.config.iterations / self.eval_every), patience=self.patience,
                        seed=self.config.seed)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ConfigError("bpr trains in one worker; pass --workers 1")
        self._train = sp.csr_matrix(train, dtype=np.float32)
        self._model = self._implicit_model(self.eval_every, self.config.seed)
        self._iterations = 0

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        step = min(self.eval_every, self.config.iterations - self._iterations)
        self._model.iterations = step
        # implicit re-seeds its sampler from random_state on every fit call: without a new seed
        # per chunk every chunk would replay the same (user, pos, neg) samples.
        self._model.random_state = streams.epoch_rng(epoch)
        self._model.fit(self._train, show_progress=False)
        self._iterations += step
        self.user_factors, self.item_factors = self._factors(self._model)
        return {"iterations": self._iterations}

    def state_dict(self) -> dict[str, Any]:
        assert self.user_factors is not None and self.item_factors is not None, "train an epoch first"
        return {"user_factors": self.user_factors.copy(), "item_factors": self.item_factors.copy(),
                "iterations": self._iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.user_factors, self.item_factors = state["user_factors"].copy(), state["item_factors"].copy()
        if self.user_factors.shape[0] != self._train.shape[0] or self.item_factors.shape[0] != self._train.shape[1]:
            raise DataError(f"bpr resume state has factors for {self.user_factors.shape[0]} users x "
                            f"{self.item_factors.shape[0]} items, this split has {self._train.shape}")
        self._model = self._implicit_model(self.eval_every, self.config.seed)
        self._model.user_factors, self._model.item_factors = self.user_factors.copy(), self.item_factors.copy()
        self._iterations = int(state["iterations"])

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.user_factors is not None and self.item_factors is not None
        return self.user_factors.copy(), self.item_factors.copy()

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        self.user_factors, self.item_factors = (a.copy() for a in snapshot)

    def end(self) -> None:
        self._train = self._model = None

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
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"].astype(np.float32, copy=False)
        self.item_factors = arrays["item_factors"].astype(np.float32, copy=False)
