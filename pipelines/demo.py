"""The main job, end to end, on the embedded real MovieLens-100K.

Stages: prepare the ratings; enrich the movies through a local TMDB-compatible server
(stand-in content: no internet here) with the Ray Data scraper; encode overviews, posters and
thumbnails on Ray Data; split the ratings over the multimodal catalogue under leave-one-out,
random 80/10/10 and the item cold start; train every registered model on each protocol's split,
early-stopped and tuned on that split's validation part (the fused model data-parallel on Ray
Train on the 80/10/10 split); train the content models, and reference and quick interaction
models to show they cannot place them, on the cold-start split; a small Tune sweep; register models in
MLflow and answer a history from the registry; write the report (definitions, funnels, Table 1
under both protocols with CIs, the cold-start table, figures) and name the best model per
protocol. With --skip-scrape only the models that need no content run, on every movie. Rerunning
resumes: movies already scraped or encoded are not redone, and every output is rewritten
atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from armor.config import setting
from pipelines.cli import add_common, add_dataclass_arguments, dataclass_from_args, stage_main

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
    cold_start: bool = setting(True, "skip the item cold-start benchmark")
    bootstrap: int = setting(1000, "bootstrap resamples for 95% CIs")
    seed: int = setting(0, "seed of every split, model and resample")
    scrape_rate: float = setting(300.0, "requests/s against the local server (the real TMDB default is 40)")
    skip_scrape: bool = setting(False, "baselines only; no TMDB enrichment or encoding")
    image_backbone: Literal["efficientnet-lite0", "resnet50"] = setting(
        "efficientnet-lite0", "resnet50 (the paper's) needs its ImageNet weights in torchvision's cache")
    workers: int = setting(2, "Ray Train workers for the fused model")
    models: tuple[str, ...] | None = setting(None, "train only these registered models (default: every one)")
    tracking: bool = setting(True, "do not log the stages to MLflow (the registry step still uses it)")
    query_title: str = setting("Star Wars (1977)", "query movie of the top-5 figure")


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
        for protocol in job.protocols:
            train_all(ws, protocol, job, models=names_to_train(job, cold=False))
        if "random" in job.protocols and "armor-graph" in names_to_train(job, cold=False):
            train_ablations(ws, "random", job)
        if COLD_SPLIT in splits:
            train_all(ws, COLD_SPLIT, job, models=names_to_train(job, cold=True))
        if not job.skip_scrape:
            sweep_register_recommend(ws, job.seed)
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
        names = [n for n in names if MODELS[n].family != "interaction" or n in COLD_INTERACTION]
    return tuple(names)


# Interaction-only models trained on the cold-start split to show they cannot place its movies; the
# slower graph model is left out to keep the demo within its time budget.
COLD_INTERACTION = ("bpr", "itemknn", "ease")


def train_all(ws: Workspace, split: str, job: DemoJob, models: tuple[str, ...]) -> None:
    """Train ``models`` on ``split``, each early-stopped and (with a grid) tuned on its validation part.
    Budgets are sized for the 2-core demo machine; `armor train` and `armor tune` take the full ones."""
    from armor.config import FusionConfig, TrainConfig
    from armor.models.registry import MODELS, ModelSettings
    from pipelines.tracking import Tracking
    from pipelines.train import Placement, TrainJob, train

    settings = ModelSettings.of(fusion=FusionConfig(dim=128, out_dim=128, heads=4),
                                train=TrainConfig(epochs=15, patience=4)).with_seed(job.seed)
    for name in models:
        train_job = TrainJob(workspace=str(ws.root), split=split, model=name, settings=settings,
                             grid="small" if MODELS[name].grid_section else None)
        # The fused model on the 80/10/10 split shows the data-parallel path; the rest train here.
        on_ray = name == "fused" and split == "random" and not job.skip_scrape
        summary = train(train_job, Placement(workers=job.workers) if on_ray else Placement(local=True),
                        Tracking(tracking=job.tracking))
        log.info("[5/7] %s: trained %s in %.1f s, validation NDCG@10 %.4f", split, name, summary["seconds"],
                 summary["valid"]["ndcg@10"])


def train_ablations(ws: Workspace, split: str, job: DemoJob) -> None:
    """ARMoR-Graph with one part switched off at a time, at the settings its grid chose on ``split``'s
    validation (no new tuning), saved as armor-graph~SLUG for the report's ablation table."""
    import json

    from armor.models.graph_hybrid import ABLATIONS
    from armor.models.registry import ModelSettings
    from pipelines.tracking import Tracking
    from pipelines.train import Placement, TrainJob, train

    chosen = json.loads((ws.models / split / "armor-graph" / "metrics.json").read_text())["grid"]["chosen"]
    for slug, (what, off) in ABLATIONS.items():
        settings = ModelSettings().with_seed(job.seed).replace("armor_graph", **{**chosen, **off})
        summary = train(TrainJob(workspace=str(ws.root), split=split, model="armor-graph", settings=settings,
                                 name=f"armor-graph~{slug}"), Placement(local=True), Tracking(tracking=job.tracking))
        log.info("[5/7] %s: trained armor-graph %s in %.1f s, validation NDCG@10 %.4f", split, what,
                 summary["seconds"], summary["valid"]["ndcg@10"])


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


def sweep_register_recommend(ws: Workspace, seed: int) -> None:
    """A small Tune sweep; register the full fusion, the sweep's winner and ARMoR-Graph (the best on
    validation becomes champion); answer a user's history from the registry's champion."""
    import pyarrow.parquet as pq

    from armor.config import FusionConfig, TrainConfig
    from armor.models.registry import ModelSettings
    from pipelines.register import recommend, register
    from pipelines.train import TrainJob
    from pipelines.tune import SearchSpace, TuneJob, tune

    settings = ModelSettings.of(fusion=FusionConfig(dim=128),
                                train=TrainConfig(epochs=6, steps_per_epoch=20)).with_seed(seed)
    base = TrainJob(workspace=str(ws.root.resolve()), model="fused", settings=settings)
    tune(TuneJob(base=base, space=SearchSpace(dims=(64, 128)), name="demo-sweep", samples=4, grace_period=2))
    for model in ("random/fused", "random/demo-sweep-best", "random/armor-graph"):
        version, champion, uri = register(ws.root, model)
        log.info("[5/6] registered %s as version %s%s", model, version, " (champion)" if champion else "")
    train = pq.read_table(ws.split_dir("random") / "train.parquet")
    user = train["user_id"][0].as_py()
    history = [m for u, m in zip(train["user_id"].to_pylist(), train["movie_id"].to_pylist()) if u == user][:10]
    answer = recommend("models:/armor-item-embeddings@champion", history, 5, tracking_uri=uri)
    print(f"\nFrom the registry (models:/armor-item-embeddings@champion), top-5 for user {user}'s history "
          f"{history}:\n{answer.to_string(index=False)}\n")


def write_report(ws: Workspace, job: DemoJob, cold: bool) -> Path:
    from armor.eval.report import ReportConfig, best_models
    from pipelines.report import report
    from pipelines.tracking import Tracking

    config = ReportConfig(protocols=job.protocols, cold_split=COLD_SPLIT if cold else None,
                          query_title=None if job.skip_scrape else job.query_title, bootstrap=job.bootstrap,
                          seed=job.seed, header="# ARMoR demo: MovieLens-100K with stand-in TMDB content\n")
    out = report(ws.root, config, tracking=Tracking(tracking=job.tracking))
    print((out / "report.md").read_text())
    for protocol, best in best_models(out).items():
        print(f"best on test under {protocol}: {best['best']} (NDCG@10 {best['ndcg@10']:.4f})")
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
