"""The report's qualitative parts: one test user's top-5 under the best model of each family, with
posters and the user's held-out movies marked (after the paper's Figures 2, 6 and 7), a t-SNE of the
overview embeddings by primary genre (Figure 8), and what the full fusion attends to per movie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from armor.data.schema import display_title
from armor.data.splits import SplitData
from armor.errors import ConfigError
from armor.eval import figures
from armor.eval import metrics as M
from armor.eval.protocol import mask_rows, profile
from armor.models.base import Recommender
from armor.workspace import Workspace

DEFAULT_QUERY = "Matrix, The (1999)"
TOP = 5


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


def showcase_user(data: SplitData, query: int, seed: int) -> int:
    """The test user the top-5 figure is drawn for, chosen without any model: among users with held-out
    movies whose test profile holds the ``query`` movie (every user with held-out movies if none
    does), one with the most held-out movies, so that hits can show; ties by a seeded hash of the
    user id."""
    held_out = np.diff(data.test.indptr)
    liked = np.zeros(data.user_ids.size, dtype=bool)
    liked[profile(data, "test").tocsc()[:, query].indices] = True
    pool = np.flatnonzero((held_out > 0) & liked)
    if pool.size == 0:
        pool = np.flatnonzero(held_out > 0)
    order = np.lexsort((M.pair_hash(seed, data.user_ids[pool], np.zeros(1, np.int64)), -held_out[pool]))
    return int(pool[order[0]])


def user_top_k(model: Recommender, data: SplitData, user: int, k: int, seed: int) -> np.ndarray:
    """``user``'s top-``k`` catalogue columns as the test evaluation ranks them: profile training +
    validation (and excluded), the same seeded tie order."""
    history = profile(data, "test")[[user]]
    scores = np.array(model.score(np.array([user]), history), dtype=np.float32)  # ours to mask
    mask_rows(scores, history)
    indices, valid = M.top_k(scores, k, M.TieOrder(seed, data.user_ids[[user]], data.item_ids))
    return indices[0][valid[0]]


def _posters(ws: Workspace) -> dict[int, Any]:
    from armor.tmdb.scrape import ScrapeStore

    if not ScrapeStore(ws.tmdb).parts():
        return {}
    table = ScrapeStore(ws.tmdb).read(["movie_id", "poster"])
    return dict(zip(table["movie_id"].to_pylist(), table["poster"].to_pylist()))


def top_k_figure(ws: Workspace, data: SplitData, movies: pd.DataFrame, models: dict[str, Recommender],
                 labels: dict[str, str], families: dict[str, str], query: int, path: Path, seed: int = 0,
                 split: str = "test") -> str:
    """One test user's top-5 under each family's best model by validation (``families``: family ->
    model name), as a poster grid that frames the user's held-out movies, and as a list."""
    if not families:
        return ""
    posters = _posters(ws)
    user = showcase_user(data, query, seed)
    held_out = set(data.test.indices[data.test.indptr[user] : data.test.indptr[user + 1]].tolist())

    def title(column: int) -> str:
        return movie_label(movies, int(data.item_ids[column]))

    rows = []
    for family, name in families.items():
        top = user_top_k(models[name], data, user, TOP, seed).tolist()
        rows.append((f"{labels[name]} (best {family})",
                     [(title(i), posters.get(int(data.item_ids[i])), i in held_out) for i in top]))
    liked = query in set(profile(data, "test")[user].indices.tolist())
    who = f"test user {int(data.user_ids[user])}" + (f", who liked {title(query)}" if liked else "")
    figures.topk_grid(f"Top-{TOP} for {who}", rows, path,
                      note="framed, with \u2713: one of the user's held-out (test) movies")
    listing = "\n".join(f"- {name}: " + "; ".join(f"**\u2713 {t}**" if hit else t for t, _, hit in items)
                        for name, items in rows)
    hits = sum(hit for _, items in rows for _, _, hit in items)
    held = sorted(title(i) for i in held_out)
    pool = (f"among the test users whose profile holds {title(query)}" if liked
            else f"nobody with held-out movies liked {title(query)}, so among all test users")
    return (f"\n## Top-{TOP} for one test user (split `{split}`)\n\n"
            f"The best model of each family by validation NDCG@10 ranks the whole catalogue for {who}, as the "
            "test evaluation does (profile: training + validation positives, excluded from the ranking; the same "
            f"seeded tie order). The user was chosen without any model: {pool}, one with the most held-out movies "
            f"({len(held_out)}), ties by a seeded hash. Marked \u2713: the user's held-out movies ({hits} of "
            f"{sum(len(items) for _, items in rows)} slots).\n\n![top-{TOP}]({path.name})\n\n{listing}\n\n"
            f"The user's held-out movies: {'; '.join(held[:15])}{' ...' if len(held) > 15 else ''}.\n")


def standin_overviews(ws: Workspace) -> bool | None:
    """Whether the workspace's overviews came from the local TMDB server's stand-ins (generated from
    each movie's genres): most movies carry the id it gives a movie it has no link for. None when
    nothing was scraped here."""
    from armor.tmdb.scrape import ScrapeStore
    from armor.tmdb.standin import WORKSPACE_TMDB_BASE

    if not ScrapeStore(ws.tmdb).parts():
        return None
    table = ScrapeStore(ws.tmdb).read(["movie_id", "tmdb_id"])
    ids = np.asarray(table["tmdb_id"].to_pylist(), dtype=object)
    movie_ids = np.asarray(table["movie_id"].to_pylist(), dtype=object)
    fixture = [t is not None and t == WORKSPACE_TMDB_BASE + m for t, m in zip(ids, movie_ids)]
    return bool(fixture) and float(np.mean(fixture)) > 0.5


TSNE_NOTES = {
    True: ("The overviews here are stand-ins that the local TMDB server generated from each movie's genres, so "
           "clustering by genre is expected: the plot shows that the text encoder keeps what the overviews say, not "
           "that real overviews cluster this way."),
    False: "The overviews are the ones scraped from TMDB.",
    None: ("This workspace has no scrape record: where the overviews are the local TMDB server's stand-ins (as in "
           "`make demo`), they were generated from each movie's genres and clustering by genre is expected."),
}


def tsne_figure(features: dict[str, np.ndarray] | None, data: SplitData, movies: pd.DataFrame, path: Path,
                seed: int, standin: bool | None = None) -> str:
    """The t-SNE of the overview embeddings by primary genre, saying where genre clusters are expected
    (``standin``: see ``standin_overviews``)."""
    if not features or "text" not in features:
        return ""
    primary = [g[0] if len(g) else "(none)" for g in (movies.loc[m, "genres"] for m in data.item_ids)]
    title = "t-SNE of overview embeddings, coloured by primary genre"
    if standin:
        title += "\nstand-in overviews generated from genres: clustering by genre is expected"
    figures.tsne_plot(features["text"], primary, path, title, seed=seed)
    return f"\n![t-SNE of overview embeddings]({path.name})\n\n{TSNE_NOTES[standin]}\n"


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
