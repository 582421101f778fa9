"""LightGCN (He et al., SIGIR 2020) in plain torch.

The user-item bipartite graph has adjacency ``A = [[0, R], [R^T, 0]]`` over ``N = U + I`` nodes;
it is normalised symmetrically, ``Â = D^-1/2 A D^-1/2`` (isolated nodes keep zero rows instead of
dividing by zero). Layer ``k`` is ``E_k = Â E_{k-1}`` with no weights and no non-linearity, and the
final embedding is the mean of layers ``0..L`` (the paper's ``alpha_k = 1 / (L + 1)``). The only
parameters are the layer-0 embeddings.

Training: BPR loss on (user, positive, negative) triples, one pass over the training positives
per epoch in shuffled mini-batches, negatives drawn uniformly from the items the user has not
liked in training, L2 on the batch's layer-0 embeddings (scaled as in the authors' code:
``reg * ||E0_batch||^2 / (2 B)``), Adam. With validation data, NDCG@10 is measured every
``eval_every`` epochs and the best embeddings are kept; ``config.patience`` counts evaluations.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from armor.config import EvalConfig, LightGCNConfig, from_dict
from armor.data.splits import SplitData
from armor.errors import ArmorError, ConfigError, DataError
from armor.models.base import Recommender
from armor.models.tuning import SELECT_METRIC, selection_score, validation_data

log = logging.getLogger(__name__)

# A small grid that is sensible on ML-100K / ML-1M. Epochs are an upper bound chosen by early
# stopping. The authors' lr of 1e-3 needs hundreds of epochs on MovieLens-sized data (on ML-100K,
# validation NDCG@10 was still 0.14 and rising after 40 epochs); 5e-3 and 1e-2 reach 0.19-0.20
# within 30-100 epochs. Regularisation and depth are what is left to choose.
DEFAULT_GRID: dict[str, list[Any]] = {
    "dim": [64],
    "layers": [2, 3],
    "lr": [5e-3, 1e-2],
    "reg": [1e-4, 1e-3],
    "epochs": [300],
}

# on_epoch(record, state): the epoch's history record and a function returning the training state.
EpochCallback = Callable[[dict[str, float], Callable[[], dict[str, Any]]], None]

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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"lightgcn device={name!r} but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


class LightGCN(Recommender):
    """Graph collaborative filtering by linear propagation of ID embeddings.

    ``device``: "cpu" (default; deterministic for a seed), "cuda[:N]" or "auto". Scores are dot
    products of the final (layer-mean) embeddings, computed once after training.

    ``num_threads``: torch intra-op threads during ``fit`` (restored afterwards); None leaves the
    process setting alone. The graph is small enough that one thread loses little, and on a
    shared 2-core machine two OpenMP threads with one core taken by another process ran a
    training step ~13x slower (0.32 s against 0.025 s on ML-100K) as each op waits at a barrier.
    """

    kind = "lightgcn"

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
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.fit_seconds: float | None = None

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None,
            data: SplitData | None = None, eval_config: EvalConfig | None = None, *,
            on_epoch: EpochCallback | None = None, resume: dict[str, Any] | None = None) -> LightGCN:
        """Train on the (users x items) ``train``; with ``valid`` or ``data``, stop early on
        validation NDCG@10. ``data.test`` is never read.

        ``on_epoch(record, state)`` is called after every epoch with its history record and a
        function returning the whole training state; passing that state back as ``resume``
        continues the run where it was, to the same result as an uninterrupted one (Ray Train
        checkpoints it every epoch).
        """
        train = sp.csr_matrix(train, dtype=np.float32)
        if data is not None and train.shape != data.train.shape:
            raise DataError(f"train has shape {train.shape} but the split is {data.train.shape} "
                            "(users x items): was it transposed?")
        if data is None and valid is not None:
            data = validation_data(train, valid)
        previous_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            self._fit(train, data, eval_config, on_epoch, resume)
        finally:
            torch.set_num_threads(previous_threads)
        return self

    def _fit(self, train: sp.csr_matrix, data: SplitData | None, eval_config: EvalConfig | None,
             on_epoch: EpochCallback | None, resume: dict[str, Any] | None) -> None:
        cfg = self.config
        started = time.perf_counter()
        device = _device(self.device)
        n_users, n_items = train.shape
        rng = np.random.default_rng(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)

        adjacency = normalized_adjacency(train).to(device)  # (N, N)
        embeddings = torch.empty(n_users + n_items, cfg.dim)  # (N, d)
        torch.nn.init.normal_(embeddings, std=INIT_STD, generator=generator)
        embeddings = torch.nn.Parameter(embeddings.to(device))
        optimizer = torch.optim.Adam([embeddings], lr=cfg.lr)

        coo = train.tocoo()
        pos_users, pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)  # (P,), (P,)
        if pos_users.size == 0:
            raise DataError("LightGCN.fit: the training matrix has no positives")
        sampler = NegativeSampler(train)
        self.history = []
        best: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        best_score, best_epoch, stale, done_epochs, stopped = -np.inf, 0, 0, 0, False
        if resume is not None:
            if tuple(resume["embeddings"].shape) != tuple(embeddings.shape):
                raise DataError(f"lightgcn resume state has embeddings of shape {tuple(resume['embeddings'].shape)}, "
                                f"this graph needs {tuple(embeddings.shape)}: a different split or config")
            with torch.no_grad():
                embeddings.copy_(resume["embeddings"].to(device))
            optimizer.load_state_dict(resume["optimizer"])
            rng.bit_generator.state = resume["rng"]
            self.history = list(resume["history"])
            best = resume["best"]
            best_score, best_epoch, stale = resume["best_score"], resume["best_epoch"], resume["stale"]
            done_epochs, stopped = resume["epoch"], resume["stopped"]

        def state(epoch: int) -> dict[str, Any]:
            # Adam's state_dict holds its live moment tensors: copy them, or later steps change the state.
            return {"embeddings": embeddings.detach().cpu().clone(), "optimizer": copy.deepcopy(optimizer.state_dict()),
                    "rng": rng.bit_generator.state, "history": list(self.history), "best": best,
                    "best_score": best_score, "best_epoch": best_epoch, "stale": stale, "epoch": epoch,
                    "stopped": stopped}

        for epoch in range(done_epochs + 1, cfg.epochs + 1):
            if stopped:
                break
            order = rng.permutation(pos_users.size)
            total_loss = 0.0
            for start in range(0, order.size, cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                users = pos_users[batch]  # (B,)
                positives = pos_items[batch]  # (B,)
                negatives = sampler(rng, users)  # (B,)
                u = torch.from_numpy(users).to(device)
                p = torch.from_numpy(positives + n_users).to(device)
                n = torch.from_numpy(negatives + n_users).to(device)

                final = propagate(adjacency, embeddings, cfg.layers)  # (N, d)
                pos_score = (final[u] * final[p]).sum(-1)  # (B,)
                neg_score = (final[u] * final[n]).sum(-1)  # (B,)
                ranking = F.softplus(neg_score - pos_score).mean()  # -log sigmoid(pos - neg)
                l2 = (embeddings[u].pow(2).sum() + embeddings[p].pow(2).sum()
                      + embeddings[n].pow(2).sum()) / (2 * batch.size)
                loss = ranking + cfg.reg * l2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * batch.size
            record: dict[str, float] = {"epoch": epoch, "loss": total_loss / order.size}

            if data is not None and (epoch % self.eval_every == 0 or epoch == cfg.epochs):
                self._set_final(adjacency, embeddings, n_users)
                score = selection_score(self, data, eval_config)
                record[SELECT_METRIC] = score
                self.history.append(record)
                log.debug("lightgcn epoch %d: loss %.4f valid %s %.4f", epoch, record["loss"], SELECT_METRIC, score)
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best = (self.user_final.copy(), self.item_final.copy(),
                            self.user_emb0.copy(), self.item_emb0.copy())
                else:
                    stale += 1
                    stopped = stale >= cfg.patience
            if on_epoch is not None:
                on_epoch(record, lambda epoch=epoch: state(epoch))

        if data is None:
            self._set_final(adjacency, embeddings, n_users)
            self.best_epoch, self.best_score = cfg.epochs, None
        else:
            assert best is not None
            self.user_final, self.item_final, self.user_emb0, self.item_emb0 = best
            self.best_epoch, self.best_score = best_epoch, float(best_score)
        self.fit_seconds = time.perf_counter() - started

    def _set_final(self, adjacency: torch.Tensor, embeddings: torch.Tensor, n_users: int) -> None:
        with torch.no_grad():
            final = propagate(adjacency, embeddings, self.config.layers).cpu().numpy()  # (N, d)
            layer0 = embeddings.detach().cpu().numpy()  # (N, d)
        self.user_final, self.item_final = final[:n_users].copy(), final[n_users:].copy()
        self.user_emb0, self.item_emb0 = layer0[:n_users].copy(), layer0[n_users:].copy()

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
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
        if self.user_final is None or self.item_final is None:
            return {}
        out = {"user_final": self.user_final, "item_final": self.item_final}
        if self.user_emb0 is not None and self.item_emb0 is not None:
            out.update(user_emb0=self.user_emb0, item_emb0=self.item_emb0)
        if self.best_epoch is not None:
            out["best_epoch"] = np.array(self.best_epoch)
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_final = arrays["user_final"].astype(np.float32, copy=False)
        self.item_final = arrays["item_final"].astype(np.float32, copy=False)
        self.user_emb0 = arrays.get("user_emb0")
        self.item_emb0 = arrays.get("item_emb0")
        if "best_epoch" in arrays:
            self.best_epoch = int(arrays["best_epoch"])
