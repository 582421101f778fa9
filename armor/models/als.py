"""Weighted matrix factorisation by alternating least squares (Hu, Koren & Volinsky 2008), via ``implicit``.

One trainer epoch is ``eval_every`` ALS sweeps (implicit continues from its current factors when
``fit`` is called again), so the number of sweeps is chosen on validation like every other
model's epochs. Scoring folds the given profile in: a user's vector is the least-squares solution
against the item factors for their ``history`` (implicit's ``recalculate_user``), so at test time
ALS uses the same profile (train + validation positives) as the profile-averaging models, and the
user vectors learned in training are not needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from armor.config import from_dict, setting
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.base import TrainableRecommender
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams


@dataclasses.dataclass(frozen=True)
class ALSConfig:
    """implicit's ALS; chosen on validation NDCG@10 like every other model."""

    factors: int = setting(64, "latent factors")
    regularization: float = setting(0.05, "L2 regularisation")
    alpha: float = setting(10.0, "confidence of a positive: 1 + alpha (Hu et al.'s C_ui)")
    iterations: int = setting(30, "upper bound of ALS sweeps; early stopping on validation picks the count")
    patience: int = setting(3, "evaluations without a better validation NDCG@10 before stopping")
    seed: int = setting(0, "seed of the initial factors")

    def __post_init__(self) -> None:
        for name, ok in (("factors", self.factors >= 1), ("regularization", self.regularization >= 0),
                         ("alpha", self.alpha > 0), ("iterations", self.iterations >= 1),
                         ("patience", self.patience >= 1)):
            if not ok:
                raise ConfigError(f"als.{name}: out of range, got {getattr(self, name)}")



class ALS(TrainableRecommender):
    name = "als"

    def __init__(self, config: ALSConfig | Mapping[str, Any] | None = None, *, num_threads: int = 1) -> None:
        if config is None or isinstance(config, ALSConfig):
            self.config = config or ALSConfig()
        else:
            self.config = from_dict(ALSConfig, config, where="als")
        self.num_threads = int(num_threads)
        self.item_factors: np.ndarray | None = None  # (I, factors)

    def _implicit(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        cfg = self.config
        with threadpool_limits(1, "blas"):  # implicit warns at construction when BLAS has a thread pool
            return AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                                           dtype=np.float32, iterations=1, num_threads=self.num_threads,
                                           random_state=cfg.seed)

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        return Schedule(epochs=self.config.iterations, patience=self.config.patience, seed=self.config.seed)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ConfigError("als trains in one worker; pass --workers 1")
        self._train = sp.csr_matrix(train, dtype=np.float32)
        self._train.data[:] = 1.0
        self._model = self._implicit()

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        from threadpoolctl import threadpool_limits

        # implicit's solver runs its own threads; a BLAS thread pool under it only contends.
        with threadpool_limits(1, "blas"):
            self._model.fit(self._train, show_progress=False)  # one more sweep from the current factors
        self.item_factors = np.array(self._model.item_factors, dtype=np.float32)
        return {"sweeps": epoch + 1}

    def state_dict(self) -> dict[str, Any]:
        return {"user_factors": np.array(self._model.user_factors), "item_factors": np.array(self._model.item_factors)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["item_factors"].shape[0] != self._train.shape[1]:
            raise DataError(f"als resume state has {state['item_factors'].shape[0]} items, this split has "
                            f"{self._train.shape[1]}")
        self._model.user_factors = state["user_factors"].copy()
        self._model.item_factors = state["item_factors"].copy()
        self.item_factors = state["item_factors"].copy()

    def snapshot(self) -> np.ndarray:
        assert self.item_factors is not None
        return self.item_factors.copy()

    def restore(self, snapshot: np.ndarray) -> None:
        self.item_factors = snapshot.copy()

    def end(self) -> None:
        self._train = self._model = None

    # -- scoring and persistence -------------------------------------------------------------
    def user_vectors(self, history: sp.csr_matrix) -> np.ndarray:
        """Least-squares user factors (B, factors) for the profiles in ``history``."""
        if self.item_factors is None:
            raise ArmorError("ALS.score called before fit (or load)")
        if history.shape[1] != self.item_factors.shape[0]:
            raise DataError(f"history has {history.shape[1]} items but als was fit on {self.item_factors.shape[0]}")
        from threadpoolctl import threadpool_limits

        model = self._implicit()
        model.item_factors = self.item_factors
        profile = sp.csr_matrix(history, dtype=np.float32)
        profile.data[:] = 1.0
        with threadpool_limits(1, "blas"):
            return model.recalculate_user(np.arange(profile.shape[0]), profile)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        vectors = self.user_vectors(history)  # (B, factors)
        return (vectors @ self.item_factors.T).astype(np.float32)  # (B, I)

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "num_threads": self.num_threads}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.item_factors is None else {"item_factors": self.item_factors}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors = arrays["item_factors"].astype(np.float32, copy=False)
