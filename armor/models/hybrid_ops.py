"""What the hybrid baselines (VBPR, FREEDOM, the cold-start mappings) share: the catalogue's content as
one matrix, which movies a training matrix leaves without a positive, and the scoring rule for a
user the model never trained.

Content: per modality (text, poster, thumbnail, in ``armor.models.fusion.MODALITIES`` order), the
features minus their mean, divided by their RMS deviation (``feature_stats``: one scale per
modality, so a 1280-d CNN vector and a 384-d sentence vector end up on one scale without blowing
near-constant channels up); a row that lacks a modality is 0 there. ``unit=True`` also scales each
modality's block to unit length and the whole row by ``1 / sqrt(M)``, so the inner product of two
rows is the mean of their per-modality cosines. The statistics come from ``rows`` (the mappings use
the movies with ratings only, so a new movie's row depends on its own features and nothing else
about the new movies).

Strangers: a user row outside the training matrix has no learned vector; like ARMoR-Graph, such a
user is their profile alone: the cosine of the mean of their liked items' vectors with every
item's vector, which is what the FAISS pyfunc serves for a history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from armor.errors import ArmorError, DataError
from armor.models.fusion import MODALITIES, feature_stats


@dataclasses.dataclass(frozen=True)
class ContentScaler:
    """Per modality (mean (d_m,), scale): how raw features become one content row; see the module docstring."""

    means: dict[str, np.ndarray]
    scales: dict[str, float]
    unit: bool = False

    @classmethod
    def fit(cls, features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None = None,
            rows: np.ndarray | None = None, unit: bool = False) -> ContentScaler:
        """Statistics over ``rows`` (all rows when None) where each modality is present."""
        names = [m for m in MODALITIES if m in features]
        if not names:
            raise DataError("the hybrid models need at least one of text, poster, thumbnail features")
        picked = slice(None) if rows is None else np.asarray(rows)
        subset = {m: np.asarray(features[m], np.float32)[picked] for m in names}
        masks = None if present is None else {m: np.asarray(present[m], bool)[picked] for m in names if m in present}
        stats = feature_stats(subset, masks)
        return cls({m: stats[m][0].astype(np.float32) for m in names},
                   {m: float(stats[m][1][0]) for m in names}, unit)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.means)

    def transform_one(self, modality: str, x: np.ndarray, has: np.ndarray | None = None) -> np.ndarray:
        """(n, d_m) standardised (unit-length blocks when ``unit``); rows without the modality 0."""
        z = (np.asarray(x, np.float32) - self.means[modality]) / np.float32(self.scales[modality])  # (n, d_m)
        if has is not None:
            z[~np.asarray(has, bool)] = 0.0
        if self.unit:
            z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            z /= np.float32(np.sqrt(len(self.means)))
        return z.astype(np.float32, copy=False)

    def transform(self, features: Mapping[str, np.ndarray],
                  present: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """(n, sum d_m) float32: the modalities' blocks side by side (MMRec's concatenation)."""
        blocks = [self.transform_one(m, features[m], None if present is None else present.get(m))
                  for m in self.modalities]
        return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.{m}.mean": mean for m, mean in self.means.items()}
        out.update({f"{prefix}.{m}.scale": np.float32(s) for m, s in self.scales.items()})
        out[f"{prefix}.unit"] = np.array(self.unit)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> ContentScaler | None:
        names = [m for m in MODALITIES if f"{prefix}.{m}.mean" in arrays]
        if not names:
            return None
        return cls({m: np.asarray(arrays[f"{prefix}.{m}.mean"], np.float32) for m in names},
                   {m: float(arrays[f"{prefix}.{m}.scale"]) for m in names}, bool(arrays[f"{prefix}.unit"]))


def without_positive(train: sp.spmatrix) -> np.ndarray:
    """(I,) bool: the movies ``train`` (users x items) holds no positive for: new to a model fitted on it."""
    coo = sp.coo_matrix(train)
    return np.bincount(coo.col[coo.data != 0], minlength=train.shape[1]) == 0


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def profile_scores(history: sp.spmatrix, items: np.ndarray) -> np.ndarray:
    """(B, I) cosine of each profile's mean liked-item vector with every item vector; an empty
    profile scores 0 everywhere (a tie the evaluator orders)."""
    profile = sp.csr_matrix(history, dtype=np.float32)
    profile.data[:] = 1.0
    counts = np.maximum(np.diff(profile.indptr), 1).astype(np.float32)[:, None]  # (B, 1)
    mean = np.asarray(profile @ items, dtype=np.float32) / counts  # (B, d)
    return (unit_rows(mean) @ unit_rows(items).T).astype(np.float32)  # (B, I)


def check_history(history: sp.spmatrix, n_items: int, name: str) -> None:
    if history.shape[1] != n_items:
        raise DataError(f"history has {history.shape[1]} items but {name} was fit on {n_items}; "
                        "fit expects a users x items matrix")


def hybrid_scores(users: np.ndarray, history: sp.spmatrix, n_users: int, items: np.ndarray,
                  known: Callable[[np.ndarray, sp.csr_matrix], np.ndarray]) -> np.ndarray:
    """(B, I) float32: ``known(users, their history)`` for user rows the model trained, the profile
    cosine (``profile_scores`` over ``items``) for the others."""
    users = np.asarray(users, dtype=np.int64)
    history = sp.csr_matrix(history)
    seen = (users >= 0) & (users < n_users)
    out = np.empty((users.size, items.shape[0]), dtype=np.float32)  # (B, I)
    rows = np.flatnonzero(seen)
    if rows.size:
        out[rows] = known(users[rows], history[rows])
    rows = np.flatnonzero(~seen)
    if rows.size:
        out[rows] = profile_scores(history[rows], items)
    return out


class LearnedVectors:
    """Scoring, item vectors and the snapshot of a model that learns one vector per user and per item
    (VBPR, FREEDOM): dot products for a user it trained, the profile cosine for any other.

    The model keeps its current weights on its device and refreshes the numpy copies
    ``user_vectors`` (U, d) and ``item_vectors`` (I, d) from ``_final_tensors()`` after training
    marked them ``_stale``; ``_refreshed()`` copies anything else a model keeps beside them.
    """

    name: str
    config: Any
    device: str
    num_threads: int | None
    user_vectors: np.ndarray | None = None
    item_vectors: np.ndarray | None = None
    _stale: bool = False
    _params: Any = None

    def _final_tensors(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _refreshed(self) -> None:
        """Copy what else the model keeps from its current weights (nothing by default)."""

    def _refresh(self) -> None:
        if not self._stale or self._params is None:
            return
        users, items = self._final_tensors()
        self.user_vectors = users.cpu().numpy().astype(np.float32)
        self.item_vectors = items.cpu().numpy().astype(np.float32)
        self._refreshed()
        self._stale = False

    def _fitted(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        if self.user_vectors is None or self.item_vectors is None:
            raise ArmorError(f"{self.name} {what} called before fit (or load)")
        return self.user_vectors, self.item_vectors

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Dot products for a known user; the profile cosine for a user the model never trained."""
        user_vectors, item_vectors = self._fitted("score")
        check_history(history, item_vectors.shape[0], self.name)
        return hybrid_scores(users, history, user_vectors.shape[0], item_vectors,
                             lambda known, _: user_vectors[known] @ item_vectors.T)

    def item_embeddings(self) -> np.ndarray:
        """(I, d) the vectors ``score`` ranks items by. The FAISS pyfunc serves a history by the cosine
        of its items' mean vector: exactly ``score`` for a user the model never trained, not for a known
        user (whose learned vector ``score`` uses)."""
        return self._fitted("item_embeddings")[1]

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "device": self.device, "num_threads": self.num_threads}
