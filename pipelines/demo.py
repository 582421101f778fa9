"""The main job, end to end, on the embedded real MovieLens-100K.

Stages: prepare the ratings; enrich the movies through a local TMDB-compatible server
(stand-in content: no internet here) with the Ray Data scraper; encode overviews, posters and
thumbnails on Ray Data; split the ratings over the multimodal catalogue under leave-one-out,
random 80/10/10 and the item cold start; train every registered model on each protocol's split,
each searched with the same number of validation trials of its registry search space (none in the
demo: registry defaults), early-stopped on that split's validation part, then refit on train +
validation once per seed; train the content models, ARMoR-Graph, the reference rows and a few
interaction models on the cold-start split; a small Tune sweep whose trials train data-parallel on
Ray Train; register models in MLflow and answer a history from the registry; write the report
(definitions, funnels, Table 1 under both protocols with CIs and seed spreads, tuning budgets,
both cold-start settings, figures) and name the best model per protocol by validation. `make
benchmark` is this job with the full budget (a search of equal size for every model, three seeds,
higher epoch caps, ARMoR-Graph's ablations); the demo's smaller budget keeps it within 15 minutes,
and its report says so. With --skip-scrape only the models that need no content run, on every
movie. Rerunning resumes: movies already scraped or encoded are not redone, and every output is
rewritten atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from armor.config import setting
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main
from pipelines.train import TrainJob, driver_logging

if TYPE_CHECKING:
    from armor.workspace import Workspace

log = logging.getLogger("armor.demo")

Protocol = Literal["random", "temporal", "loo"]
COLD_SPLIT = "cold"


@dataclasses.dataclass(frozen=True)
class DemoJob:
    workspace: str = setting("runs/demo", "where every stage writes")
    movielens: str = setting("embedded", "data: 'embedded' (ML-100K from the recbole wheel), a release name or "
                                         "a directory")
    protocols: tuple[Protocol, ...] = setting(("loo", "random"), "split protocols of Table 1 (every model is "
                                                                 "trained, early-stopped and tuned on each)")
    cold_start: bool = setting(True, "run the item cold-start benchmark")
    bootstrap: int = setting(1000, "bootstrap resamples for 95% CIs")
    seed: int = setting(0, "seed of every split, model and resample")
    scrape_rate: float = setting(300.0, "requests/s against the local server (the real TMDB default is 40)")
    skip_scrape: bool = setting(False, "baselines only; no TMDB enrichment or encoding")
    image_backbone: Literal["efficientnet-lite0", "resnet50"] = setting(
        "efficientnet-lite0", "resnet50 (the paper's) needs its ImageNet weights in torchvision's cache")
    workers: int = setting(2, "Ray Train workers of each trial of the Tune sweep: data-parallel training with "
                              "global-batch negative mining (1: in-process trials)")
    trials: int = setting(0, "validation trials of its search space per trainable model, the same for every one "
                             "(0: no search; every model at its registry defaults, early-stopped on validation)")
    seeds: tuple[int, ...] = setting((0,), "training seeds: the chosen settings are refit once per seed (with one "
                                           "seed the report makes no 'better than' claims)")
    sweep: bool = setting(True, "run a small Tune sweep and the registry step")
    content_epochs: int = setting(10, "epoch cap of the content models (early stopping on validation picks the epoch)")
    bpr_iterations: int = setting(300, "BPR's cap in iterations, validated every 10 (early stopping picks the count)")
    ablations: bool = setting(False, "train ARMoR-Graph with one part switched off at a time on 80/10/10 "
                                     "(the ablation table)")
    parallel: int = setting(2, "train this many models at once, as Ray tasks of one CPU each (1: one after another "
                               "in this process)")
    models: tuple[str, ...] | None = setting(None, "train only these registered models (default: every one)")
    tracking: bool = setting(True, "log the stages to MLflow (the registry step uses it either way)")
    query_title: str = setting("Star Wars (1977)", "query movie of the top-5 figure")
    title: str = setting("ARMoR demo", "the report's title")


def demo(job: DemoJob) -> Path:
    """Run every stage; returns the report directory."""
    from armor.config import EncodeConfig
    from armor.data import movielens
    from armor.workspace import Workspace
    from pipelines.data import DEFAULT_CACHE
    from pipelines.encode import encode, format_summary

    started = time.perf_counter()
    ws = Workspace(job.workspace)
    source = movielens.resolve_movielens(job.movielens, DEFAULT_CACHE)
    log.info("[1/7] prepared %s: %s", source, movielens.prepare(source, ws.root))
    with contextlib.ExitStack() as stack:
        if not job.skip_scrape:
            from pipelines.ray_utils import ray_session

            stack.enter_context(ray_session())  # one Ray runtime for every stage
            log.info("[2/7] %s", scrape_through_local_server(ws, job.scrape_rate))
            log.info("[3/7] %s", format_summary(encode(ws.root, EncodeConfig(image_backbone=job.image_backbone))))
        splits = make_splits(ws, job)
        units = [unit for protocol in job.protocols
                 for unit in model_units(ws, protocol, job, names_to_train(job, cold=False))]
        if COLD_SPLIT in splits:
            units += model_units(ws, COLD_SPLIT, job, names_to_train(job, cold=True))
        run_units(units, job)
        if job.ablations and "random" in job.protocols and "armor-graph" in names_to_train(job, cold=False):
            run_units(ablation_units(ws, "random", job), job)
        if not job.skip_scrape and job.sweep:
            sweep_register_recommend(ws, job.seed, job.workers)
        out = write_report(ws, job, cold=COLD_SPLIT in splits)
    log.info("demo finished in %.1f s", time.perf_counter() - started)
    return out


def make_splits(ws: Workspace, job: DemoJob) -> list[str]:
    """One split per protocol (and the item cold start), all over the same catalogue: the multimodal
    one when content was encoded, every movie otherwise."""
    from armor.config import SplitConfig
    from armor.data.catalogue import funnel_markdown
    from pipelines.data import split

    catalogue = "all" if job.skip_scrape else "multimodal"
    methods = [*job.protocols, *([COLD_SPLIT] if job.cold_start and not job.skip_scrape else [])]
    for method in methods:
        result = split(ws.root, SplitConfig(method=method, seed=job.seed, catalogue=catalogue))
        log.info("[4/7] split %s:\n%s", method, funnel_markdown(result["funnel"]))
    return methods


def names_to_train(job: DemoJob, cold: bool) -> tuple[str, ...]:
    """Every registered model; without content only those that need none. The cold-start benchmark
    trains the content models and, to show they cannot place unrated movies, the reference and quick
    interaction ones."""
    from armor.models.registry import MODELS

    names = [n for n, spec in MODELS.items()
             if not (job.skip_scrape and spec.needs_features) and (job.models is None or n in job.models)]
    if cold:
        return tuple(n for n in names if MODELS[n].family != "interaction" or n in COLD_INTERACTION)
    return tuple(n for n in names if n not in COLD_ONLY)


# Interaction-only models trained on the cold-start split to show what ratings alone do with new
# movies; the slower graph model is left out to keep the demo within its time budget.
COLD_INTERACTION = ("bpr", "itemknn", "ease")
# The flag-only reference knows which movies are new to the log: a row for the item cold start only.
COLD_ONLY = ("new-first",)
# The protocol whose models also keep their train-only ("fold-in only") variant as an ablation: under
# leave-one-out the validation item is each user's latest positive, where the refit matters most.
FOLD_IN_PROTOCOL = "loo"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One model to train on one split (in this process or as a Ray task: never on Ray Train)."""

    job: TrainJob
    what: str = ""  # how the log line names it, when not by its model


def model_units(ws: Workspace, split: str, job: DemoJob, models: tuple[str, ...]) -> list[Unit]:
    """``models`` on ``split``: each tunable one searched with ``job.trials`` validation trials,
    early-stopped on validation, then refit on train + validation once per seed."""
    from armor.config import BPRConfig, FusionConfig, TrainConfig
    from armor.models.registry import MODELS, ModelSettings

    settings = ModelSettings.of(fusion=FusionConfig(dim=128, out_dim=128, heads=4),
                                train=TrainConfig(epochs=job.content_epochs, patience=4),
                                bpr=BPRConfig(iterations=job.bpr_iterations)).with_seed(job.seeds[0])
    if split == COLD_SPLIT:  # ARMoR-Graph's cold-path defaults were searched with the content vector
        settings = settings.replace("armor_graph", new_item_vector="content")
    units = []
    for name in models:
        spec = MODELS[name]
        train_job = TrainJob(workspace=str(ws.root), split=split, model=name, settings=settings,
                             trials=job.trials if spec.tunable else 0, seeds=job.seeds,
                             keep_fold_in=split == FOLD_IN_PROTOCOL and spec.family != "reference")
        units.append(Unit(train_job))
    return units


def ablation_units(ws: Workspace, split: str, job: DemoJob) -> list[Unit]:
    """ARMoR-Graph with one part switched off at a time, at the settings its search chose on ``split``'s
    validation (no new tuning), saved as armor-graph~SLUG for the report's ablation table."""
    import json

    from armor.models.graph_hybrid import ABLATIONS
    from armor.models.registry import ModelSettings

    chosen = json.loads((ws.models / split / "armor-graph" / "metrics.json").read_text())["settings"]["armor_graph"]
    return [Unit(TrainJob(workspace=str(ws.root), split=split, model="armor-graph", name=f"armor-graph~{slug}",
                          settings=ModelSettings().replace("armor_graph", **{**chosen, **off}).with_seed(job.seeds[0])),
                 what=f"armor-graph {what}")
            for slug, (what, off) in ABLATIONS.items()]


def run_units(units: list[Unit], job: DemoJob) -> None:
    """Train every unit: in this process one after another, or with ``job.parallel`` > 1 as Ray tasks
    of one CPU each (each trains with one torch thread), the costliest first."""
    from armor.models.registry import MODELS

    if job.parallel <= 1:
        for unit in units:
            _log_trained(unit, train_unit(unit, job.tracking))
        return
    import ray

    from pipelines.ray_utils import ray_session

    order = sorted(units, key=lambda u: COSTLIEST.index(u.job.model) if u.job.model in COSTLIEST
                   else len(COSTLIEST) + list(MODELS).index(u.job.model))
    if job.tracking:  # create (and migrate) the store here: tasks racing to do it fail (see STACK_NOTES)
        from armor.tracking.runs import ensure_experiment, tracking_uri
        from pipelines.tracking import EXPERIMENT

        ensure_experiment(EXPERIMENT, tracking_uri(order[0].job.workspace))
    with ray_session():
        remote = ray.remote(num_cpus=1)(train_unit).options(max_retries=1)
        shown = driver_logging()  # a task's process logs and shows progress as this one does
        pending = {remote.remote(unit, job.tracking, shown): unit for unit in order}
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            done += 1
            _log_trained(unit, ray.get(ready[0]), f" ({done}/{len(order)})")


# Longest to train first (as measured in the demo), so that two parallel lanes finish together.
COSTLIEST = ("armor-graph", "fused", "fused-paper", "image-projected", "freedom", "text-projected", "vbpr",
             "lightgcn", "bpr", "als")


def train_unit(unit: Unit, tracking: bool, logging_config: dict[str, Any] | None = None) -> dict[str, Any]:
    from pipelines.tracking import Tracking
    from pipelines.train import Placement, train, worker_logging

    if logging_config is not None:  # a Ray task's process: log and show progress as the driver does
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        worker_logging(logging_config)
    return train(unit.job, Placement(local=True), Tracking(tracking=tracking))


def _log_trained(unit: Unit, summary: dict[str, Any], note: str = "") -> None:
    log.info("[5/7] %s: trained %s in %.1f s, validation NDCG@10 %.4f%s", unit.job.split,
             unit.what or unit.job.model, summary["seconds"], summary["valid"]["ndcg@10"], note)


def scrape_through_local_server(ws: Workspace, rate: float) -> str:
    """Serve the workspace's movies from a local TMDB-compatible server on a free loopback port,
    scrape them through it with the real Ray Data job, and stop the server."""
    from armor.config import ScrapeConfig
    from armor.tmdb.client import Credentials
    from armor.tmdb.fixture import Faults, FixtureServer
    from armor.tmdb.standin import load_catalogue
    from pipelines.scrape import format_summary, scrape

    # A few movies without a trailer, as on real TMDB, so the missing-modality policy has work.
    with FixtureServer(load_catalogue(ws.root), faults=Faults(share_no_trailer=0.03)) as server:
        summary = scrape(ws.root, ScrapeConfig(**server.client_urls(), rate_limit=rate),
                         Credentials(token=server.token))
    return format_summary(summary)


def sweep_register_recommend(ws: Workspace, seed: int, workers: int) -> None:
    """A small Tune sweep, each trial a Ray Train run of ``workers`` data-parallel workers (negatives
    mined from the global batch); register the full fusion, the sweep's winner and ARMoR-Graph (the
    best on validation becomes champion); answer a user's history from the registry's champion."""
    import pyarrow.parquet as pq

    from armor.config import FusionConfig, TrainConfig
    from armor.models.registry import ModelSettings
    from pipelines.register import recommend, register
    from pipelines.train import TrainJob
    from pipelines.tune import SearchSpace, TuneJob, tune

    settings = ModelSettings.of(fusion=FusionConfig(dim=128),
                                train=TrainConfig(epochs=4, steps_per_epoch=20)).with_seed(seed)
    base = TrainJob(workspace=str(ws.root.resolve()), model="fused", settings=settings)
    tune(TuneJob(base=base, space=SearchSpace(out_dims=(64, 128)), name="demo-sweep", samples=2, grace_period=2,
                 trial_workers=workers if workers > 1 else 0))
    for model in ("random/fused", "random/demo-sweep-best", "random/armor-graph"):
        version, champion, uri = register(ws.root, model)
        log.info("[6/7] registered %s as version %s%s", model, version, " (champion)" if champion else "")
    train = pq.read_table(ws.split_dir("random") / "train.parquet")
    user = train["user_id"][0].as_py()
    history = [m for u, m in zip(train["user_id"].to_pylist(), train["movie_id"].to_pylist()) if u == user][:10]
    answer = recommend("models:/armor-item-embeddings@champion", history, 5, tracking_uri=uri)
    print(f"\nFrom the registry (models:/armor-item-embeddings@champion), top-5 for user {user}'s history "
          f"{history}:\n{answer.to_string(index=False)}\n")


def write_report(ws: Workspace, job: DemoJob, cold: bool) -> Path:
    from armor.eval.report import best_models
    from armor.eval.report_config import ReportConfig
    from pipelines.report import report
    from pipelines.tracking import Tracking

    config = ReportConfig(protocols=job.protocols, cold_split=COLD_SPLIT if cold else None,
                          query_title=None if job.skip_scrape else job.query_title, bootstrap=job.bootstrap,
                          seed=job.seed, header=f"# {job.title}: MovieLens-100K with stand-in TMDB content\n")
    out = report(ws.root, config, tracking=Tracking(tracking=job.tracking), job=job)
    print((out / "report.md").read_text())
    for protocol, best in best_models(out).items():
        print(f"best by validation under {protocol}: {best['best']} (validation NDCG@10 "
              f"{best['valid_ndcg@10']:.4f}, test {best['test_ndcg@10']:.4f})")
    log.info("[7/7] report in %s", out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, DemoJob)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    demo(dataclass_from_args(DemoJob, args))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.demo", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
