"""Progress a user can watch when stderr is not a terminal (`ray job submit`, a log file): periodic
lines with counts, rate and ETA, a final line, and nothing else from the libraries underneath."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workspaces import make_workspace

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.2

pytestmark = pytest.mark.slow


def test_train_off_a_terminal_writes_periodic_progress_lines_and_a_summary_and_no_noise(tmp_path):
    ws = make_workspace(tmp_path / "ws", users=120, movies=100, ratings=4_000)
    env = {**os.environ, "ARMOR_PROGRESS_INTERVAL": str(INTERVAL), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("ARMOR_PROGRESS", None)
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pipelines", "train", "--workspace", str(ws), "--model", "lightgcn",
                          "--local", "--lightgcn-epochs", "400", "--lightgcn-patience", "1000", "--lightgcn-dim", "8",
                          "--no-tracking"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    assert "validation NDCG@10" in run.stdout
    periodic = re.findall(r"INFO armor\.progress: (lightgcn: \d+/400 epochs \(\d+\.\d%\), .+, ETA \w+; .+)",
                          run.stderr)
    assert periodic, run.stderr[-3000:]
    assert "loss " in periodic[0] and "val_ndcg@10 " in periodic[0]
    assert len(periodic) <= seconds / INTERVAL + 1  # at most one line per interval, not one per epoch
    assert re.search(r"INFO armor\.progress: lightgcn: done, 400/400 epochs in \w+, ", run.stderr)
    assert re.search(r"INFO armor\.progress: evaluate random/lightgcn on valid: done, \d+/\d+ users in ", run.stderr)
    assert "\r" not in run.stderr  # no bar drawn into a log
    every_line_is_ours = [line for line in run.stderr.splitlines()
                          if not re.match(r"\d\d:\d\d:\d\d (INFO|DEBUG) armor[.\w]*: ", line)]
    assert every_line_is_ours == []  # no warnings, tracebacks or bars from the libraries underneath
