"""A complete, small workspace (ratings, split, features) built from a synthetic world in seconds.

The features are projections of the world's planted truth instead of real encoder outputs, so
tests that train models need no image decoding and still have signal to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from armor.config import SplitConfig
from armor.data.catalogue import select_catalogue
from armor.data.splits import make_split, write_split
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.features.store import FeatureStore

DIMS = {"text": 24, "poster": 32, "thumbnail": 32}


def planted_features(world: SyntheticWorld, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = world.config.n_movies

    def project(x: np.ndarray, d: int, noise: float) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return (x @ rng.standard_normal((x.shape[1], d)).astype(np.float32)
                + noise * rng.standard_normal((n, d)).astype(np.float32))

    primary = np.eye(len(world.genre_names), dtype=np.float32)[world.movie_primary_genre]
    return {"text": project(world.movie_factors, DIMS["text"], 0.3),
            "poster": np.maximum(project(world.movie_genre_matrix, DIMS["poster"], 0.1), 0),
            "thumbnail": np.maximum(project(primary, DIMS["thumbnail"], 0.1), 0)}


def make_workspace(root: Path, *, users: int = 300, movies: int = 240, ratings: int = 12_000, seed: int = 0,
                   split: str = "random", missing_thumbnails: float = 0.0, extra_splits: tuple[str, ...] = ()) -> Path:
    """Ratings, a feature store and the ``split`` (plus ``extra_splits``) over the multimodal catalogue."""
    world = SyntheticWorld(SyntheticConfig(n_users=users, n_movies=movies, n_ratings=ratings, seed=seed,
                                           popularity_exponent=0.3, taste_strength=8.0))
    root.mkdir(parents=True, exist_ok=True)
    interactions = world.interactions()
    pq.write_table(interactions, root / "interactions.parquet")
    pq.write_table(world.movies(), root / "movies.parquet")
    features = planted_features(world, seed)
    encoders = {m: {"model": "planted-truth-projection", "dim": d} for m, d in DIMS.items()}
    store = FeatureStore(root / "features", DIMS, encoders)
    store.claim(overwrite=True)
    rng = np.random.default_rng(seed + 1)
    has_thumbnail = rng.random(movies) >= missing_thumbnails
    thumbs = np.where(has_thumbnail[:, None], features["thumbnail"], 0.0).astype(np.float32)
    now = pa.array(np.full(movies, 1_000, np.int64)).cast(pa.timestamp("ms", tz="UTC"))
    columns = {"movie_id": pa.array(np.arange(1, movies + 1), pa.int32()), "status": ["ok"] * movies}
    for modality, column, values, ok in (("text", "text_emb", features["text"], np.ones(movies, bool)),
                                         ("poster", "poster_emb", features["poster"], np.ones(movies, bool)),
                                         ("thumbnail", "thumb_emb", thumbs, has_thumbnail)):
        columns[column] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        columns[f"{modality}_status"] = np.where(ok, "ok", "missing").tolist()
    columns.update(error=[None] * movies, source_scraped_at=now, encoded_at=now)
    store.write_part(pa.table({f.name: columns[f.name] for f in store.schema}, schema=store.schema))
    for method in (split, *extra_splits):
        config = SplitConfig(method=method, seed=seed, catalogue="multimodal")
        catalogue = select_catalogue(world.movies()["movie_id"].to_numpy(), "multimodal", "exclude",
                                     root / "features")
        write_split(make_split(interactions, config, catalogue), root / "splits" / method)
    return root
