"""Sweep the fused model's margin, dimension, learning rate and fusion variant (or ARMoR-Graph's
learning rate, temperature, depth and regularisation, with --model armor-graph) with Ray Tune.

Every trial trains with the same trainer as `armor train` and reports validation NDCG@10 after
each epoch with a checkpoint; ASHA stops weak trials early. A trial trains in its own process by
default, or, with `--trial-workers N`, as a Ray Train run of N data-parallel workers. Trials
reserve their CPUs (or a GPU) explicitly and at most as many run at once as the cluster can hold,
so a sweep never starves itself (Tune over nested trainers deadlocks on small machines
otherwise). An interrupted sweep resumes with `--resume`: finished trials are kept, unfinished
ones continue from their checkpoints. The winner is chosen on validation, retrained with early
stopping, and scored on test once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from armor.config import setting
from armor.errors import ConfigError
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.tracking import Tracking, TrialTracker, add_tracking_arguments, stage_run, tracking_from_args
from pipelines.train import Placement, TrainJob, add_settings_arguments, settings_from_args

if TYPE_CHECKING:
    from ray.train import UserCallback
    from ray.tune import ResultGrid

log = logging.getLogger("armor.tune")

METRIC = "val_ndcg@10"
SAMPLED = {"fused": ("margin", "out_dim", "lr", "variant"), "armor-graph": ("lr", "temperature", "layers", "reg")}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    margin_min: float = setting(0.05, "lowest triplet margin")
    margin_max: float = setting(0.5, "highest triplet margin")
    out_dims: tuple[int, ...] = setting((64, 128, 256, 512), "retrieval dimensions (the fusion's out_dim, "
                                                              "--out-dim of `armor train`) to try")
    lr_min: float = setting(3e-4, "lowest learning rate (log-uniform)")
    lr_max: float = setting(3e-3, "highest learning rate (log-uniform)")
    variants: tuple[Literal["full", "paper"], ...] = setting(("full", "paper"), "fusion variants to try")

    def __post_init__(self) -> None:
        if not 0 <= self.margin_min <= self.margin_max:
            raise ConfigError(f"--margin-min/--margin-max: need 0 <= min <= max, got {self.margin_min}, "
                              f"{self.margin_max}")
        if not 0 < self.lr_min <= self.lr_max:
            raise ConfigError(f"--lr-min/--lr-max: need 0 < min <= max, got {self.lr_min}, {self.lr_max}")


@dataclasses.dataclass(frozen=True)
class GraphSpace:
    """ARMoR-Graph's search space (``--model armor-graph``)."""

    graph_lr_min: float = setting(1e-3, "lowest learning rate (log-uniform)")
    graph_lr_max: float = setting(2e-2, "highest learning rate (log-uniform)")
    temperature_min: float = setting(0.1, "lowest softmax temperature")
    temperature_max: float = setting(0.4, "highest softmax temperature")
    layer_counts: tuple[int, ...] = setting((1, 2, 3), "propagation depths to try")
    reg_min: float = setting(1e-5, "lowest L2 (log-uniform)")
    reg_max: float = setting(1e-3, "highest L2 (log-uniform)")

    def __post_init__(self) -> None:
        for low, high in (("graph_lr_min", "graph_lr_max"), ("temperature_min", "temperature_max"),
                          ("reg_min", "reg_max")):
            if not 0 < getattr(self, low) <= getattr(self, high):
                raise ConfigError(f"--{low.replace('_', '-')}/--{high.replace('_', '-')}: need 0 < min <= max")


@dataclasses.dataclass(frozen=True)
class TuneJob:
    """A sweep over ``space`` (fused) or ``graph_space`` (armor-graph) around the fixed settings of ``base``."""

    base: TrainJob
    space: SearchSpace = SearchSpace()
    graph_space: GraphSpace = GraphSpace()
    name: str = setting("fused-sweep", "sweep name under WORKSPACE/tune")
    resume: bool = setting(False, "resume the interrupted sweep of this name (with the same --trial-workers)")
    samples: int = setting(8, "trials to sample")
    grace_period: int = setting(2, "ASHA: epochs before a trial can be stopped")
    cpus_per_trial: float = setting(1.0, "CPUs an in-process trial reserves (and its torch threads)")
    use_gpu: bool = setting(False, "one GPU per trial (per trial worker)")
    trial_workers: int = setting(0, "run each trial as a Ray Train run with N data-parallel workers, one CPU "
                                    "(and GPU) each; 0: each trial trains in its own process")
    max_concurrent: int | None = setting(None, "trials at once (default: as many as the cluster's CPUs hold)")
    retrain: bool = setting(True, "retrain the sweep's winner and score it on test once (off: stop after the sweep)")

    def __post_init__(self) -> None:
        if self.trial_workers < 0:
            raise ConfigError(f"--trial-workers: must be 0 (in-process trials) or a worker count, "
                              f"got {self.trial_workers}")
        if self.samples < 1:
            raise ConfigError(f"--samples: must be >= 1, got {self.samples}")


def apply_sample(job: TrainJob, sample: dict[str, Any]) -> TrainJob:
    """The base job with a trial's sampled values merged in (and validated by the dataclasses)."""
    if job.model == "armor-graph":
        settings = job.settings.replace("armor_graph", lr=float(sample["lr"]), reg=float(sample["reg"]),
                                        temperature=float(sample["temperature"]), layers=int(sample["layers"]))
        return dataclasses.replace(job, settings=settings)
    settings = job.settings.replace("fusion", out_dim=int(sample["out_dim"]), variant=sample["variant"])
    settings = settings.replace("train", margin=float(sample["margin"]), lr=float(sample["lr"]))
    model = "fused" if sample["variant"] == "full" else "fused-paper"
    return dataclasses.replace(job, model=model, settings=settings)


def trial_job(config: dict[str, Any]) -> tuple[TrainJob, dict[str, Any]]:
    """A trial's job and sampled values from its config. The base job is plain data in the param
    space: Tune serialises it into its experiment state, and objects do not come back as
    themselves from a restored sweep. The workspace is the one the sweep lives in now
    (``sweep_home``), so a sweep copied or moved with its workspace resumes there."""
    from armor.config import from_dict

    job = from_dict(TrainJob, config["job"])
    home = sweep_home()
    if home is not None:
        job = dataclasses.replace(job, workspace=str(home[0]))
    sample = {k: config[k] for k in sampled(job)}
    return apply_sample(job, sample), sample


def trial_tracker(config: dict[str, Any], job: TrainJob) -> TrialTracker | None:
    """The trial's MLflow logger; when the sweep logged to its workspace's own SQLite store and has
    moved with it, the store where it lives now."""
    if not config.get("tracker"):
        return None
    state = dict(config["tracker"])
    made_in = str(Path(config["job"]["workspace"]).resolve() / "mlflow.db")
    if state["uri"].endswith(made_in) and job.workspace != config["job"]["workspace"]:
        from armor.tracking.runs import tracking_uri

        state["uri"] = tracking_uri(job.workspace)
    return TrialTracker(**state)


def sweep_home() -> tuple[Path, Path] | None:
    """(workspace, Ray Train storage) of the running trial's sweep, from where the trial runs:
    WORKSPACE/tune/NAME/TRIAL (None outside a Tune trial laid out so)."""
    import ray.tune

    try:
        trial = Path(ray.tune.get_context().get_trial_dir())
    except (AttributeError, RuntimeError, TypeError):
        return None
    sweep = trial.parent
    return (sweep.parent.parent, sweep / "ray_train") if sweep.parent.name == "tune" else None


def sampled(job: TrainJob) -> tuple[str, ...]:
    return SAMPLED["armor-graph" if job.model == "armor-graph" else "fused"]


def tune_trial(config: dict[str, Any]) -> None:
    """One trial: resume from its checkpoint if Tune restored it, report every epoch."""
    import ray.tune
    import torch

    from armor.training.trainer import Trainer
    from pipelines.train import STATE_FILE, build, load_job_data

    job, sample = trial_job(config)
    torch.set_num_threads(max(1, int(config["threads"])))
    bench = load_job_data(job)
    trainer = Trainer(build(job, bench), bench.data.train, data=bench.data)
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_state_dict(torch.load(Path(directory) / STATE_FILE, weights_only=False))
    tracker = trial_tracker(config, job)
    if tracker is not None:
        tracker.start_trial(ray.tune.get_context().get_trial_name(), job, sample)
    try:
        while not trainer.done:
            record = trainer.run_epoch()
            if tracker is not None:
                tracker.log_epoch(record)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(trainer.state_dict(), Path(tmp) / STATE_FILE)
                ray.tune.report({METRIC: record[METRIC], "epoch": record["epoch"], "loss": record["loss"]},
                                checkpoint=ray.tune.Checkpoint.from_directory(tmp))
    finally:
        if tracker is not None:
            tracker.end_trial()


# What a trial that only waits on its Ray Train run reserves for itself (STACK_NOTES: Tune over
# TorchTrainers deadlocks on 2 CPUs when the trial holds a whole CPU).
TRIAL_CPU = 0.01


def tune_trial_on_ray_train(config: dict[str, Any]) -> None:
    """One trial as its own Ray Train run (``--trial-workers N``): N data-parallel workers, each
    epoch's report forwarded to Tune (and to the trial's MLflow run). The run is named after the
    trial, so a restored sweep's trial picks its Ray Train run up from its last checkpoint."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.train import fit_on_ray

    job, sample = trial_job(config)
    trial = ray.tune.get_context().get_trial_id()
    tracker = trial_tracker(config, job)
    callbacks = [TuneReportCallback()]
    if tracker is not None:
        tracker.start_trial(ray.tune.get_context().get_trial_name(), job, sample)
        callbacks.append(_epoch_logger(tracker.uri, tracker.run_id))
    try:
        workers = int(config["trial_workers"])
        # The trial holds TRIAL_CPU itself: its N workers take the rest of N CPUs, so a sweep of
        # N-worker trials fits an N-CPU machine (whole-CPU workers never could: they wait forever).
        placement = Placement(workers=workers, use_gpu=bool(config["use_gpu"]), max_failures=2,
                              cpus_per_worker=1.0 - TRIAL_CPU / workers)
        home = sweep_home()
        storage = home[1] if home is not None else Path(config["train_storage"])
        fit_on_ray(job, placement, storage=storage, name=f"trial-{trial}", callbacks=callbacks)
    finally:
        if tracker is not None:
            tracker.end_trial()


def _epoch_logger(uri: str, run_id: str) -> UserCallback:
    """A Ray Train callback, run in the Train controller, logging each epoch rank 0 reports to
    ``run_id`` as it arrives: Tune may stop the trial before the run returns."""
    from ray.train import UserCallback

    class EpochLogger(UserCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            from mlflow import MlflowClient

            from armor.tracking.runs import TrackedRun

            record = metrics[0]
            run = TrackedRun(run_id=run_id, experiment_id="", uri=uri, client=MlflowClient(tracking_uri=uri))
            run.log_metrics({k: record[k] for k in (METRIC, "loss") if k in record}, step=int(record["epoch"]))

    return EpochLogger()


def search_space(job: TuneJob) -> dict[str, Any]:
    from ray import tune

    if job.base.model == "armor-graph":
        graph = job.graph_space
        return {"lr": tune.loguniform(graph.graph_lr_min, graph.graph_lr_max),
                "temperature": tune.uniform(graph.temperature_min, graph.temperature_max),
                "layers": tune.choice(list(graph.layer_counts)), "reg": tune.loguniform(graph.reg_min, graph.reg_max)}
    space = job.space
    return {"margin": tune.uniform(space.margin_min, space.margin_max), "out_dim": tune.choice(list(space.out_dims)),
            "lr": tune.loguniform(space.lr_min, space.lr_max), "variant": tune.choice(list(space.variants))}


def concurrency(job: TuneJob) -> int:
    """Trials at once: what the cluster's CPUs (and GPUs) hold, unless ``max_concurrent`` says."""
    import ray

    if job.max_concurrent:
        return job.max_concurrent
    resources = ray.cluster_resources()
    per_trial = job.trial_workers or job.cpus_per_trial  # a Ray Train worker takes one CPU
    fits = int(resources.get("CPU", 1)) // max(per_trial, 1e-9)
    if job.use_gpu:
        fits = min(fits, int(resources.get("GPU", 0)) // max(job.trial_workers, 1))
    return max(1, int(fits))


def sweep(job: TuneJob, tracker: TrialTracker | None = None) -> ResultGrid:
    """Run (or resume) the sweep; returns Tune's ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    storage = (Path(job.base.workspace) / "tune").resolve()
    if job.trial_workers:
        # The trial itself only waits on its Ray Train run, whose workers hold the CPUs (and
        # GPUs); a trial holding a whole CPU too deadlocks a 2-CPU machine (see STACK_NOTES).
        trainable = tune.with_resources(tune_trial_on_ray_train, {"cpu": TRIAL_CPU})
    else:
        trainable = tune.with_resources(tune_trial, {"cpu": job.cpus_per_trial, "gpu": float(job.use_gpu)})
    if job.resume:
        path = storage / job.name
        if not tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"--resume: no sweep to resume at {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True).fit()
    param_space = {**search_space(job), "job": dataclasses.asdict(job.base),
                   "threads": max(1, int(job.cpus_per_trial)), "trial_workers": job.trial_workers,
                   "use_gpu": job.use_gpu, "train_storage": str(storage / job.name / "ray_train"),
                   "tracker": None if tracker is None else tracker.__getstate__()}
    section = "armor_graph" if job.base.model == "armor-graph" else "train"
    scheduler = ASHAScheduler(max_t=job.base.settings[section].epochs, grace_period=job.grace_period,
                              reduction_factor=2)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=job.samples,
                                    max_concurrent_trials=concurrency(job), scheduler=scheduler),
        run_config=tune.RunConfig(name=job.name, storage_path=str(storage),
                                  failure_config=tune.FailureConfig(max_failures=2))).fit()


def best_sample(results: ResultGrid) -> tuple[dict[str, Any], float, int]:
    """The best (sample, validation score, epoch) over every epoch of every trial."""
    from armor.config import from_dict

    best = results.get_best_result(metric=METRIC, mode="max", scope="all")
    frame = best.metrics_dataframe
    row = frame.loc[frame[METRIC].idxmax()]
    sample = {k: best.config[k] for k in sampled(from_dict(TrainJob, best.config["job"]))}
    return sample, float(row[METRIC]), int(row["epoch"])


def tune(job: TuneJob, tracking: Tracking = Tracking()) -> dict[str, Any]:
    """Sweep, pick the best trial on validation, retrain it and score it on test once."""
    from pipelines.ray_utils import ray_session

    with ray_session(), stage_run("tune", job.base.workspace, job.base, name=job.name, tracking=tracking) as parent:
        # The experiment and the parent run exist before any trial starts (see STACK_NOTES).
        tracker = None if parent is None else TrialTracker(parent.uri, parent.run_id, tracking.experiment)
        if parent is not None:
            parent.log_params({"samples": job.samples, "cpus_per_trial": job.cpus_per_trial,
                               **{f"space.{k}": v for k, v in dataclasses.asdict(job.space).items()}})
        results = sweep(job, tracker)
        if tracker is not None:
            tracker.close_stopped_trials()
        errors = [r.error for r in results if r.error is not None]
        if errors:
            log.warning("%d trials failed; first: %s", len(errors), errors[0])
        sample, score, epoch = best_sample(results)
        outcome = {"sample": sample, "valid_ndcg@10": score, "epoch": epoch, "trials": len(results),
                   "failed_trials": len(errors)}
        if parent is not None:
            parent.log_params({f"best.{k}": v for k, v in sample.items()})
            parent.log_metrics({"best_val_ndcg@10": score, "best_epoch": epoch, "trials": len(results),
                                "failed_trials": len(errors)})
        if job.retrain:
            outcome.update(retrain_winner(job, sample, tracking))
            if parent is not None:
                parent.log_metrics({f"test_{k}": v for k, v in outcome["test"].items()})
    return outcome


def retrain_winner(job: TuneJob, sample: dict[str, Any], tracking: Tracking) -> dict[str, Any]:
    """Retrain the chosen sample in this process (early-stopped on validation) and score test once."""
    import torch

    from armor.config import EvalConfig
    from armor.eval.protocol import evaluate
    from armor.models.base import load_recommender
    from pipelines.train import load_job_data, train

    winner = dataclasses.replace(apply_sample(job.base, sample), name=f"{job.name}-best")
    # The trial's thread count: float sums in another order drift over hundreds of steps.
    torch.set_num_threads(max(1, int(job.cpus_per_trial)))
    summary = train(winner, Placement(local=True), tracking)
    record_sweep(Path(job.base.workspace) / "models" / winner.output, job, sample)
    model = load_recommender(Path(job.base.workspace) / "models" / winner.output / "model")
    test = evaluate(model, load_job_data(winner).data, "test", EvalConfig(bootstrap=0), progress=True)  # once
    return {"retrained_valid": summary["valid"], "test": test.means}


def record_sweep(directory: Path, job: TuneJob, sample: dict[str, Any]) -> None:
    """The retrained winner's metrics.json says how it was chosen: this sweep's trials, not a search of
    its own (the report's tuning-budget table reads it)."""
    import json

    from armor.eval.claims import SWEEP
    from armor.io import write_text
    from armor.workspace import METRICS_FILE

    metrics = json.loads((directory / METRICS_FILE).read_text())
    metrics["search"] = {"space_name": f"{SWEEP} {job.name} (ASHA)", "trials": job.samples,
                         "chosen": {f"sweep.{k}": v for k, v in sample.items()}, "at_edge": []}
    write_text(json.dumps(metrics, indent=2, default=str) + "\n", directory / METRICS_FILE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path, help="workspace with the split to sweep on")
    parser.add_argument("--split", default="random", help="split name under WORKSPACE/splits (default random)")
    parser.add_argument("--model", choices=tuple(SAMPLED), default="fused",
                        help="fused (with --variants, both fusions) or armor-graph (default fused)")
    add_dataclass_arguments(parser, TuneJob, exclude=("base", "space", "graph_space"))
    add_dataclass_arguments(parser.add_argument_group("search space (fused)"), SearchSpace)
    add_dataclass_arguments(parser.add_argument_group("search space (armor-graph)"), GraphSpace)
    add_settings_arguments(parser, sections=("fusion", "train", "armor_graph"))
    add_tracking_arguments(parser)
    add_common(parser)


def job_from_args(args: argparse.Namespace) -> TuneJob:
    base = TrainJob(workspace=str(args.workspace.resolve()), model=args.model, split=args.split,
                    settings=settings_from_args(args, sections=("fusion", "train", "armor_graph")))
    return dataclass_from_args(TuneJob, args, base=base, space=dataclass_from_args(SearchSpace, args),
                               graph_space=dataclass_from_args(GraphSpace, args))


def run(args: argparse.Namespace) -> int:
    outcome = tune(job_from_args(args), tracking_from_args(args))
    print(f"best of {outcome['trials']} trials on validation: {outcome['sample']} -> NDCG@10 "
          f"{outcome['valid_ndcg@10']:.4f} at epoch {outcome['epoch']}")
    if "test" in outcome:
        print(f"retrained winner: validation NDCG@10 {outcome['retrained_valid']['ndcg@10']:.4f}; "
              f"test NDCG@10 {outcome['test']['ndcg@10']:.4f}, Recall@10 {outcome['test']['recall@10']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.tune", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
