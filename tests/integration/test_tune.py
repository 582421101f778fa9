"""Ray Tune sweeps: concurrent trials tracked in a real MLflow server, and resuming after the
driver is killed."""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from armor.errors import ConfigError
from pipelines.train import TrainJob
from pipelines.tune import TuneJob, add_arguments, best_sample, job_from_args, sweep
from tests.processes import kill_tree
from tests.workspaces import make_workspace

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMALL = ["--samples", "4", "--epochs", "3", "--steps-per-epoch", "4", "--batch-size", "64", "--out-dims", "16", "32",
         "--dim", "32", "--grace-period", "3"]


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.network
def test_four_concurrent_trials_log_every_metric_to_a_real_server(ray_local, mlflow_server, tmp_path):
    from pipelines.tune import main

    ws = make_workspace(tmp_path / "ws")
    # 4 trials x 0.5 CPU on 2 CPUs: all four run at once, each writing to the server.
    assert main(["--workspace", str(ws), *SMALL, "--cpus-per-trial", "0.5", "--tracking-uri", mlflow_server.url,
                 "--experiment", "tune-test", "--no-retrain"]) == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("armor.stage") == "tune")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    assert all(r.info.status == "FINISHED" for r in children + [parent])
    for child in children:
        # ASHA's grace period is the whole budget here, so every trial ran all 3 epochs.
        history = client.get_metric_history(child.info.run_id, "val_ndcg_at_10")
        assert [m.step for m in history] == [1, 2, 3]
        assert len(client.get_metric_history(child.info.run_id, "loss")) == 3
        assert child.data.params["sample.variant"] in ("full", "paper")
    assert parent.data.metrics["trials"] == 4 and parent.data.metrics["failed_trials"] == 0


def test_a_sweep_resumes_after_its_driver_is_killed(tmp_path, request):
    ws = make_workspace(tmp_path / "ws")
    experiment_dir = ws / "tune" / "fused-sweep"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    driver = subprocess.Popen([sys.executable, "-m", "pipelines", "tune", "--workspace", str(ws), *SMALL,
                               "--max-concurrent", "1", "--no-retrain", "--no-tracking", "-q"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # Kill the driver (and the Ray runtime it started) once the first trial has finished.
        while time.monotonic() < deadline and driver.poll() is None and not finished_trials(experiment_dir):
            time.sleep(0.5)
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        assert finished_trials(experiment_dir)
    finally:
        kill_tree(driver.pid)
        driver.wait()
    done_before = finished_trials(experiment_dir)

    ray = request.getfixturevalue("ray_local")
    assert ray.is_initialized()
    results = sweep(job_from_args(parse("--workspace", str(ws), *SMALL, "--resume")))
    assert len(results) == 4 and all(r.error is None for r in results)
    finished = finished_trials(experiment_dir)
    assert len(finished) == 4 and all(epochs == [1, 2, 3] for epochs in map(sorted, map(set, finished.values())))
    for name in done_before:  # a trial that had finished was not run again
        assert finished[name] == done_before[name] == [1, 2, 3]
    # A trial in flight at the kill resumes from its last checkpoint Tune had recorded, so it may
    # report an epoch again (Tune's results are at-least-once across a driver crash).
    sample, score, epoch = best_sample(results)
    assert 0 < score <= 1 and 1 <= epoch <= 3 and sample["variant"] in ("full", "paper")


def finished_trials(experiment_dir: Path) -> dict[str, list[int]]:
    """Trial directory -> the epochs its result.json reported, in order, for trials that reached epoch 3."""
    out = {}
    for result in experiment_dir.glob("*/result.json"):
        epochs = [json.loads(line)["training_iteration"] for line in result.read_text().splitlines() if line.strip()]
        if 3 in epochs:
            out[result.parent.name] = epochs
    return out


def test_a_negative_trial_worker_count_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--trial-workers"):
        job_from_args(parse("--workspace", str(tmp_path), "--trial-workers", "-1"))
    with pytest.raises(ConfigError, match="--trial-workers"):
        TuneJob(base=TrainJob(workspace=str(tmp_path), model="fused"), trial_workers=-1)


def test_a_sweep_over_armor_graph_samples_its_own_space(ray_local, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    job = job_from_args(parse("--workspace", str(ws), "--model", "armor-graph", "--name", "graph-sweep",
                              "--samples", "2", "--armor-graph-epochs", "2", "--grace-period", "2",
                              "--armor-graph-dim", "16", "--armor-graph-fusion-dim", "16", "--armor-graph-heads", "2",
                              "--armor-graph-reduce-dim", "16", "--armor-graph-batch-size", "1024",
                              "--cpus-per-trial", "1", "--no-retrain", "--no-tracking"))
    results = sweep(job)
    assert len(results) == 2 and all(r.error is None for r in results)
    sample, score, epoch = best_sample(results)
    assert set(sample) == {"lr", "temperature", "layers", "reg"} and 0 < score <= 1 and epoch in (1, 2)
