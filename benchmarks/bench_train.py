"""Training speed: LightGCN against the propagation it replaced, and the fused model's pairs/s with
1 vs 2 threads and 1 vs 2 Ray Train workers. Every figure is a ratio against a baseline run in
the same process.

LightGCN (ML-100K, the embedded copy, random 80/10/10 over every movie; dim 64, 3 layers, batch
2048, one uniform negative, Adam, reg 1e-4, 1 torch thread): the library's LightGCN (CSR
adjacency, self-adjoint propagation, ``armor.models.graph_ops``) and ``ReferenceLightGCN`` (the
COO adjacency and plain-autograd step it trained with before) train side by side, epochs
interleaved so load slows both alike; the benchmark prints each one's median seconds per epoch,
the speed-up, and both validation NDCG@10 after the same number of epochs (equal quality).

Fused model (FusionConfig and TrainConfig defaults, except epochs and steps per epoch so a run
takes ~20-40 s), on the ML-1M-shaped synthetic workspace (6,040 users x 3,706 movies, features at
the real encoders' widths: text 384, poster / thumbnail 1280): anchor-positive pairs per second
from the trainer's per-epoch history, first epoch left out as warm-up. Runs: in this process
with 1 and with 2 torch threads, then ``workers=1`` and ``workers=2`` in one Ray session, which
is shut down at the end (Ray gives each 1-CPU worker one OpenMP thread).

``--quick``: every section and figure, smaller: LightGCN 2 epochs at one learning rate (still
ML-100K), the fused runs on the "small" preset (600 users x 800 movies), 2 epochs x 2 steps; the
Ray runs and the leftover-process check included. Its figures check the code paths, not the
targets; tests/integration/test_bench_quick.py runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from armor.config import FusionConfig, LightGCNConfig, SplitConfig, TrainConfig
from armor.data.splits import make_split, write_split
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.features.store import FeatureStore
from armor.models import lightgcn

FEATURE_DIMS = {"text": 384, "poster": 1280, "thumbnail": 1280}
WARMUP_STEPS = 2


# --------------------------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------------------------


def build_workspace(root: Path, preset: str, seed: int = 0) -> tuple[Path, dict[str, float]]:
    """Ratings, a random split and a complete feature store; returns (root, facts)."""
    world = SyntheticWorld(SyntheticConfig.preset(preset, seed=seed))
    root.mkdir(parents=True, exist_ok=True)
    interactions = world.interactions()
    pq.write_table(interactions, root / "interactions.parquet")
    pq.write_table(world.movies(), root / "movies.parquet")
    write_split(make_split(interactions, SplitConfig(method="random", seed=seed)), root / "splits" / "random")

    n = world.config.n_movies
    rng = np.random.default_rng(seed)

    def project(x: np.ndarray, d: int, noise: float) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return (x @ rng.standard_normal((x.shape[1], d)).astype(np.float32)
                + noise * rng.standard_normal((n, d)).astype(np.float32))

    primary = np.eye(len(world.genre_names), dtype=np.float32)[world.movie_primary_genre]
    features = {"text": project(world.movie_factors, FEATURE_DIMS["text"], 0.3),
                "poster": np.maximum(project(world.movie_genre_matrix, FEATURE_DIMS["poster"], 0.1), 0),
                "thumbnail": np.maximum(project(primary, FEATURE_DIMS["thumbnail"], 0.1), 0)}
    store = FeatureStore(root / "features", FEATURE_DIMS,
                         {m: {"model": "planted-truth-projection", "dim": d} for m, d in FEATURE_DIMS.items()})
    store.claim(overwrite=True)
    now = pa.array(np.full(n, 1_000, np.int64)).cast(pa.timestamp("ms", tz="UTC"))
    columns = {"movie_id": pa.array(np.arange(1, n + 1), pa.int32()), "status": ["ok"] * n,
               "error": [None] * n, "source_scraped_at": now, "encoded_at": now}
    for modality, column in (("text", "text_emb"), ("poster", "poster_emb"), ("thumbnail", "thumb_emb")):
        values = features[modality]
        columns[column] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        columns[f"{modality}_status"] = ["ok"] * n
    store.write_part(pa.table({f.name: columns[f.name] for f in store.schema}, schema=store.schema))
    return root, {"users": world.config.n_users, "movies": n, "ratings": interactions.num_rows}


# --------------------------------------------------------------------------------------------
# LightGCN: today's fast path against the plain-autograd propagation it replaced, in one run
# --------------------------------------------------------------------------------------------


class ReferenceLightGCN(lightgcn.LightGCN):
    """LightGCN as it trained before armor.models.graph_ops: a COO adjacency and a step under plain
    autograd (the backward transposes the sparse matrix every step). Same math, same streams."""

    def begin(self, train, streams, *, rank=0, world_size=1):
        super().begin(train, streams, rank=rank, world_size=world_size)
        self._adjacency = lightgcn.normalized_adjacency(train)  # (N, N) COO

    def train_epoch(self, epoch, streams):
        cfg, embeddings, rng = self.config, self._embeddings, streams.numpy
        order = rng.permutation(self._pos_users.size)
        total = 0.0
        for start in range(0, order.size, cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            users = self._pos_users[batch]
            negatives = self._sampler(rng, users)
            u, p, n = (torch.from_numpy(x) for x in (users, self._pos_items[batch] + self._n_users,
                                                       negatives + self._n_users))
            final = lightgcn.propagate(self._adjacency, embeddings, cfg.layers)  # (N, d)
            ranking = F.softplus((final[u] * final[n]).sum(-1) - (final[u] * final[p]).sum(-1)).mean()
            l2 = (embeddings[u].pow(2).sum() + embeddings[p].pow(2).sum()
                  + embeddings[n].pow(2).sum()) / (2 * batch.size)
            loss = ranking + cfg.reg * l2
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            total += float(loss.detach()) * batch.size
        self._final_stale = True
        return {"loss": total / order.size}


def lightgcn_speedup(data, epochs: int, lr: float, seed: int) -> dict[str, float]:
    """Reference and fast LightGCN trained side by side, epochs interleaved (A, B, B, A, ...) so a
    busy machine slows both alike: median s/epoch of each, and validation NDCG@10 after ``epochs``."""
    from armor.training.selection import selection_score
    from armor.training.trainer import Trainer

    config = LightGCNConfig(dim=64, layers=3, lr=lr, reg=1e-4, batch_size=2048, epochs=epochs, seed=seed)
    trainers = {"reference": Trainer(ReferenceLightGCN(config, num_threads=1), data.train, progress=False),
                "fast": Trainer(lightgcn.LightGCN(config, num_threads=1), data.train, progress=False)}
    seconds = {name: [] for name in trainers}
    for epoch in range(epochs):
        for name in (list(trainers) if epoch % 2 == 0 else list(trainers)[::-1]):
            seconds[name].append(trainers[name].run_epoch()["seconds"])
    ndcg = {name: selection_score(t.finish(), data) for name, t in trainers.items()}
    ref, fast = float(np.median(seconds["reference"])), float(np.median(seconds["fast"]))
    return {"lr": lr, "seed": seed, "reference_s": ref, "fast_s": fast, "speedup": ref / fast,
            "reference_ndcg": ndcg["reference"], "fast_ndcg": ndcg["fast"]}


def armor_graph_ratio(data, epochs: int) -> dict[str, float]:
    """ARMoR-Graph against LightGCN on the same split, epochs interleaved: median s/epoch of each and
    the ratio. Its content side reads features at the real encoders' widths (384, 1280, 1280); their
    values do not change the cost, so they are random here."""
    from armor.config import ArmorGraphConfig
    from armor.models.graph_hybrid import GraphHybrid
    from armor.training.trainer import Trainer

    rng = np.random.default_rng(0)
    features = {m: rng.standard_normal((data.n_items, d)).astype(np.float32) for m, d in FEATURE_DIMS.items()}
    trainers = {"lightgcn": Trainer(lightgcn.LightGCN(LightGCNConfig(dim=64, layers=3, epochs=epochs),
                                                      num_threads=1), data.train, progress=False),
                "armor-graph": Trainer(GraphHybrid(ArmorGraphConfig(dim=64, layers=3, epochs=epochs), features),
                                       data.train, progress=False)}
    seconds = {name: [] for name in trainers}
    for epoch in range(epochs):
        for name in (list(trainers) if epoch % 2 == 0 else list(trainers)[::-1]):
            seconds[name].append(trainers[name].run_epoch()["seconds"])
    gcn, graph = float(np.median(seconds["lightgcn"])), float(np.median(seconds["armor-graph"]))
    return {"lightgcn_s": gcn, "armor_graph_s": graph, "ratio": graph / gcn}


def ml100k_random_split():
    """ML-100K (the embedded copy), random 80/10/10 over every movie, as `armor data split` makes it."""
    from armor.data import movielens
    from armor.data.splits import build_split_data, make_split

    with tempfile.TemporaryDirectory() as tmp:
        movielens.prepare(movielens.embedded_ml100k_dir(), tmp)
        interactions = pq.read_table(Path(tmp) / "interactions.parquet")
    made = make_split(interactions, SplitConfig(method="random", seed=0))
    return build_split_data(made.tables, made.catalogue)


# --------------------------------------------------------------------------------------------
# Fused model through pipelines.train.train
# --------------------------------------------------------------------------------------------


def steady(history: list[dict], world: int) -> dict[str, float]:
    """Pairs/s over the epochs after the first (all of them if there is only one)."""
    epochs = history[1:] if len(history) > 1 else history
    seconds = sum(r["seconds"] for r in epochs)
    pairs = sum(r["pairs_per_s"] * r["seconds"] for r in epochs)
    return {"workers": world, "epochs": len(history), "timed_epochs": len(epochs), "epoch_s": seconds / len(epochs),
            "pairs_per_s": pairs / seconds, "first_epoch_s": history[0]["seconds"]}


def descendants() -> dict[int, str]:
    """{pid: command} of every live process below this one (Ray's raylet, GCS, workers...)."""
    out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-e"], check=True, capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        pid, ppid, *rest = line.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), rest[0] if rest else ""))
    found, todo = {}, [os.getpid()]
    while todo:
        for pid, command in children.get(todo.pop(), []):
            if "ps -o pid=" not in command:
                found[pid] = command
                todo.append(pid)
    return found


def still_alive(pids: dict[int, str], wait_s: float = 15.0) -> dict[int, str]:
    """Which of ``pids`` are still running after up to ``wait_s`` (ray.shutdown lets them exit)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = {}
        for pid, command in pids.items():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":  # an exited child not yet reaped is gone for our purpose
                alive[pid] = command
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


# The full run's defaults and --quick's (an option given on the command line wins over both).
FULL = {"size": "ml-1m", "lightgcn_epochs": 10, "lightgcn_lrs": [1e-3, 5e-3], "epochs": 3, "steps_per_epoch": 20}
QUICK = {"size": "small", "lightgcn_epochs": 2, "lightgcn_lrs": [5e-3], "epochs": 2, "steps_per_epoch": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", help=f"synthetic preset of the fused-model runs (default {FULL['size']})")
    parser.add_argument("--lightgcn-epochs", type=int,
                        help=f"LightGCN epochs per path and learning rate (default {FULL['lightgcn_epochs']})")
    parser.add_argument("--lightgcn-lrs", type=float, nargs="+", help=f"default {FULL['lightgcn_lrs']}")
    parser.add_argument("--epochs", type=int,
                        help=f"fused-model epochs per run, the first is warm-up (default {FULL['epochs']})")
    parser.add_argument("--steps-per-epoch", type=int,
                        help=f"fused-model steps per epoch (default {FULL['steps_per_epoch']})")
    parser.add_argument("--skip-lightgcn", action="store_true")
    parser.add_argument("--skip-fused", action="store_true")
    parser.add_argument("--quick", action="store_true", help="every section at small sizes ({}), seconds to a "
                        "minute".format(", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())))
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    from pipelines.cli import setup_logging

    setup_logging(-1)
    logging.getLogger("armor").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    gcn = [] if args.skip_lightgcn else lightgcn_section(args)
    fused, ray_pids = ({}, {}) if args.skip_fused else fused_section(args)
    load_end = os.getloadavg()[0]
    print()
    if gcn:
        print_lightgcn(gcn, args.lightgcn_epochs)
    if fused:
        print_fused(fused, args)
    print(f"load average {load_start:.2f} at start, {load_end:.2f} at end ({os.cpu_count()} CPUs); "
          f"total {time.perf_counter() - t0:.0f} s")
    left = still_alive({**ray_pids, **descendants()})
    if left:
        print("processes of this run still running:\n  " + "\n  ".join(f"{p} {c[:120]}" for p, c in left.items()))
        raise SystemExit(1)
    print(f"no process of this run is left ({len(ray_pids)} Ray processes were seen during the session)")


def lightgcn_section(args: argparse.Namespace) -> list[dict[str, float]]:
    import torch

    before = torch.get_num_threads()
    data = ml100k_random_split()
    rows = []
    for lr in args.lightgcn_lrs:
        rows.append(lightgcn_speedup(data, args.lightgcn_epochs, lr, seed=0))
        print(f"  lightgcn lr {lr:g}: reference {rows[-1]['reference_s']:.3f} s/epoch, fast {rows[-1]['fast_s']:.3f} "
              f"s/epoch", flush=True)
    ratio = armor_graph_ratio(data, args.lightgcn_epochs)
    rows.append(ratio)
    print(f"  armor-graph {ratio['armor_graph_s']:.3f} s/epoch, lightgcn {ratio['lightgcn_s']:.3f} s/epoch", flush=True)
    torch.set_num_threads(before)
    return rows


def print_lightgcn(rows: list[dict[str, float]], epochs: int) -> None:
    print(f"LightGCN on ML-100K random 80/10/10 (dim 64, 3 layers, batch 2048, reg 1e-4, 1 thread; {epochs} "
          "epochs each, interleaved; median s/epoch)")
    print(f"  {'lr':>7} {'reference s':>12} {'fast s':>8} {'speed-up':>9} {'ref NDCG@10':>12} {'fast NDCG@10':>13}")
    for r in rows[:-1]:
        print(f"  {r['lr']:>7g} {r['reference_s']:>12.3f} {r['fast_s']:>8.3f} {r['speedup']:>8.2f}x "
              f"{r['reference_ndcg']:>12.4f} {r['fast_ndcg']:>13.4f}")
    r = rows[-1]
    print(f"ARMoR-Graph (dim 64, 3 layers, content at the real encoders' widths) vs LightGCN, same split: "
          f"{r['armor_graph_s']:.3f} vs {r['lightgcn_s']:.3f} s/epoch, ratio {r['ratio']:.2f} (target <= 2)")


def fused_section(args: argparse.Namespace) -> tuple[dict, dict[int, str]]:
    import torch

    from armor.models.registry import ModelSettings
    from pipelines.ray_utils import ray_session
    from pipelines.tracking import Tracking
    from pipelines.train import Placement, TrainJob, train

    fused: dict = {}
    ray_pids: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws, facts = build_workspace(Path(tmp) / "ws", args.size)
        print(f"fused-model data: {facts['users']} users x {facts['movies']} movies, {facts['ratings']} ratings",
              flush=True)
        settings = ModelSettings.of(fusion=FusionConfig(),
                                    train=TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch))
        # One fit per run, the one whose history is timed: no refit on train + validation afterwards.
        job = TrainJob(workspace=str(ws), split="random", model="fused", settings=settings, refit=False)
        off = Tracking(tracking=False)
        before = torch.get_num_threads()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            started = time.perf_counter()
            summary = train(dataclasses.replace(job, name=f"fused-local{threads}"), Placement(local=True), off)
            fused[f"local{threads}"] = {**steady(summary["history"], 1), "run_s": time.perf_counter() - started}
            print(f"  fused in-process threads={threads}: {fused[f'local{threads}']['pairs_per_s']:.0f} pairs/s",
                  flush=True)
        torch.set_num_threads(before)
        with ray_session():
            for workers in (1, 2):
                started = time.perf_counter()
                summary = train(dataclasses.replace(job, name=f"fused-ray{workers}"),
                                Placement(workers=workers, fresh=True), off)
                fused[workers] = {**steady(summary["history"], workers), "run_s": time.perf_counter() - started}
                print(f"  fused ray workers={workers}: {fused[workers]['pairs_per_s']:.0f} pairs/s", flush=True)
            ray_pids.update(descendants())
    return fused, ray_pids


def print_fused(fused: dict, args: argparse.Namespace) -> None:
    f, t = FusionConfig(), TrainConfig()
    print(f"Fused model (full variant, dim {f.dim}, out {f.out_dim}, {f.heads} heads; batch {t.batch_size} "
          f"pairs per worker, {t.mining} mining; {args.epochs} epochs x {args.steps_per_epoch} steps, "
          "first epoch left out)")
    print(f"  {'run':<22} {'pairs/s':>9} {'epoch s':>8} {'1st epoch s':>11} {'whole run s':>11}")
    for label, key in (("in-process, 1 thread", "local1"), ("in-process, 2 threads", "local2"),
                       ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
        row = fused[key]
        print(f"  {label:<22} {row['pairs_per_s']:>9.0f} {row['epoch_s']:>8.2f} {row['first_epoch_s']:>11.2f} "
              f"{row['run_s']:>11.1f}")
    print(f"  2 workers vs 1 worker: {fused[2]['pairs_per_s'] / fused[1]['pairs_per_s']:.2f}x pairs/s")
    print(f"  1 worker vs in-process 1 thread: {fused[1]['pairs_per_s'] / fused['local1']['pairs_per_s']:.2f}x; "
          f"2 workers vs in-process 2 threads: {fused[2]['pairs_per_s'] / fused['local2']['pairs_per_s']:.2f}x")


if __name__ == "__main__":
    main()
