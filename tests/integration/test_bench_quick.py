"""Every benchmark in benchmarks/ with ``--quick``: the same code paths as the full run at tiny sizes.

The suite never runs the full benchmarks, so without this they rot: a benchmark that no longer
matches the library (a renamed function, a changed evaluation rule) fails here. Each test runs
one script in a subprocess, as ``make bench`` does, and checks that it exits 0 and prints every
figure and ratio line of its full run with positive numbers. Speeds are not checked: at these
sizes they say nothing about the targets. bench_gpu.py has its own test (``--dry-run``,
test_bench_gpu.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"([\d,]+(?:\.\d+)?)"

pytestmark = [pytest.mark.slow]


def run_quick(script: str, *extra: str) -> str:
    """``benchmarks/<script> --quick`` from the repository root; its stdout, after checking it exited 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)  # the Ray benchmarks start (and stop) their own local runtime
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    print(f"{script} --quick: {time.perf_counter() - started:.1f} s")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def figures(out: str, pattern: str, count: int = 1) -> list[float]:
    """The numbers captured by ``pattern`` on its ``count`` matches in ``out``, each checked positive."""
    matches = re.findall(pattern, out, flags=re.MULTILINE)
    assert len(matches) == count, f"{pattern!r} matched {len(matches)} times, expected {count}, in:\n{out}"
    values = [float(v.replace(",", "")) for m in matches for v in ((m,) if isinstance(m, str) else m)]
    assert values and all(v > 0 for v in values), f"{pattern!r}: not all positive: {values}\n{out}"
    return values


def test_bench_eval_quick_agrees_with_the_loop():
    out = run_quick("bench_eval.py")
    figures(out, rf"^data \(small, quick\): {NUMBER} users x {NUMBER} items, {NUMBER} ratings, {NUMBER} test positives")
    for split in ("valid", "test"):
        assert re.search(rf"^metrics agree on {split} \(max \|diff\| \S+ over 12 metrics\)$", out, re.MULTILINE), out
    figures(out, rf"^recall@10 on test = {NUMBER}$")
    figures(out, rf"^vectorised evaluator: {NUMBER} s \(best of \d+\)$")
    figures(out, rf"^per-user loop: +{NUMBER} s$")
    figures(out, rf"^ratio loop / vectorised: {NUMBER}x")


@pytest.mark.ray
def test_bench_encode_quick_reports_both_ratios():
    out = run_quick("bench_encode.py")
    figures(out, rf"^images: {NUMBER} \(efficientnet-lite0, imagenet, batch 4, device cpu\)$")
    figures(out, rf"^  bare torch loop over decoded images: {NUMBER} images/s$")
    figures(out, rf"^  Ray Data job at steady state: +{NUMBER} images/s \(whole job incl. actor start-up: "
                 rf"{NUMBER} images/s\)$")
    figures(out, rf"^text: {NUMBER} overviews$")
    figures(out, rf"^  bare sentence-transformers loop: {NUMBER} sentences/s$")
    figures(out, rf"^  Ray Data job at steady state: +{NUMBER} sentences/s \(whole job: {NUMBER}/s\)$")
    figures(out, rf"^  ratio job / bare: {NUMBER}  \(target >= 0.8\)$", count=2)


@pytest.mark.ray
def test_bench_scrape_quick_reports_the_share_of_the_limit():
    out = run_quick("bench_scrape.py")
    # Every movie scraped: 3 requests each, all stored as ok.
    assert re.search(r"^120 requests for 40 movies \(\{'ok': 40\}\), latency 100 ms, 2 actors, limit 40 req/s; "
                     rf"job wall time {NUMBER} s", out, re.MULTILINE), out
    figures(out, rf"^busiest 1 s window: {NUMBER} requests")
    # One session per actor: at most max_connections (16) per actor, whatever the number of batches.
    connections, _ = figures(out, rf"^TCP connections opened: {NUMBER} \({NUMBER} requests per "
                                  r"connection; 2 actors x 16 at most")
    assert connections <= 32, out
    figures(out, rf"^whole run \(first to last request\): {NUMBER} req/s = {NUMBER} of the limit$")
    figures(out, rf"^sustained \(middle 80 % of requests\): {NUMBER} req/s = {NUMBER} of the limit")


@pytest.mark.ray
def test_bench_train_quick_reports_every_ratio():
    out = run_quick("bench_train.py")
    # LightGCN: reference s, fast s, speed-up, both NDCG@10 (one learning rate in quick mode).
    figures(out, rf"^ +0\.005 +{NUMBER} +{NUMBER} +{NUMBER}x +{NUMBER} +{NUMBER}$")
    figures(out, rf"^ARMoR-Graph .* same split: {NUMBER} vs {NUMBER} s/epoch, ratio {NUMBER} \(target <= 2\)$")
    for run in ("in-process, 1 thread", "in-process, 2 threads", "ray, 1 worker", "ray, 2 workers"):
        figures(out, rf"^  {re.escape(run)} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$")
    figures(out, rf"^  2 workers vs 1 worker: {NUMBER}x pairs/s$")
    figures(out, rf"^  1 worker vs in-process 1 thread: {NUMBER}x; 2 workers vs in-process 2 threads: {NUMBER}x$")
    assert re.search(r"^no process of this run is left \(\d+ Ray processes", out, re.MULTILINE), out


SCALE_STEPS = ("generate", "prepare", "split-loo", "split-random", "eval-popularity", "eval-embedding-128d", "bpr-2it",
               "lightgcn-setup", "lightgcn-step-b2048", "lightgcn-step-b65536", "fused-step", "fused-encode-items",
               "faiss-flat-build", "faiss-flat-query", "faiss-ivf-build", "faiss-ivf-query", "ease")


def test_bench_scale_quick_reports_every_step_and_its_growth(tmp_path):
    cache = tmp_path / "cache"
    out = run_quick("bench_scale.py", "--cache", str(cache))
    assert not cache.exists() or not any(cache.iterdir()), "the quick shapes must not be cached"
    assert "FAILED" not in out, out
    for shape in ("small", "ml-100k"):
        for step in SCALE_STEPS:
            # | step | shape | wall s | CPU s | peak RSS GB | data | growth | growth (CPU) | load | note |
            match = re.search(rf"^\| {step} \| {shape} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) [^|]+ \| "
                              r"([\d.]*) \| ([\d.]*) \|", out, re.MULTILINE)
            assert match, f"no table row for {step} at {shape} in:\n{out}"
            wall, cpu, rss, data, growth, growth_cpu = match.groups()
            assert float(rss) > 0 and float(data.replace(",", "")) > 0, match.group(0)
            # Growth is against the previous shape: none for the first. Printed to 2 decimals.
            if shape == "small":
                assert growth == growth_cpu == "", match.group(0)
            else:
                assert float(growth) >= 0 and float(growth_cpu) >= 0, match.group(0)
    assert re.search(r"^\[(met|NOT met)\] linear steps grow no faster than the data", out, re.MULTILINE), out
    assert re.search(r"^total \d+ s", out, re.MULTILINE), out


def test_bench_serve_quick_drives_both_servers_without_errors():
    out = run_quick("bench_serve.py")
    for server in ("Ray Serve", "MLflow server"):
        for phase in ("closed, concurrency 1", "closed, concurrency 8", "open, 200 req/s"):
            row = re.search(rf"\| {server} \| {phase} \| (\d+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| (\d+) \|", out)
            assert row and int(row.group(1)) > 0 and row.group(2) == "0", (server, phase, out[-2000:])
    assert re.search(r"in-process ceiling .*: \d+ queries/s", out)
    assert re.search(r"ratio Ray Serve / MLflow server at closed, concurrency 8: throughput [\d.]+", out)
