"""Pairs of co-liked items, which in-batch items may serve as negatives, and how to mine them.

"Related" means liked by the same user in the *training* matrix. A pair (anchor, positive, user)
is two distinct training positives of one user. A negative for that pair is any item of the
(global) batch that the pair's user did not like in training and that is not the anchor itself:
an item the user also liked is not unrelated, so it is never pushed away.

Distributed runs: every rank gathers the whole batch (``gather_with_grad`` keeps the gradient of
its own slice) and computes the same global loss, so a rank mines negatives from all ranks'
items, and the gradient of each rank's embeddings is exactly that of one process holding the
concatenated batch. Without an initialised process group the gathers are the identity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch import Tensor

from armor.errors import ConfigError, DataError

Strategy = Literal["random", "semi-hard", "batch-hard"]
Fallback = Literal["none", "easiest", "hardest"]


# --------------------------------------------------------------------------------------------
# torch.distributed helpers (identity in a single process)
# --------------------------------------------------------------------------------------------


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if distributed() else 1


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def _gather_padded(x: Tensor) -> tuple[list[Tensor], list[int]]:
    # all_gather needs equal shapes; ranks may hold batches of different lengths (the last step).
    # On x's device: NCCL gathers only CUDA tensors, gloo CPU ones (or CUDA where built with it).
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    lengths = _host_ints(torch.cat(sizes))
    longest = max(lengths)
    padded = x.detach()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded.contiguous())
    return [p[:n] for p, n in zip(parts, lengths)], lengths


def _host_ints(x: Tensor) -> list[int]:
    """The values of an int tensor as Python ints: one device-to-host copy (a sync on CUDA)."""
    return [int(v) for v in x.tolist()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (n_r, ...) from every rank in rank order; gradients flow to the local slice.

    The other ranks' slices are constants here: their gradients are computed on their own ranks,
    which run the same global loss.
    """
    if not distributed():
        return x
    parts, _ = _gather_padded(x)
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank in rank order, without gradients (ids, users)."""
    if not distributed():
        return x
    parts, _ = _gather_padded(x)
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# Pair sampling
# --------------------------------------------------------------------------------------------


class PairSampler:
    """Draws (anchor, positive, user) triples of co-liked training items.

    A step draws users with probability proportional to their number of training positives
    (users with fewer than two are never drawn), then two distinct positives of each user,
    uniformly; so every training positive is about equally likely to appear.

    Streams: each step draws one *global* batch of ``batch_size * world_size`` pairs from the
    epoch's generator (the same on every rank) and rank r keeps slice r, so ranks never share a
    position of the stream, and the union over ranks is exactly what a single process with
    ``batch_size * world_size`` would draw: results do not depend on how many workers ran.
    """

    def __init__(self, train: sp.csr_matrix, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ConfigError(f"train.batch_size: must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}")
        train = sp.csr_matrix(train)
        train.sort_indices()
        counts = np.diff(train.indptr)
        self.users = np.flatnonzero(counts >= 2).astype(np.int64)
        if self.users.size == 0:
            raise DataError("no user has two or more training positives, so no co-liked pair exists; "
                            "check the split (split.min_user_positives) and the positive threshold")
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self._indptr = train.indptr.astype(np.int64)
        self._indices = train.indices.astype(np.int64)
        self._counts = counts[self.users].astype(np.int64)
        self._cdf = np.cumsum(self._counts).astype(np.float64)
        self.n_positives = int(self._counts.sum())

    def steps_per_epoch(self) -> int:
        """Steps for about one pass over the eligible users' training positives.

        A pair holds two positives, so a global step touches ``2 * batch_size * world_size`` of them.
        """
        return max(1, math.ceil(self.n_positives / (2 * self.batch_size * self.world_size)))

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pick = np.searchsorted(self._cdf, rng.random(n) * self._cdf[-1], side="right")  # (n,)
        pick = np.minimum(pick, self.users.size - 1)
        users = self.users[pick]
        count = self._counts[pick]
        first = np.floor(rng.random(n) * count).astype(np.int64)
        second = np.floor(rng.random(n) * (count - 1)).astype(np.int64)
        second += second >= first  # distinct from first, uniform over the rest
        start = self._indptr[users]
        return self._indices[start + first], self._indices[start + second], users

    def batches(self, rng: np.random.Generator, steps: int | None = None) -> Iterator[dict[str, Tensor]]:
        """Yield ``steps`` (default ``steps_per_epoch()``) batches of int64 CPU tensors: "anchor",
        "positive", "user" (n,) and the batch's distinct items, "items" (K,) sorted, with "inverse"
        (2n,) such that ``items[inverse]`` is ``cat([anchor, positive])``.

        ``rng`` must be seeded the same on every rank (the trainer's ``Streams.epoch_rng``).
        """
        steps = self.steps_per_epoch() if steps is None else int(steps)
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for _ in range(steps):
            anchor, positive, user = self._draw(rng, self.batch_size * self.world_size)
            anchor, positive, user = anchor[lo:hi].copy(), positive[lo:hi].copy(), user[lo:hi].copy()
            # Items repeat within a batch (popular movies): each distinct one is encoded once.
            # Found here, in numpy, so the step needs no data-dependent torch.unique (a device
            # sync on CUDA).
            items, inverse = np.unique(np.concatenate([anchor, positive]), return_inverse=True)
            yield {"anchor": torch.from_numpy(anchor), "positive": torch.from_numpy(positive),
                   "user": torch.from_numpy(user), "items": torch.from_numpy(items.astype(np.int64)),
                   "inverse": torch.from_numpy(inverse.astype(np.int64).reshape(-1))}


# --------------------------------------------------------------------------------------------
# Which candidates may be negatives
# --------------------------------------------------------------------------------------------


class LikedItems:
    """Membership test "did user u like item i in training?" for whole (users x items) grids.

    Up to ``dense_limit`` cells the training matrix is held as a dense bool table and a grid is
    one gather. Beyond it (large catalogues) pairs are encoded as sorted int64 keys
    ``user * n_items + item`` and looked up with one vectorised searchsorted; no Python loop
    either way. A grid (``users`` (N, 1) x ``items`` (1, C)) is answered from the users' CSR rows
    instead when they are short next to the grid: O(their liked items + N C) rather than N C
    binary searches over every training positive, whose cache misses made a fused-model step
    1.5x slower at the ML-32M shape than at ML-10M (benchmarks/bench_scale.py).
    """

    def __init__(self, train: sp.csr_matrix, dense_limit: int = 1 << 26):
        train = sp.csr_matrix(train)
        train.sort_indices()
        self.n_users, self.n_items = train.shape
        self.table: Tensor | None = None
        self.keys: Tensor | None = None
        if self.n_users * self.n_items <= dense_limit:
            self.table = torch.from_numpy(train.toarray().reshape(-1) != 0)  # (U * I,)
        else:
            rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(train.indptr))
            keys = rows * self.n_items + train.indices.astype(np.int64)  # sorted: row-major, sorted columns
            self.keys = torch.from_numpy(keys)
            self.indptr = torch.from_numpy(train.indptr.astype(np.int64))  # (U + 1,)
            self.indices = torch.from_numpy(train.indices.astype(np.int64))  # (nnz,) the keys' items

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Bool tensor of the broadcast shape of ``users`` and ``items``."""
        query = users.to(torch.int64) * self.n_items + items.to(torch.int64)
        if self.table is not None:
            self.table = self.table.to(query.device)  # moved once, not per batch
            return self.table[query]
        assert self.keys is not None
        keys = self.keys = self.keys.to(query.device)
        if keys.numel() == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        if users.dim() == 2 and items.dim() == 2 and users.shape[1] == 1 and items.shape[0] == 1:
            grid = self._grid(users[:, 0].to(torch.int64), items[0].to(torch.int64))
            if grid is not None:
                return grid
        pos = torch.searchsorted(keys, query.contiguous()).clamp_(max=keys.numel() - 1)
        return keys[pos] == query

    def _grid(self, users: Tensor, items: Tensor) -> Tensor | None:
        """(N, C) membership of ``items`` (C,) in the rows of ``users`` (N,); None when their rows
        hold more than 4 N C positives (the binary searches are then cheaper)."""
        device = users.device
        self.indptr, self.indices = self.indptr.to(device), self.indices.to(device)  # moved once
        starts = self.indptr[users]  # (N,)
        lengths = self.indptr[users + 1] - starts  # (N,)
        total = int(lengths.sum())
        if total > 4 * users.numel() * items.numel():
            return None
        distinct, inverse = torch.unique(items, return_inverse=True)  # (D,), (C,)
        column = torch.full((self.n_items,), -1, dtype=torch.int64, device=device)  # item -> distinct column
        column[distinct] = torch.arange(distinct.numel(), device=device)
        row = torch.repeat_interleave(torch.arange(users.numel(), device=device), lengths)  # (L,)
        offset = torch.arange(total, device=device) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths,
                                                                              lengths)  # (L,)
        col = column[self.indices[starts[row] + offset]]  # (L,) distinct column of each liked item, or -1
        hit = col >= 0
        marked = torch.zeros(users.numel(), distinct.numel(), dtype=torch.bool, device=device)  # (N, D)
        marked[row[hit], col[hit]] = True
        return marked[:, inverse]  # (N, C)

    def negative_mask(self, users: Tensor, anchors: Tensor, candidates: Tensor) -> Tensor:
        """(N, C) True where candidate c may be a negative for the pair (users[n], anchors[n])."""
        liked = self.contains(users[:, None], candidates[None, :])  # (N, C)
        return ~liked & (candidates[None, :] != anchors[:, None])


# --------------------------------------------------------------------------------------------
# Mining
# --------------------------------------------------------------------------------------------


def mine_negatives(sim: Tensor, positive_sim: Tensor, valid: Tensor, strategy: Strategy, margin: float,
                   generator: torch.Generator | None = None,
                   fallback: Fallback = "easiest") -> tuple[Tensor, Tensor]:
    """Pick one negative column per anchor row.

    sim (N, C): cosine of anchor n with candidate c; positive_sim (N,); valid (N, C) bool.
    Returns (index (N,) int64, found (N,) bool); rows with no negative have found=False and an
    arbitrary index.

    "random": uniform over valid candidates. "batch-hard" (Hermans et al. 2017): the most similar
    valid candidate (``pair_loss`` pairs it with the least similar positive). "semi-hard" (Schroff
    et al. 2015, FaceNet): the most similar valid candidate inside the margin band
    ``positive_sim - margin < sim < positive_sim``, i.e. farther than the positive but within the
    margin. A row whose band is empty has no semi-hard negative: ``fallback`` "easiest" (the
    default) takes its least similar valid candidate, as TensorFlow Addons' TripletSemiHardLoss
    (the reference implementation of FaceNet's loss) does; "none" leaves the row out; "hardest"
    takes its most similar one (the old behaviour here, which the definition avoids: such
    negatives are harder than the positive). On the planted world of the content-model tests the
    full fusion reached validation NDCG@10 0.161 with "easiest", 0.162 with "hardest" and 0.142
    with "none" (left-out anchors starve the early epochs: it stopped at epoch 5).
    """
    sim = sim.detach()
    positive_sim = positive_sim.detach()
    neg_inf = torch.full((), float("-inf"), dtype=sim.dtype, device=sim.device)
    found = valid.any(dim=1)  # (N,)
    hardest = torch.where(valid, sim, neg_inf).argmax(dim=1)  # (N,)
    if strategy == "batch-hard":
        index = hardest
    elif strategy == "semi-hard":
        p = positive_sim[:, None]  # (N, 1)
        band = valid & (sim < p) & (sim > p - margin)  # (N, C)
        semi = torch.where(band, sim, neg_inf).argmax(dim=1)  # (N,)
        in_band = band.any(dim=1)  # (N,)
        if fallback == "none":
            index, found = semi, in_band
        elif fallback == "easiest":
            easiest = torch.where(valid, -sim, neg_inf).argmax(dim=1)  # (N,)
            index = torch.where(in_band, semi, easiest)
        elif fallback == "hardest":
            index = torch.where(in_band, semi, hardest)
        else:
            raise ConfigError(f"train.semi_hard_fallback: must be none, easiest or hardest, got {fallback!r}")
    elif strategy == "random":
        # Drawn from the run's CPU stream (``Streams.torch``: saved with the run, the same on every
        # rank and device), then moved to sim's device explicitly.
        noise = torch.rand(sim.shape, generator=generator, device="cpu").to(sim.device)  # (N, C)
        index = torch.where(valid, noise, torch.full_like(noise, -1.0)).argmax(dim=1)
    else:
        raise ConfigError(f"train.mining: must be random, semi-hard or batch-hard, got {strategy!r}")
    return index, found
