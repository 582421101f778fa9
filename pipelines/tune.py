"""Sweep the fused model's margin, dimension, learning rate and fusion variant with Ray Tune.

Every trial trains with the same epoch trainer as `armor train` and reports validation NDCG@10
after each epoch with a checkpoint; ASHA stops weak trials early. A trial trains in its own
process by default, or, with `--trial-workers N`, as a Ray Train run of N data-parallel
workers. Trials reserve their CPUs (or a GPU) explicitly and at most as many run at once as
the cluster can hold, so a sweep never starves itself (Tune over nested trainers deadlocks on
small machines otherwise). An interrupted sweep resumes with `--resume`: finished trials are
kept, unfinished ones continue from their checkpoints. The winner is chosen on validation,
retrained with early stopping, and scored on test once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from armor.config import FusionConfig, TrainConfig
from pipelines.cli import add_common, stage_main
from pipelines.tracking import TrialTracker, add_tracking_arguments, options, stage_run

log = logging.getLogger("armor.tune")

METRIC = "val_ndcg@10"


def search_space(args: argparse.Namespace) -> dict[str, Any]:
    from ray import tune

    return {"margin": tune.uniform(args.margin_min, args.margin_max),
            "out_dim": tune.choice(args.dims),
            "lr": tune.loguniform(args.lr_min, args.lr_max),
            "variant": tune.choice(args.variants)}


def apply_sample(job, sample: dict[str, Any]):  # noqa: ANN001, ANN201 - TrainJob in and out
    """The base job with a trial's sampled values merged in (and validated by the dataclasses)."""
    fusion = dataclasses.replace(job.fusion, out_dim=int(sample["out_dim"]), variant=sample["variant"])
    train = dataclasses.replace(job.train, margin=float(sample["margin"]), lr=float(sample["lr"]))
    model = "fused" if sample["variant"] == "full" else "fused-paper"
    return dataclasses.replace(job, model=model, fusion=fusion, train=train)


SAMPLED = ("margin", "out_dim", "lr", "variant")


def trial_job(config: dict[str, Any]):  # noqa: ANN201 - (TrainJob, sample)
    """A trial's job and sampled values from its config. The base job is plain data in the param
    space: Tune serialises it into its experiment state, and objects do not come back as
    themselves from a restored sweep."""
    from armor.config import from_dict
    from pipelines.train import TrainJob

    sample = {k: config[k] for k in SAMPLED}
    return apply_sample(from_dict(TrainJob, config["job"]), sample), sample


def tune_trial(config: dict[str, Any]) -> None:
    """One trial: resume from its checkpoint if Tune restored it, report every epoch."""
    import ray.tune
    import torch

    from armor.models.content import EncoderTrainer
    from pipelines.train import _load, build_model

    job, sample = trial_job(config)
    torch.set_num_threads(max(1, int(config["threads"])))
    bench = _load(job)
    model = build_model(job, bench)
    trainer = EncoderTrainer(model, bench.data.train, data=bench.data)
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_state_dict(torch.load(Path(directory) / "state.pt", weights_only=False))
    tracker = TrialTracker(**config["tracker"]) if config.get("tracker") else None
    if tracker is not None:
        tracker.start_trial(ray.tune.get_context().get_trial_name(), job, sample)
    try:
        while not trainer.done:
            record = trainer.run_epoch()
            if tracker is not None:
                tracker.log_epoch(record)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(trainer.state_dict(), Path(tmp) / "state.pt")
                ray.tune.report({METRIC: record["val_ndcg@10"], "epoch": record["epoch"], "loss": record["loss"]},
                                checkpoint=ray.tune.Checkpoint.from_directory(tmp))
    finally:
        if tracker is not None:
            tracker.end_trial()


def tune_trial_on_ray_train(config: dict[str, Any]) -> None:
    """One trial as its own Ray Train run (``--trial-workers N``): N data-parallel workers, each
    epoch's report forwarded to Tune (and to the trial's MLflow run). The run is named after the
    trial, so a restored sweep's trial picks its Ray Train run up from its last checkpoint."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.train import _fit_on_ray

    job, sample = trial_job(config)
    trial = ray.tune.get_context().get_trial_id()
    tracker = TrialTracker(**config["tracker"]) if config.get("tracker") else None
    callbacks = [TuneReportCallback()]
    if tracker is not None:
        tracker.start_trial(ray.tune.get_context().get_trial_name(), job, sample)
        callbacks.append(_epoch_logger(tracker.uri, tracker.run_id))
    try:
        _fit_on_ray(job, workers=int(config["trial_workers"]), use_gpu=bool(config["use_gpu"]), max_failures=2,
                    storage=Path(config["train_storage"]), name=f"trial-{trial}", callbacks=callbacks)
    finally:
        if tracker is not None:
            tracker.end_trial()


def _epoch_logger(uri: str, run_id: str):  # noqa: ANN202 - a ray.train UserCallback
    """A Ray Train callback, run in the Train controller, logging each epoch rank 0 reports to
    ``run_id`` as it arrives: Tune may stop the trial before the run returns."""
    from ray.train import UserCallback

    class EpochLogger(UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:  # noqa: ANN001
            from mlflow import MlflowClient

            from armor.tracking.runs import TrackedRun

            record = metrics[0]
            run = TrackedRun(run_id=run_id, experiment_id="", uri=uri, client=MlflowClient(tracking_uri=uri))
            run.log_metrics({k: record[k] for k in ("val_ndcg@10", "loss") if k in record},
                            step=int(record["epoch"]))

    return EpochLogger()


def sweep(args: argparse.Namespace, job, tracker: TrialTracker | None = None):  # noqa: ANN001, ANN201
    """Run (or resume) the sweep; returns Tune's ResultGrid."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    storage = (Path(args.workspace) / "tune").resolve()
    if args.trial_workers < 0:
        from armor.errors import ConfigError

        raise ConfigError(f"--trial-workers: must be 0 (in-process trials) or a worker count, got {args.trial_workers}")
    if args.trial_workers:
        # The trial itself only waits on its Ray Train run, whose workers hold the CPUs (and
        # GPUs); a trial holding a whole CPU too deadlocks a 2-CPU machine (see STACK_NOTES).
        trainable = tune.with_resources(tune_trial_on_ray_train, {"cpu": 0.01})
    else:
        trainable = tune.with_resources(tune_trial, resources(args))
    if args.resume:
        path = storage / args.name
        if not tune.Tuner.can_restore(str(path)):
            from armor.errors import ConfigError

            raise ConfigError(f"--resume: no sweep to resume at {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per_trial = args.trial_workers or args.cpus_per_trial  # a Ray Train worker takes one CPU
        fits = cpus // max(per_trial, 1e-9)
        if args.use_gpu:
            fits = min(fits, int(ray.cluster_resources().get("GPU", 0)) // max(args.trial_workers, 1))
        concurrent = args.max_concurrent or max(1, int(fits))
        tuner = tune.Tuner(
            trainable,
            param_space={**search_space(args), "job": dataclasses.asdict(job),
                         "threads": max(1, int(args.cpus_per_trial)),
                         "trial_workers": args.trial_workers, "use_gpu": args.use_gpu,
                         "train_storage": str(storage / args.name / "ray_train"),
                         "tracker": None if tracker is None else tracker.__getstate__()},
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=args.samples, max_concurrent_trials=concurrent,
                scheduler=ASHAScheduler(max_t=job.train.epochs, grace_period=args.grace_period, reduction_factor=2),
                search_alg=None),
            run_config=tune.RunConfig(name=args.name, storage_path=str(storage),
                                      failure_config=tune.FailureConfig(max_failures=2)))
    return tuner.fit()


def resources(args: argparse.Namespace) -> dict[str, float]:
    return {"cpu": args.cpus_per_trial, "gpu": 1.0 if args.use_gpu else 0.0}


def best_sample(results) -> tuple[dict[str, Any], float, int]:  # noqa: ANN001
    """The best (sample, validation score, epoch) over every epoch of every trial."""
    best = results.get_best_result(metric=METRIC, mode="max", scope="all")
    frame = best.metrics_dataframe
    row = frame.loc[frame[METRIC].idxmax()]
    sample = {k: best.config[k] for k in SAMPLED}
    return sample, float(row[METRIC]), int(row["epoch"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fusion, train = FusionConfig(), TrainConfig()
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--split", default="random")
    parser.add_argument("--missing-modality", choices=("exclude", "impute"), default="exclude")
    parser.add_argument("--name", default="fused-sweep", help="sweep name under WORKSPACE/tune")
    parser.add_argument("--resume", action="store_true",
                        help="resume the interrupted sweep of this name (with the same --trial-workers)")
    parser.add_argument("--samples", type=int, default=8, help="trials to sample")
    parser.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a trial can be stopped")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per trial (per trial worker)")
    parser.add_argument("--trial-workers", type=int, default=0, metavar="N",
                        help="run each trial as a Ray Train run with N data-parallel workers, one CPU "
                             "(and GPU) each; 0 (default): each trial trains in its own process")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="trials at once (default: as many as the cluster's CPUs hold)")
    space = parser.add_argument_group("search space")
    space.add_argument("--margin-min", type=float, default=0.05)
    space.add_argument("--margin-max", type=float, default=0.5)
    space.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256, 512], help="embedding dimensions d")
    space.add_argument("--lr-min", type=float, default=3e-4)
    space.add_argument("--lr-max", type=float, default=3e-3)
    space.add_argument("--variants", nargs="+", choices=("full", "paper"), default=["full", "paper"])
    fixed = parser.add_argument_group("fixed settings")
    fixed.add_argument("--dim", type=int, default=fusion.dim, help="attention width")
    fixed.add_argument("--epochs", type=int, default=train.epochs)
    fixed.add_argument("--steps-per-epoch", type=int, default=None)
    fixed.add_argument("--batch-size", type=int, default=train.batch_size)
    fixed.add_argument("--patience", type=int, default=train.patience)
    fixed.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-retrain", action="store_true", help="stop after the sweep (no retrain, no test)")
    add_tracking_arguments(parser)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from armor.config import EvalConfig
    from armor.eval.protocol import evaluate
    from pipelines.ray_utils import ray_session
    from pipelines.train import TrainJob, _load, train

    job = TrainJob(workspace=str(args.workspace.resolve()), split=args.split, model="fused",
                   missing_modality=args.missing_modality, fusion=FusionConfig(dim=args.dim),
                   train=TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                     batch_size=args.batch_size, patience=args.patience, seed=args.seed))
    tracking = options(args)
    with ray_session(), stage_run("tune", job.workspace, job, name=args.name, **tracking) as parent:
        # The experiment and the parent run exist before any trial starts (see STACK_NOTES).
        tracker = None if parent is None else TrialTracker(parent.uri, parent.run_id, args.experiment)
        if parent is not None:
            parent.log_params({"samples": args.samples, "cpus_per_trial": args.cpus_per_trial,
                               "space.dims": args.dims, "space.variants": args.variants,
                               "space.margin": [args.margin_min, args.margin_max],
                               "space.lr": [args.lr_min, args.lr_max]})
        results = sweep(args, job, tracker)
        if tracker is not None:
            tracker.close_stopped_trials()
        errors = [r.error for r in results if r.error is not None]
        if errors:
            log.warning("%d trials failed; first: %s", len(errors), errors[0])
        sample, score, epoch = best_sample(results)
        print(f"best of {len(results)} trials on validation: {sample} -> NDCG@10 {score:.4f} at epoch {epoch}")
        if parent is not None:
            parent.log_params({f"best.{k}": v for k, v in sample.items()})
            parent.log_metrics({"best_val_ndcg@10": score, "best_epoch": epoch, "trials": len(results),
                                "failed_trials": len(errors)})
        if args.no_retrain:
            return 0
        winner = apply_sample(job, sample)
        import torch

        # The trial's thread count: float sums in another order drift over hundreds of steps.
        torch.set_num_threads(max(1, int(args.cpus_per_trial)))
        summary = train(winner, local=True, name=f"{args.name}-best", tracking=tracking)
        from armor.models.base import load_recommender

        bench = _load(winner)
        model = load_recommender(Path(args.workspace) / "models" / f"{args.name}-best" / "model")
        test = evaluate(model, bench.data, "test", EvalConfig(bootstrap_samples=0))  # once, after selection
        if parent is not None:
            parent.log_metrics({f"test_{k}": v for k, v in test.means.items()})
    print(f"retrained winner: validation NDCG@10 {summary['valid']['ndcg@10']:.4f}; "
          f"test NDCG@10 {test.means['ndcg@10']:.4f}, Recall@10 {test.means['recall@10']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.tune", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
