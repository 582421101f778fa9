"""`ray job submit` against a local head: a small train job runs to SUCCEEDED and lands in MLflow."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.processes import free_port, kill_tree, pids_matching
from tests.workspaces import make_workspace

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.network]

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture
def ray_head():
    """A head of our own, in a private temp dir, stopped by its own processes afterwards."""
    temp = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run([RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--num-cpus=2",
                    "--dashboard-host=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for pid in pids_matching(temp):
            kill_tree(pid)
        shutil.rmtree(temp, ignore_errors=True)
        assert not pids_matching(temp)


def test_train_job_submitted_to_a_head_succeeds_and_is_tracked(ray_head, tmp_path):
    address, env = ray_head
    ws = make_workspace(tmp_path / "ws")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The job's environment is the head's, not this client's: the URI travels in the runtime env.
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}})
    started = time.monotonic()
    job = subprocess.run(
        [RAY, "job", "submit", f"--address={address}", "--submission-id", "armor-train-test",
         "--runtime-env-json", runtime_env,
         "--working-dir", str(ROOT), "--",
         sys.executable, "-m", "pipelines", "train", "--workspace", str(ws), "--model", "fused", "--workers", "2",
         "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "64", "--dim", "32", "--out-dim", "16",
         "--heads", "2"],
        env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    status = subprocess.run([RAY, "job", "status", f"--address={address}", "armor-train-test"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "succeeded" in (status.stdout + status.stderr).lower()
    assert "validation NDCG@10" in job.stdout
    assert (ws / "models" / "random" / "fused" / "metrics.json").exists()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert any(r.data.tags.get("armor.stage") == "train" and r.info.status == "FINISHED" for r in runs)
    run = next(r for r in runs if r.data.tags.get("armor.stage") == "train")
    assert run.data.params["model"] == "fused" and "val_ndcg_at_10" in run.data.metrics
    assert time.monotonic() - started < 600
