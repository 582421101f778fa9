"""Every stage's MLflow run, the same way: config as params, metrics, artifacts, a stage tag."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from armor.config import setting
from pipelines.cli import add_dataclass_arguments, dataclass_from_args

log = logging.getLogger("armor.tracking")

EXPERIMENT = "armor"


@dataclasses.dataclass(frozen=True)
class Tracking:
    """Where a stage logs to MLflow, if anywhere."""

    tracking_uri: str | None = setting(None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite "
                                             "in the workspace)")
    experiment: str = setting(EXPERIMENT, "MLflow experiment")
    tracking: bool = setting(True, "log the stage to MLflow")


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser.add_argument_group("MLflow"), Tracking)


def tracking_from_args(args: argparse.Namespace) -> Tracking:
    return dataclass_from_args(Tracking, args)


@contextlib.contextmanager
def stage_run(stage: str, workspace: str | Path, config: Any = None, *, tracking: Tracking = Tracking(),
              name: str | None = None, parent_run_id: str | None = None) -> Iterator[Any]:
    """An MLflow run for one stage (yields a TrackedRun, or None when tracking is off)."""
    if not tracking.tracking:
        yield None
        return
    from armor.tracking.runs import start_run, tracking_uri

    resolved = tracking_uri(workspace, tracking.tracking_uri)
    with start_run(tracking.experiment, resolved, config, run_name=name or stage, parent_run_id=parent_run_id,
                   tags={"armor.stage": stage, "armor.workspace": str(Path(workspace).resolve())}) as run:
        log.info("MLflow run %s (%s) at %s", run.run_id, stage, resolved)
        yield run


class TrialTracker:
    """Logs each Ray Tune trial as an MLflow child run of the sweep's parent run.

    Plain data (URI and run ids) so it pickles into trial processes; each trial opens its own
    client there. The experiment exists before the first trial starts (created by the driver).
    """

    def __init__(self, uri: str, parent_run_id: str, experiment: str = EXPERIMENT):
        self.uri, self.parent_run_id, self.experiment = uri, parent_run_id, experiment
        self._stack: contextlib.ExitStack | None = None
        self._run: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "parent_run_id": self.parent_run_id, "experiment": self.experiment}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def start_trial(self, trial_name: str, job: Any, sample: dict[str, Any]) -> None:
        from armor.tracking.runs import start_run

        self._stack = contextlib.ExitStack()
        self._run = self._stack.enter_context(start_run(
            self.experiment, self.uri, job, run_name=trial_name, parent_run_id=self.parent_run_id,
            tags={"armor.stage": "tune-trial"}))
        self._run.log_params({f"sample.{k}": v for k, v in sample.items()})
        self._drop_orphans(trial_name)

    def _drop_orphans(self, trial_name: str) -> None:
        """Delete this trial's runs that hold nothing: when the tracking server dies after it stored a
        new run but before it answered, MLflow's client retries and creates a second run, leaving
        the first empty (measured: one of four trials in a killed-server sweep). Ours has its params
        by now; a run of an earlier attempt of the trial has them too, so it stays."""
        from mlflow import MlflowClient

        from armor.tracking.runs import child_runs, with_retries

        client = MlflowClient(tracking_uri=self.uri)
        for run in with_retries(child_runs, self.parent_run_id, self.uri, what="trial runs"):
            if (run.info.run_name == trial_name and run.info.run_id != self._run.run_id
                    and not run.data.params and not run.data.metrics):
                with_retries(client.delete_run, run.info.run_id, what=f"empty duplicate run of {trial_name}")

    @property
    def run_id(self) -> str | None:
        """The current trial's run."""
        return None if self._run is None else self._run.run_id

    def close_stopped_trials(self) -> int:
        """Driver side, after the sweep: end the trial runs still RUNNING and return how many.

        A trial's own process ends its run, unless Tune stopped the trial (ASHA, or its last
        epoch) while it waited on a Ray Train run: then the process is gone with the run open.
        """
        from mlflow import MlflowClient

        from armor.tracking.runs import child_runs, with_retries

        client = MlflowClient(tracking_uri=self.uri)
        still_running = [r for r in child_runs(self.parent_run_id, self.uri) if r.info.status == "RUNNING"]
        for run in still_running:
            with_retries(client.set_tag, run.info.run_id, "armor.stopped_by", "tune", what="trial run tag")
            with_retries(client.set_terminated, run.info.run_id, "FINISHED", what="end trial run")
        return len(still_running)

    def log_epoch(self, record: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

    def end_trial(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._run = None, None
