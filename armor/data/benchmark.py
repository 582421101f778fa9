"""The multimodal benchmark of a workspace: a split over the catalogue every model is scored on.

Under the paper's rule ("exclude") the catalogue is the movies that have all three modalities;
under "impute" it is the movies with at least one (missing ones are masked out of fusion and
zero in single-modality baselines). Interactions with movies outside the catalogue are dropped
from every part of the split, for every model alike, so content and interaction-only models
rank the same items for the same users.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from armor.data.splits import SplitData, build_split_data, read_splits
from armor.errors import ConfigError, DataError
from armor.features.store import load_features
from armor.workspace import Workspace

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    data: SplitData
    features: dict[str, np.ndarray]  # modality -> (n_items, dim), rows aligned with data.item_ids
    present: dict[str, np.ndarray]  # modality -> (n_items,) bool
    policy: str
    excluded_movies: int  # catalogue movies left out for lacking modalities (or features)
    split_name: str


def load_benchmark(workspace: str | Path, split: str, policy: str = "exclude",
                   features_dir: str | Path | None = None) -> Benchmark:
    if policy not in ("exclude", "impute"):
        raise ConfigError(f"--missing-modality must be exclude or impute, got {policy!r}")
    ws = Workspace(workspace)
    ws.require(ws.movies, hint="run `armor data prepare` first")
    tables, _ = read_splits(ws.split_dir(split))
    movies = pq.read_table(ws.movies)
    movie_ids, vectors, present = load_features(features_dir or ws.features)
    if not vectors:
        raise DataError("the feature store holds no modality; run `armor encode`", path=features_dir or ws.features)
    masks = np.stack(list(present.values()))  # (M, n)
    keep = masks.all(axis=0) if policy == "exclude" else masks.any(axis=0)
    catalogue = movie_ids[keep]
    excluded = int(movies.num_rows - catalogue.size)
    if catalogue.size == 0:
        raise DataError(f"no movie has the modalities the {policy!r} policy needs; check `armor encode`'s summary",
                        path=features_dir or ws.features)
    data = build_split_data(tables, catalogue, movies)
    rows = np.searchsorted(movie_ids, data.item_ids)
    log.info("benchmark %s (%s): %d of %d movies in the catalogue (%d excluded), %d users", split, policy,
             data.n_items, movies.num_rows, excluded, data.n_users)
    return Benchmark(data=data, features={m: v[rows] for m, v in vectors.items()},
                     present={m: p[rows] for m, p in present.items()}, policy=policy, excluded_movies=excluded,
                     split_name=split)
