"""FAISS retrieval over a catalogue of item embeddings: exact (flat) or approximate (IVF, HNSW).

Scores are those of :class:`armor.models.base.EmbeddingRecommender`: a user is the mean of their
history's item embeddings, and a score is the cosine between user and item (vectors are
L2-normalised with the same numpy code, then searched by inner product). Rankings follow
:func:`armor.eval.metrics.top_k`: score descending, then catalogue index ascending, so ties never
depend on FAISS's heap order or thread count. FAISS keeps only k results and which of several
items tied at the k-th score it keeps is unspecified; :meth:`ItemIndex.search` therefore fetches
more than asked, drops excluded movies, and fetches again (twice as many) for any query whose
k-th score ties with the last fetched one, until the boundary is clear or the whole catalogue
has been fetched. For the flat index the answer is exactly the brute-force one.

GPU: with ``use_gpu=True`` and a FAISS build that sees a GPU (faiss-gpu), flat and IVF indexes
are searched there; otherwise (faiss-cpu, no device, HNSW, which FAISS only has on CPU) the CPU
index is used and a message is logged. Nothing GPU-related happens at import.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pyarrow.parquet as pq

from armor.device import host_float32
from armor.errors import ArmorError
from armor.io import atomic_path
from armor.models.base import l2_normalize

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf", "hnsw"]
Metric = Literal["cosine", "ip"]
KINDS = ("flat", "ivf", "hnsw")
METRICS = ("cosine", "ip")

INDEX_FILE = "index.faiss"
IDS_FILE = "movie_ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "index.json"
# faiss-gpu's k-selection handles at most this many neighbours per query; larger fetches run on
# the CPU copy of the index.
_GPU_MAX_K = 2048


class RetrievalError(ArmorError, ValueError):
    """A retrieval request or index that cannot work as given."""


class UnknownMovieError(RetrievalError):
    """Movie ids that are not in the index's catalogue."""

    def __init__(self, movie_ids: Iterable[int], what: str = "history"):
        self.movie_ids = sorted({int(m) for m in movie_ids})
        shown = ", ".join(map(str, self.movie_ids[:20])) + (" ..." if len(self.movie_ids) > 20 else "")
        super().__init__(f"{what}: {len(self.movie_ids)} movie id(s) not in the index's catalogue: {shown}; "
                         "use ids from the item_embeddings.parquet the index was built from")


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one device."""
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a broken CUDA runtime must not stop CPU search
        return False


class ItemIndex:
    """A searchable catalogue: movie ids, their embeddings, and a FAISS index over them.

    ``kind``: "flat" (exact), "ivf" (inverted lists; ``nlist`` cells, ``nprobe`` probed per
    query) or "hnsw" (graph; ``M`` links per node, ``ef_search`` candidates per query).
    ``metric``: "cosine" (normalise, then inner product; the default and the models' score) or
    "ip" (raw inner product).
    """

    def __init__(self, movie_ids: Sequence[int] | np.ndarray, embeddings: np.ndarray, kind: IndexKind = "flat",
                 metric: Metric = "cosine", *, nlist: int | None = None, nprobe: int | None = None, M: int = 32,
                 ef_search: int = 128, ef_construction: int = 80, use_gpu: bool = False,
                 _faiss_index: faiss.Index | None = None):
        if kind not in KINDS:
            raise RetrievalError(f"index kind {kind!r}: choose one of {', '.join(KINDS)}")
        if metric not in METRICS:
            raise RetrievalError(f"index metric {metric!r}: choose one of {', '.join(METRICS)}")
        ids = np.asarray(movie_ids.cpu() if hasattr(movie_ids, "cpu") else movie_ids)
        emb = host_float32(embeddings)  # a tensor on any device, or an array of any dtype and order
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise RetrievalError(f"movie_ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        if emb.ndim != 2 or emb.shape[0] != ids.shape[0]:
            raise RetrievalError(f"embeddings must be (n_movies, dim) = ({ids.shape[0]}, d), got {emb.shape}")
        if ids.size == 0 or emb.shape[1] == 0:
            raise RetrievalError("cannot index an empty catalogue")
        if not np.isfinite(emb).all():
            bad = ids[~np.isfinite(emb).all(axis=1)]
            raise RetrievalError(f"embeddings of movie id(s) {bad[:20].tolist()} are not finite")
        order = np.argsort(ids, kind="stable")
        dup = ids[order][1:][np.diff(ids[order]) == 0]
        if dup.size:
            raise RetrievalError(f"movie ids appear more than once in the catalogue: {np.unique(dup)[:20].tolist()}")

        self.movie_ids = ids.astype(np.int64)
        self.kind: IndexKind = kind
        self.metric: Metric = metric
        self._raw = np.ascontiguousarray(emb, dtype=np.float32)  # (I, d): users are means of these
        self._vectors = self._prepare(self._raw)  # (I, d): what FAISS searches
        self._sorted_ids = self.movie_ids[order]
        self._sorted_pos = order.astype(np.int64)
        n = len(ids)
        self.nlist = nlist if nlist is not None else max(1, min(round(4 * math.sqrt(n)), n // 39))
        self.nprobe = nprobe if nprobe is not None else max(1, min(self.nlist, math.ceil(self.nlist / 4)))
        self.M = M
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        if kind == "ivf" and not 1 <= self.nlist <= n:
            raise RetrievalError(f"nlist={self.nlist}: must be between 1 and the catalogue size {n}")
        if self.nprobe < 1 or M < 2 or ef_search < 1 or ef_construction < 1:
            raise RetrievalError(f"nprobe={self.nprobe}, M={M}, ef_search={ef_search}, "
                                 f"ef_construction={ef_construction}: nprobe, ef_* must be >= 1 and M >= 2")
        self._cpu = _faiss_index if _faiss_index is not None else self._build()
        if self._cpu.ntotal != n or self._cpu.d != self.dim:
            raise RetrievalError(f"FAISS index holds {self._cpu.ntotal} x {self._cpu.d} vectors, "
                                 f"the catalogue {n} x {self.dim}")
        self._configure(self._cpu)
        self._index = self._cpu
        self.on_gpu = False
        if use_gpu:
            self._to_gpu()

    # ---------------------------------------------------------------- construction
    @property
    def dim(self) -> int:
        return int(self._raw.shape[1])

    def __len__(self) -> int:
        return int(self.movie_ids.shape[0])

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        # The same normalisation as EmbeddingRecommender.score, so scores agree to the bit
        # wherever the inner products do.
        return np.ascontiguousarray(l2_normalize(x), dtype=np.float32) if self.metric == "cosine" else x

    def _build(self) -> faiss.Index:
        d = self.dim
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "ivf":
            self._quantizer = faiss.IndexFlatIP(d)  # the IVF index only borrows it
            index = faiss.IndexIVFFlat(self._quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(self._vectors)
        else:
            index = faiss.IndexHNSWFlat(d, self.M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
        index.add(self._vectors)
        return index

    def _configure(self, index: faiss.Index) -> None:
        if self.kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = self.nprobe
        elif self.kind == "hnsw":
            index.hnsw.efSearch = self.ef_search

    def _to_gpu(self) -> None:
        if self.kind == "hnsw":
            log.info("FAISS has no GPU HNSW index; searching on CPU")
            return
        if not gpu_available():
            log.info("use_gpu: this FAISS build sees no GPU (faiss-cpu or no device); searching on CPU")
            return
        self._gpu_resources = faiss.StandardGpuResources()
        self._index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        if self.kind == "ivf":
            self._index.nprobe = self.nprobe
        self.on_gpu = True
        log.info("FAISS %s index of %d movies on GPU 0", self.kind, len(self))

    @classmethod
    def from_parquet(cls, path: str | Path, **kwargs: Any) -> ItemIndex:
        """An index over an ``item_embeddings.parquet`` (movie_id int32, embedding list<float32>)."""
        try:
            table = pq.read_table(path, columns=["movie_id", "embedding"])
        except (OSError, KeyError, ValueError) as exc:
            raise RetrievalError(f"{path}: cannot read movie_id and embedding columns ({exc})") from exc
        ids = table.column("movie_id").to_numpy()
        column = table.column("embedding").combine_chunks()
        if len(column) and column.null_count:
            raise RetrievalError(f"{path}: {column.null_count} movie(s) have no embedding")
        try:
            emb = np.stack(column.to_numpy(zero_copy_only=False)) if len(column) else np.zeros((0, 0))
        except ValueError as exc:
            raise RetrievalError(f"{path}: embeddings differ in length ({exc})") from exc
        return cls(ids, emb.astype(np.float32), **kwargs)

    # ---------------------------------------------------------------- lookups
    def positions(self, movie_ids: Iterable[int], what: str = "history") -> np.ndarray:
        """Catalogue indices of ``movie_ids``; :class:`UnknownMovieError` names any unknown id."""
        ids = np.asarray(list(movie_ids) if not isinstance(movie_ids, np.ndarray) else movie_ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self) - 1)
        known = self._sorted_ids[at] == ids
        if not known.all():
            raise UnknownMovieError(ids[~known], what)
        return self._sorted_pos[at]

    def unknown(self, movie_ids: Iterable[int]) -> list[int]:
        """The ids of ``movie_ids`` that are not in the catalogue, in their order."""
        ids = np.fromiter((int(m) for m in movie_ids), dtype=np.int64)
        if ids.size == 0:
            return []
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self) - 1)
        return ids[self._sorted_ids[at] != ids].tolist()

    def _known_positions(self, movie_ids: Iterable[int]) -> np.ndarray:
        ids = np.fromiter((int(m) for m in movie_ids), dtype=np.int64)
        if ids.size == 0:
            return ids
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self) - 1)
        return self._sorted_pos[at[self._sorted_ids[at] == ids]]

    def embeddings(self) -> np.ndarray:
        """The raw (un-normalised) item embeddings, (n_movies, dim) float32, in catalogue order."""
        return self._raw

    def user_vector(self, history: Iterable[int]) -> np.ndarray:
        """(dim,) mean of the history's raw item embeddings; a repeated movie counts once."""
        history = list(history)
        if not history:
            raise RetrievalError("history is empty: a user vector needs at least one known movie id")
        pos = np.unique(self.positions(history))
        return self._raw[pos].mean(axis=0, dtype=np.float32)

    # ---------------------------------------------------------------- search
    def search(self, query_vectors: np.ndarray, k: int,
               exclude: Sequence[Iterable[int] | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` movies per query vector: (movie_ids (B, k'), scores (B, k')), k' = min(k, n_movies).

        Rows are ordered score descending, then catalogue index ascending. ``exclude[b]`` holds
        movie ids never returned for query b (unknown ids are ignored: they cannot be returned
        anyway). When fewer than k' movies remain (exclusions, or an approximate index that finds
        fewer), the trailing slots hold movie id -1 and score -inf.
        """
        if k < 1:
            raise RetrievalError(f"k={k}: must be >= 1")
        q = host_float32(query_vectors)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise RetrievalError(f"query vectors must be (B, {self.dim}), got {q.shape}")
        if not np.isfinite(q).all():
            raise RetrievalError("query vectors contain NaN or infinity")
        n_queries, n = q.shape[0], len(self)
        if exclude is not None and len(exclude) != n_queries:
            raise RetrievalError(f"exclude has {len(exclude)} entries for {n_queries} queries")
        k_out = min(k, n)
        q = self._prepare(q)
        excluded = [self._known_positions(e) if e is not None else np.zeros(0, np.int64)
                    for e in (exclude if exclude is not None else [None] * n_queries)]

        out_pos = np.full((n_queries, k_out), -1, dtype=np.int64)
        out_scores = np.full((n_queries, k_out), -np.inf, dtype=np.float32)
        n_excluded = np.array([len(e) for e in excluded], dtype=np.int64)
        fetch = np.minimum(n, k_out + n_excluded + 8)  # a little slack spares most refetches
        todo = np.arange(n_queries)
        while todo.size:
            size = int(fetch[todo].max())
            scores, pos = self._faiss_search(q[todo], size)  # (T, size), descending
            returned = (pos >= 0).sum(axis=1)
            for row, b in enumerate(todo):
                got = pos[row] >= 0
                if excluded[b].size:
                    got &= ~np.isin(pos[row], excluded[b])
                p, s = pos[row][got], scores[row][got]
                order = np.lexsort((p, -s))[:k_out]  # score desc, then index asc
                out_pos[b, : order.size], out_scores[b, : order.size] = p[order], s[order]
            # A query is done when the boundary is clear: its k-th score is above the last
            # score FAISS returned (nothing unseen can tie with it), or the index had no more
            # to give (everything fetched, or an approximate index found fewer than asked).
            exhausted = (size >= n) | (returned < size)
            last = np.where(returned > 0, scores[np.arange(len(todo)), np.maximum(returned - 1, 0)], -np.inf)
            kth = out_scores[todo, k_out - 1]
            unclear = ~exhausted & ((kth == -np.inf) | (kth <= last))
            fetch[todo] = np.minimum(n, size * 2)
            todo = todo[unclear]
        ids = np.where(out_pos >= 0, self.movie_ids[np.maximum(out_pos, 0)], -1)
        return ids, out_scores

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index if not (self.on_gpu and k > _GPU_MAX_K) else self._cpu
        params = None
        if self.kind == "hnsw" and k > self.ef_search:  # HNSW cannot return more than efSearch
            params = faiss.SearchParametersHNSW(efSearch=k)
        scores, pos = index.search(q, k, params=params) if params is not None else index.search(q, k)
        return scores, pos.astype(np.int64, copy=False)

    def recommend_many(self, histories: Sequence[Iterable[int]], k: int = 10,
                       exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids (B, k'), scores (B, k')) for several histories (see :meth:`search`)."""
        histories = [list(h) for h in histories]
        if not histories:
            return np.zeros((0, min(k, len(self))), np.int64), np.zeros((0, min(k, len(self))), np.float32)
        users = np.stack([self.user_vector(h) for h in histories])  # (B, d)
        return self.search(users, k, exclude=histories if exclude_history else None)

    def recommend(self, history: Iterable[int], k: int = 10,
                  exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids (k',), scores (k',)) for one history; its own movies excluded by default."""
        ids, scores = self.recommend_many([list(history)], k, exclude_history)
        return ids[0], scores[0]

    def similar(self, movie_ids: Sequence[int], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k movies most similar to each query movie (itself excluded): (B, k') ids and scores."""
        movie_ids = [int(m) for m in movie_ids]
        pos = self.positions(movie_ids, what="movie_id")
        return self.search(self._raw[pos], k, exclude=[{m} for m in movie_ids])

    # ---------------------------------------------------------------- persistence
    def params(self) -> dict:
        return {"kind": self.kind, "metric": self.metric, "nlist": self.nlist, "nprobe": self.nprobe, "M": self.M,
                "ef_search": self.ef_search, "ef_construction": self.ef_construction}

    def save(self, directory: str | Path) -> Path:
        """Write the FAISS index (CPU form), ids, raw embeddings and parameters, all-or-nothing."""
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            faiss.write_index(self._cpu, str(tmp / INDEX_FILE))
            np.save(tmp / IDS_FILE, self.movie_ids)
            np.save(tmp / EMBEDDINGS_FILE, self._raw)
            (tmp / META_FILE).write_text(json.dumps(self.params(), indent=2) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, use_gpu: bool = False) -> ItemIndex:
        """The index written by :meth:`save` (IVF is not retrained: the same cells, the same answers)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            ids = np.load(directory / IDS_FILE)
            raw = np.load(directory / EMBEDDINGS_FILE)
            index = faiss.read_index(str(directory / INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as exc:
            raise RetrievalError(f"{directory}: not a saved ItemIndex ({exc})") from exc
        return cls(ids, raw, meta.pop("kind"), meta.pop("metric"), use_gpu=use_gpu, _faiss_index=index, **meta)
