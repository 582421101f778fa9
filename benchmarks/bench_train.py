"""Training throughput: LightGCN with 1 vs 2 torch threads, fused model with 1 vs 2 Ray Train workers.

Data: the ML-1M-shaped synthetic world (6,040 users x 3,706 movies, ~1M ratings), random
80/10/10 split, written as a workspace (ratings, split, a feature store). Features are random
projections of the world's planted truth (as in tests/workspaces.py) at the real encoders'
widths (text 384, poster / thumbnail 1280), so the fusion's input layers cost what they will.

LightGCN (LightGCNConfig defaults, no validation): seconds per training step, timed inside the
library's own loop at the negative sampler, which runs once per step; an epoch is
``ceil(train positives / batch_size)`` steps. On ML-1M an epoch is a few hundred full-graph
propagations (minutes on 2 cores), so by default a sample of steps is timed and scaled to an
epoch; ``--lightgcn-steps 0`` times two whole epochs instead.

Fused model (FusionConfig and TrainConfig defaults, except epochs and steps per epoch so a run
takes ~20-40 s): anchor-positive pairs per second from the trainer's per-epoch history, which
times the training steps only (Ray start-up, worker start, data loading and validation are
outside it). The first epoch is a warm-up and left out when there are more. Runs: in this
process (``train(..., local=True)``) with 1 and with 2 torch threads, then
``train(job, workers=1)`` and ``workers=2`` in one Ray session, which is shut down at the end
(Ray gives each 1-CPU worker one OpenMP thread).

The ratios are against the in-run baselines (1 thread, 1 worker). On a 2-core machine shared
with other work they move with the load, which is printed next to them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from armor.config import FusionConfig, LightGCNConfig, SplitConfig, TrainConfig
from armor.data.splits import make_split, write_split
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.features.store import FeatureStore

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
# LightGCN
# --------------------------------------------------------------------------------------------


class _StepsDone(Exception):
    """Stops LightGCN.fit once enough steps are timed."""


def lightgcn_epoch_seconds(train, threads: int, steps: int) -> dict[str, float]:
    """Seconds per step and per epoch of LightGCN.fit with ``threads`` torch threads.

    ``steps`` > 0: time that many steps after a warm-up and scale to an epoch; 0: two whole epochs.
    """
    from armor.models import lightgcn

    config = LightGCNConfig(epochs=2 if steps == 0 else 1)
    per_epoch = math.ceil(train.nnz / config.batch_size)
    wanted = 2 * per_epoch if steps == 0 else WARMUP_STEPS + steps
    stamps: list[float] = []

    class TimedSampler(lightgcn.NegativeSampler):
        # Called once at the start of every step: the gaps between calls are whole steps.
        def __call__(self, rng, users):
            stamps.append(time.perf_counter())
            if len(stamps) > wanted:
                raise _StepsDone
            return super().__call__(rng, users)

    model = lightgcn.LightGCN(config, num_threads=threads)
    started = time.perf_counter()
    with mock.patch.object(lightgcn, "NegativeSampler", TimedSampler), contextlib.suppress(_StepsDone):
        model.fit(train)
    if steps == 0:  # the last step ends when fit returns (plus one propagation for the final embeddings)
        stamps.append(time.perf_counter())
        gaps = np.diff(stamps)
    else:
        gaps = np.diff(stamps)[WARMUP_STEPS:]
    step = float(np.mean(gaps))
    return {"threads": threads, "timed_steps": int(gaps.size), "s_per_step": step, "steps_per_epoch": per_epoch,
            "s_per_epoch": step * per_epoch, "setup_s": stamps[0] - started}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="ml-1m", help="synthetic preset (default ml-1m)")
    parser.add_argument("--lightgcn-steps", type=int, default=20,
                        help="LightGCN steps timed per thread count after 2 warm-up steps; 0: two whole epochs")
    parser.add_argument("--epochs", type=int, default=3, help="fused-model epochs per run (the first is warm-up)")
    parser.add_argument("--steps-per-epoch", type=int, default=20, help="fused-model steps per epoch")
    parser.add_argument("--skip-lightgcn", action="store_true")
    parser.add_argument("--skip-fused", action="store_true")
    args = parser.parse_args()

    from pipelines.cli import setup_logging

    setup_logging(-1)
    logging.getLogger("armor").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ws, facts = build_workspace(Path(tmp) / "ws", args.size)
        from armor.data.benchmark import load_benchmark

        bench = load_benchmark(ws, "random")
        data = bench.data
        print(f"data: {facts['users']} users x {facts['movies']} movies, {facts['ratings']} ratings; "
              f"train {data.train.shape[0]} x {data.train.shape[1]}, {data.train.nnz} positives "
              f"(workspace built in {time.perf_counter() - t0:.1f} s); load average {load_start:.2f} on "
              f"{os.cpu_count()} CPUs")

        gcn = []
        if not args.skip_lightgcn:
            import torch

            before = torch.get_num_threads()
            for threads in (1, 2):
                gcn.append(lightgcn_epoch_seconds(data.train, threads, args.lightgcn_steps))
                print(f"  lightgcn threads={threads}: {gcn[-1]['s_per_step']:.3f} s/step", flush=True)
            torch.set_num_threads(before)

        fused: dict = {}
        ray_pids: dict[int, str] = {}
        if not args.skip_fused:
            from armor.models.registry import ModelSettings
            from pipelines.ray_utils import ray_session
            from pipelines.train import Placement, TrainJob, train

            settings = ModelSettings.of(fusion=FusionConfig(),
                                        train=TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch))
            job = TrainJob(workspace=str(ws), split="random", model="fused", settings=settings)
            import torch

            before = torch.get_num_threads()
            for threads in (1, 2):
                torch.set_num_threads(threads)
                started = time.perf_counter()
                summary = train(dataclasses.replace(job, name=f"fused-local{threads}"), Placement(local=True))
                fused[f"local{threads}"] = {**steady(summary["history"], 1), "run_s": time.perf_counter() - started}
                print(f"  fused in-process threads={threads}: {fused[f'local{threads}']['pairs_per_s']:.0f} pairs/s",
                      flush=True)
            torch.set_num_threads(before)
            with ray_session():
                for workers in (1, 2):
                    started = time.perf_counter()
                    summary = train(dataclasses.replace(job, name=f"fused-ray{workers}"),
                                    Placement(workers=workers, fresh=True))
                    fused[workers] = {**steady(summary["history"], workers), "run_s": time.perf_counter() - started}
                    print(f"  fused ray workers={workers}: {fused[workers]['pairs_per_s']:.0f} pairs/s", flush=True)
                ray_pids.update(descendants())

    load_end = os.getloadavg()[0]
    print()
    if gcn:
        print(f"LightGCN (defaults: dim {LightGCNConfig().dim}, {LightGCNConfig().layers} layers, batch "
              f"{LightGCNConfig().batch_size}; {gcn[0]['steps_per_epoch']} steps/epoch; "
              f"{gcn[0]['timed_steps']} steps timed)")
        print(f"  {'threads':>8} {'s/step':>8} {'s/epoch':>9} {'setup s':>8}")
        for row in gcn:
            print(f"  {row['threads']:>8} {row['s_per_step']:>8.3f} {row['s_per_epoch']:>9.1f} {row['setup_s']:>8.1f}")
        print(f"  speed-up 2 threads vs 1: {gcn[0]['s_per_epoch'] / gcn[1]['s_per_epoch']:.2f}x")
    if fused:
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
    print(f"load average {load_start:.2f} at start, {load_end:.2f} at end ({os.cpu_count()} CPUs); "
          f"total {time.perf_counter() - t0:.0f} s")
    left = still_alive({**ray_pids, **descendants()})
    if left:
        print("processes of this run still running:\n  " + "\n  ".join(f"{p} {c[:120]}" for p, c in left.items()))
        raise SystemExit(1)
    print(f"no process of this run is left ({len(ray_pids)} Ray processes were seen during the session)")


if __name__ == "__main__":
    main()
