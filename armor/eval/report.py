"""The paper's Table 1 and figures, reproduced on a workspace, with test scored once per model.

Reads the models trained into WORKSPACE/models/, evaluates each on the test split of the same
benchmark catalogue, and writes a report directory: report.md, table1.csv, Recall/NDCG bar charts
(the paper's Figures 3-5), the top-5 for a query title with posters (Figures 2, 6, 7), a t-SNE of
the overview embeddings coloured by primary genre (Figure 8), diversity and coverage per model,
a cold-start table, and the full fusion's attention shares per modality.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from armor.config import EvalConfig, MissingModalityPolicy, setting
from armor.data.benchmark import Benchmark, load_benchmark
from armor.data.schema import display_title
from armor.data.splits import SplitData
from armor.errors import ConfigError, DataError
from armor.eval import figures, tables
from armor.eval.metrics import paired_bootstrap_difference
from armor.eval.protocol import EvaluationResult, evaluate
from armor.io import write_text
from armor.models.base import Recommender, load_recommender
from armor.models.registry import MODELS
from armor.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_QUERY = "Matrix, The (1999)"


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    split: str = setting("random", "the split the models were trained on")
    missing_modality: MissingModalityPolicy = setting("exclude", "the catalogue's missing-modality policy")
    models: tuple[str, ...] | None = setting(None, "model names under WORKSPACE/models (default: every one)")
    query_title: str | None = setting(None, 'query of the top-5 figure, e.g. "Matrix, The (1999)" (default: '
                                            "The Matrix if present, else the most-liked training movie)")
    bootstrap: int = setting(1000, "bootstrap resamples for the 95% CIs")
    seed: int = setting(0, "seed of the bootstrap and of the figures")
    header: str = ""


def label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def load_models(ws: Workspace, data: SplitData, names: tuple[str, ...] | None, where: str) -> dict[str, Recommender]:
    """The trained models ``names`` (default: all, in the registry's order), checked against the catalogue."""
    found = sorted(p.name for p in ws.models.iterdir() if (p / "model").is_dir()) if ws.models.exists() else []
    order = list(MODELS)
    names = tuple(names or sorted(found, key=lambda n: order.index(n) if n in order else len(order)))
    missing = [n for n in names if n not in found]
    if missing or not names:
        raise DataError(f"no trained model {missing or ''} under {ws.models}; run `armor train` first", path=ws.models)
    models = {n: load_recommender(ws.models / n / "model") for n in names}
    for name, model in models.items():
        embeddings = model.item_embeddings()
        if getattr(model, "n_items", None) not in (None, data.n_items) or (
                embeddings is not None and embeddings.shape[0] != data.n_items):
            raise DataError(f"model {name} was trained on another catalogue than {where} ({data.n_items} movies); "
                            "retrain it or pass the matching --split/--missing-modality", path=ws.models / name)
    return models


def make_report(workspace: str | Path, config: ReportConfig = ReportConfig(), out: Path | None = None) -> Path:
    ws = Workspace(workspace)
    out = Path(out or ws.root / "report")
    bench = load_benchmark(ws.root, config.split, config.missing_modality)
    data = bench.data
    models = load_models(ws, data, config.models, f"{config.split}/{config.missing_modality}")
    eval_config = EvalConfig(bootstrap=config.bootstrap, seed=config.seed)
    results = {n: evaluate(m, data, "test", eval_config, name=label(n)) for n, m in models.items()}
    out.mkdir(parents=True, exist_ok=True)
    ordered = list(results.values())
    lines = [config.header or f"# ARMoR report: {ws.root.name}, split `{config.split}`\n",
             _intro(bench, ordered, config), "## Table 1 (reproduced)\n",
             tables.markdown_table(ordered, tables.DEFAULT_COLUMNS), _paper_rows(list(models)),
             _fusion_difference(results, config), "\n## Beyond accuracy: coverage and intra-list genre diversity\n",
             tables.markdown_table(ordered, [f"{m}@{k}" for m in ("hr", "mrr", "coverage", "diversity")
                                             for k in (10, 20)], with_ci=False),
             _cold_start(models, data, results), _bar_charts(ordered, config.split, out),
             _attention(models)]
    movies = pq.read_table(ws.movies).to_pandas().set_index("movie_id")
    query = _query_index(data, movies, config.query_title)
    if query is not None:
        lines.append(_top_k_figure(ws, data, movies, models, query, out / "top5.png"))
    lines.append(_tsne(bench, movies, out, config.seed))
    write_text("\n".join(line for line in lines if line), out / "report.md")
    write_text(tables.csv_table(ordered, {"protocol": config.split, "policy": config.missing_modality}),
               out / "table1.csv")
    log.info("report written to %s", out)
    return out


def _intro(bench: Benchmark, ordered: list[EvaluationResult], config: ReportConfig) -> str:
    return (f"Catalogue: {bench.data.n_items} movies ({bench.excluded_movies} left out under the "
            f"`{config.missing_modality}` missing-modality policy); {ordered[0].users.size} test users. Full "
            "ranking over the catalogue; a user's training positives and validation items are excluded from their "
            "ranking; "
            "ties by movie index. Models and epochs were chosen on validation; test was scored once, here. "
            f"Values: mean over users [95% bootstrap CI, {config.bootstrap} resamples, paired across models].\n")


def _paper_rows(names: list[str]) -> str:
    rows = [(label(n), MODELS[n].paper_row) for n in names if n in MODELS and MODELS[n].paper_row]
    if not rows:
        return ""
    return ("\nThe paper's Table 1 (ML-1M with real TMDB content, ResNet-50; its own split), for reference. "
            "Different data and encoders: compare the ordering of models, not the numbers.\n\n"
            + tables.paper_table_markdown(rows, tables.DEFAULT_COLUMNS))


def _fusion_difference(results: dict[str, EvaluationResult], config: ReportConfig) -> str:
    if "fused" not in results or "fused-paper" not in results:
        return ""
    diff, (lo, hi), p_not_better = paired_bootstrap_difference(
        results["fused"].per_user["ndcg@10"], results["fused-paper"].per_user["ndcg@10"],
        max(config.bootstrap, 1), 0.95, config.seed)
    return (f"\nFull minus paper fusion, test NDCG@10: {diff:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}]; share of "
            f"resamples where full is not better: {p_not_better:.3f}.\n")


def _cold_start(models: dict[str, Recommender], data: SplitData, results: dict[str, EvaluationResult]) -> str:
    """Test items that nobody liked in training (all their interactions were held out)."""
    cold = np.flatnonzero((np.asarray(data.train.sum(axis=0)).ravel() == 0)
                          & (np.asarray(data.test.sum(axis=0)).ravel() > 0))
    if not cold.size:
        return "\n## Cold start\n\nNo test movie lacks training interactions in this split.\n"
    cold_results = [evaluate(m, data, "test", EvalConfig(bootstrap=0), name=results[n].model,
                             relevant_items=cold) for n, m in models.items()]
    return (f"\n## Cold start: {cold.size} test movies nobody liked in training\n\n"
            "Hits count only these movies; interaction-only models have never seen them.\n\n"
            + tables.markdown_table(cold_results, ["recall@10", "recall@20", "ndcg@10", "ndcg@20"], with_ci=False))


def _bar_charts(ordered: list[EvaluationResult], split: str, out: Path) -> str:
    for metric, figure in (("recall", "recall.png"), ("ndcg", "ndcg.png")):
        figures.bar_chart(ordered, metric, (5, 10, 20), out / figure,
                          f"{metric.upper() if metric == 'ndcg' else 'Recall'}@K on test ({split} split)")
    return "\n## Figures\n\n![Recall@K](recall.png) ![NDCG@K](ndcg.png)\n"


def _attention(models: dict[str, Recommender]) -> str:
    model = models.get("fused")
    if model is None or not hasattr(model, "attention_weights"):
        return ""
    weights = model.attention_weights()  # (I, 3): text, poster, thumbnail
    mean, spread = weights.mean(axis=0), weights.std(axis=0)
    leading = np.bincount(weights.argmax(axis=1), minlength=3) / len(weights)
    return ("\n## Interpretability: what the full fusion attends to, per movie\n\n"
            "| | text | poster | thumbnail |\n|---|---:|---:|---:|\n"
            f"| mean attention weight | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |\n"
            f"| spread across movies (sd) | {spread[0]:.3f} | {spread[1]:.3f} | {spread[2]:.3f} |\n"
            f"| share of movies where it leads | {leading[0]:.3f} | {leading[1]:.3f} | {leading[2]:.3f} |\n")


def _movie_label(movies: pd.DataFrame, movie_id: int) -> str:
    row = movies.loc[movie_id]
    return display_title(row["title"], None if row["year"] != row["year"] else int(row["year"]))


def _query_index(data: SplitData, movies: pd.DataFrame, query_title: str | None) -> int | None:
    titles = {_movie_label(movies, int(m)): i for i, m in enumerate(data.item_ids)}
    if query_title:
        if query_title not in titles:
            raise ConfigError(f"--query-title {query_title!r} is not in the catalogue (titles look like "
                              f"{next(iter(titles))!r})")
        return titles[query_title]
    if DEFAULT_QUERY in titles:
        return titles[DEFAULT_QUERY]
    return int(np.argmax(np.asarray(data.train.sum(axis=0)).ravel()))


def _top_k_figure(ws: Workspace, data: SplitData, movies: pd.DataFrame, models: dict[str, Recommender],
                  query: int, path: Path) -> str:
    from armor.tmdb.scrape import ScrapeStore

    posters: dict[int, Any] = {}
    if ScrapeStore(ws.tmdb).parts():
        table = ScrapeStore(ws.tmdb).read(["movie_id", "poster"])
        posters = dict(zip(table["movie_id"].to_pylist(), table["poster"].to_pylist()))
    rows = []
    for name in ("fused", "fused-paper", "text", "image"):
        model = models.get(name)
        if model is None or model.item_embeddings() is None:
            continue
        vectors = model.item_embeddings()
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = unit @ unit[query]
        scores[query] = -np.inf
        top = np.argsort(-scores, kind="stable")[:5]
        rows.append((label(name), [(_movie_label(movies, int(data.item_ids[i])), posters.get(int(data.item_ids[i])))
                                   for i in top]))
    if not rows:
        return ""
    query_label = _movie_label(movies, int(data.item_ids[query]))
    figures.topk_grid(query_label, rows, path)
    listing = "\n".join(f"- {name}: " + "; ".join(title for title, _ in items) for name, items in rows)
    return f"\n## Top-5 for {query_label}\n\n![top-5](top5.png)\n\n{listing}\n"


def _tsne(bench: Benchmark, movies: pd.DataFrame, out: Path, seed: int) -> str:
    if "text" not in bench.features:
        return ""
    primary = [g[0] if len(g) else "(none)" for g in (movies.loc[m, "genres"] for m in bench.data.item_ids)]
    figures.tsne_plot(bench.features["text"], primary, out / "tsne_text.png",
                      "t-SNE of overview embeddings, coloured by primary genre", seed=seed)
    return "\n![t-SNE of overview embeddings](tsne_text.png)\n"
