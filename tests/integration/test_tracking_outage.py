"""The MLflow tracking server dies in the middle of an `armor tune` sweep and comes back: the sweep
finishes and every trial's run and every epoch's metrics are in MLflow exactly once. Beyond what
MLflow's HTTP retries ride out, the user gets one clear message, not a connection-pool traceback.

The outage lasts ARMOR_TRACKING_OUTAGE_SECONDS (default 20 s, to keep the suite short); the closing
notes give the longest one measured with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from armor.tracking.runs import TrackingError, http_retry_seconds, with_retries
from tests.mlflow_server import start_server, stop
from tests.processes import free_port, kill_tree
from tests.workspaces import make_workspace

OUTAGE = float(os.environ.get("ARMOR_TRACKING_OUTAGE_SECONDS", "20"))
EPOCHS = 6
SWEEP = ["--samples", "4", "--epochs", str(EPOCHS), "--steps-per-epoch", "6", "--batch-size", "64", "--out-dims", "16",
         "32", "--dim", "32", "--grace-period", str(EPOCHS), "--max-concurrent", "2", "--no-retrain"]


def trial_runs(client: MlflowClient, experiment: str) -> tuple[list, list]:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return ([r for r in runs if r.data.tags.get("armor.stage") == "tune"],
            [r for r in runs if r.data.tags.get("armor.stage") == "tune-trial"])


def wait_for_a_logged_epoch(client: MlflowClient, driver: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before the server could be killed"
        try:
            _, trials = trial_runs(client, "outage")
            if any(client.get_metric_history(r.info.run_id, "loss") for r in trials):
                return
        except Exception:  # the server may be busy; ask again
            pass
        time.sleep(0.5)
    pytest.fail("no trial logged an epoch in time")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.network
def test_a_sweep_rides_out_a_tracking_server_outage_and_logs_everything_once(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    root = tmp_path / "mlflow"
    root.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server, _ = start_server(root, port)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    driver = subprocess.Popen([sys.executable, "-m", "pipelines", "tune", "--workspace", str(ws), *SWEEP,
                               "--tracking-uri", url, "--experiment", "outage", "-q"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = MlflowClient(tracking_uri=url)
    try:
        wait_for_a_logged_epoch(client, driver, time.monotonic() + 240)
        kill_tree(server.pid)  # the whole server, workers included, as a crash would
        killed = time.monotonic()
        time.sleep(OUTAGE)
        server, restart = start_server(root, port)
        print(f"\ntracking server down for {time.monotonic() - killed:.0f} s (restart took {restart:.1f} s)")
        out, _ = driver.communicate(timeout=OUTAGE + 600)
        assert driver.returncode == 0, out.decode(errors="replace")[-3000:]
        parents, trials = trial_runs(client, "outage")
        assert len(parents) == 1 and len(trials) == 4
        assert all(r.info.status == "FINISHED" for r in parents + trials)
        for trial in trials:
            for metric in ("loss", "val_ndcg_at_10"):
                steps = [m.step for m in client.get_metric_history(trial.info.run_id, metric)]
                assert sorted(steps) == list(range(1, EPOCHS + 1)), (trial.info.run_name, metric, steps)
        assert parents[0].data.metrics["trials"] == 4 and parents[0].data.metrics["failed_trials"] == 0
    finally:
        if driver.poll() is None:
            kill_tree(driver.pid)
            driver.wait()
        stop(server)


def test_an_unreachable_server_beyond_the_retries_is_one_clear_message(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingError, match=r"did not answer \(experiment 'x'\) .* is it running\? .* --resume"):
        with_retries(client.get_experiment_by_name, "x", what="experiment 'x'")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    assert http_retry_seconds() == 244.0  # MLflow 3.17's 7 retries, backoff factor 2: 4 + 8 + ... + 120 s


def test_an_empty_duplicate_of_a_trial_run_left_by_a_retried_create_is_dropped(tmp_path):
    from armor.tracking.runs import PARENT_RUN_TAG, child_runs, start_run
    from pipelines.tracking import TrialTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    with start_run("outage", uri, run_name="sweep") as parent:
        # What a server killed after storing a new run, before answering, leaves: an empty run.
        orphan = client.create_run(parent.experiment_id, run_name="trial_0",
                                   tags={PARENT_RUN_TAG: parent.run_id}).info.run_id
        earlier = client.create_run(parent.experiment_id, run_name="trial_0",
                                    tags={PARENT_RUN_TAG: parent.run_id}).info.run_id
        client.log_param(earlier, "sample.lr", 0.1)  # an earlier attempt of the trial keeps its run
        tracker = TrialTracker(uri, parent.run_id, "outage")
        tracker.start_trial("trial_0", None, {"lr": 0.2})
        ours = tracker.run_id
        tracker.end_trial()
        kept = {run.info.run_id for run in child_runs(parent.run_id, uri)}
    assert kept == {earlier, ours} and orphan not in kept
