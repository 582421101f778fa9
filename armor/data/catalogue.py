"""Which movies a benchmark ranks, and the funnel from the ratings file to the evaluated users.

A split is made for a named catalogue: ``all`` the movies of the movies table, or the
``multimodal`` catalogue under a missing-modality policy (``exclude``, the paper's rule: movies
with overview, poster and thumbnail features; ``impute``: movies with at least one). The order of
operations is catalogue first, then users (>= N positives inside the catalogue), then the split,
so every evaluated user has at least N positives in the catalogue and no user is dropped later.
The funnel records what each step kept and dropped, and why.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np

from armor.errors import DataError

CatalogueName = Literal["all", "multimodal"]
MODALITIES = ("text", "poster", "thumbnail")


@dataclasses.dataclass(frozen=True)
class Catalogue:
    name: str  # "all" or "multimodal/<policy>"
    movie_ids: np.ndarray  # sorted
    excluded: dict[str, int]  # reason -> movies of the movies table left out for it


def select_catalogue(movie_ids: np.ndarray, name: CatalogueName, policy: str = "exclude",
                     features_dir: str | Path | None = None) -> Catalogue:
    """The catalogue ``name`` over the movies table's ``movie_ids`` (the feature store decides "multimodal")."""
    movie_ids = np.unique(np.asarray(movie_ids, dtype=np.int64))
    if name == "all":
        return Catalogue("all", movie_ids, {})
    if name != "multimodal":
        raise DataError(f"catalogue must be all or multimodal, got {name!r}")
    if features_dir is None or not Path(features_dir).exists():
        raise DataError("the multimodal catalogue needs the feature store: run `armor scrape` and `armor encode`, "
                        "or split with --catalogue all", path=features_dir)
    from armor.features.store import load_features

    stored_ids, _, present = load_features(features_dir)
    masks = {m: present[m] for m in MODALITIES if m in present}
    if not masks:
        raise DataError("the feature store holds no modality; run `armor encode`", path=features_dir)
    in_store = np.isin(movie_ids, stored_ids)
    rows = np.searchsorted(stored_ids, movie_ids[in_store])
    have = {m: np.zeros(movie_ids.size, bool) for m in masks}
    for m, mask in masks.items():
        have[m][in_store] = mask[rows]
    stacked = np.stack(list(have.values()))  # (M, n)
    keep = stacked.all(axis=0) if policy == "exclude" else stacked.any(axis=0)
    excluded = {"not scraped or encoded": int((~in_store).sum())}
    for m in masks:
        excluded[f"no {m}"] = int((in_store & ~have[m] & ~keep).sum())
    if policy == "impute":
        excluded = {"not scraped or encoded": excluded["not scraped or encoded"],
                    "no modality at all": int((in_store & ~keep).sum())}
    return Catalogue(f"multimodal/{policy}", movie_ids[keep], {k: v for k, v in excluded.items() if v})


def small_ids(values: np.ndarray) -> bool:
    """True for non-negative integer ids whose maximum is small enough for a table indexed by id
    (MovieLens user and movie ids: at most a few hundred thousand)."""
    return (np.issubdtype(values.dtype, np.integer) and values.size > 0 and int(values.min()) >= 0
            and int(values.max()) < max(1 << 22, 4 * values.size))


def n_distinct(values: np.ndarray) -> int:
    """How many distinct values ``values`` holds.

    Small integer ids are marked in a table indexed by id, one linear pass whose table stays in
    cache; np.unique's hash table or sort grew 7x per row from the ML-10M to the ML-32M shape in
    the split's funnel (benchmarks/bench_scale.py). Anything else goes through np.unique.
    """
    values = np.asarray(values)
    if not small_ids(values):
        return int(np.unique(values).size)
    seen = np.zeros(int(values.max()) + 1, dtype=bool)
    seen[values] = True
    return int(np.count_nonzero(seen))


def funnel_step(step: str, users: np.ndarray, movies: np.ndarray, positives: int, **dropped: Any) -> dict[str, Any]:
    """One funnel row: distinct users and movies, positives, and what the step dropped and why."""
    return {"step": step, "users": n_distinct(users), "movies": n_distinct(movies), "positives": int(positives),
            **dropped}


def funnel_markdown(funnel: list[dict[str, Any]]) -> str:
    lines = ["| step | users | movies | positives | dropped |", "|---|---:|---:|---:|---|"]
    for row in funnel:
        dropped = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.items()
                            if k not in ("step", "users", "movies", "positives"))
        lines.append(f"| {row['step']} | {row['users']} | {row['movies']} | {row['positives']} | {dropped} |")
    return "\n".join(lines) + "\n"
