"""Train a recommender on a workspace split with Ray Train (or in this process with --local).

Content models (fused, text-projected, image-projected) train data-parallel in a TorchTrainer:
each worker draws its slice of every global batch of co-liked pairs, embeddings are
all-gathered so negatives are mined from the global batch, rank 0 validates after every epoch
(NDCG@10) and the run stops early when validation stops improving. Every epoch is reported with
a checkpoint, so a killed worker (or driver) resumes from the last one. BPR and LightGCN train
in one Ray Train worker (GPU if asked); LightGCN checkpoints every epoch too, while BPR
(`implicit` fits in one call) is checkpointed when done and retrained if its worker dies.
With --grid they are grid-searched on validation in this process. Raw-feature, popularity and
random models need no training. Outputs in WORKSPACE/models/NAME/: the model,
item_embeddings.parquet, metrics.json. Test is never looked at here: `armor evaluate --on test` or the report does that, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from armor.config import BPRConfig, FusionConfig, LightGCNConfig, TrainConfig
from pipelines.cli import add_common, stage_main
from pipelines.tracking import add_tracking_arguments, options

log = logging.getLogger("armor.train")

TRAINED_CONTENT = ("fused", "fused-paper", "text-projected", "image-projected")
INSTANT = ("text", "image", "popularity", "random")
INTERACTION = ("bpr", "lightgcn")
MODELS = (*TRAINED_CONTENT, *INSTANT, *INTERACTION)


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """Everything a training worker needs, as plain data (it travels to Ray workers)."""

    workspace: str
    split: str
    model: str
    fusion: FusionConfig = FusionConfig()
    train: TrainConfig = TrainConfig()
    bpr: BPRConfig = BPRConfig()
    lightgcn: LightGCNConfig = LightGCNConfig()
    missing_modality: str = "exclude"
    features_dir: str | None = None
    # BPR / LightGCN: pick hyperparameters on validation from a grid ("default": the module's
    # DEFAULT_GRID, "small": a quick one) instead of using the given config.
    grid: str | None = None
    # Chaos testing: kill this rank's process once, right after it reports this epoch.
    kill_rank_after_epoch: tuple[int, int] | None = None
    kill_marker: str | None = None


def build_model(job: TrainJob, bench, device: str = "cpu"):  # noqa: ANN001, ANN201 - Benchmark, Recommender
    from armor.models.baselines import Popularity, RandomRanker
    from armor.models.content import FeatureModel, FusionRecommender, ProjectedFeatureModel

    if job.model == "fused":
        return FusionRecommender(dataclasses.replace(job.fusion, variant="full"), job.train, bench.features,
                                 bench.present, device=device)
    if job.model == "fused-paper":
        return FusionRecommender(dataclasses.replace(job.fusion, variant="paper"), job.train, bench.features,
                                 bench.present, device=device)
    if job.model in ("text-projected", "image-projected"):
        return ProjectedFeatureModel(job.model.split("-")[0], job.fusion, job.train, bench.features, bench.present,
                                     device=device)
    if job.model in ("text", "image"):
        return FeatureModel(job.model, bench.features, bench.present)
    if job.model == "popularity":
        return Popularity()
    if job.model == "random":
        return RandomRanker(seed=job.train.seed)
    if job.model == "bpr":
        from armor.models.bpr import BPR

        return BPR(job.bpr)
    if job.model == "lightgcn":
        from armor.models.lightgcn import LightGCN

        return LightGCN(job.lightgcn, device=device)
    from armor.errors import ConfigError

    raise ConfigError(f"--model {job.model!r}: choose one of {', '.join(MODELS)}")


def _load(job: TrainJob):  # noqa: ANN202
    from armor.data.benchmark import load_benchmark

    return load_benchmark(job.workspace, job.split, job.missing_modality, job.features_dir)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: resumes from the latest checkpoint, reports every epoch with a checkpoint."""
    import ray.train
    import ray.train.torch
    import torch

    from armor.models.content import EncoderTrainer

    job: TrainJob = config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    bench = _load(job)
    device = ray.train.torch.get_device()
    model = build_model(job, bench, device=str(device))

    if job.model in INTERACTION:  # one worker, the model's own loop
        checkpoint = ray.train.get_checkpoint()
        resumed = {"resumed_runs": int(checkpoint is not None), "resumed_from_epoch": 0}
        if job.model == "lightgcn":  # a checkpoint every epoch; BPR (implicit) trains in one call
            resume = None
            if checkpoint is not None:
                with checkpoint.as_directory() as directory:
                    resume = torch.load(Path(directory) / "state.pt", weights_only=False)
                resumed["resumed_from_epoch"] = resume["epoch"]
                log.info("lightgcn resumed after epoch %d", resume["epoch"])

            def report_epoch(record: dict[str, float], state) -> None:  # noqa: ANN001
                with tempfile.TemporaryDirectory() as tmp:
                    torch.save(state(), Path(tmp) / "state.pt")
                    ray.train.report({**record, **resumed}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
                _maybe_kill(job, rank, int(record["epoch"]))

            model.fit(bench.data.train, data=bench.data, on_epoch=report_epoch, resume=resume)
        else:
            model.fit(bench.data.train, data=bench.data)
        # The last checkpoint holds the finished model and its history, which the driver loads.
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "model")
            (Path(tmp) / "history.json").write_text(json.dumps(_jsonable(getattr(model, "history", []))))
            ray.train.report({"epoch": len(getattr(model, "history", [])) or 1,
                              "val_ndcg@10": float(getattr(model, "best_score", float("nan"))), **resumed},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp))
        return

    trainer = EncoderTrainer(model, bench.data.train, data=bench.data, rank=rank, world_size=world)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_state_dict(torch.load(Path(directory) / "state.pt", weights_only=False))
        log.info("rank %d resumed after epoch %d", rank, trainer.epoch)
    resumed = {"resumed_runs": int(checkpoint is not None), "resumed_from_epoch": trainer.epoch}
    trainer.wrap(ray.train.torch.prepare_model)
    while not trainer.done:
        record = trainer.run_epoch()
        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if rank == 0:
                torch.save(trainer.state_dict(), Path(tmp) / "state.pt")
                saved = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({**record, **resumed}, checkpoint=saved)
        _maybe_kill(job, rank, trainer.epoch)


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


def train(job: TrainJob, *, workers: int = 1, use_gpu: bool = False, local: bool = False, max_failures: int = 3,
          name: str | None = None, fresh: bool = False, tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``job.model``; write it, its item embeddings and its validation metrics; return the summary.

    ``tracking``: stage_run keyword arguments (uri, experiment, enabled); logged to MLflow by default.
    """
    from pipelines.tracking import stage_run

    name = name or job.model
    with stage_run("train", job.workspace, job, name=name, **(tracking or {})) as run:
        summary = _train(job, workers=workers, use_gpu=use_gpu, local=local, max_failures=max_failures, name=name,
                         fresh=fresh)
        if run is not None:
            run.set_tags({"armor.model": job.model, "armor.name": name})
            run.log_params({"workers": workers, "use_gpu": use_gpu, "local": local})
            run.log_epoch_metrics([h for h in summary["history"] if "epoch" in h or "iteration" in h])
            run.log_metrics({f"val_{k}": v for k, v in summary["valid"].items()})
            run.log_metrics({"train_seconds": summary["seconds"], "catalogue": summary["catalogue"]})
            run.log_artifacts(Path(job.workspace) / "models" / name, artifact_path="model_dir")
            summary["mlflow_run_id"] = run.run_id
    return summary


def _train(job: TrainJob, *, workers: int, use_gpu: bool, local: bool, max_failures: int, name: str,
           fresh: bool) -> dict[str, Any]:
    import torch

    from armor.config import EvalConfig
    from armor.eval.protocol import evaluate
    from armor.workspace import Workspace

    ws = Workspace(job.workspace)
    bench = _load(job)
    started = time.monotonic()
    model = build_model(job, bench)
    history: list[dict[str, Any]] = []
    last_report: dict[str, Any] = {}
    if job.model in INSTANT:
        model.fit(bench.data.train, bench.data.valid)
    elif job.grid is not None:
        model, history = _grid_search(job, bench)
    elif local:
        model.fit(bench.data.train, data=bench.data)
        history = list(getattr(model, "history", []))
    else:
        result = _fit_on_ray(job, workers=1 if job.model in INTERACTION else workers, use_gpu=use_gpu,
                             max_failures=max_failures, storage=ws.root / "ray_results", name=name, fresh=fresh)
        with result.checkpoint.as_directory() as directory:
            if job.model in INTERACTION:
                from armor.models.base import load_recommender

                model = load_recommender(Path(directory) / "model")
                model.history = json.loads((Path(directory) / "history.json").read_text())
            else:
                from armor.models.content import EncoderTrainer

                trainer = EncoderTrainer(model, bench.data.train, data=bench.data)
                trainer.load_state_dict(torch.load(Path(directory) / "state.pt", weights_only=False))
                trainer.finish()
        history = list(getattr(model, "history", []))
        last_report = dict(result.metrics or {})
    seconds = time.monotonic() - started
    valid = evaluate(model, bench.data, "valid", EvalConfig(bootstrap_samples=0), name=name)
    summary = {"name": name, "model": job.model, "split": job.split, "seconds": round(seconds, 1),
               "valid": {k: round(v, 6) for k, v in valid.means.items()}, "history": history,
               "last_report": last_report,
               "catalogue": bench.data.n_items, "excluded_movies": bench.excluded_movies,
               "config": _jsonable(dataclasses.asdict(job))}
    write_outputs(model, bench.data.item_ids, summary, ws.models / name)
    return summary


def run_name(job: TrainJob, name: str, workers: int) -> str:
    """The Ray Train run of this exact job: rerunning the same job resumes it from its last
    checkpoint (after a killed driver, say); any change of data, model or settings starts anew."""
    import hashlib

    identity = {**dataclasses.asdict(job), "kill_rank_after_epoch": None, "kill_marker": None, "workers": workers}
    digest = hashlib.sha1(json.dumps(_jsonable(identity), sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}-{digest}"


SMALL_GRIDS = {
    "bpr": {"factors": [64], "learning_rate": [0.005, 0.02], "regularization": [0.001], "iterations": [300]},
    "lightgcn": {"dim": [64], "layers": [3], "lr": [5e-3], "reg": [1e-3], "epochs": [150]},
}


def _grid_search(job: TrainJob, bench):  # noqa: ANN001, ANN202
    """Validation-only grid search for an interaction model, in this process."""
    from armor.errors import ConfigError
    from armor.models.tuning import grid_search

    if job.model not in INTERACTION:
        raise ConfigError(f"--grid applies to bpr and lightgcn; tune {job.model} with `armor tune`")
    if job.model == "bpr":
        from armor.models.bpr import BPR, DEFAULT_GRID

        def build(params):  # noqa: ANN001, ANN202
            return BPR(dataclasses.replace(job.bpr, **params))
    else:
        from armor.models.lightgcn import DEFAULT_GRID, LightGCN

        def build(params):  # noqa: ANN001, ANN202
            return LightGCN(dataclasses.replace(job.lightgcn, **params))
    grid = DEFAULT_GRID if job.grid == "default" else SMALL_GRIDS[job.model]
    params, model, table = grid_search(build, grid, bench.data)
    log.info("%s grid: chose %s", job.model, params)
    return model, [{"grid": table, "chosen": params}]


def _fit_on_ray(job: TrainJob, *, workers: int, use_gpu: bool, max_failures: int, storage: Path, name: str,
                fresh: bool = False, callbacks: list | None = None):  # noqa: ANN202
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.ray_utils import ray_session

    # Workers run in their own directories: give them absolute paths (on a cluster the
    # workspace must be on storage every node mounts at the same path).
    job = dataclasses.replace(job, workspace=str(Path(job.workspace).resolve()),
                              features_dir=None if job.features_dir is None else str(Path(job.features_dir).resolve()))
    run = run_name(job, name, workers)
    if fresh:
        import shutil

        shutil.rmtree(storage / run, ignore_errors=True)
    log.info("Ray Train run %s in %s", run, storage)

    with ray_session():
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config={"job": job},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=RunConfig(name=run, storage_path=str(storage.resolve()),
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks))
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


def write_outputs(model, item_ids, summary: dict[str, Any], directory: Path) -> None:  # noqa: ANN001
    """The model, its item embeddings and FAISS index (when it has them) and metrics.json, each atomic."""
    import numpy as np
    import pyarrow as pa

    from armor.io import write_parquet, write_text

    model.save(directory / "model")
    embeddings = model.item_embeddings()
    if embeddings is not None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        table = pa.table({"movie_id": pa.array(item_ids, pa.int32()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)),
                                                                         embeddings.shape[1])})
        write_parquet(table, directory / "item_embeddings.parquet")
        from armor.retrieval.index import ItemIndex

        ItemIndex(np.asarray(item_ids), embeddings).save(directory / "faiss")
    write_text(json.dumps(summary, indent=2) + "\n", directory / "metrics.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fusion, train, bpr, lightgcn = FusionConfig(), TrainConfig(), BPRConfig(), LightGCNConfig()
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--split", default="random", help="split name under WORKSPACE/splits (default random)")
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--name", default=None, help="output name under WORKSPACE/models (default: the model)")
    parser.add_argument("--missing-modality", choices=("exclude", "impute"), default="exclude")
    parser.add_argument("--features-dir", type=Path, default=None)
    run = parser.add_argument_group("where it runs")
    run.add_argument("--local", action="store_true", help="train in this process, without Ray")
    run.add_argument("--workers", type=int, default=1, help="Ray Train workers (data parallel)")
    run.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    run.add_argument("--max-failures", type=int, default=3, help="worker failures to recover from")
    run.add_argument("--fresh", action="store_true",
                     help="start over instead of resuming this exact job's last checkpoint")
    model = parser.add_argument_group("fusion / projection")
    model.add_argument("--dim", type=int, default=fusion.dim)
    model.add_argument("--out-dim", type=int, default=fusion.out_dim)
    model.add_argument("--heads", type=int, default=fusion.heads)
    model.add_argument("--dropout", type=float, default=fusion.dropout)
    objective = parser.add_argument_group("objective")
    objective.add_argument("--objective", choices=("triplet", "infonce"), default=train.objective)
    objective.add_argument("--margin", type=float, default=train.margin)
    objective.add_argument("--temperature", type=float, default=train.temperature)
    objective.add_argument("--mining", choices=("random", "semi-hard", "batch-hard"), default=train.mining)
    objective.add_argument("--batch-size", type=int, default=train.batch_size)
    objective.add_argument("--epochs", type=int, default=train.epochs)
    objective.add_argument("--steps-per-epoch", type=int, default=None)
    objective.add_argument("--lr", type=float, default=train.lr)
    objective.add_argument("--weight-decay", type=float, default=train.weight_decay)
    objective.add_argument("--patience", type=int, default=train.patience)
    objective.add_argument("--seed", type=int, default=train.seed)
    cf = parser.add_argument_group("BPR / LightGCN")
    cf.add_argument("--grid", choices=("default", "small"), default=None,
                    help="choose BPR/LightGCN hyperparameters on validation from a grid (in this process)")
    cf.add_argument("--factors", type=int, default=bpr.factors, help="BPR factors")
    cf.add_argument("--bpr-lr", type=float, default=bpr.learning_rate)
    cf.add_argument("--bpr-reg", type=float, default=bpr.regularization)
    cf.add_argument("--bpr-iterations", type=int, default=bpr.iterations)
    cf.add_argument("--gcn-dim", type=int, default=lightgcn.dim)
    cf.add_argument("--gcn-layers", type=int, default=lightgcn.layers)
    cf.add_argument("--gcn-lr", type=float, default=lightgcn.lr)
    cf.add_argument("--gcn-reg", type=float, default=lightgcn.reg)
    cf.add_argument("--gcn-epochs", type=int, default=lightgcn.epochs)
    add_tracking_arguments(parser)
    add_common(parser)


def job_from_args(args: argparse.Namespace) -> TrainJob:
    return TrainJob(
        workspace=str(args.workspace), split=args.split, model=args.model, missing_modality=args.missing_modality,
        grid=args.grid,
        features_dir=None if args.features_dir is None else str(args.features_dir),
        fusion=FusionConfig(dim=args.dim, out_dim=args.out_dim, heads=args.heads, dropout=args.dropout),
        train=TrainConfig(objective=args.objective, margin=args.margin, temperature=args.temperature,
                          mining=args.mining, batch_size=args.batch_size, epochs=args.epochs,
                          steps_per_epoch=args.steps_per_epoch, lr=args.lr, weight_decay=args.weight_decay,
                          patience=args.patience, seed=args.seed),
        bpr=BPRConfig(factors=args.factors, learning_rate=args.bpr_lr, regularization=args.bpr_reg,
                      iterations=args.bpr_iterations, seed=args.seed),
        lightgcn=LightGCNConfig(dim=args.gcn_dim, layers=args.gcn_layers, lr=args.gcn_lr, reg=args.gcn_reg,
                                epochs=args.gcn_epochs, seed=args.seed))


def run(args: argparse.Namespace) -> int:
    summary = train(job_from_args(args), workers=args.workers, use_gpu=args.use_gpu, local=args.local,
                    max_failures=args.max_failures, name=args.name, fresh=args.fresh, tracking=options(args))
    valid = summary["valid"]
    print(f"{summary['name']}: validation NDCG@10 {valid['ndcg@10']:.4f}, Recall@10 {valid['recall@10']:.4f}, "
          f"HR@10 {valid['hr@10']:.4f} over {summary['catalogue']} movies; {summary['seconds']} s; "
          f"written to {Path(args.workspace) / 'models' / summary['name']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.train", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
