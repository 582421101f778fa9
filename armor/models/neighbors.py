"""Item-based baselines a reviewer expects beside BPR and LightGCN: ItemKNN and EASE.

Both score a user from the profile they are given (``history``), not from a user vector learned
in training: ``score(users, history) = history @ S`` with an item-item matrix ``S``. So at test
time they use the same profile as the profile-averaging models (train + validation positives),
and a user they never saw in training is scored like any other.

ItemKNN (cosine; Sarwar et al. 2001, through ``implicit``): ``S`` keeps each item's ``k`` most
cosine-similar other items over the binary training matrix. EASE (Steck 2019, closed form):
``S = I - P diag(1/diag(P))`` with ``P = (X^T X + l2 I)^-1``, so ``diag(S) = 0``.

EASE's memory: one dense float64 ``n_items x n_items`` matrix holds the Gram matrix, its Cholesky
factor, the inverse and the weights in turn (LAPACK ``dpotrf`` + ``dpotri`` work in place), and the
float32 weights the model keeps are the only other copy: 12 bytes per item pair at the peak, from
about 32 with ``np.linalg.inv`` (its input, its LU copy and identity, ``-P``, ``B`` and the cast).
``fit`` refuses, naming what fits, when that is more than the memory available (``ease_fits``):
the ML-32M shape (87,585 movies) needs 86 GiB; 24 GiB holds about 40,000 movies.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from armor.config import from_dict, setting
from armor.errors import ArmorError, ConfigError, DataError
from armor.fields import check_fields
from armor.models.base import Recommender

# EASE's bytes per item pair at its peak: the float64 matrix worked on in place, and the float32 result.
EASE_BYTES_PER_PAIR = 8 + 4
# Rows x items of the Gram matrix computed (and mirrored) per block: bounds a block's temporaries, also
# relative to the matrix (at most 1/16 of its rows), so that small catalogues keep to ~12 bytes per pair too.
_GRAM_BLOCK_ENTRIES = 2**24
# Share of the available memory EASE may plan to use: the rest is for the process and its neighbours.
_EASE_MEMORY_SHARE = 0.9


@dataclasses.dataclass(frozen=True)
class ItemKNNConfig:
    """ItemKNN over cosine similarity; ``k`` is chosen on validation."""

    k: int = setting(100, "neighbours kept per item (the item itself not counted)")

    def __post_init__(self) -> None:
        check_fields(self, "itemknn")
        if self.k < 1:
            raise ConfigError(f"itemknn.k: must be >= 1, got {self.k}")


@dataclasses.dataclass(frozen=True)
class EASEConfig:
    """EASE's L2 penalty; chosen on validation."""

    l2: float = setting(250.0, "L2 penalty lambda on the item-item weights")

    def __post_init__(self) -> None:
        check_fields(self, "ease")
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

        # implicit's K counts the item itself (its own cosine, 1, is the largest): ask for one more
        # and drop the diagonal, so that k is the number of neighbours.
        model = CosineRecommender(K=self.config.k + 1, num_threads=1)
        with warnings.catch_warnings():  # implicit normalises into a COO matrix itself, then warns about it
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(self._binary(train), show_progress=False)
        similarity = sp.csr_matrix(model.similarity, dtype=np.float32)  # (I, I)
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        self.similarity = _keep_largest(similarity, self.config.k)
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
    """EASE; ``num_threads``: BLAS threads of the factorisation. One by default, as a model trains in
    a one-CPU task: on the shared 2-core machine, 3,000 items took 0.8 s on one thread, 14.5 s on two."""

    name = "ease"

    def __init__(self, config: EASEConfig | Mapping[str, Any] | None = None, *, num_threads: int = 1) -> None:
        self.config = _as(EASEConfig, config)
        self.num_threads = int(num_threads)
        self.similarity: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> EASE:
        n_items = train.shape[1]
        fits, needed, available = ease_fits(n_items)
        if not fits:
            raise ConfigError(
                f"ease: {n_items:,} items need {needed / 2**30:.1f} GiB (a float64 {n_items}x{n_items} matrix "
                f"inverted in place, then its float32 copy) and {available / 2**30:.1f} GiB is available, which "
                f"fits EASE on at most {ease_max_items(available):,} items; use a smaller catalogue "
                "(--catalogue multimodal) or a machine with more memory")
        p = _gram(self._binary(train).astype(np.float64))  # (I, I) float64: the one large matrix
        p.flat[::n_items + 1] += self.config.l2
        with threadpool_limits(self.num_threads, "blas"):
            _invert_spd_in_place(p)  # P = (X^T X + l2 I)^-1
        np.divide(p, -np.diag(p).copy(), out=p)  # B_ij = -P_ij / P_jj, in place
        p.flat[::n_items + 1] = 0.0
        self.similarity = p.astype(np.float32)  # the second copy, at half the size; p is freed on return
        return self

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.similarity is None else {"similarity": self.similarity}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = arrays["similarity"]


def ease_max_items(available: float) -> int:
    """The most items whose EASE fit stays within ``available`` bytes (see ``ease_fits``)."""
    return int((_EASE_MEMORY_SHARE * available / EASE_BYTES_PER_PAIR) ** 0.5)


def ease_fits(n_items: int, available: float | None = None) -> tuple[bool, int, float]:
    """(whether EASE on ``n_items`` items fits, the bytes it needs, the bytes available): its
    float64 and float32 item x item matrices within a share of the memory available now."""
    available = available_memory() if available is None else available
    needed = EASE_BYTES_PER_PAIR * n_items * n_items
    return needed <= _EASE_MEMORY_SHARE * available, needed, available


def available_memory() -> float:
    """Bytes this process can still allocate without swapping: the kernel's MemAvailable, or less
    where a cgroup (a container's memory limit) leaves less."""
    try:
        with open("/proc/meminfo") as f:
            meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        free = float(meminfo.get("MemAvailable", meminfo["MemFree"]))
    except (OSError, KeyError, ValueError, IndexError):  # not Linux
        free = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f, open(usage_file) as g:
                limit, usage = f.read().strip(), int(g.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit():  # "max": no limit
            free = min(free, float(int(limit) - usage))
    return max(free, 0.0)


def _block_rows(n: int) -> int:
    return max(1, min(_GRAM_BLOCK_ENTRIES // max(n, 1), -(-n // 16)))


def _gram(x: sp.csr_matrix) -> np.ndarray:
    """Dense ``X^T X`` (I, I) of a (U, I) float64 CSR, written row block by row block into one array,
    so that neither the whole sparse product nor a float32 copy of it exists."""
    n_items = x.shape[1]
    xt = sp.csr_matrix(x.T)  # (I, U)
    gram = np.zeros((n_items, n_items))  # zeroed lazily by the kernel; toarray adds into it
    rows = _block_rows(n_items)
    for start in range(0, n_items, rows):
        (xt[start:start + rows] @ x).toarray(out=gram[start:start + rows])  # (b, I)
    return gram


def _invert_spd_in_place(a: np.ndarray) -> None:
    """Replace the symmetric positive definite C-ordered ``a`` by its inverse, in its own memory:
    Cholesky (``dpotrf``), inverse from the factor (``dpotri``), then the other triangle copied."""
    n = a.shape[0]
    # a is symmetric, so its transpose (a Fortran-ordered view of the same memory) is the same matrix:
    # handing LAPACK that view lets it work in place. Its upper triangle is a's lower one.
    factor, info = lapack.dpotrf(a.T, lower=0, clean=0, overwrite_a=1)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0 or not np.shares_memory(a, factor) or not np.shares_memory(a, inverse):
        raise ArmorError(f"ease: the regularised Gram matrix could not be inverted in place (LAPACK info {info})")
    block = _block_rows(n)  # numpy copies each block's (overlapping) source once
    for start in range(0, n, block):  # the lower triangle holds the inverse: mirror it onto the upper one
        stop = min(start + block, n)
        a[start:stop, stop:] = a[stop:, start:stop].T
        diagonal = a[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diagonal[upper] = diagonal.T[upper]


def _keep_largest(s: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``s`` with at most ``k`` entries per row, its largest (ties among equal similarities can
    leave implicit's top ``k + 1`` without the item itself)."""
    counts = np.diff(s.indptr)
    if counts.max(initial=0) <= k:
        return s
    keep = np.ones(s.nnz, bool)
    for row in np.flatnonzero(counts > k):
        start, stop = s.indptr[row], s.indptr[row + 1]
        keep[start + np.argsort(-s.data[start:stop], kind="stable")[k:]] = False
    s = s.copy()
    s.data[~keep] = 0.0
    s.eliminate_zeros()
    return s
