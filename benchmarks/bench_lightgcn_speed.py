"""LightGCN training speed: today's COO propagation vs armor.models.graph_ops' CSR fast path.

Data: the real ML-100K (the copy inside the recbole wheel), prepared and split exactly as the
project does (``movielens.prepare``, random 80/10/10 with seed 0, ``build_split_data`` over all
movies): 938 users x 1,682 movies, 44,191 training positives.

Both paths train LightGCN with the same settings (dim 64, 3 layers, batch 2048, reg 1e-4, Adam,
``--epochs`` epochs, lr 1e-3 and 5e-3) and the same math: the same normalised adjacency, layer
mean, BPR loss with one uniform negative, L2 on the batch's layer-0 rows scaled by 1 / (2B),
and the same initialisation and RNG draws (permutation and negatives) as ``LightGCN._fit``.

- reference: ``LightGCN._fit``'s step verbatim: ``lightgcn.propagate`` over the coalesced COO
  ``lightgcn.normalized_adjacency``, ``tensor[index]`` gathers, autograd throughout.
- fast: ``graph_ops.bpr_step``: CSR ``Â`` built once, the self-adjoint propagation (its backward
  is the forward applied to the gradient), one ``index_select`` gather, L2 by node multiplicity.

Epochs are interleaved (reference, fast, then fast, reference, ...) in one process so that both
see the same machine load; the ratio of the median seconds per epoch (training steps and their
negative sampling; no evaluation) is the speed-up. The ratio of the median process CPU time
per epoch is printed too: on a machine shared with other jobs it moves less than wall time. Validation NDCG@10 after the fixed number of
epochs is printed for both; ``--seeds`` gives the seed-to-seed spread to judge it against.

``--ablation`` times each idea on its own instead (``--epochs`` epochs each, interleaved, lr 1e-3;
``--two-threads-variant`` adds bpr_step under 2 torch threads). ``--threads``: torch intra-op
threads for everything else (default 1, as armor trains LightGCN).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from armor.config import EvalConfig, LightGCNConfig, SplitConfig
from armor.data import movielens
from armor.data.splits import SplitData, build_split_data, split_interactions
from armor.models import graph_ops, lightgcn
from armor.models.tuning import SELECT_METRIC, selection_score

Step = Callable[[torch.nn.Parameter, torch.optim.Optimizer, np.ndarray, np.ndarray, np.ndarray], float]


def ml100k_split() -> SplitData:
    with tempfile.TemporaryDirectory() as tmp:
        movielens.prepare(movielens.embedded_ml100k_dir(), tmp)
        interactions = pq.read_table(Path(tmp) / "interactions.parquet")
        movies = pq.read_table(Path(tmp) / "movies.parquet")
    tables = split_interactions(interactions, SplitConfig(method="random", seed=0))
    return build_split_data(tables, movies["movie_id"].to_numpy())


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def reference_step(adjacency: torch.Tensor, n_users: int, layers: int, reg: float,
                   propagate=lightgcn.propagate) -> Step:
    """LightGCN._fit's step, line for line (``propagate`` swappable for the ablation)."""

    def step(embeddings, optimizer, users, positives, negatives):
        u = torch.from_numpy(users)
        p = torch.from_numpy(positives + n_users)
        n = torch.from_numpy(negatives + n_users)
        final = propagate(adjacency, embeddings, layers)  # (N, d)
        pos_score = (final[u] * final[p]).sum(-1)  # (B,)
        neg_score = (final[u] * final[n]).sum(-1)  # (B,)
        ranking = F.softplus(neg_score - pos_score).mean()
        l2 = (embeddings[u].pow(2).sum() + embeddings[p].pow(2).sum()
              + embeddings[n].pow(2).sum()) / (2 * users.size)
        loss = ranking + reg * l2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def fast_step(adjacency: torch.Tensor, n_users: int, layers: int, reg: float) -> Step:
    def step(embeddings, optimizer, users, positives, negatives):
        return graph_ops.bpr_step(adjacency, embeddings, optimizer, users, positives, negatives,
                                  n_users, layers, reg)

    return step


def gather_step(adjacency: torch.Tensor, n_users: int, layers: int, reg: float) -> Step:
    """Self-adjoint CSR propagation and one index_select gather, L2 still by gathering rows."""

    def step(embeddings, optimizer, users, positives, negatives):
        b = users.size
        index = torch.from_numpy(np.concatenate([users, positives + n_users, negatives + n_users]))
        final = graph_ops.propagate(adjacency, embeddings, layers)
        u, p, n = final.index_select(0, index).view(3, b, -1)
        ranking = F.softplus((u * n).sum(-1) - (u * p).sum(-1)).mean()
        l2 = embeddings.index_select(0, index).pow(2).sum() / (2 * b)
        loss = ranking + reg * l2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def rows_step(adjacency: torch.Tensor, slicer: graph_ops.RowSlicer, n_users: int, layers: int,
              reg: float) -> Step:
    """As bpr_step, but the last layer only for the batch's rows (graph_ops.propagate_rows)."""

    def step(embeddings, optimizer, users, positives, negatives):
        b = users.size
        index_np = np.concatenate([users, positives + n_users, negatives + n_users])
        rows, inverse = np.unique(index_np, return_inverse=True)
        final_rows = graph_ops.propagate_rows(adjacency, slicer(rows), embeddings, torch.from_numpy(rows),
                                              layers)  # (R, d)
        u, p, n = final_rows.index_select(0, torch.from_numpy(inverse)).view(3, b, -1)
        ranking = F.softplus((u * n).sum(-1) - (u * p).sum(-1)).mean()
        counts = torch.from_numpy(np.bincount(index_np, minlength=embeddings.shape[0]).astype(np.float32))
        l2 = (embeddings.pow(2).sum(1) * counts).sum() / (2 * b)
        loss = ranking + reg * l2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# --------------------------------------------------------------------------------------------
# Training state, as LightGCN._fit keeps it
# --------------------------------------------------------------------------------------------


class Run:
    """Embeddings, Adam and the RNG of one training run; ``epoch()`` is one pass, timed."""

    def __init__(self, train: sp.csr_matrix, config: LightGCNConfig, step: Step, adam: dict | None = None):
        n_users, n_items = train.shape
        self.config, self.step, self.n_users = config, step, n_users
        self.rng = np.random.default_rng(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        embeddings = torch.empty(n_users + n_items, config.dim)
        torch.nn.init.normal_(embeddings, std=lightgcn.INIT_STD, generator=generator)
        self.embeddings = torch.nn.Parameter(embeddings)
        self.optimizer = torch.optim.Adam([self.embeddings], lr=config.lr, **(adam or {}))
        coo = train.tocoo()
        self.pos_users, self.pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)
        self.sampler = lightgcn.NegativeSampler(train)
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.losses: list[float] = []

    def epoch(self) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        order = self.rng.permutation(self.pos_users.size)
        total = 0.0
        for start in range(0, order.size, self.config.batch_size):
            batch = order[start:start + self.config.batch_size]
            users = self.pos_users[batch]
            negatives = self.sampler(self.rng, users)
            total += self.step(self.embeddings, self.optimizer, users, self.pos_items[batch], negatives) * batch.size
        self.seconds.append(time.perf_counter() - started)
        self.cpu_seconds.append(time.process_time() - cpu_started)
        self.losses.append(total / order.size)

    def ndcg(self, adjacency: torch.Tensor, data: SplitData) -> float:
        final = graph_ops.propagate_inference(adjacency, self.embeddings, self.config.layers).numpy()
        model = lightgcn.LightGCN(self.config)
        model.load_arrays({"user_final": final[:self.n_users], "item_final": final[self.n_users:]})
        return selection_score(model, data, EvalConfig(bootstrap_samples=0))


def interleave(runs: dict[str, Run], epochs: int) -> None:
    names = list(runs)
    for epoch in range(epochs):
        for name in (names if epoch % 2 == 0 else names[::-1]):
            runs[name].epoch()


def median(xs: list[float]) -> float:
    return float(np.median(xs))


# --------------------------------------------------------------------------------------------


def compare(data: SplitData, epochs: int, lrs: list[float], seeds: list[int]) -> None:
    train = data.train
    n_users = train.shape[0]
    t0 = time.perf_counter()
    coo = lightgcn.normalized_adjacency(train)
    t1 = time.perf_counter()
    csr = graph_ops.normalized_adjacency_csr(train)
    t2 = time.perf_counter()
    print(f"adjacency build (once per fit): COO {t1 - t0:.3f}s, CSR {t2 - t1:.3f}s; "
          f"N = {csr.shape[0]}, nnz = {csr.values().numel()}")
    print(f"\n{'lr':>6} {'seed':>4} {'ref s/ep':>9} {'fast s/ep':>9} {'speed-up':>8} {'CPU-time':>8} "
          f"{'ref ' + SELECT_METRIC:>12} {'fast ' + SELECT_METRIC:>13} {'ref loss':>9} {'fast loss':>9}")
    for lr in lrs:
        for seed in seeds:
            config = LightGCNConfig(dim=64, layers=3, lr=lr, reg=1e-4, batch_size=2048, epochs=epochs, seed=seed)
            runs = {"reference": Run(train, config, reference_step(coo, n_users, config.layers, config.reg)),
                    "fast": Run(train, config, fast_step(csr, n_users, config.layers, config.reg))}
            interleave(runs, epochs)
            ref, fast = runs["reference"], runs["fast"]
            ratio = median(ref.seconds) / median(fast.seconds)
            cpu_ratio = median(ref.cpu_seconds) / median(fast.cpu_seconds)
            print(f"{lr:>6g} {seed:>4} {median(ref.seconds):>9.3f} {median(fast.seconds):>9.3f} {ratio:>7.2f}x "
                  f"{cpu_ratio:>7.2f}x "
                  f"{ref.ndcg(csr, data):>12.4f} {fast.ndcg(csr, data):>13.4f} "
                  f"{ref.losses[-1]:>9.4f} {fast.losses[-1]:>9.4f}", flush=True)


def with_threads(step: Step, threads: int) -> Step:
    def wrapped(*args):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return step(*args)
        finally:
            torch.set_num_threads(before)

    return wrapped


def ablation(data: SplitData, epochs: int, two_threads: bool) -> None:
    train = data.train
    n_users = train.shape[0]
    coo = lightgcn.normalized_adjacency(train)
    csr = graph_ops.normalized_adjacency_csr(train)
    slicer = graph_ops.RowSlicer(graph_ops.normalized_adjacency_scipy(train))
    config = LightGCNConfig(dim=64, layers=3, lr=1e-3, reg=1e-4, batch_size=2048, epochs=epochs, seed=0)
    L, reg = config.layers, config.reg
    variants: dict[str, tuple[Step, dict]] = {
        "reference (COO, autograd)": (reference_step(coo, n_users, L, reg), {}),
        "CSR, autograd backward": (reference_step(csr, n_users, L, reg), {}),
        "CSR, self-adjoint Function": (reference_step(csr, n_users, L, reg, graph_ops.propagate), {}),
        " + one index_select gather": (gather_step(csr, n_users, L, reg), {}),
        " + L2 by multiplicity (bpr_step)": (fast_step(csr, n_users, L, reg), {}),
        " + fused Adam": (fast_step(csr, n_users, L, reg), {"fused": True}),
        " + last layer for batch rows only": (rows_step(csr, slicer, n_users, L, reg), {}),
    }
    if two_threads:
        variants["bpr_step with 2 torch threads"] = (with_threads(fast_step(csr, n_users, L, reg), 2), {})
    runs = {name: Run(train, config, step, adam) for name, (step, adam) in variants.items()}
    interleave(runs, epochs)
    base = median(runs["reference (COO, autograd)"].seconds)
    cpu_base = median(runs["reference (COO, autograd)"].cpu_seconds)
    print(f"\n{'variant (lr 1e-3, ' + str(epochs) + ' epochs interleaved)':<40} {'s/epoch':>8} {'vs ref':>7} "
          f"{'CPU s/ep':>8} {'vs ref':>7}")
    for name, run in runs.items():
        print(f"{name:<40} {median(run.seconds):>8.3f} {base / median(run.seconds):>6.2f}x "
              f"{median(run.cpu_seconds):>8.3f} {cpu_base / median(run.cpu_seconds):>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 5e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ablation", action="store_true", help="time each idea separately instead")
    parser.add_argument("--two-threads-variant", action="store_true",
                        help="with --ablation: also bpr_step under 2 torch threads (slow on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = ml100k_split()
    print(f"ML-100K random split: {data.train.shape[0]} users x {data.train.shape[1]} movies, "
          f"{data.train.nnz} training positives; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.ablation:
        ablation(data, args.epochs, args.two_threads_variant)
    else:
        compare(data, args.epochs, args.lrs, args.seeds)


if __name__ == "__main__":
    main()
