"""Serving under load: Ray Serve (`armor serve`) against `mlflow models serve`, on the same model.

One run registers one model (item vectors of the ML-100K catalogue's 1,682 movies, random 64-d:
serving cost does not depend on how they were trained; ``--workspace`` serves that workspace's
``@champion`` instead), starts both servers on loopback, and drives each with a bounded load from
an aiohttp client in this process: closed loop at concurrency 1, 8 and 32 (``--seconds`` each),
then an open loop at a fixed rate. Every request asks for the top-20 of a random 10-movie
history. Printed per phase: requests/s, p50/p95/p99 latency, errors; then the ratio Ray Serve /
MLflow at concurrency 32, and the in-process query rate of the same index (the ceiling). The client
shares the machine's cores with the servers, as a real client on this machine would.

Targets (2 cores): Ray Serve at concurrency 32 >= 300 req/s with p99 <= 100 ms and no errors, and
at least the MLflow server's throughput at equal or better p99. ``--quick``: 2 s phases, concurrency
1 and 8 (a check of the code path, not of the targets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_MOVIES, DIM, K, HISTORY = 1682, 64, 20, 10


def make_model(work: Path) -> tuple[str, np.ndarray]:
    """Register random item vectors as the champion in a fresh SQLite store; (tracking URI, movie ids)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from armor.tracking.registry import CHAMPION, register_embeddings
    from armor.tracking.runs import tracking_uri

    model_dir = work / "model"
    model_dir.mkdir(parents=True)
    ids = np.arange(1, N_MOVIES + 1)
    vectors = np.random.default_rng(0).standard_normal((N_MOVIES, DIM)).astype(np.float32)
    pq.write_table(pa.table({"movie_id": ids, "embedding": list(vectors)}), model_dir / "item_embeddings.parquet")
    uri = tracking_uri(work)
    register_embeddings(model_dir, uri=uri, metrics={"val_ndcg@10": 0.1}, alias=CHAMPION)
    return uri, ids


def wait_ready(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise SystemExit(f"bench_serve: {url} did not come up in {timeout:.0f} s") from None
            time.sleep(0.5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(kind: str, history: list[int]) -> bytes:
    if kind == "ray":
        return json.dumps({"history": history, "k": K}).encode()
    return json.dumps({"dataframe_records": [{"history": history}], "params": {"k": K}}).encode()


async def drive(url: str, kind: str, ids: np.ndarray, seconds: float, concurrency: int | None,
                rate: float | None, seed: int) -> dict:
    """Closed loop (``concurrency`` clients back to back) or open loop (``rate`` requests/s)."""
    import aiohttp

    rng = np.random.default_rng(seed)
    latencies, errors, events = [], 0, []  # events: (seconds since the start, answered)
    deadline = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        payload = body(kind, rng.choice(ids, HISTORY, replace=False).tolist())
        started = time.perf_counter()
        try:
            async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as reply:
                await reply.read()
                ok = reply.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        latencies.append(time.perf_counter() - started) if ok else None
        errors += not ok
        events.append((time.monotonic() - begun, ok))

    async def closed(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            await one(session)

    timeout = aiohttp.ClientTimeout(total=30)
    begun = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256)) as session:
        started = time.monotonic()
        if concurrency:
            await asyncio.gather(*(closed(session) for _ in range(concurrency)))
        else:
            tasks, n = [], 0
            while time.monotonic() < deadline:
                tasks.append(asyncio.create_task(one(session)))
                n += 1
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            await asyncio.gather(*tasks)
        wall = time.monotonic() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"rps": len(latencies) / wall, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
            "p99": np.percentile(ms, 99), "errors": errors, "n": len(latencies), "events": events}


async def replica_kill_trial(url: str, ids: np.ndarray, seconds: float, kill_at: float) -> dict:
    """Closed-loop load at concurrency 8 while one Serve replica is killed ``kill_at`` seconds in:
    the requests that failed in the 10 s after the kill, and after those 10 s."""
    import ray

    async def kill() -> None:
        await asyncio.sleep(kill_at)
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith("SERVE_REPLICA::")]
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)

    result, _ = await asyncio.gather(drive(url, "ray", ids, seconds, 8, None, 7), kill())
    window = [ok for t, ok in result["events"] if kill_at <= t < kill_at + 10]
    after = [ok for t, ok in result["events"] if t >= kill_at + 10]
    return {"window": len(window), "window_failed": window.count(False), "after": len(after),
            "after_failed": after.count(False)}


def in_process_rate(ids: np.ndarray, seconds: float) -> float:
    from armor.retrieval.index import ItemIndex

    vectors = np.random.default_rng(0).standard_normal((len(ids), DIM)).astype(np.float32)
    index, rng, n = ItemIndex(ids, vectors), np.random.default_rng(1), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        index.recommend(rng.choice(ids, HISTORY, replace=False).tolist(), K)
        n += 1
    return n / seconds


def start_servers(uri: str, replicas: int) -> tuple[str, str, subprocess.Popen]:
    import ray

    from pipelines.serve import start

    # MLflow runs `uvicorn` by name: the interpreter's bin directory must be on PATH (it is not when a
    # virtual environment's python is run without activating it).
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_port = free_port()
    mlflow_server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/armor-item-embeddings@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_url = start("models:/armor-item-embeddings@champion", uri, port=free_port(), replicas=replicas,
                    follow_seconds=0)
    wait_ready(f"{ray_url}/healthz")
    wait_ready(f"http://127.0.0.1:{mlflow_port}/ping")
    return f"{ray_url}/recommend", f"http://127.0.0.1:{mlflow_port}/invocations", mlflow_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load phase (default 20)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s (default 200)")
    parser.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 s phases at concurrency 1 and 8")
    args = parser.parse_args(argv)
    seconds, levels = (2.0, (1, 8)) if args.quick else (args.seconds, (1, 8, 32))
    import ray
    from ray import serve

    with tempfile.TemporaryDirectory(prefix="armor-bench-serve-") as work:
        uri, ids = make_model(Path(work))
        ray_url, mlflow_url, mlflow_server = start_servers(uri, args.replicas)
        rows = []
        try:
            for name, url, kind in (("Ray Serve", ray_url, "ray"), ("MLflow server", mlflow_url, "mlflow")):
                for c in levels:
                    rows.append((name, f"closed, concurrency {c}", asyncio.run(drive(url, kind, ids, seconds, c,
                                                                                      None, c))))
                rows.append((name, f"open, {args.rate:g} req/s", asyncio.run(drive(url, kind, ids, seconds, None,
                                                                                   args.rate, 99))))
        finally:
            os.killpg(mlflow_server.pid, 15)
            mlflow_server.wait(timeout=30)
            fault = None if args.quick else asyncio.run(replica_kill_trial(ray_url, ids, 30.0, 5.0))
            serve.shutdown()
            ray.shutdown()
        ceiling = in_process_rate(ids, seconds)
    print(f"bench_serve: top-{K} of a {HISTORY}-movie history over {N_MOVIES} movies ({DIM}-d); {seconds:g} s per "
          f"phase; {args.replicas} Ray Serve replicas; load average {os.getloadavg()[0]:.1f}")
    print("| server | load | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, phase, r in rows:
        print(f"| {name} | {phase} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
              f"| {r['errors']} |")
    print(f"in-process ceiling (ItemIndex.recommend, one thread): {ceiling:.0f} queries/s")
    top = f"closed, concurrency {levels[-1]}"
    ray_top = next(r for n, p, r in rows if n == "Ray Serve" and p == top)
    mlflow_top = next(r for n, p, r in rows if n == "MLflow server" and p == top)
    print(f"ratio Ray Serve / MLflow server at {top}: throughput {ray_top['rps'] / max(mlflow_top['rps'], 1e-9):.2f}, "
          f"p99 {ray_top['p99'] / max(mlflow_top['p99'], 1e-9):.2f}")
    if not args.quick:
        met = ray_top["rps"] >= 300 and ray_top["p99"] <= 100 and ray_top["errors"] == 0
        print(f"[{'met' if met else 'missed'}] Ray Serve at concurrency 32: >= 300 req/s, p99 <= 100 ms, no errors")
    if fault is not None:
        share = fault["window_failed"] / max(fault["window"], 1)
        print(f"replica kill under load (concurrency 8, one of {args.replicas} replicas killed 5 s in): "
              f"{fault['window_failed']} of {fault['window']} requests failed in the 10 s after the kill "
              f"({share:.2%}); {fault['after_failed']} of {fault['after']} failed after those 10 s")
        print(f"[{'met' if share <= 0.01 and fault['after_failed'] == 0 else 'missed'}] replica kill: <= 1 % "
              "failed in the 10 s after it, none after")
    if any(r["errors"] for _, _, r in rows):
        raise SystemExit("bench_serve: some requests failed (see the errors column)")


if __name__ == "__main__":
    main()
