"""Two floors of the item cold-start literature: a collaborative model for the movies with ratings,
and a mapping from content to its item vectors for the movies without.

- **kNN mapping**: a new movie's vector is the similarity-weighted mean of the collaborative vectors
  of its ``k`` most content-similar movies with ratings (weights: the similarities, clipped at 0; a
  plain mean when all k are <= 0).
- **Linear mapping** (Gantner et al., ICDM 2010, "Learning Attribute-to-Feature Mappings for
  Cold-Start Recommendations", its least-squares variant): ridge regression from content to the
  collaborative item vectors, fitted on the movies with ratings (both sides centred, so it has an
  intercept; penalty ``l2``), applied to the new movies' content.

The collaborative model (``source``) is ALS (``armor.models.als``: a user is the least-squares fit
of their profile against the item vectors) or LightGCN (``armor.models.lightgcn``: a user's learned
vector), whichever validation prefers: ``source`` is searched with the other settings. It trains
through the one Trainer, an epoch at a time, exactly as it would alone (same settings section, same
random streams); after each epoch the mapping is refitted to its current vectors (cheap: the kNN
weights and the ridge system's factorisation depend on content and on which movies have ratings
only, and are computed once in ``begin``), so validation and early stopping see the mapped model.

Content is the per-modality standardised features, each modality's block scaled to unit length,
side by side and divided by ``sqrt(M)`` (``armor.models.hybrid_ops.ContentScaler`` with
``unit=True``): the inner product of two movies is the mean of their per-modality cosines. Its
statistics come from the movies with ratings, so a new movie's vector is a function of its own
features alone (given the fitted model): changing another new movie's features, or adding one,
leaves it as it is. A movie is new when the training matrix has no positive for it.

A user the model never trained is their profile alone (the cosine of their liked items' mean vector
with every item's vector: what the FAISS pyfunc serves); a known user is scored as the source scores
them (a dot product with the ALS fold-in or the LightGCN user vector), which the pyfunc's cosine
does not reproduce.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from armor.config import LightGCNConfig, from_dict
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.als import ALS, ALSConfig
from armor.models.base import TrainableRecommender
from armor.models.hybrid_configs import KNNMapConfig, LinearMapConfig
from armor.models.hybrid_ops import ContentScaler, check_history, hybrid_scores, without_positive
from armor.models.lightgcn import LightGCN
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams


def _as(cls: type, config: Any, section: str) -> Any:
    if config is None or isinstance(config, cls):
        return config or cls()
    return from_dict(cls, config, where=section)


class _Mapping(TrainableRecommender):
    """A collaborative source plus a content mapping for the movies without a training positive."""

    config_class: type
    section: str

    def __init__(self, config: Any = None, features: Mapping[str, np.ndarray] | None = None,
                 present: Mapping[str, np.ndarray] | None = None, *, als: ALSConfig | Mapping[str, Any] | None = None,
                 lightgcn: LightGCNConfig | Mapping[str, Any] | None = None, device: str = "cpu",
                 num_threads: int | None = None) -> None:
        self.config = _as(self.config_class, config, self.section)
        self.als_config = _as(ALSConfig, als, "als")
        self.lightgcn_config = _as(LightGCNConfig, lightgcn, "lightgcn")
        self.device, self.num_threads = device, num_threads
        self.features, self.present = features, present
        self.item_vectors: np.ndarray | None = None  # (I, d) the source's, new movies' mapped
        self.user_vectors: np.ndarray | None = None  # (U, d) LightGCN's; None with ALS (it folds profiles in)
        self.cold: np.ndarray | None = None  # (I,) bool: no positive in the training matrix
        self.n_users = 0
        # Built here: the Trainer asks for the schedule (the source's) before begin().
        self._source: ALS | LightGCN = (ALS(self.als_config, num_threads=1) if self.config.source == "als" else
                                        LightGCN(self.lightgcn_config, device=device, num_threads=num_threads))
        self._training = False
        self._stale = False

    @abc.abstractmethod
    def _prepare(self, content: np.ndarray, warm: np.ndarray, cold: np.ndarray) -> None:
        """Precompute what depends on content (I, D) and on which movies are ``warm`` / ``cold`` only."""

    @abc.abstractmethod
    def _map(self, warm_vectors: np.ndarray) -> np.ndarray:
        """(n_cold, d) the new movies' vectors from the rated movies' (n_warm, d) source vectors."""

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        return self._source.schedule()

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ConfigError(f"{self.name} trains in one worker; pass --workers 1")
        if self.features is None:
            raise ArmorError(f"{self.name} was built without features; build it with the catalogue's features to fit")
        n_users, n_items = train.shape
        rows = next(iter(self.features.values())).shape[0]
        if rows != n_items:
            raise DataError(f"train matrix has {n_items} item columns but the features have {rows} rows; "
                            "align them with SplitData.item_ids")
        self._source.begin(train, streams)
        self.cold, self.n_users = without_positive(train), n_users
        self._warm, cold = np.flatnonzero(~self.cold), np.flatnonzero(self.cold)
        scaler = ContentScaler.fit(self.features, self.present, rows=self._warm, unit=True)
        if cold.size:
            with threadpool_limits(1, "blas"):  # one thread: the same sums on every run, and a shared machine
                self._prepare(scaler.transform(self.features, self.present), self._warm, cold)
        self._training = self._stale = True

    def steps_per_epoch(self) -> int | None:
        return self._source.steps_per_epoch()

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        stats = self._source.train_epoch(epoch, streams)
        self._stale = True
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"source": self._source.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._source.load_state_dict(state["source"])
        self._stale = True

    def snapshot(self) -> tuple[np.ndarray, np.ndarray | None]:
        self._refresh()
        return self.item_vectors.copy(), None if self.user_vectors is None else self.user_vectors.copy()

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray | None]) -> None:
        items, users = snapshot
        self.item_vectors, self.user_vectors = items.copy(), None if users is None else users.copy()
        self._stale = False

    def end(self) -> None:
        self._refresh()
        self._source.end()
        self._training = False

    def _refresh(self) -> None:
        """The source's current vectors, the new movies' replaced by the mapping, once per change."""
        if not (self._stale and self._training):
            return
        snapshot = self._source.snapshot()
        if isinstance(self._source, ALS):
            users, items = None, snapshot  # (I, f)
        else:
            users, items = snapshot[0], snapshot[1]  # (U, d), (I, d) the layer-mean vectors
        items = np.array(items, dtype=np.float32)
        if self.cold.any():
            with threadpool_limits(1, "blas"):
                items[self.cold] = self._map(items[self._warm])
        self.item_vectors, self.user_vectors = items, users
        self._stale = False

    # -- scoring and persistence -------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """As the source scores a known user (over the mapped item vectors); the profile cosine for a
        user the model never trained."""
        self._refresh()
        if self.item_vectors is None:
            raise ArmorError(f"{self.name} score called before fit (or load)")
        items = self.item_vectors
        check_history(history, items.shape[0], self.name)
        if self.config.source == "als":
            als = ALS(self.als_config, num_threads=1)
            als.item_factors = items

            def known(_: np.ndarray, profile: sp.csr_matrix) -> np.ndarray:
                return als.user_vectors(profile) @ items.T
        else:
            def known(rows: np.ndarray, _: sp.csr_matrix) -> np.ndarray:
                return self.user_vectors[rows] @ items.T
        return hybrid_scores(users, history, self.n_users, items, known)

    def item_embeddings(self) -> np.ndarray:
        """(I, d) the vectors ``score`` ranks items by. The FAISS pyfunc serves a history by the cosine
        of its items' mean vector: exactly ``score`` for a user the model never trained, not for a known
        user (scored as the source scores them: ALS's fold-in, LightGCN's learned vector)."""
        self._refresh()
        if self.item_vectors is None:
            raise ArmorError(f"{self.name} item_embeddings called before fit (or load)")
        return self.item_vectors

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "als": dataclasses.asdict(self.als_config),
                "lightgcn": dataclasses.asdict(self.lightgcn_config), "device": self.device,
                "num_threads": self.num_threads}

    def arrays(self) -> dict[str, np.ndarray]:
        self._refresh()
        if self.item_vectors is None:
            return {}
        out = {"item_vectors": self.item_vectors, "cold": self.cold, "n_users": np.array(self.n_users)}
        return out if self.user_vectors is None else {**out, "user_vectors": self.user_vectors}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_vectors = np.asarray(arrays["item_vectors"], np.float32)
        self.cold, self.n_users = np.asarray(arrays["cold"], bool), int(arrays["n_users"])
        self.user_vectors = np.asarray(arrays["user_vectors"], np.float32) if "user_vectors" in arrays else None
        self._stale = False


class KNNMapping(_Mapping):
    """The kNN mapping; see the module docstring."""

    name = "knn-map"
    config_class = KNNMapConfig
    section = "knn_map"

    def _prepare(self, content: np.ndarray, warm: np.ndarray, cold: np.ndarray) -> None:
        k = min(self.config.k, warm.size)
        # faiss's exact search keeps a k-heap per query over blocked products: no (new x rated) matrix in memory.
        sim, top = faiss.knn(np.ascontiguousarray(content[cold]), np.ascontiguousarray(content[warm]), k,
                             metric=faiss.METRIC_INNER_PRODUCT)  # (C, k) mean per-modality cosines, positions
        weight = np.maximum(sim, 0.0)  # (C, k)
        weight[weight.sum(axis=1) <= 0] = 1.0  # nothing similar: the plain mean of the k nearest
        self._neighbours = top.astype(np.int64)  # (C, k) positions among the rated movies
        self._weights = (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)  # (C, k) rows sum to 1

    def _map(self, warm_vectors: np.ndarray) -> np.ndarray:
        return np.einsum("ck,ckd->cd", self._weights, warm_vectors[self._neighbours]).astype(np.float32)


class LinearMapping(_Mapping):
    """The linear (ridge) mapping; see the module docstring."""

    name = "linear-map"
    config_class = LinearMapConfig
    section = "linear_map"

    def _prepare(self, content: np.ndarray, warm: np.ndarray, cold: np.ndarray) -> None:
        rated = content[warm].astype(np.float64)  # (W, D)
        mean = rated.mean(axis=0)  # (D,)
        self._rated = rated - mean  # (W, D) centred: the regression has an intercept
        self._new = content[cold].astype(np.float64) - mean  # (C, D)
        # The smaller of the two equivalent systems: (X'X + l2 I) W = X'Y, or its dual (XX' + l2 I) A = Y.
        self._primal = self._rated.shape[1] <= self._rated.shape[0]
        gram = self._rated.T @ self._rated if self._primal else self._rated @ self._rated.T
        gram[np.diag_indices_from(gram)] += self.config.l2
        self._factor = scipy.linalg.cho_factor(gram)

    def _map(self, warm_vectors: np.ndarray) -> np.ndarray:
        y = warm_vectors.astype(np.float64)  # (W, d)
        y_mean = y.mean(axis=0)
        if self._primal:
            weights = scipy.linalg.cho_solve(self._factor, self._rated.T @ (y - y_mean))  # (D, d)
        else:
            weights = self._rated.T @ scipy.linalg.cho_solve(self._factor, y - y_mean)  # (D, d)
        return (self._new @ weights + y_mean).astype(np.float32)
