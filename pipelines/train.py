"""Train a recommender on a workspace split with Ray Train (or in this process with --local).

Every trainable model trains through the one trainer (`armor.training.trainer.Trainer`): inside a
TorchTrainer worker it reports every epoch with a checkpoint of the trainer's whole state, so a
killed worker (or driver) resumes from the last one, and the final checkpoint holds the finished
model. Data-parallel models train with --workers N and rank 0 validates: in the fusions each
worker draws its slice of every global batch of co-liked pairs and embeddings are all-gathered so
negatives are mined from the global batch; in ARMoR-Graph each worker takes its slice of every
global batch of (user, positive) pairs and the workers sum their gradients. Interaction models
(BPR, LightGCN, ALS) train in one worker. With
--trials N a model's settings are searched on validation over its registry search space, in this
process (the same sampler and budget for every model: ``armor.training.search``). Models with
nothing to train (raw features, popularity, random) fit in this process. Early stopping and every
choice use validation NDCG@10; test is never looked at here (`armor evaluate --on test` or the
report does that, once).

Once validation has chosen the settings and the epoch count, the model is refit on train +
validation with them for exactly that many epochs (no early stopping; --no-refit keeps the model
trained on train), so that at test time every model has seen the same positives. With --seeds the
chosen settings are refit once per seed. Outputs in WORKSPACE/models/SPLIT/NAME/ (NAME.seedS for
every seed after the first; NAME~fold-in, with --keep-fold-in, for the model trained on train
alone): the model, item_embeddings.parquet and a FAISS index (embedding models), metrics.json
(the settings it was trained with, the search, validation scores, epochs).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from armor.config import setting
from armor.models.registry import MODELS, SECTIONS, ModelSettings
from armor.workspace import seed_name
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.tracking import Tracking, add_tracking_arguments, stage_run, tracking_from_args

if TYPE_CHECKING:
    import ray.train
    import scipy.sparse as sp

    from armor.data.benchmark import Benchmark
    from armor.data.splits import SplitData
    from armor.models.base import Recommender

log = logging.getLogger("armor.train")

STATE_FILE = "state.pt"
MODEL_DIR = "model"
# Sections whose flags carry no prefix (--epochs, --margin, --dim): the content models' settings.
UNPREFIXED = ("fusion", "train")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """What to train on which data, as plain data (it travels to Ray workers and Tune trials)."""

    workspace: str = setting(None, "workspace written by `armor data prepare` and `armor data split`")
    model: str = setting(None, "the model to train")
    split: str = setting("random", "split name under WORKSPACE/splits")
    settings: ModelSettings = ModelSettings()
    features_dir: str | None = setting(None, "feature store (default WORKSPACE/features)")
    trials: int = setting(0, "search this many points of the model's search space on validation (0: train at "
                             "the given settings)")
    space: str = setting("default", "which of the model's registry search spaces --trials searches")
    prune: bool = setting(True, "stop a search trial early when its best validation NDCG@10 so far is below the "
                                "median of the earlier trials' at the same epoch (the median stopping rule, after "
                                "the model's patience in validations and two finished trials)")
    seeds: tuple[int, ...] | None = setting(None, "refit the chosen settings once per seed (the first seed also "
                                                  "searches; default: --seed); seed S after the first is saved as "
                                                  "NAME.seedS")
    refit: bool = setting(True, "refit the chosen settings on train + validation for the epoch count validation "
                                "chose (off: keep the model trained on train)")
    keep_fold_in: bool = setting(False, "also save the model trained on train alone as NAME~fold-in (an ablation: "
                                        "it folds the validation positives in only at test time)")
    name: str | None = setting(None, "output name under WORKSPACE/models (default: the model)")
    # A refit's fixed epoch count: train on train + validation for exactly this many epochs.
    refit_epochs: int | None = None
    # Chaos testing: kill this rank's process once, right after it reports this epoch.
    kill_rank_after_epoch: tuple[int, int] | None = None
    kill_marker: str | None = None

    def __post_init__(self) -> None:
        from armor.errors import ConfigError
        from armor.models.registry import spec

        entry = spec(self.model)
        if self.trials < 0:
            raise ConfigError(f"--trials: must be >= 0, got {self.trials}")
        if self.trials:
            entry.space(self.space)
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ConfigError(f"--seeds: give distinct seeds, got {self.seeds}")

    def with_seed(self, seed: int) -> TrainJob:
        return dataclasses.replace(self, settings=self.settings.with_seed(seed))

    @property
    def output(self) -> str:
        """The model's directory under WORKSPACE/models: SPLIT/NAME."""
        return f"{self.split}/{self.name or self.model}"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a training job runs."""

    local: bool = setting(False, "train in this process, without Ray")
    workers: int = setting(1, "Ray Train workers (data parallel: the fusions and armor-graph; the rest use one)")
    use_gpu: bool = setting(False, "one GPU per worker")
    max_failures: int = setting(3, "worker failures to recover from")
    fresh: bool = setting(False, "start over instead of resuming this exact job's last checkpoint")
    # Less than a whole CPU per worker when a Tune trial's own small CPU share must fit beside
    # the workers on the same CPUs (``pipelines.tune.tune_trial_on_ray_train``).
    cpus_per_worker: float = 1.0


def load_job_data(job: TrainJob) -> Benchmark:
    from armor.data.benchmark import load_benchmark

    return load_benchmark(job.workspace, job.split, job.features_dir, needs_features=MODELS[job.model].needs_features)


def build(job: TrainJob, bench: Benchmark, device: str = "cpu") -> Recommender:
    """The job's model, from its settings and the catalogue's features alone: what the split held
    out is never passed on (a movie is new to a model when its training matrix has no positive)."""
    from armor.models.registry import build_model

    return build_model(job.model, job.settings, bench.features, bench.present, device=device)


def training_data(job: TrainJob, bench: Benchmark) -> tuple[sp.csr_matrix, SplitData | None, int | None]:
    """(training matrix, data to validate on, fixed epoch count): train, early-stopped on validation;
    or, for a refit, train + validation for ``refit_epochs`` with no validation."""
    from armor.eval.protocol import profile

    if job.refit_epochs is None:
        return bench.data.train, bench.data, None
    return profile(bench.data, "test"), None, job.refit_epochs


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: the one trainer, resumed from the latest checkpoint, reporting every epoch
    with a checkpoint; the last checkpoint also holds the finished model."""
    import ray.train
    import ray.train.torch
    import torch

    from armor.training.trainer import Trainer

    job: TrainJob = config["job"]
    worker_logging(config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    bench = load_job_data(job)
    model = build(job, bench, device=str(ray.train.torch.get_device()))
    train, data, epochs = training_data(job, bench)
    trainer = Trainer(model, train, data=data, rank=rank, world_size=world, epochs=epochs)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_state_dict(torch.load(Path(directory) / STATE_FILE, weights_only=False))
        log.info("rank %d resumed after epoch %d", rank, trainer.epoch)
    resumed = {"resumed_runs": int(checkpoint is not None), "resumed_from_epoch": trainer.epoch}
    if MODELS[job.model].data_parallel:
        trainer.distribute(ray.train.torch.prepare_model)
    while not trainer.done:
        record = trainer.run_epoch()
        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if rank == 0:
                torch.save(trainer.state_dict(), Path(tmp) / STATE_FILE)
                if trainer.done:
                    trainer.finish().save(Path(tmp) / MODEL_DIR)
                saved = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({**record, **resumed}, checkpoint=saved)
        _maybe_kill(job, rank, trainer.epoch)


def driver_logging() -> dict[str, Any]:
    """What a worker needs to log and show progress as the driver does (its level, -q; the progress
    interval): a worker's environment is the cluster's, not the driver's shell."""
    from armor import progress

    return {"log_level": logging.getLogger("armor").getEffectiveLevel(), "progress": progress.settings()}


def worker_logging(config: dict[str, Any]) -> None:
    """Apply ``driver_logging()`` in a Ray worker (its stderr is a log file: progress comes as lines)."""
    from armor import progress

    if "log_level" in config:
        logging.getLogger("armor").setLevel(config["log_level"])
    progress.configure(**config.get("progress", {}))


def _maybe_kill(job: TrainJob, rank: int, epoch: int) -> None:
    if job.kill_rank_after_epoch is None or job.kill_marker is None:
        return
    kill_rank, kill_epoch = job.kill_rank_after_epoch
    marker = Path(job.kill_marker)
    if rank == kill_rank and epoch == kill_epoch and not marker.exists():
        import ray.train

        # Reports are registered asynchronously; wait until this epoch's checkpoint is one Ray
        # Train would resume from, so a test knows exactly where the run must pick up.
        ray.train.get_all_reported_checkpoints(timeout_s=60)
        marker.write_text(f"killed rank {rank} after epoch {epoch}\n")
        os.kill(os.getpid(), 9)


def train(job: TrainJob, placement: Placement = Placement(), tracking: Tracking = Tracking()) -> dict[str, Any]:
    """Train ``job.model``; write it, its item embeddings and its validation metrics; return the summary."""
    with stage_run("train", job.workspace, job, name=job.output, tracking=tracking) as run:
        summary = _train(job, placement)
        if run is not None:
            run.set_tags({"armor.model": job.model, "armor.name": job.output})
            run.log_params(dataclasses.asdict(placement))
            run.log_epoch_metrics([h for h in summary["history"] if "epoch" in h])
            run.log_metrics({f"val_{k}": v for k, v in summary["valid"].items()})
            run.log_metrics({"train_seconds": summary["seconds"], "catalogue": summary["catalogue"]})
            for output in summary["outputs"]:  # NAME as model_dir; each further seed as model_dir.seedS
                run.log_artifacts(Path(job.workspace) / "models" / output,
                                  artifact_path="model_dir" + output[len(job.output):])
            summary["mlflow_run_id"] = run.run_id
    return summary


def _train(job: TrainJob, placement: Placement) -> dict[str, Any]:
    """Select on validation (search or early stopping), then refit per seed; returns the first
    seed's summary (each model's own is in its metrics.json)."""
    from armor.config import EvalConfig
    from armor.eval.protocol import evaluate
    from armor.models.registry import MODELS

    say_what_is_replaced(job)
    bench = load_job_data(job)
    first = job.with_seed(job.seeds[0]) if job.seeds else job
    started = time.monotonic()
    selected, chosen, search, last_report = _select(first, bench, placement)
    select_seconds = time.monotonic() - started
    valid = evaluate(selected, bench.data, "valid", EvalConfig(bootstrap=0), name=job.output, progress=True)
    epochs = selected.best_epoch if selected.history else None
    summary = {"model": job.model, "split": job.split, "valid": {k: round(v, 6) for k, v in valid.means.items()},
               "settings": chosen.settings.of_sections(MODELS[job.model].configs), "search": search,
               "history": list(selected.history), "best_epoch": selected.best_epoch,
               "epochs_run": len(selected.history),
               **_epochs(selected), "select_seconds": round(select_seconds, 1),
               "catalogue": bench.data.n_items, "excluded_movies": bench.excluded_movies,
               "config": dataclasses.asdict(chosen), "last_report": last_report}
    if job.keep_fold_in:
        _write(selected, bench, {**summary, "seconds": round(select_seconds, 1), "refit": None},
               job, f"{job.output}{FOLD_IN}")
    summaries = []
    # A model with no seed trains the same way whatever the seed: once is enough.
    seeds = (job.seeds or (None,))[: None if has_seed(job.model) else 1]
    summary["deterministic"] = not has_seed(job.model)
    for index, seed in enumerate(seeds):
        seeded = chosen if index == 0 else chosen.with_seed(seed)
        output = job.output if index == 0 else seed_name(job.output, seed)
        began = time.monotonic()
        if job.refit:
            final, refit = _refit(seeded, bench, placement, epochs), {"on": "train+valid", "epochs": epochs}
        else:
            final, refit = (selected, None) if index == 0 else (_select(seeded, bench, placement)[0], None)
        seconds = time.monotonic() - began + (select_seconds if index == 0 else 0.0)
        summaries.append({**summary, "name": output, "seed": seed, "refit": refit, "seconds": round(seconds, 1),
                          "settings": seeded.settings.of_sections(MODELS[job.model].configs),
                          "config": dataclasses.asdict(seeded)})
        _write(final, bench, summaries[-1], job, output)
    return {**summaries[0], "outputs": [s["name"] for s in summaries]}


FOLD_IN = "~fold-in"


def say_what_is_replaced(job: TrainJob) -> None:
    """A warning naming the model this job overwrites at WORKSPACE/models/SPLIT/NAME, and how it was
    trained (its search, its validation score), so a tuned model is never replaced silently."""
    import json

    from armor.workspace import METRICS_FILE, Workspace

    metrics = Workspace(job.workspace).models / job.output / METRICS_FILE
    if not metrics.exists():
        return
    try:
        old = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError):
        return
    trials = (old.get("search") or {}).get("trials", 0)
    log.warning("replacing models/%s (%s, validation NDCG@10 %s) with a model trained with %d trials; use --name "
                "to keep both", job.output, f"searched with {trials} trials" if trials else "not searched",
                old.get("valid", {}).get("ndcg@10", "?"), job.trials)


def has_seed(model: str) -> bool:
    """Whether a seed changes what ``model`` learns (one of its settings sections has a seed)."""
    from armor.models.registry import MODELS

    return any("seed" in {f.name for f in dataclasses.fields(cls)} for cls in MODELS[model].configs.values())


def _write(model: Recommender, bench: Benchmark, summary: dict[str, Any], job: TrainJob, output: str) -> None:
    from armor.data.splits import catalogue_digest, split_digest
    from armor.workspace import Workspace, write_model

    summary = {**summary, "name": output, "catalogue_digest": catalogue_digest(bench.data.item_ids),
               "split_digest": split_digest(bench.data)}
    write_model(model, bench.data.item_ids, summary, Workspace(job.workspace).models / output)


def _epochs(model: Recommender) -> dict[str, int | None]:
    """The epoch cap and the patience (in evaluations) a trainable model's selection ran under."""
    from armor.models.base import TrainableRecommender

    if not isinstance(model, TrainableRecommender):
        return {"epoch_cap": None, "patience": None}
    schedule = model.schedule()
    return {"epoch_cap": schedule.epochs, "patience": schedule.patience * schedule.eval_every}


def _select(job: TrainJob, bench: Benchmark,
            placement: Placement) -> tuple[Recommender, TrainJob, dict | None, dict[str, Any]]:
    """(the model chosen on validation, trained on train; the job at its chosen settings; the search;
    the last report of its Ray Train run, if it ran on Ray Train)."""
    from armor.models.base import TrainableRecommender, load_recommender
    from armor.training.trainer import fit

    if job.trials:
        return (*_search(job, bench), {})
    model = build(job, bench)
    if placement.local or not isinstance(model, TrainableRecommender):
        return fit(model, bench.data.train, data=bench.data), job, None, {}
    result = fit_on_ray(job, placement, storage=Path(job.workspace) / "ray_results")
    with result.checkpoint.as_directory() as directory:
        return load_recommender(Path(directory) / MODEL_DIR), job, None, dict(result.metrics or {})


def _refit(job: TrainJob, bench: Benchmark, placement: Placement, epochs: int | None) -> Recommender:
    """The model at ``job``'s settings fitted on train + validation: for ``epochs`` epochs (no early
    stopping) when it trains over epochs, in one call otherwise."""
    from armor.eval.protocol import profile
    from armor.models.base import TrainableRecommender, load_recommender
    from armor.training.trainer import fit

    model = build(job, bench)
    if not isinstance(model, TrainableRecommender) or placement.local:
        return fit(model, profile(bench.data, "test"), epochs=epochs)
    refit = dataclasses.replace(job, refit_epochs=epochs, kill_rank_after_epoch=None, kill_marker=None)
    result = fit_on_ray(refit, placement, storage=Path(job.workspace) / "ray_results")
    with result.checkpoint.as_directory() as directory:
        return load_recommender(Path(directory) / MODEL_DIR)


def _search(job: TrainJob, bench: Benchmark) -> tuple[Recommender, TrainJob, dict[str, Any]]:
    """``job.trials`` points of the model's search space, each fitted on train and early-stopped on
    validation, in this process; the best by validation NDCG@10 wins."""
    from armor.models.registry import MODELS
    from armor.training import search, selection

    space = MODELS[job.model].space(job.space)
    seed = next((job.settings[section].seed for section in MODELS[job.model].configs
                 if hasattr(job.settings[section], "seed")), 0)
    points = search.sample_points(space, job.trials, seed)
    prune = selection.MedianStopping() if job.prune else None
    chosen, model, table = selection.search(lambda point: build(_at(job, point), bench), points, bench.data,
                                            prune=prune)
    read = MODELS[job.model].read_settings(chosen)
    pruned = sum("pruned_at" in row for row in table)
    log.info("%s search (%d trials, %d stopped by the median rule): chose %s", job.model, job.trials, pruned, read)
    return model, _at(job, chosen), {"space_name": job.space, "space": search.describe_space(space),
                                     "trials": job.trials, "pruned": pruned, "prune": "median" if prune else None,
                                     "table": table, "chosen": read, "at_edge": search.at_edge(space, read)}


def _at(job: TrainJob, point: dict[str, Any]) -> TrainJob:
    return dataclasses.replace(job, settings=job.settings.apply(point))


def run_name(job: TrainJob, workers: int) -> str:
    """The Ray Train run of this exact job: rerunning the same job resumes it from its last
    checkpoint (after a killed driver, say); any change of data, model or settings starts anew."""
    identity = {**dataclasses.asdict(job), "kill_rank_after_epoch": None, "kill_marker": None, "workers": workers}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{job.output.replace('/', '-')}-{digest}"


def fit_on_ray(job: TrainJob, placement: Placement, *, storage: Path, name: str | None = None,
               callbacks: list | None = None) -> ray.train.Result:
    """Train ``job`` in a TorchTrainer; ``name`` overrides the run's name (a Tune trial's)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.ray_utils import ray_session, train_logging_config

    workers = placement.workers if MODELS[job.model].data_parallel else 1
    if placement.workers > 1 and workers == 1:
        log.info("%s is not data-parallel: training it in one Ray Train worker, not %d", job.model, placement.workers)
    # Workers run in their own directories: give them absolute paths (on a cluster the
    # workspace must be on storage every node mounts at the same path).
    job = dataclasses.replace(job, workspace=str(Path(job.workspace).resolve()),
                              features_dir=None if job.features_dir is None else str(Path(job.features_dir).resolve()))
    run = name or run_name(job, workers)
    if placement.fresh:
        shutil.rmtree(storage / run, ignore_errors=True)
    log.info("Ray Train run %s in %s", run, storage)
    with ray_session():
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config={"job": job, **driver_logging()},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=placement.use_gpu,
                                         resources_per_worker={"CPU": placement.cpus_per_worker}),
            run_config=RunConfig(name=run, storage_path=str(storage.resolve()),
                                 failure_config=FailureConfig(max_failures=placement.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks,
                                 logging_config=train_logging_config()))
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


# --------------------------------------------------------------------------------------------
# Command line: flags generated from TrainJob, Placement and every model's config sections
# --------------------------------------------------------------------------------------------


def add_settings_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS)) -> None:
    """Flags for the config sections (--epochs, --margin, --bpr-factors, --lightgcn-patience...) and --seed."""
    for section in sections:
        group = parser.add_argument_group(f"{section} settings")
        prefix = "" if section in UNPREFIXED else f"{section}-"
        exclude = ("seed", "variant") if section == "fusion" else ("seed",)
        add_dataclass_arguments(group, SECTIONS[section], prefix=prefix, exclude=exclude)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every model's initialisation and sampling (default 0)")


def settings_from_args(args: argparse.Namespace, sections: tuple[str, ...] = tuple(SECTIONS)) -> ModelSettings:
    values = {section: dataclass_from_args(SECTIONS[section], args,
                                           prefix="" if section in UNPREFIXED else f"{section}-")
              for section in sections}
    return ModelSettings(values).with_seed(args.seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, TrainJob, exclude=("settings", "kill_rank_after_epoch", "kill_marker",
                                                       "refit_epochs"),
                            required=("workspace", "model"), choices={"model": list(MODELS)})
    add_dataclass_arguments(parser.add_argument_group("where it runs"), Placement)
    add_settings_arguments(parser)
    add_tracking_arguments(parser)
    add_common(parser)


def job_from_args(args: argparse.Namespace) -> TrainJob:
    """The job the flags describe. Only the settings sections the model reads are built (and so
    validated); flags of other sections set away from their defaults are named in a warning."""
    read = tuple(MODELS[args.model].configs)
    ignored = ignored_flags(args, tuple(s for s in SECTIONS if s not in read))
    if ignored:
        log.warning("%s does not read %s: ignored", args.model, ", ".join(ignored))
    return dataclass_from_args(TrainJob, args, settings=settings_from_args(args, read),
                               workspace=str(args.workspace), kill_rank_after_epoch=None, kill_marker=None,
                               refit_epochs=None)


def ignored_flags(args: argparse.Namespace, sections: tuple[str, ...]) -> list[str]:
    """The flags of ``sections`` whose values differ from their defaults."""
    flags = []
    for section in sections:
        prefix = "" if section in UNPREFIXED else f"{section}-"
        for field in dataclasses.fields(SECTIONS[section]):
            dest = (prefix + field.name).replace("-", "_")
            value = getattr(args, dest, field.default)
            if (tuple(value) if isinstance(value, list) else value) != field.default:
                flags.append("--" + (prefix + field.name).replace("_", "-"))
    return sorted(set(flags))


def run(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    summary = train(job, dataclass_from_args(Placement, args), tracking_from_args(args))
    valid = summary["valid"]
    print(f"{summary['name']}: validation NDCG@10 {valid['ndcg@10']:.4f}, Recall@10 {valid['recall@10']:.4f}, "
          f"HR@10 {valid['hr@10']:.4f} over {summary['catalogue']} movies; {summary['seconds']} s; "
          f"written to {Path(job.workspace) / 'models' / job.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.train", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
