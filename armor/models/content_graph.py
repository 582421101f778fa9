"""Frozen content structure for graph models: an item-item kNN graph of the encoder features
(FREEDOM, Zhou & Shen 2023; LATTICE, Zhang et al. 2021) and a frozen PCA of each modality.

Both are computed once from the features and never trained, so an item's neighbours and reduced
features depend on its content alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from armor.errors import DataError
from armor.models import graph_ops
from armor.models.fusion import MODALITIES, feature_stats


def _neighbours(x: np.ndarray, has: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n,), neighbours (n, k)): for each of the ``n`` rows that ``has`` the modality, its
    ``k`` most cosine-similar rows among those (itself included); ``x`` is L2-normalised.

    ``faiss.knn`` by inner product keeps a k-heap per query over blocked BLAS products; the numpy
    blocks plus ``argpartition`` it replaces held ~2.9 GB per 2,048-row block at 87k items and
    took 3x as long at 20k x 384. Rows without the modality are neither queries nor candidates."""
    rows = np.flatnonzero(has)
    vectors = np.ascontiguousarray(x[rows], dtype=np.float32)  # (n, d)
    _, found = faiss.knn(vectors, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)  # (n, k) positions in rows
    return rows, rows[found]


def knn_item_graph(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None,
                   k: int) -> sp.csr_matrix:
    """The frozen item-item graph: per modality, each item's ``k`` nearest items (itself included)
    among the items that have the modality, by cosine of standardised features, weight ``1 / k``
    (FREEDOM's normalisation, which on a kNN graph is the row mean; ``k`` is capped at the number
    of items with the modality); averaged over the modalities an item has. Rows sum to 1 (or 0 for
    an item with no modality), and no edge leads to an item through a modality it lacks. Returns an
    (I, I) float32 CSR.
    """
    names = [m for m in MODALITIES if m in features]
    if not names:
        raise DataError("the content graph needs at least one of text, poster, thumbnail features")
    n_items = int(np.asarray(features[names[0]]).shape[0])
    stats = feature_stats({m: features[m] for m in names}, present)
    total = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    count = np.zeros(n_items, dtype=np.float32)  # (I,) modalities per item
    for m in names:
        has = np.ones(n_items, bool) if present is None or m not in present else np.asarray(present[m], bool)
        k_m = min(k, int(has.sum()))
        if k_m == 0:
            continue
        mean, std = stats[m]
        x = (np.asarray(features[m], dtype=np.float32) - mean) / std  # (I, d_m)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        rows, cols = _neighbours(x, has, k_m)  # (n,), (n, k_m)
        weight = np.full(cols.size, 1.0 / k_m, dtype=np.float32)
        total = total + sp.csr_matrix((weight, (np.repeat(rows, k_m), cols.ravel())), shape=(n_items, n_items))
        count += has
    graph = sp.diags(np.where(count > 0, 1.0 / np.maximum(count, 1.0), 0.0).astype(np.float32)) @ total
    graph = sp.csr_matrix(graph, dtype=np.float32)
    graph.eliminate_zeros()
    graph.sort_indices()
    return graph


def principal_components(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None,
                         rank: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality (mean (d,), components (r, d)): the top-``rank`` principal axes of the rows
    that have the modality. A frozen, content-only reduction: the fusion's first (linear) layer
    then reads ``r`` numbers instead of ``d`` (1280 for EfficientNet), which is most of its cost."""
    out = {}
    for m, x in features.items():
        x = np.asarray(x, dtype=np.float64)
        has = np.ones(x.shape[0], bool) if present is None or m not in present else np.asarray(present[m], bool)
        mean = x[has].mean(axis=0) if has.any() else np.zeros(x.shape[1])
        r = min(rank, x.shape[1], max(int(has.sum()), 1))
        centred = x[has] - mean  # (n, d)
        # eigh of the (d, d) covariance, BLAS on one thread: numpy's SVD of the (n, d) rows ran its
        # own BLAS threads and took minutes on a busy 2-core machine; this takes a second or two.
        with threadpool_limits(1, "blas"):
            _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues; vectors (d, d)
        axes = vectors[:, ::-1][:, :r].T  # (r, d) largest first
        out[m] = (mean.astype(np.float32), np.ascontiguousarray(axes, dtype=np.float32))
    return out


def reduce_features(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None,
                    components: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """``(x - mean) @ components.T`` per modality, (I, d_m) -> (I, r); absent rows stay 0."""
    out = {}
    for m, (mean, axes) in components.items():
        z = (np.asarray(features[m], np.float32) - mean) @ axes.T  # (I, r)
        if present is not None and m in present:
            z[~np.asarray(present[m], bool)] = 0.0
        out[m] = z.astype(np.float32)
    return out


class FixedSpMM(torch.autograd.Function):
    """``S X`` for a constant sparse ``S`` whose transpose is precomputed (backward ``S^T G``)."""

    @staticmethod
    def forward(ctx: Any, matrix: Tensor, transpose: Tensor, x: Tensor) -> Tensor:
        ctx.transpose = transpose
        return graph_ops.spmm(matrix, x.contiguous())  # (I, I) @ (I, d) -> (I, d)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, graph_ops.spmm(ctx.transpose, grad.contiguous())  # (I, d)
