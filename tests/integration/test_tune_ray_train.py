"""Tune trials that are Ray Train runs (`armor tune --trial-workers N`).

Not in test_tune.py: that module shares one Ray runtime started without the dashboard, and
Train V2 inside concurrent Tune trials needs the dashboard (see STACK_NOTES); `armor tune`
starts its own runtime with it.
"""

import mlflow
import pytest

from pipelines.tune import main
from tests.workspaces import make_workspace

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.network]


def test_each_trial_is_a_ray_train_run_reporting_every_epoch(mlflow_server, tmp_path):
    # Two data-parallel workers per trial on the 2 CPUs here: the trial's own CPU share must fit
    # beside them (whole-CPU workers waited forever for a CPU the trial held).
    ws = make_workspace(tmp_path / "ws")
    assert main(["--workspace", str(ws), "--samples", "2", "--epochs", "2", "--steps-per-epoch", "3",
                 "--batch-size", "64", "--out-dims", "16", "--dim", "32", "--grace-period", "2",
                 "--trial-workers", "2", "--name", "per-trial-train", "--no-retrain",
                 "--tracking-uri", mlflow_server.url, "--experiment", "tune-train-test"]) == 0
    runs = sorted((ws / "tune" / "per-trial-train" / "ray_train").glob("trial-*"))
    assert len(runs) == 2  # one Ray Train run per trial, each with its checkpoints
    assert all(list(run.glob("checkpoint_*")) for run in runs)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tune-train-test")
    found = client.search_runs([experiment.experiment_id])
    parent = next(r for r in found if r.data.tags.get("armor.stage") == "tune")
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_ndcg_at_10")] == [1, 2]
    assert parent.data.metrics["trials"] == 2 and parent.data.metrics["failed_trials"] == 0
    assert parent.data.metrics["best_val_ndcg_at_10"] > 0
