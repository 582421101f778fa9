"""Item-based baselines a reviewer expects beside BPR and LightGCN: ItemKNN and EASE.

Both score a user from the profile they are given (``history``), not from a user vector learned
in training: ``score(users, history) = history @ S`` with an item-item matrix ``S``. So at test
time they use the same profile as the profile-averaging models (train + validation positives),
and a user they never saw in training is scored like any other.

ItemKNN (cosine; Sarwar et al. 2001, through ``implicit``): ``S`` keeps each item's ``k`` most
cosine-similar items over the binary training matrix. EASE (Steck 2019, closed form):
``S = I - P diag(1/diag(P))`` with ``P = (X^T X + l2 I)^-1``, so ``diag(S) = 0``; its dense
``n_items x n_items`` inverse limits it to catalogues of tens of thousands of movies.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from armor.config import from_dict, setting
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.base import Recommender

# Past this many items EASE's dense inverse needs more than ~40 GB; say so instead of swapping.
EASE_MAX_ITEMS = 100_000


@dataclasses.dataclass(frozen=True)
class ItemKNNConfig:
    """ItemKNN over cosine similarity; ``k`` is chosen on validation."""

    k: int = setting(100, "neighbours kept per item")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"itemknn.k: must be >= 1, got {self.k}")


@dataclasses.dataclass(frozen=True)
class EASEConfig:
    """EASE's L2 penalty; chosen on validation."""

    l2: float = setting(250.0, "L2 penalty lambda on the item-item weights")

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise ConfigError(f"ease.l2: must be > 0, got {self.l2}")



def _as(cls: type, config: Any) -> Any:
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if isinstance(config, Mapping):
        return from_dict(cls, config, where=cls.__name__)
    raise ConfigError(f"expected a {cls.__name__} or a mapping, got {type(config).__name__}")


class _ItemItemModel(Recommender):
    """Shared scoring of ``history @ S`` for a sparse or dense (n_items x n_items) ``S``."""

    name: str
    similarity: sp.csr_matrix | np.ndarray | None

    def _binary(self, train: sp.csr_matrix) -> sp.csr_matrix:
        x = sp.csr_matrix(train, dtype=np.float32)
        x.data[:] = 1.0
        return x

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if self.similarity is None:
            raise ArmorError(f"{self.name}.score called before fit (or load)")
        n_items = self.similarity.shape[0]
        if history.shape[1] != n_items:
            raise DataError(f"history has {history.shape[1]} items but {self.name} was fit on {n_items}")
        scores = self._binary(history) @ self.similarity  # (B, I)
        return np.asarray(scores.toarray() if sp.issparse(scores) else scores, dtype=np.float32)


class ItemKNN(_ItemItemModel):
    name = "itemknn"

    def __init__(self, config: ItemKNNConfig | Mapping[str, Any] | None = None) -> None:
        self.config = _as(ItemKNNConfig, config)
        self.similarity: sp.csr_matrix | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> ItemKNN:
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=self.config.k, num_threads=1)
        with warnings.catch_warnings():  # implicit normalises into a COO matrix itself, then warns about it
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(self._binary(train), show_progress=False)
        self.similarity = sp.csr_matrix(model.similarity, dtype=np.float32)  # (I, I)
        return self

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config)}

    def arrays(self) -> dict[str, np.ndarray]:
        if self.similarity is None:
            return {}
        s = self.similarity
        return {"data": s.data, "indices": s.indices, "indptr": s.indptr, "shape": np.array(s.shape)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                        shape=tuple(arrays["shape"]))


class EASE(_ItemItemModel):
    name = "ease"

    def __init__(self, config: EASEConfig | Mapping[str, Any] | None = None) -> None:
        self.config = _as(EASEConfig, config)
        self.similarity: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> EASE:
        n_items = train.shape[1]
        if n_items > EASE_MAX_ITEMS:
            raise ConfigError(f"ease: {n_items} items need a dense {n_items}x{n_items} inverse "
                              f"(~{8 * n_items**2 / 2**30:.0f} GiB); use it on catalogues under {EASE_MAX_ITEMS}")
        x = self._binary(train)
        gram = (x.T @ x).toarray().astype(np.float64)  # (I, I)
        gram[np.diag_indices(n_items)] += self.config.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]  # B_ij = -P_ij / P_jj
        b[np.diag_indices(n_items)] = 0.0
        self.similarity = b.astype(np.float32)
        return self

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.similarity is None else {"similarity": self.similarity}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = arrays["similarity"]
