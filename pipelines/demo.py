"""The main job, end to end, on the embedded real MovieLens-100K.

Stages: prepare the ratings; enrich the movies through a local TMDB-compatible server
(stand-in content: no internet here) with the Ray Data scraper; encode overviews, posters and
thumbnails on Ray Data; split the ratings (random 80/10/10 and leave-one-out) and score the
popularity and random baselines under both; train every registered model on the 80/10/10 split
(the fused model data-parallel on Ray Train, hyperparameters of BPR and LightGCN chosen on
validation); a small Tune sweep; register models in MLflow and answer a history from the
registry; write the report (Table 1 with CIs, figures, cold start). Rerunning resumes: movies
already scraped or encoded are not redone, and every output is rewritten atomically.
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
    from armor.eval.protocol import EvaluationResult
    from armor.workspace import Workspace

log = logging.getLogger("armor.demo")

Protocol = Literal["random", "temporal", "loo"]


@dataclasses.dataclass(frozen=True)
class DemoJob:
    workspace: str = setting("runs/demo", "where every stage writes")
    movielens: str = setting("embedded", "data: 'embedded' (ML-100K from the recbole wheel), a release name or "
                                         "a directory")
    protocols: tuple[Protocol, ...] = setting(("random", "loo"), "split protocols of the baseline tables")
    bootstrap: int = setting(1000, "bootstrap resamples for 95% CIs")
    seed: int = setting(0, "seed of every split, model and resample")
    scrape_rate: float = setting(300.0, "requests/s against the local server (the real TMDB default is 40)")
    skip_scrape: bool = setting(False, "baselines only; no TMDB enrichment or encoding")
    image_backbone: Literal["efficientnet-lite0", "resnet50"] = setting(
        "efficientnet-lite0", "resnet50 (the paper's) needs its ImageNet weights in torchvision's cache")
    workers: int = setting(2, "Ray Train workers for the fused model")
    query_title: str = setting("Star Wars (1977)", "query movie of the top-5 figure")


def demo(job: DemoJob) -> Path:
    """Run every stage; returns the report directory (or the workspace with --skip-scrape)."""
    from armor.config import EncodeConfig
    from armor.data import movielens
    from armor.workspace import Workspace
    from pipelines.data import DEFAULT_CACHE
    from pipelines.encode import encode, format_summary

    started = time.perf_counter()
    ws = Workspace(job.workspace)
    source = movielens.resolve_movielens(job.movielens, DEFAULT_CACHE)
    log.info("[1/6] prepared %s: %s", source, movielens.prepare(source, ws.root))
    out = ws.root
    with contextlib.ExitStack() as stack:
        scrape_report = encode_report = ""
        if not job.skip_scrape:
            from pipelines.ray_utils import ray_session

            stack.enter_context(ray_session())  # one Ray runtime for every stage
            scrape_report = scrape_through_local_server(ws, job.scrape_rate)
            encode_report = format_summary(encode(ws.root, EncodeConfig(image_backbone=job.image_backbone)))
            log.info("[3/6] %s", encode_report)
        baselines(job, ws, source, scrape_report, encode_report)
        if not job.skip_scrape:
            train_all(ws, job.workers, job.seed)
            sweep_register_recommend(ws, job.seed)
            out = write_report(ws, job)
    log.info("demo finished in %.1f s", time.perf_counter() - started)
    return out


def baselines(job: DemoJob, ws: Workspace, source: Path, scrape_report: str, encode_report: str) -> None:
    """Split under each protocol and score popularity and random on test (nothing to select)."""
    import pyarrow.parquet as pq

    from armor.config import EvalConfig, SplitConfig
    from armor.data.splits import build_split_data, split_interactions, write_splits
    from armor.eval.protocol import evaluate
    from armor.eval.tables import csv_table
    from armor.io import write_text
    from armor.models.baselines import Popularity, RandomRanker

    interactions, movies = pq.read_table(ws.interactions), pq.read_table(ws.movies)
    eval_config = EvalConfig(bootstrap=job.bootstrap, seed=job.seed)
    markdown = ["# ARMoR demo: baselines on MovieLens-100K\n",
                f"Source: `{source}`. Full ranking over all {movies.num_rows} movies; a user's training "
                "positives (and, on test, validation items) are excluded from their ranking. "
                "Values are test-set means with 95% paired-bootstrap CIs over users.\n"]
    csv_parts = []
    for protocol in job.protocols:
        split_config = SplitConfig(method=protocol, seed=job.seed)
        tables = split_interactions(interactions, split_config)
        write_splits(tables, split_config, ws.split_dir(protocol))
        data = build_split_data(tables, movies["movie_id"].to_numpy(), movies)
        log.info("[4/6] split %s: %d users, %d items, train/valid/test = %d/%d/%d", protocol, data.n_users,
                 data.n_items, data.train.nnz, data.valid.nnz, data.test.nnz)
        results = [evaluate(model.fit(data.train), data, "test", eval_config)
                   for model in (Popularity(), RandomRanker(seed=job.seed))]
        markdown += _baseline_section(protocol, results, data.train.nnz, eval_config.ks)
        csv_parts.append(csv_table(results, {"protocol": protocol}))
    if scrape_report:
        markdown.insert(2, "## TMDB enrichment (local stand-in server) and features\n\n```\n" + scrape_report
                        + "\n" + encode_report + "\n```\n")
    report = "\n".join(markdown)
    write_text(report, ws.root / "baselines.md")
    header, *_ = csv_parts[0].splitlines()
    write_text("\n".join([header] + [line for part in csv_parts for line in part.splitlines()[1:]]) + "\n",
               ws.root / "baselines.csv")
    print(report)
    log.info("[4/6] wrote %s and %s", ws.root / "baselines.md", ws.root / "baselines.csv")


def _baseline_section(protocol: str, results: list[EvaluationResult], positives: int,
                      ks: tuple[int, ...]) -> list[str]:
    from armor.eval.tables import markdown_table

    title = {"random": "random 80/10/10 per user", "temporal": "temporal 80/10/10 per user",
             "loo": "leave-one-out (latest positive by timestamp, then movie id)"}[protocol]
    columns = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    extra = [f"{m}@{k}" for m in ("hr", "mrr", "coverage", "diversity") for k in ks]
    return [f"## Protocol: {title}\n\n{results[0].users.size} users with test items, {positives} training "
            "positives.\n", markdown_table(results, columns=columns),
            "\nHit rate, MRR, coverage and genre diversity (means):\n", markdown_table(results, columns=extra,
                                                                                      with_ci=False)]


def train_all(ws: Workspace, workers: int, seed: int) -> None:
    """Every registered model on the 80/10/10 split. Budgets are sized for the 2-core demo machine;
    `armor train` and `armor tune` take the full ones."""
    from armor.config import FusionConfig, TrainConfig
    from armor.models.registry import MODELS, ModelSettings
    from pipelines.train import Placement, TrainJob, train

    settings = ModelSettings.of(fusion=FusionConfig(dim=128, out_dim=128, heads=4),
                                train=TrainConfig(epochs=15, patience=4)).with_seed(seed)
    for name, spec in MODELS.items():
        job = TrainJob(workspace=str(ws.root), split="random", model=name, settings=settings,
                       grid="small" if spec.grid_section else None)
        # The fused model shows the data-parallel path; the rest train in this process.
        placement = Placement(workers=workers) if name == "fused" else Placement(local=True)
        summary = train(job, placement)
        log.info("[5/6] trained %s in %.1f s: validation NDCG@10 %.4f", name, summary["seconds"],
                 summary["valid"]["ndcg@10"])


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
    text = format_summary(summary)
    log.info("[2/6] %s", text)
    return text


def sweep_register_recommend(ws: Workspace, seed: int) -> None:
    """A small Tune sweep; register the full fusion and the sweep's winner (the better one becomes
    champion); answer a user's history from the registry's champion."""
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
    for model in ("fused", "demo-sweep-best"):
        version, champion, uri = register(ws.root, model)
        log.info("[5/6] registered %s as version %s%s", model, version, " (champion)" if champion else "")
    train = pq.read_table(ws.split_dir("random") / "train.parquet")
    user = train["user_id"][0].as_py()
    history = [m for u, m in zip(train["user_id"].to_pylist(), train["movie_id"].to_pylist()) if u == user][:10]
    answer = recommend("models:/armor-item-embeddings@champion", history, 5, tracking_uri=uri)
    print(f"\nFrom the registry (models:/armor-item-embeddings@champion), top-5 for user {user}'s history "
          f"{history}:\n{answer.to_string(index=False)}\n")


def write_report(ws: Workspace, job: DemoJob) -> Path:
    from armor.eval.report import ReportConfig
    from pipelines.report import report

    out = report(ws.root, ReportConfig(split="random", query_title=job.query_title, bootstrap=job.bootstrap,
                                       seed=job.seed,
                                       header="# ARMoR demo: MovieLens-100K with stand-in TMDB content\n"))
    print((out / "report.md").read_text())
    log.info("[6/6] report in %s", out)
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
