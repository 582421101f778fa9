"""The report's qualitative parts: the top-5 for a query movie with posters (the paper's Figures 2,
6 and 7), a t-SNE of the overview embeddings by primary genre (Figure 8), and what the full
fusion attends to per movie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from armor.data.schema import display_title
from armor.data.splits import SplitData
from armor.errors import ConfigError
from armor.eval import figures
from armor.models.base import Recommender
from armor.workspace import Workspace

DEFAULT_QUERY = "Matrix, The (1999)"
SHOWN = ("fused", "fused-paper", "text", "image")


def movie_label(movies: pd.DataFrame, movie_id: int) -> str:
    row = movies.loc[movie_id]
    return display_title(row["title"], None if row["year"] != row["year"] else int(row["year"]))


def query_index(data: SplitData, movies: pd.DataFrame, query_title: str | None) -> int:
    """The catalogue column of ``query_title`` (default The Matrix, else the most-liked movie)."""
    titles = {movie_label(movies, int(m)): i for i, m in enumerate(data.item_ids)}
    if query_title:
        if query_title not in titles:
            raise ConfigError(f"--query-title {query_title!r} is not in the catalogue (titles look like "
                              f"{next(iter(titles))!r})")
        return titles[query_title]
    if DEFAULT_QUERY in titles:
        return titles[DEFAULT_QUERY]
    return int(np.argmax(np.asarray(data.train.sum(axis=0)).ravel()))


def top_k_figure(ws: Workspace, data: SplitData, movies: pd.DataFrame, models: dict[str, Recommender],
                 labels: dict[str, str], query: int, path: Path) -> str:
    """The 5 movies closest to ``query`` under each content model, as a poster grid and a list."""
    from armor.tmdb.scrape import ScrapeStore

    posters: dict[int, Any] = {}
    if ScrapeStore(ws.tmdb).parts():
        table = ScrapeStore(ws.tmdb).read(["movie_id", "poster"])
        posters = dict(zip(table["movie_id"].to_pylist(), table["poster"].to_pylist()))
    rows = []
    for name in SHOWN:
        model = models.get(name)
        if model is None or model.item_embeddings() is None:
            continue
        vectors = model.item_embeddings()
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = unit @ unit[query]
        scores[query] = -np.inf
        top = np.argsort(-scores, kind="stable")[:5]
        rows.append((labels[name], [(movie_label(movies, int(data.item_ids[i])), posters.get(int(data.item_ids[i])))
                                    for i in top]))
    if not rows:
        return ""
    query_label = movie_label(movies, int(data.item_ids[query]))
    figures.topk_grid(query_label, rows, path)
    listing = "\n".join(f"- {name}: " + "; ".join(title for title, _ in items) for name, items in rows)
    return f"\n## Top-5 for {query_label}\n\n![top-5]({path.name})\n\n{listing}\n"


def tsne_figure(features: dict[str, np.ndarray] | None, data: SplitData, movies: pd.DataFrame, path: Path,
                seed: int) -> str:
    if not features or "text" not in features:
        return ""
    primary = [g[0] if len(g) else "(none)" for g in (movies.loc[m, "genres"] for m in data.item_ids)]
    figures.tsne_plot(features["text"], primary, path, "t-SNE of overview embeddings, coloured by primary genre",
                      seed=seed)
    return f"\n![t-SNE of overview embeddings]({path.name})\n"


def attention_table(models: dict[str, Recommender]) -> str:
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
