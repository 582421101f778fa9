"""The scale ladder: every stage at the ML-1M, ML-10M and ML-32M shapes, wall time, peak RSS and growth.

Data: synthetic worlds of the three MovieLens shapes (``armor.data.synthetic`` presets "ml-1m",
"ml-10m", "ml-32m": users, movies and ratings as the real releases), ratings only (no content),
written in the ML-1M file format. Generating ML-32M takes minutes, so the files are generated
once into ``--cache`` and reused by later runs (the output says which); everything after that is
timed from the files: ``data prepare``, both splits (leave-one-out and random 80/10/10, catalogue
"all"), full-ranking evaluation on the leave-one-out test of popularity and of a 128-d embedding
model (random item vectors, cosine), 10 iterations of implicit's BPR (one thread), LightGCN
sampled steps (``graph_ops.bpr_step`` as ``LightGCN.train_epoch`` runs it) at batch 2,048 and at
batch 65,536 with the step's parts timed (one sparse product, the host-side sampling), the fused
model's sampled steps on random features at the real encoders' widths (text 384, poster and
thumbnail 1,280), a FAISS flat and IVF index build and query over 128-d item vectors, and EASE's fit
(one BLAS thread) where its memory guard lets it run: the guard refuses the ML-32M shape (87,585
movies need 86 GB) and says so in the row; ML-10M is the largest ladder shape it allows here.

Each step runs in its own process (``--step NAME --shape SHAPE``, which this script calls), so
its peak RSS (``os.wait4``'s rusage of that child) is its own. Growth between consecutive shapes
is (time ratio) / (data ratio), the data being what the step's work is proportional to (ratings,
training positives, users x items, graph non-zeros, ...): 1.0 is linear, above 1 grows faster
than the data. The machine is shared: the 1-minute load average is printed beside every timing.

Sampled steps are scaled to an epoch: LightGCN ``ceil(train positives / batch)`` steps, the
fused model ``PairSampler.steps_per_epoch()``. The GPU figures are estimates (no GPU here): a
step's measured host-side part as is, its 6 sparse products at an assumed sparse throughput and
the rest of its dense work at an assumed speed-up (constants below, printed with the estimate).

Targets on this machine (2 cores, shared): every step completes at ML-32M with peak RSS <= 12 GB;
linear steps grow no faster than the data (growth <= 1.2); full-ranking evaluation of all ML-32M
users with a 128-d embedding model in <= 5 minutes. Not part of ``make test`` (``make bench-scale``):
11-13 minutes here for all three shapes once the files are cached; generating them the first time
took 4 min (ML-10M) and 27 min (ML-32M) at load average 8-12. ``--shapes ml-1m --quick`` is a
one-minute check.

``--quick`` alone runs every step, in the same child processes, at two small shapes ("small":
600 users x 800 movies, 36,000 ratings; "ml-100k": 943 x 1,682, 100,000) with fewer sampled
steps, iterations and queries, and prints the same table, growth ratios and target lines in
under a minute. Those shapes' files take a second to generate: they are generated into the run's
work directory every time, never into ``--cache``. At these sizes fixed costs dominate, so their
growth figures check the code paths, not the targets (tests/integration/test_bench_quick.py runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Run as a script, Python puts benchmarks/ first on sys.path; import this checkout's armor.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = ("ml-1m", "ml-10m", "ml-32m")  # the ladder
QUICK_SHAPES = ("small", "ml-100k")  # --quick's default: generated per run, never cached
ALL_SHAPES = QUICK_SHAPES + SHAPES  # smallest first
DEFAULT_CACHE = Path.home() / ".cache" / "armor" / "bench_scale"
EMBED_DIM = 128
FEATURE_DIMS = {"text": 384, "poster": 1280, "thumbnail": 1280}
LIGHTGCN_BATCHES = (2048, 65536)
QUERIES = 10_000
TOP_K = 20
MIN_STEPS, MAX_STEPS = 2, 20  # sampled training steps timed per measurement (after a warm-up step)
GB = 1e9

# GPU estimate assumptions (no GPU on this machine; stated with every estimate). Effective
# throughput of one CSR x dense product (cuSPARSE SpMM, d = 64, float32) on a graph this size:
# ~2 FLOP per non-zero per column, gathers of rows from an (N, 64) matrix that does not fit L2;
# 200 GFLOP/s is a conservative figure for an A100/H100-class GPU. The rest of a step (gathers,
# Adam over (N, d), the L2 term) is bandwidth-bound: 100x one CPU thread is conservative.
GPU_SPMM_FLOPS = 200e9
GPU_DENSE_SPEEDUP = 100.0


# --------------------------------------------------------------------------------------------
# One step, in a child process
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    shape: str
    files: Path
    workspace: Path
    quick: bool

    @property
    def split_dir(self) -> Path:
        return self.workspace / "splits" / "loo"


class Span(NamedTuple):
    wall: float  # seconds
    cpu: float  # process CPU seconds over the same interval, every thread


def row(step: str, span: Span, data: float, unit: str, note: str = "") -> dict:
    return {"step": step, "wall": span.wall, "cpu": span.cpu, "data": float(data), "unit": unit, "note": note,
            "load": os.getloadavg()[0]}


def timed(fn: Callable, *args: object) -> tuple[object, Span]:
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, Span(time.perf_counter() - start, time.process_time() - cpu)


def timed_repeat(fn: Callable, *args: object, least: float = 1.0, most: int = 50) -> tuple[object, Span]:
    """Mean ``Span`` of ``fn(*args)`` over as many calls as take ``least`` seconds (at most ``most``):
    steps of milliseconds are otherwise timer noise in a growth ratio."""
    out, spans = None, []
    while not spans or (sum(s.wall for s in spans) < least and len(spans) < most):
        out, span = timed(fn, *args)
        spans.append(span)
    return out, Span(float(np.mean([s.wall for s in spans])), float(np.mean([s.cpu for s in spans])))


def load_loo(ctx: Context):
    from armor.data.splits import load_split_data

    return timed(lambda: load_split_data(ctx.split_dir, ctx.workspace / "movies.parquet"))


def step_generate(ctx: Context) -> list[dict]:
    from armor.data.synthetic import SyntheticConfig, SyntheticWorld, write_movielens

    config = SyntheticConfig.preset(ctx.shape)
    tmp = ctx.files.with_name(ctx.files.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _, span = timed(lambda: write_movielens(SyntheticWorld(config), tmp, content=False))
    tmp.rename(ctx.files)
    return [row("generate", span, config.n_ratings, "ratings", f"written to {ctx.files}")]


def step_prepare(ctx: Context) -> list[dict]:
    from armor.data.movielens import prepare

    counts, span = timed(lambda: prepare(ctx.files, ctx.workspace))
    return [row("prepare", span, counts["interactions"], "ratings",
                f"{counts['users']:,} users, {counts['movies']:,} movies")]


def _split(ctx: Context, method: str) -> list[dict]:
    from armor.config import SplitConfig
    from pipelines.data import split

    result, span = timed(lambda: split(ctx.workspace, SplitConfig(method=method)))
    steps = {s["step"]: s for s in result["funnel"]}
    note = (f"{steps['train']['users']:,} users; train / valid / test positives "
            f"{steps['train']['positives']:,} / {steps['valid']['positives']:,} / {steps['test']['positives']:,}")
    return [row(f"split-{method}", span, steps["ratings"]["positives"], "ratings", note)]


def step_split_loo(ctx: Context) -> list[dict]:
    return _split(ctx, "loo")


def step_split_random(ctx: Context) -> list[dict]:
    return _split(ctx, "random")


def _evaluate(ctx: Context, name: str, make_model: Callable) -> list[dict]:
    from armor.config import EvalConfig
    from armor.eval.protocol import evaluate

    data, load_s = load_loo(ctx)
    model = make_model(data)
    result, span = timed(lambda: evaluate(model, data, "test", EvalConfig(bootstrap=0)))
    users = result.users.size
    note = (f"{users:,} users x {data.n_items:,} movies; NDCG@10 {result.means['ndcg@10']:.4f}; "
            f"reading the split {load_s.wall:.0f} s")
    return [row(name, span, users * data.n_items, "user-items", note)]


def step_eval_popularity(ctx: Context) -> list[dict]:
    from armor.models.baselines import Popularity

    return _evaluate(ctx, "eval-popularity", lambda data: Popularity().fit(data.train))


def random_embeddings(n: int, dim: int = EMBED_DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def step_eval_embedding(ctx: Context) -> list[dict]:
    from armor.models.base import EmbeddingRecommender

    class StaticEmbeddings(EmbeddingRecommender):
        name = "bench-static-128"

        def __init__(self, embeddings: np.ndarray):
            self.embeddings = embeddings

        def item_embeddings(self) -> np.ndarray:
            return self.embeddings

    return _evaluate(ctx, f"eval-embedding-{EMBED_DIM}d",
                     lambda data: StaticEmbeddings(random_embeddings(data.n_items)))


def step_bpr(ctx: Context) -> list[dict]:
    from armor.config import BPRConfig
    from armor.models.bpr import BPR
    from armor.training.trainer import Trainer

    data, _ = load_loo(ctx)
    iterations = 2 if ctx.quick else 10
    trainer = Trainer(BPR(BPRConfig(iterations=iterations), eval_every=iterations, num_threads=1), data.train)
    _, span = timed(trainer.run_epoch)
    samples = iterations * data.train.nnz
    note = (f"{iterations} iterations x {data.train.nnz:,} positives; "
            f"{span.wall / samples * 1e9:.0f} ns per sample ({span.cpu / samples * 1e9:.0f} ns CPU)")
    return [row(f"bpr-{iterations}it", span, samples, "samples", note)]


def step_ease(ctx: Context) -> list[dict]:
    """EASE's fit, where its memory guard lets it run: at the ML-32M shape it refuses (a row that says
    what fits, not a failure); at the largest shape it allows, the fit and its peak RSS."""
    import pyarrow.parquet as pq

    from armor.models.neighbors import EASE, ease_fits, ease_max_items

    n_items = pq.ParquetFile(ctx.split_dir / "catalogue.parquet").metadata.num_rows  # without reading the split
    fits, needed, available = ease_fits(n_items)
    plan = (f"{n_items:,} items: float64 + float32 item x item = {needed / GB:.2f} GB of {available / GB:.1f} GB "
            f"available (fits up to {ease_max_items(available):,} items)")
    if not fits:
        return [{**row("ease", Span(math.nan, math.nan), n_items**2, "item pairs",
                       f"refused by the memory guard: {plan}"), "skipped": True}]
    data, _ = load_loo(ctx)
    _, span = timed(lambda: EASE(num_threads=1).fit(data.train))
    return [row("ease", span, n_items**2, "item pairs", f"{plan}; Cholesky in place, 1 BLAS thread")]


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _lightgcn_steps(model, rng: np.random.Generator, batch: int, budget: float,
                    warm_up: bool) -> tuple[Span, list[float]]:
    """Times sampled LightGCN steps (after an untimed one if ``warm_up``), at least ``MIN_STEPS`` and then until
    ``budget`` seconds or ``MAX_STEPS``: (mean step, host seconds per step).

    A step is ``LightGCN.train_epoch``'s loop body: a batch of training positives, their uniform
    negatives, ``graph_ops.bpr_step``. The host part is what stays on the CPU when the tensors live
    on a GPU: choosing the batch, sampling negatives, and ``bpr_step``'s node-count bincount (timed
    again after the step, so it is not counted twice in the step time).
    """
    from armor.models import graph_ops

    cfg, n_nodes = model.config, model._embeddings.shape[0]
    step_s, host_s = [], []
    cpu = time.process_time()
    while len(step_s) < MIN_STEPS or (sum(step_s) < budget and len(step_s) < MAX_STEPS):
        start = time.perf_counter()
        chosen = rng.integers(0, model._pos_users.size, size=batch)  # a slice of the epoch's shuffled order
        users, positives = model._pos_users[chosen], model._pos_items[chosen]
        negatives = model._sampler(rng, users)
        sampled = time.perf_counter()
        graph_ops.bpr_step(model._adjacency, model._embeddings, model._optimizer, users, positives, negatives,
                           model._n_users, cfg.layers, cfg.reg)
        done = time.perf_counter()
        np.bincount(np.concatenate([users, positives + model._n_users, negatives + model._n_users]),
                    minlength=n_nodes)
        counted = time.perf_counter() - done
        if warm_up:  # the first step allocates Adam's state: not timed
            warm_up, cpu = False, time.process_time()
            continue
        step_s.append(done - start)
        host_s.append(sampled - start + counted)
    cpu = time.process_time() - cpu  # includes the host part's second bincount; small
    return Span(float(np.mean(step_s)), cpu / len(step_s)), host_s


def gpu_lightgcn_step(step: float, host: float, spmm: float, nnz: int, dim: int, layers: int) -> float:
    """Estimated GPU seconds of one step from its CPU parts (see GPU_SPMM_FLOPS, GPU_DENSE_SPEEDUP)."""
    products = 2 * layers  # forward propagation, and the backward's propagation of the gradient
    rest = max(0.0, step - host - products * spmm)
    return host + products * 2.0 * nnz * dim / GPU_SPMM_FLOPS + rest / GPU_DENSE_SPEEDUP


def step_lightgcn(ctx: Context) -> list[dict]:
    import torch

    from armor.config import LightGCNConfig
    from armor.models import graph_ops
    from armor.models.lightgcn import LightGCN
    from armor.training.trainer import Trainer

    data, _ = load_loo(ctx)
    torch.set_num_threads(1)  # as LightGCN trains on CPU (see its num_threads)
    model = LightGCN(LightGCNConfig(), num_threads=1)
    _, setup = timed(lambda: Trainer(model, data.train))
    nnz, (n_nodes, dim) = int(model._adjacency.values().numel()), model._embeddings.shape
    positives, layers = model._pos_users.size, model.config.layers
    x = torch.randn(n_nodes, dim)
    graph_ops.spmm(model._adjacency, x)
    spmm = float(np.median([timed(graph_ops.spmm, model._adjacency, x)[1].wall for _ in range(3)]))
    rows = [row("lightgcn-setup", setup, nnz, "graph nnz",
                f"{n_nodes:,} nodes, {nnz:,} non-zeros in A-hat; one sparse product (N x N @ N x {dim}) {spmm:.3f} s")]
    rng = np.random.default_rng(0)
    for i, batch in enumerate(LIGHTGCN_BATCHES):
        span, host_s = _lightgcn_steps(model, rng, batch, 1.0 if ctx.quick else 20.0, warm_up=i == 0)
        host = float(np.mean(host_s))
        per_epoch = math.ceil(positives / batch)
        gpu = gpu_lightgcn_step(span.wall, host, spmm, nnz, dim, layers)
        note = (f"per step, mean of {len(host_s)} ({2 * layers} products {2 * layers * spmm:.2f} s, host "
                f"{host:.3f} s); epoch = {per_epoch:,} steps: CPU {duration(per_epoch * span.wall)}, "
                f"GPU est. {duration(per_epoch * gpu)} ({gpu * 1e3:.0f} ms/step)")
        rows.append(row(f"lightgcn-step-b{batch}", span, nnz, "graph nnz", note))
    return rows


# A GPU step of the fused model is launch-bound (~100 small kernels, forward and backward, on
# ~1,000 items); 5 ms is an estimate, not a measurement.
GPU_FUSED_STEP_OVERHEAD = 5e-3


def step_fused(ctx: Context) -> list[dict]:
    import torch

    from armor.config import FusionConfig, TrainConfig
    from armor.models.content import FusionRecommender
    from armor.training.trainer import Trainer

    # One torch thread, as a 1-CPU Ray Train worker runs: on this shared machine two threads made a
    # fused step 6-9x slower (0.8-1.1 s against 6.7-7.7 s at the ML-1M shape, load average ~12).
    torch.set_num_threads(1)
    data, _ = load_loo(ctx)
    rng = np.random.default_rng(0)
    features = {m: rng.standard_normal((data.n_items, d), dtype=np.float32) for m, d in FEATURE_DIMS.items()}
    steps = 3 if ctx.quick else 20
    model = FusionRecommender(FusionConfig(), TrainConfig(steps_per_epoch=steps, epochs=1), features)
    trainer, setup = timed(lambda: Trainer(model, data.train))
    trainer.run_epoch()  # warm-up epoch: allocations, AdamW state
    _, span = timed(trainer.run_epoch)
    sampler = model._sampler
    host = timed(lambda: list(sampler.batches(np.random.default_rng(1), steps)))[1].wall
    per_epoch, step = sampler.steps_per_epoch(), Span(span.wall / steps, span.cpu / steps)
    gpu = host / steps + GPU_FUSED_STEP_OVERHEAD
    note = (f"per step, mean of {steps} (host sampling {host / steps * 1e3:.1f} ms); setup {setup.wall:.0f} s; "
            f"epoch = {per_epoch:,} steps: CPU {duration(per_epoch * step.wall)}, GPU est. {duration(per_epoch * gpu)}")
    rows = [row("fused-step", step, sampler.batch_size, "pairs", note)]
    _, encode = timed(model.item_embeddings)
    rows.append(row("fused-encode-items", encode, data.n_items, "items", "every catalogue item through the fusion"))
    return rows


def step_faiss(ctx: Context) -> list[dict]:
    from armor.models.base import l2_normalize
    from armor.retrieval.index import ItemIndex

    data, _ = load_loo(ctx)
    emb = random_embeddings(data.n_items)
    n_queries = min(1_000 if ctx.quick else QUERIES, data.n_users)
    users = np.sort(np.random.default_rng(0).choice(data.n_users, n_queries, replace=False))
    history = data.train[users]
    queries = l2_normalize(np.asarray(history @ emb) / np.maximum(history.getnnz(axis=1), 1)[:, None])
    rows, found = [], {}
    for kind in ("flat", "ivf"):
        least = 0.25 if ctx.quick else 1.0
        index, build = timed_repeat(ItemIndex, data.item_ids, emb, kind, least=least)
        (ids, _), query = timed_repeat(index.search, queries, TOP_K, least=least)
        found[kind] = ids
        extra = "" if kind == "flat" else f"nlist {index.nlist}, nprobe {index.nprobe}; "
        rows.append(row(f"faiss-{kind}-build", build, data.n_items, "items", f"{extra}{EMBED_DIM}-d vectors"))
        recall = "" if kind == "flat" else (
            f"; recall@{TOP_K} vs flat {np.mean([np.isin(a, b).mean() for a, b in zip(ids, found['flat'])]):.3f}")
        rows.append(row(f"faiss-{kind}-query", query, n_queries * data.n_items, "query-items",
                        f"{n_queries:,} user vectors, top-{TOP_K}{recall}"))
    return rows


STEPS: dict[str, Callable[[Context], list[dict]]] = {
    "prepare": step_prepare,
    "split-loo": step_split_loo,
    "split-random": step_split_random,
    "eval-popularity": step_eval_popularity,
    "eval-embedding": step_eval_embedding,
    "bpr": step_bpr,
    "lightgcn": step_lightgcn,
    "fused": step_fused,
    "faiss": step_faiss,
    "ease": step_ease,
}
# Steps whose work is linear in their data column (the growth target applies to them).
# IVF is left out: its k-means grows with catalogue x nlist, and nlist with sqrt(catalogue).
LINEAR = ("prepare", "split-loo", "split-random", "eval-popularity", f"eval-embedding-{EMBED_DIM}d", "bpr-10it",
          "bpr-2it", *(f"lightgcn-step-b{b}" for b in LIGHTGCN_BATCHES), "fused-step", "fused-encode-items",
          "faiss-flat-build", "faiss-flat-query")


# --------------------------------------------------------------------------------------------
# The ladder, in the parent process
# --------------------------------------------------------------------------------------------


def run_child(step: str, ctx: Context, timeout: float, log_dir: Path) -> tuple[list[dict], float]:
    """Run one step in a fresh process; (its rows, its peak RSS in GB from ``os.wait4``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--shape", ctx.shape,
           "--files", str(ctx.files), "--workspace", str(ctx.workspace)] + (["--quick"] if ctx.quick else [])
    log_path = log_dir / f"{ctx.shape}-{step}.log"
    with open(log_path, "w") as log:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        out = child.stdout.read()
        child.stdout.close()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the running maximum
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if child.returncode != 0 or not lines:
        tail = log_path.read_text()[-3000:]
        reason = f"killed after {timeout:.0f} s" if child.returncode == -9 else f"exit {child.returncode}"
        print(f"!! {ctx.shape} {step} failed ({reason}); log {log_path}:\n{tail}", flush=True)
        return [row(step, Span(math.nan, math.nan), math.nan, "", f"FAILED ({reason})")], usage.ru_maxrss * 1024 / GB
    return json.loads(lines[-1][len("RESULT "):]), usage.ru_maxrss * 1024 / GB


def ensure_files(ctx: Context, timeout: float, log_dir: Path) -> dict:
    """Generate the shape's MovieLens files into the cache unless they are there; the generate row
    (of this run, or of the run that generated the cached files)."""
    from armor.data.synthetic import SyntheticConfig

    marker = ctx.files / "generated.json"
    config = json.loads(json.dumps(dataclasses.asdict(SyntheticConfig.preset(ctx.shape))))
    if marker.exists() and json.loads(marker.read_text()).get("config") == config:
        result = json.loads(marker.read_text())["row"]
        result["note"] = f"cached in {ctx.files}; timed when generated ({result['when']})"
        print(f"{ctx.shape}: files cached in {ctx.files} (generated in {result['wall']:.0f} s on {result['when']}); "
              "not regenerated", flush=True)
        return result
    shutil.rmtree(ctx.files, ignore_errors=True)
    rows, rss = run_child("generate", ctx, timeout, log_dir)
    result = {**rows[0], "rss": rss, "when": time.strftime("%Y-%m-%d %H:%M")}
    if math.isnan(result["wall"]):
        raise SystemExit(f"could not generate the {ctx.shape} files")
    marker.write_text(json.dumps({"config": config, "row": result}))
    print(f"{ctx.shape}: generated into {ctx.files} in {result['wall']:.0f} s, {rss:.2f} GB (cached for later runs)",
          flush=True)
    return result


def run_shape(shape: str, args: argparse.Namespace, work: Path, log_dir: Path) -> list[dict]:
    cache = work / "files" if shape in QUICK_SHAPES else args.cache  # small shapes: seconds to generate
    ctx = Context(shape, cache / f"{shape}-seed0", work / shape, args.quick)
    ctx.files.parent.mkdir(parents=True, exist_ok=True)
    ctx.workspace.mkdir(parents=True, exist_ok=True)
    results = [{**ensure_files(ctx, args.step_timeout, log_dir), "shape": shape}]
    for step in args.steps:
        started = time.perf_counter()
        rows, rss = run_child(step, ctx, args.step_timeout, log_dir)
        for r in rows:
            results.append({**r, "shape": shape, "rss": rss})
            print(f"  {shape:7s} {r['step']:24s} {r['wall']:8.1f} s ({r['cpu']:.1f} s CPU)  {rss:5.2f} GB  "
                  f"load {r['load']:.1f}  "
                  f"(process {time.perf_counter() - started:.0f} s)  {r['note']}", flush=True)
    shutil.rmtree(ctx.workspace, ignore_errors=True)
    return results


def growth(results: list[dict]) -> None:
    """Set each row's growth against the same step at the previous shape: time ratio / data ratio."""
    previous: dict[str, dict] = {}
    for r in results:
        before = previous.get(r["step"])
        r["growth"] = r["growth_cpu"] = math.nan
        if before is not None and before["data"] > 0:
            data_ratio = r["data"] / before["data"]
            for key, value in (("growth", "wall"), ("growth_cpu", "cpu")):
                if before[value] > 0:  # NaN (not measured) compares False
                    r[key] = (r[value] / before[value]) / data_ratio
            r["vs"] = before["shape"]
        previous[r["step"]] = r


def seconds(value: float) -> str:
    if math.isnan(value):
        return ""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(results: list[dict]) -> str:
    lines = ["| step | shape | wall s | CPU s | peak RSS GB | data | growth | growth (CPU) | load | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    order = {s: i for i, s in enumerate(dict.fromkeys(r["step"] for r in results))}
    for r in sorted(results, key=lambda r: (order[r["step"]], ALL_SHAPES.index(r["shape"]))):
        g, gc = ("" if math.isnan(r[key]) else f"{r[key]:.2f}" for key in ("growth", "growth_cpu"))
        lines.append(f"| {r['step']} | {r['shape']} | {seconds(r['wall'])} | {seconds(r['cpu'])} | {r['rss']:.2f} | "
                     f"{r['data']:,.0f} {r['unit']} | {g} | {gc} | {r['load']:.1f} | {r['note']} |")
    return "\n".join(lines)


def targets(results: list[dict]) -> list[str]:
    out = []
    if not {r["shape"] for r in results} & set(SHAPES):
        out.append(f"(shapes {', '.join(dict.fromkeys(r['shape'] for r in results))} only: fixed costs dominate "
                   "at these sizes; the targets are meant for the ml-1m / ml-10m / ml-32m ladder)")
    top = [r for r in results if r["shape"] == "ml-32m" and r["step"] != "generate" and not r.get("skipped")]
    for r in results:
        if r.get("skipped"):
            out.append(f"({r['step']} at {r['shape']}: {r['note']})")
    if top:
        failed = [r["step"] for r in top if math.isnan(r["wall"])]
        worst = max(top, key=lambda r: r["rss"])
        ok = not failed and worst["rss"] <= 12.0
        out.append(f"[{'met' if ok else 'NOT met'}] every step completes at ml-32m with peak RSS <= 12 GB: "
                   f"{'failed: ' + ', '.join(failed) + '; ' if failed else ''}"
                   f"largest {worst['rss']:.2f} GB ({worst['step']})")
        for r in top:
            if r["step"] == f"eval-embedding-{EMBED_DIM}d":
                out.append(f"[{'met' if r['wall'] <= 300 else 'NOT met'}] full-ranking evaluation of all ml-32m "
                           f"users, {EMBED_DIM}-d embedding model, <= 300 s: {r['wall']:.0f} s (load {r['load']:.1f})")
    rated = [r for r in results if r["step"] in LINEAR and not math.isnan(r["growth"])]
    if rated:
        over = [r for r in rated if r["growth"] > 1.2]
        out.append(f"[{'met' if not over else 'NOT met'}] linear steps grow no faster than the data (growth <= 1.2): "
                   + ("; ".join(f"{r['step']} {r['vs']}->{r['shape']} {r['growth']:.2f}" for r in over)
                      if over else f"all {len(rated)} within"))
    return out


def parent(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="armor-bench-scale-"))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    print(f"bench_scale: shapes {', '.join(args.shapes)}{' (quick)' if args.quick else ''}; {os.cpu_count()} CPUs, "
          f"{mem:.0f} GB RAM, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; cache {args.cache}; "
          f"logs {log_dir}", flush=True)
    results = []
    for shape in args.shapes:
        results += run_shape(shape, args, work, log_dir)
    growth(results)
    print("\n" + table(results) + "\n")
    print("growth = (time ratio) / (data ratio) against the previous shape; load = 1-minute load average at the end "
          "of the step; GPU figures are estimates, not measurements (assumptions in benchmarks/bench_scale.py)")
    for line in targets(results):
        print(line)
    print(f"total {duration(time.perf_counter() - started)} (load average now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    failed = [f"{r['shape']} {r['step']}" for r in results if math.isnan(r["wall"]) and not r.get("skipped")]
    if failed:  # after the table, so a long run still reports what it measured
        raise SystemExit(f"bench_scale: {len(failed)} step(s) failed: {', '.join(failed)} (logs in {log_dir})")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=None,
                        help=f"comma-separated subset of {', '.join(ALL_SHAPES)} (default {','.join(SHAPES)}; "
                             f"{','.join(QUICK_SHAPES)} with --quick)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sampled steps, iterations and queries; by default at the small shapes "
                             f"{', '.join(QUICK_SHAPES)} (under a minute, nothing cached)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"generated files (default {DEFAULT_CACHE})")
    parser.add_argument("--work", default=None, help="workspaces and logs (default: a temporary directory, removed)")
    parser.add_argument("--step-timeout", type=float, default=1800.0, help="seconds before a step is killed")
    parser.add_argument("--step", choices=["generate", *STEPS], help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--shape", choices=ALL_SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run = step_generate if args.step == "generate" else STEPS[args.step]
        rows = run(Context(args.shape, args.files, args.workspace, args.quick))
        print("RESULT " + json.dumps(rows), flush=True)
        return
    if args.shapes is None:
        args.shapes = ",".join(QUICK_SHAPES if args.quick else SHAPES)
    args.shapes = [s for s in args.shapes.split(",") if s]
    args.steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(args.shapes) - set(ALL_SHAPES)) + sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown shape or step {unknown[0]!r}")
    args.shapes.sort(key=ALL_SHAPES.index)
    # Every step reads the workspace: prepare it, and split it for the steps that need the split.
    wanted = set(args.steps) | {"prepare"} | ({"split-loo"} if set(args.steps) - {"prepare", "split-random"} else set())
    args.steps = [s for s in STEPS if s in wanted]
    parent(args)


if __name__ == "__main__":
    main()
