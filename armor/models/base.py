"""The one contract every recommender answers, whatever it learns from.

A model scores a batch of users given their profiles (their training positives as CSR rows
over the catalogue). Embedding models answer through ``item_embeddings`` and
``user_embeddings`` and get ``score`` (cosine) for free; interaction models may score directly.
"""

from __future__ import annotations

import abc
import importlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from armor.errors import DataError
from armor.io import atomic_path

MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"

_REGISTRY: dict[str, type[Recommender]] = {}
# Where each kind is defined, so a saved model loads without its module imported first.
_KIND_MODULES = {
    "popularity": "armor.models.baselines", "random": "armor.models.baselines",
    "bpr": "armor.models.bpr", "lightgcn": "armor.models.lightgcn",
    "fused": "armor.models.content", "content-raw": "armor.models.content",
    "content-projected": "armor.models.content",
}


class Recommender(abc.ABC):
    """Base class. Subclasses set ``kind`` and implement ``fit`` and ``score`` (or embeddings)."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _REGISTRY[cls.kind] = cls

    @abc.abstractmethod
    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> Recommender:
        """Learn from the (users x items) binary training matrix; ``valid`` may drive early stopping."""

    @abc.abstractmethod
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores (B, n_items), higher is better, for user rows ``users`` with profiles ``history``.

        Returns a fresh array: the evaluator masks it in place.
        """

    def item_embeddings(self) -> np.ndarray | None:
        return None

    def user_embeddings(self, history: sp.csr_matrix) -> np.ndarray | None:
        return None

    # Persistence: a JSON of constructor params plus named arrays, written all-or-nothing.
    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore fitted state written by ``arrays``."""

    def save(self, directory: str | Path) -> Path:
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            (tmp / MODEL_FILE).write_text(json.dumps({"kind": self.kind, "params": self.params()}, indent=2))
            np.savez(tmp / ARRAYS_FILE, **self.arrays())
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        return load_recommender(directory)


def load_recommender(directory: str | Path) -> Recommender:
    directory = Path(directory)
    try:
        meta = json.loads((directory / MODEL_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"not a saved ARMoR model ({exc})", path=directory / MODEL_FILE) from exc
    kind = meta.get("kind")
    if kind not in _REGISTRY and kind in _KIND_MODULES:
        importlib.import_module(_KIND_MODULES[kind])
    if kind not in _REGISTRY:
        raise DataError(f"unknown model kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}",
                        path=directory / MODEL_FILE)
    model = _REGISTRY[kind](**meta.get("params", {}))
    with np.load(directory / ARRAYS_FILE) as arrays:
        model.load_arrays({name: arrays[name] for name in arrays.files})
    return model


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


class EmbeddingRecommender(Recommender):
    """A model whose items live in a vector space; users are the mean of their liked items.

    Scores are cosine similarities (the paper's eq. 4.8). A user with an empty profile gets a
    zero vector and therefore all-zero scores (ties broken by item index).
    """

    @abc.abstractmethod
    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32."""

    def user_embeddings(self, history: sp.csr_matrix) -> np.ndarray:
        items = self.item_embeddings()
        counts = np.asarray(history.sum(axis=1), dtype=np.float32)  # (B, 1)
        summed = np.asarray(history @ items, dtype=np.float32)  # (B, d)
        return summed / np.maximum(counts, 1.0)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        users_vec = l2_normalize(self.user_embeddings(history))  # (B, d)
        items_vec = l2_normalize(self.item_embeddings())  # (I, d)
        return (users_vec @ items_vec.T).astype(np.float32, copy=False)  # (B, I)
