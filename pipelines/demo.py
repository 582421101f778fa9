"""The main job, end to end, on the embedded real MovieLens-100K.

Stages: prepare the ratings; enrich the movies through a local TMDB-compatible server
(stand-in content: no internet here) with the Ray Data scraper; encode overviews, posters and
thumbnails on Ray Data; split the ratings (random 80/10/10 and leave-one-out) and score the
popularity and random baselines under both; train every model of the paper's Table 1 and ours
on the 80/10/10 split (the fused model data-parallel on Ray Train, hyperparameters of BPR and
LightGCN chosen on validation); write the report (Table 1 with CIs, figures, cold start).
Rerunning resumes: movies already scraped or encoded are not redone, and every output is
rewritten atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path

from pipelines.cli import add_common, stage_main

log = logging.getLogger("armor.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", type=Path, default=Path("runs/demo"),
                        help="where every stage writes (default runs/demo)")
    parser.add_argument("--movielens", default="embedded",
                        help="data: 'embedded' (ML-100K from the recbole wheel), a release name or a directory")
    parser.add_argument("--protocols", nargs="+", choices=("random", "temporal", "loo"), default=["random", "loo"],
                        help="split protocols to run (default: random 80/10/10 and leave-one-out)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scrape-rate", type=float, default=300.0,
                        help="requests/s against the local server (the real TMDB default is 40)")
    parser.add_argument("--skip-scrape", action="store_true", help="baselines only; no TMDB enrichment or encoding")
    parser.add_argument("--image-backbone", choices=("efficientnet-lite0", "resnet50"), default="efficientnet-lite0",
                        help="resnet50 (the paper's) needs its ImageNet weights in torchvision's cache")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers for the fused model")
    parser.add_argument("--query-title", default="Star Wars (1977)", help="query movie of the top-5 figure")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from armor.data import movielens
    from armor.workspace import Workspace
    from pipelines.data import DEFAULT_CACHE

    started = time.perf_counter()
    ws = Workspace(args.workspace)
    source = movielens.resolve_movielens(args.movielens, DEFAULT_CACHE)
    counts = movielens.prepare(source, ws.root)
    log.info("[1/6] prepared %s: %s", source, counts)

    with contextlib.ExitStack() as stack:
        scrape_report = encode_report = ""
        if not args.skip_scrape:
            from armor.config import EncodeConfig
            from pipelines.encode import encode, format_summary
            from pipelines.ray_utils import ray_session

            stack.enter_context(ray_session())  # one Ray runtime for every stage
            scrape_report = scrape_through_local_server(ws, args.scrape_rate)
            encode_report = format_summary(encode(ws.root, EncodeConfig(image_backbone=args.image_backbone)))
            log.info("[3/6] %s", encode_report)
        baselines(args, ws, source, scrape_report, encode_report)
        if not args.skip_scrape:
            train_all(ws, args.workers, args.seed)
            sweep_register_recommend(ws, args.seed)
            from pipelines.report import make_report

            out = make_report(ws.root, "random", query_title=args.query_title, bootstrap=args.bootstrap,
                              seed=args.seed, header="# ARMoR demo: MovieLens-100K with stand-in TMDB content\n")
            print((out / "report.md").read_text())
            log.info("[6/6] report in %s", out)
    log.info("demo finished in %.1f s", time.perf_counter() - started)
    return 0


def baselines(args: argparse.Namespace, ws, source, scrape_report: str, encode_report: str) -> None:  # noqa: ANN001
    """Split under each protocol and score popularity and random on test (nothing to select)."""
    import pyarrow.parquet as pq

    from armor.config import EvalConfig, SplitConfig
    from armor.data.splits import build_split_data, split_interactions, write_splits
    from armor.eval.protocol import evaluate
    from armor.eval.report import csv_table, markdown_table
    from armor.io import write_text
    from armor.models.baselines import Popularity, RandomRanker

    interactions = pq.read_table(ws.interactions)
    movies = pq.read_table(ws.movies)
    eval_config = EvalConfig(bootstrap_samples=args.bootstrap, seed=args.seed)
    markdown = ["# ARMoR demo: baselines on MovieLens-100K\n",
                f"Source: `{source}`. Full ranking over all {movies.num_rows} movies; a user's training "
                "positives (and, on test, validation items) are excluded from their ranking. "
                "Values are test-set means with 95% paired-bootstrap CIs over users.\n"]
    csv_parts = []
    for protocol in args.protocols:
        split_config = SplitConfig(method=protocol, seed=args.seed)
        tables = split_interactions(interactions, split_config)
        write_splits(tables, split_config, ws.split_dir(protocol))
        data = build_split_data(tables, movies["movie_id"].to_numpy(), movies)
        log.info("[4/6] split %s: %d users, %d items, train/valid/test = %d/%d/%d", protocol, data.n_users,
                 data.n_items, data.train.nnz, data.valid.nnz, data.test.nnz)
        results = []
        for model in (Popularity(), RandomRanker(seed=args.seed)):
            model.fit(data.train, data.valid)
            results.append(evaluate(model, data, "test", eval_config))
        columns = [f"{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr") for k in eval_config.ks]
        title = {"random": "random 80/10/10 per user", "temporal": "temporal 80/10/10 per user",
                 "loo": "leave-one-out (latest positive by timestamp, then movie id)"}[protocol]
        markdown.append(f"## Protocol: {title}\n\n{results[0].users.size} users with test items, "
                        f"{data.train.nnz} training positives.\n")
        markdown.append(markdown_table(results, columns=columns[:6]))
        markdown.append("\nHit rate, MRR, coverage and genre diversity (means):\n")
        extra = [f"{m}@{k}" for m in ("hr", "mrr", "coverage", "diversity") for k in eval_config.ks]
        markdown.append(markdown_table(results, columns=extra, with_ci=False))
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


# Table 1's models and ours. Budgets are sized for the 2-core demo machine; `armor train` and
# `armor tune` take the full ones.
DEMO_MODELS = ("popularity", "random", "text", "image", "text-projected", "image-projected", "fused-paper", "fused",
               "bpr", "lightgcn")


def train_all(ws, workers: int, seed: int) -> None:  # noqa: ANN001
    from armor.config import FusionConfig, TrainConfig
    from pipelines.train import TrainJob, train

    fusion = FusionConfig(dim=128, out_dim=128, heads=4)
    train_config = TrainConfig(epochs=15, patience=4, seed=seed)
    for model in DEMO_MODELS:
        job = TrainJob(workspace=str(ws.root), split="random", model=model, fusion=fusion, train=train_config,
                       grid="small" if model in ("bpr", "lightgcn") else None)
        # The fused model shows the data-parallel path; the rest train in this process.
        summary = train(job, workers=workers, local=model != "fused")
        log.info("[5/6] trained %s in %.1f s: validation NDCG@10 %.4f", model, summary["seconds"],
                 summary["valid"]["ndcg@10"])


def scrape_through_local_server(ws, rate: float) -> str:  # noqa: ANN001 - a Workspace
    """Serve the workspace's movies from a local TMDB-compatible server on a free loopback port,
    scrape them through it with the real Ray Data job, and stop the server."""
    import os

    from armor.config import ScrapeConfig
    from armor.tmdb.fixture import Faults, FixtureServer
    from armor.tmdb.standin import load_catalogue
    from pipelines.scrape import format_summary, scrape

    # A few movies without a trailer, as on real TMDB, so the missing-modality policy has work.
    with FixtureServer(load_catalogue(ws.root), faults=Faults(share_no_trailer=0.03)) as server:
        previous = os.environ.get("TMDB_API_TOKEN")
        os.environ["TMDB_API_TOKEN"] = server.token
        try:
            summary = scrape(ws.root, ScrapeConfig(**server.client_urls(), rate_limit=rate))
        finally:
            if previous is None:
                os.environ.pop("TMDB_API_TOKEN", None)
            else:
                os.environ["TMDB_API_TOKEN"] = previous
    text = format_summary(summary)
    log.info("[2/6] %s", text)
    return text


def sweep_register_recommend(ws, seed: int) -> None:  # noqa: ANN001
    """A small Tune sweep; register the full fusion and the sweep's winner (the better one becomes
    champion); answer a user's history from the registry's champion."""
    import pyarrow.parquet as pq

    from pipelines.register import recommend, register
    from pipelines.tune import main as tune_main

    code = tune_main(["--workspace", str(ws.root), "--name", "demo-sweep", "--samples", "4", "--epochs", "6",
                      "--steps-per-epoch", "20", "--dims", "64", "128", "--dim", "128", "--grace-period", "2",
                      "--seed", str(seed), "-q"])
    if code:
        raise RuntimeError(f"the demo's Tune sweep failed (exit {code})")
    for model in ("fused", "demo-sweep-best"):
        version, champion, uri = register(ws.root, model)
        log.info("[5/6] registered %s as version %s%s", model, version, " (champion)" if champion else "")
    train = pq.read_table(ws.split_dir("random") / "train.parquet")
    user = train["user_id"][0].as_py()
    history = [m for u, m in zip(train["user_id"].to_pylist(), train["movie_id"].to_pylist()) if u == user][:10]
    answer = recommend(argparse.Namespace(model="models:/armor-item-embeddings@champion", history=",".join(
        map(str, history)), similar_to=None, k=5, tracking_uri=uri, workspace=ws.root))
    print(f"\nFrom the registry (models:/armor-item-embeddings@champion), top-5 for user {user}'s history "
          f"{history}:\n{answer.to_string(index=False)}\n")


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.demo", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
