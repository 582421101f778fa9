"""LightGCN (He et al., SIGIR 2020) in plain torch.

The user-item bipartite graph has adjacency ``A = [[0, R], [R^T, 0]]`` over ``N = U + I`` nodes;
it is normalised symmetrically, ``Â = D^-1/2 A D^-1/2`` (isolated nodes keep zero rows instead of
dividing by zero). Layer ``k`` is ``E_k = Â E_{k-1}`` with no weights and no non-linearity, and the
final embedding is the mean of layers ``0..L`` (the paper's ``alpha_k = 1 / (L + 1)``). The only
parameters are the layer-0 embeddings.

Training (one epoch of it per ``train_epoch``; ``armor.training.trainer.Trainer`` validates, keeps
the best epoch and stops early, with ``config.patience`` counted in evaluations every
``eval_every`` epochs): BPR loss on (user, positive, negative) triples, one pass over the training
positives per epoch in shuffled mini-batches, negatives drawn uniformly from the items the user
has not liked in training, L2 on the batch's layer-0 embeddings (scaled as in the authors' code:
``reg * ||E0_batch||^2 / (2 B)``), Adam.

Speed: training runs on ``armor.models.graph_ops`` (a CSR ``Â`` built once and a propagation whose
backward is the same propagation of the gradient, since ``Â`` is symmetric): 3.2-3.6x faster per
epoch than ``propagate`` below under plain autograd, at equal validation NDCG@10.
``normalized_adjacency`` and ``propagate`` stay as the plain reference the fast path is tested and
benchmarked against (``tests/unit/test_graph_ops.py``, ``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from armor.config import LightGCNConfig, from_dict
from armor.device import resolve_device
from armor.errors import ArmorError, ConfigError, DataError
from armor.models import graph_ops
from armor.models.base import TrainableRecommender
from armor.training.schedule import Schedule

if TYPE_CHECKING:
    from armor.training.trainer import Streams

log = logging.getLogger(__name__)

# What shaped LightGCN's search space (armor.models.registry). Epochs are an upper bound chosen by early
# stopping. The authors' lr of 1e-3 needs hundreds of epochs on MovieLens-sized data (on ML-100K,
# validation NDCG@10 was still 0.14 and rising after 40 epochs); 5e-3 and 1e-2 reach 0.19-0.20
# within 30-100 epochs. Regularisation and depth are what is left to choose.

# The authors' initialisation (normal with std 0.1).
INIT_STD = 0.1
# Rounds of rejection sampling before a user who liked (almost) everything is reported.
MAX_NEGATIVE_ROUNDS = 100


def _as_config(config: LightGCNConfig | Mapping[str, Any] | None) -> LightGCNConfig:
    if config is None:
        return LightGCNConfig()
    if isinstance(config, LightGCNConfig):
        return config
    return from_dict(LightGCNConfig, config, where="lightgcn")


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the (U + I) x (U + I) bipartite graph of ``train`` (users x items).

    Users are nodes ``0..U-1`` and items ``U..U+I-1``. Returns a coalesced sparse COO float32 tensor.
    """
    n_users, n_items = train.shape
    r = sp.csr_matrix(train, dtype=np.float32)
    r.data[:] = 1.0  # a repeated or weighted interaction is still one edge
    # Explicit zero blocks keep the shape right even when a side has no edges at all.
    adjacency = sp.bmat([[sp.csr_matrix((n_users, n_users), dtype=np.float32), r],
                         [r.T, sp.csr_matrix((n_items, n_items), dtype=np.float32)]], format="csr")  # (N, N)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()  # (N,)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(degree), 0.0).astype(np.float32)  # (N,)
    normalised = (sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)).tocoo()  # (N, N)
    indices = torch.from_numpy(np.vstack([normalised.row, normalised.col]).astype(np.int64))  # (2, nnz)
    values = torch.from_numpy(normalised.data.astype(np.float32))  # (nnz,)
    # The indices come straight from a scipy COO matrix, so torch's invariant checks add nothing.
    return torch.sparse_coo_tensor(indices, values, normalised.shape,
                                   check_invariants=False).coalesce()


def propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of ``E_0 .. E_L`` with ``E_k = Â E_{k-1}``; ``embeddings`` is (N, d), returns (N, d)."""
    total = embeddings
    current = embeddings
    for _ in range(layers):
        current = torch.sparse.mm(adjacency, current)  # (N, d)
        total = total + current
    return total / (layers + 1)


class NegativeSampler:
    """Draws, per user, one item uniformly from those the user has not liked in ``train``."""

    def __init__(self, train: sp.csr_matrix) -> None:
        train = train if train.has_sorted_indices else train.sorted_indices()
        self.n_items = train.shape[1]
        rows = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
        # Row-major (user, item) keys of sorted CSR rows are ascending: membership is a searchsorted.
        self.keys = rows * self.n_items + train.indices.astype(np.int64)  # (nnz,)

    def liked(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.keys.size == 0:
            return np.zeros(users.size, dtype=bool)
        query = users.astype(np.int64) * self.n_items + items  # (B,)
        pos = np.minimum(np.searchsorted(self.keys, query), self.keys.size - 1)
        return self.keys[pos] == query

    def __call__(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        negatives = rng.integers(0, self.n_items, size=users.size)  # (B,)
        todo = np.flatnonzero(self.liked(users, negatives))
        for _ in range(MAX_NEGATIVE_ROUNDS):
            if todo.size == 0:
                return negatives
            negatives[todo] = rng.integers(0, self.n_items, size=todo.size)
            todo = todo[self.liked(users[todo], negatives[todo])]
        if todo.size:
            raise DataError(f"cannot sample a negative item for users {np.unique(users[todo])[:5].tolist()}: "
                            "they liked (nearly) every item in training")
        return negatives


def _device(name: str) -> torch.device:
    return resolve_device(name, "lightgcn device")


class LightGCN(TrainableRecommender):
    """Graph collaborative filtering by linear propagation of ID embeddings.

    ``device``: "cpu" (default; deterministic for a seed), "cuda[:N]" or "auto". Scores are dot
    products of the final (layer-mean) embeddings.

    ``num_threads``: torch intra-op threads while training (the trainer restores them afterwards);
    None leaves the process setting alone. The graph is small enough that one thread loses little,
    and on a shared 2-core machine two OpenMP threads with one core taken by another process ran a
    training step ~13x slower (0.32 s against 0.025 s on ML-100K) as each op waits at a barrier.
    """

    name = "lightgcn"

    def __init__(self, config: LightGCNConfig | Mapping[str, Any] | None = None, *,
                 eval_every: int = 1, device: str = "cpu", num_threads: int | None = None) -> None:
        self.config = _as_config(config)
        if eval_every < 1:
            raise ConfigError(f"lightgcn eval_every: must be >= 1, got {eval_every}")
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"lightgcn num_threads: must be >= 1 or None, got {num_threads}")
        self.eval_every = int(eval_every)
        self.device = device
        self.num_threads = num_threads
        self.user_final: np.ndarray | None = None  # (U, d)
        self.item_final: np.ndarray | None = None  # (I, d)
        self.user_emb0: np.ndarray | None = None  # (U, d) layer 0, kept for inspection / warm starts
        self.item_emb0: np.ndarray | None = None  # (I, d)
        self._embeddings: torch.nn.Parameter | None = None  # (U + I, d) while training
        self._final_stale = False

    # -- training, driven by armor.training.trainer.Trainer ----------------------------------
    def schedule(self) -> Schedule:
        cfg = self.config
        return Schedule(epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed, eval_every=self.eval_every,
                        num_threads=self.num_threads)

    def begin(self, train: sp.csr_matrix, streams: Streams, *, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ConfigError("lightgcn trains in one worker; pass --workers 1")
        device = _device(self.device)
        self._n_users, n_items = train.shape
        coo = train.tocoo()
        self._pos_users, self._pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)  # (P,), (P,)
        if self._pos_users.size == 0:
            raise DataError("LightGCN: the training matrix has no positives")
        self._adjacency = graph_ops.normalized_adjacency_csr(train, device)  # (N, N) CSR
        embeddings = torch.empty(self._n_users + n_items, self.config.dim)  # (N, d)
        torch.nn.init.normal_(embeddings, std=INIT_STD, generator=streams.torch)
        self._embeddings = torch.nn.Parameter(embeddings.to(device))
        self._optimizer = torch.optim.Adam([self._embeddings], lr=self.config.lr)
        self._sampler = NegativeSampler(train)
        self._final_stale = True

    def steps_per_epoch(self) -> int | None:
        return -(-self._pos_users.size // self.config.batch_size) if self._embeddings is not None else None

    def train_epoch(self, epoch: int, streams: Streams) -> dict[str, float]:
        assert self._embeddings is not None, "begin() first"
        total: torch.Tensor | None = None
        for users, positives, negatives in self._batches(streams.numpy):
            # Summed where the loss lives: one device sync per epoch, not one per step.
            loss = self._step(users, positives, negatives).double() * users.size
            total = loss if total is None else total + loss
            self.steps_done(1)
        assert total is not None
        return {"loss": float(total) / self._pos_users.size}

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One epoch of (users, positives, negatives) int64 numpy batches (B,): the training
        positives shuffled, each with a negative drawn for its user."""
        order = rng.permutation(self._pos_users.size)
        for start in range(0, order.size, self.config.batch_size):
            batch = order[start : start + self.config.batch_size]
            users = self._pos_users[batch]  # (B,)
            yield users, self._pos_items[batch], self._sampler(rng, users)

    def _loss(self, users: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> torch.Tensor:
        """The batch's training loss (with grad), without stepping."""
        cfg = self.config
        assert self._embeddings is not None, "begin() first"
        return graph_ops.bpr_loss(self._adjacency, self._embeddings, users, positives, negatives, self._n_users,
                                  cfg.layers, cfg.reg)

    def _step(self, users: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> torch.Tensor:
        """One optimiser step on a batch; returns its loss (detached, on the embeddings' device)."""
        cfg = self.config
        assert self._embeddings is not None, "begin() first"
        self._final_stale = True
        return graph_ops.bpr_step(self._adjacency, self._embeddings, self._optimizer, users, positives, negatives,
                                  self._n_users, cfg.layers, cfg.reg)

    def state_dict(self) -> dict[str, Any]:
        assert self._embeddings is not None, "begin() first"
        # Adam's state_dict holds its live moment tensors: copy them, or later steps change the state.
        return {"embeddings": self._embeddings.detach().cpu().clone(),
                "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self._embeddings is not None, "begin() first"
        if tuple(state["embeddings"].shape) != tuple(self._embeddings.shape):
            raise DataError(f"lightgcn resume state has embeddings of shape {tuple(state['embeddings'].shape)}, "
                            f"this graph needs {tuple(self._embeddings.shape)}: a different split or config")
        with torch.no_grad():
            self._embeddings.copy_(state["embeddings"].to(self._embeddings.device))
        self._optimizer.load_state_dict(state["optimizer"])
        self._final_stale = True

    def snapshot(self) -> tuple[np.ndarray, ...]:
        self._refresh()
        assert self.user_final is not None and self.item_final is not None
        assert self.user_emb0 is not None and self.item_emb0 is not None
        return (self.user_final.copy(), self.item_final.copy(), self.user_emb0.copy(), self.item_emb0.copy())

    def restore(self, snapshot: tuple[np.ndarray, ...]) -> None:
        self.user_final, self.item_final, self.user_emb0, self.item_emb0 = (a.copy() for a in snapshot)
        self._final_stale = False

    def end(self) -> None:
        self._refresh()
        self._embeddings = None
        self._adjacency = self._optimizer = self._sampler = None

    def _final_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(final (N, d), layer-0 (N, d)) embeddings, on the device they were trained on."""
        assert self._embeddings is not None, "begin() first"
        final = graph_ops.propagate_inference(self._adjacency, self._embeddings, self.config.layers)  # (N, d)
        return final, self._embeddings.detach()

    def _refresh(self) -> None:
        """Final (layer-mean) embeddings of the current layer-0 ones, once per change."""
        if not self._final_stale or self._embeddings is None:
            return
        final_t, layer0_t = self._final_tensors()
        final, layer0 = final_t.cpu().numpy(), layer0_t.cpu().numpy()  # (N, d) each
        n_users = self._n_users
        self.user_final, self.item_final = final[:n_users].copy(), final[n_users:].copy()
        self.user_emb0, self.item_emb0 = layer0[:n_users].copy(), layer0[n_users:].copy()
        self._final_stale = False

    # -- scoring and persistence -------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._refresh()
        if self.user_final is None or self.item_final is None:
            raise ArmorError("LightGCN.score called before fit (or load)")
        n_items = self.item_final.shape[0]
        if history.shape[1] != n_items:
            raise DataError(f"history has {history.shape[1]} items but the model was fit on {n_items}; "
                            "fit expects a users x items matrix")
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < self.user_final.shape[0])
        vectors = np.zeros((users.size, self.user_final.shape[1]), dtype=np.float32)  # (B, d)
        # Users absent at fit time have no embedding; zeros give them all-tied scores.
        vectors[known] = self.user_final[users[known]]
        return vectors @ self.item_final.T  # (B, I)

    def params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "eval_every": self.eval_every,
                "device": self.device, "num_threads": self.num_threads}

    def arrays(self) -> dict[str, np.ndarray]:
        self._refresh()
        if self.user_final is None or self.item_final is None:
            return {}
        out = {"user_final": self.user_final, "item_final": self.item_final}
        if self.user_emb0 is not None and self.item_emb0 is not None:
            out.update(user_emb0=self.user_emb0, item_emb0=self.item_emb0)
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_final = arrays["user_final"].astype(np.float32, copy=False)
        self.item_final = arrays["item_final"].astype(np.float32, copy=False)
        self.user_emb0 = arrays.get("user_emb0")
        self.item_emb0 = arrays.get("item_emb0")
