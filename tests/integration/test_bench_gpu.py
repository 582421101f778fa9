"""benchmarks/bench_gpu.py --dry-run: every section on the CPU at tiny sizes, through the same code
as on a GPU up to the device (images both ways through the Ray Data job, MiniLM, the fused and
LightGCN trainers, FAISS). It prints figures, never checks speed: this test checks that it runs
end to end and reports every figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_bench_gpu_dry_run_reports_every_section():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for pattern in (r"bare loop, decode on the device : +[\d,.]+ images/s",
                    r"bare loop, decode with Pillow +: +[\d,.]+ images/s",
                    r"Ray Data job, decode on device +: +[\d,.]+ images/s",
                    r"Ray Data job, Pillow CPU tasks +: +[\d,.]+ images/s",
                    r"bare loop: +[\d,.]+ sentences/s",
                    r"training: +[\d,.]+ pairs/s",
                    r"training: +[\d.]+ s/epoch",
                    r"CPU index \(50 queries\): +[\d,.]+ queries/s",
                    r"GPU index: not available",
                    r"ItemIndex.search end to end \(CPU\): +[\d,.]+ queries/s",
                    r"bench_gpu: done in"):
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"
    figures = re.findall(r":\s+([\d,]+(?:\.\d+)?) (?:images|sentences|pairs|queries)/s", out)
    assert len(figures) == 8 and all(float(f.replace(",", "")) > 0 for f in figures), figures
