"""The benchmark of a workspace split: its data over its catalogue, and the item features content
models need, aligned with that catalogue.

The split decides the catalogue (``armor data split --catalogue``): every model trained or
evaluated on it ranks exactly those movies, so content and interaction-only models rank the same
items for the same users. Models that need no features (BPR, LightGCN, popularity, ...) load a
split without touching the feature store, so the interaction baselines run on a workspace that
was never encoded.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from armor.data.catalogue import MODALITIES
from armor.data.splits import Split, SplitData, build_split_data, read_split
from armor.errors import DataError
from armor.workspace import Workspace

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    data: SplitData
    features: dict[str, np.ndarray] | None  # modality -> (n_items, dim), rows aligned with data.item_ids
    present: dict[str, np.ndarray] | None  # modality -> (n_items,) bool
    split: Split
    split_name: str
    movies_total: int  # movies in the movies table

    @property
    def policy(self) -> str:
        return self.split.config.missing_modality

    @property
    def excluded_movies(self) -> int:
        """Movies of the movies table the split's catalogue leaves out."""
        return self.movies_total - self.data.n_items


def load_benchmark(workspace: str | Path, split: str, features_dir: str | Path | None = None,
                   needs_features: bool = True) -> Benchmark:
    ws = Workspace(workspace)
    ws.require(ws.movies, hint="run `armor data prepare` first")
    made = read_split(ws.split_dir(split))
    movies = pq.read_table(ws.movies)
    data = build_split_data(made.tables, made.catalogue, movies)
    features = present = None
    if needs_features:
        features, present = _aligned_features(features_dir or ws.features, data.item_ids, split,
                                              made.config.missing_modality)
    log.info("benchmark %s: %d of %d movies in the catalogue, %d users", split, data.n_items, movies.num_rows,
             data.n_users)
    return Benchmark(data=data, features=features, present=present, split=made, split_name=split,
                     movies_total=movies.num_rows)


def _aligned_features(directory: str | Path, item_ids: np.ndarray, split: str,
                      policy: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feature rows for exactly ``item_ids``; every one must have what the split's policy needs."""
    from armor.features.store import load_features

    if not Path(directory).exists():
        raise DataError("this model ranks by item content and needs the feature store: run `armor encode`",
                        path=directory)
    movie_ids, vectors, present = load_features(directory)
    if not vectors:
        raise DataError("the feature store holds no modality; run `armor encode`", path=directory)
    rows = np.minimum(np.searchsorted(movie_ids, item_ids), movie_ids.size - 1)
    stored = movie_ids[rows] == item_ids
    masks = np.stack([np.where(stored, present[m][rows], False) for m in MODALITIES if m in present])
    usable = masks.all(axis=0) if policy == "exclude" else masks.any(axis=0)
    if not usable.all():
        missing = item_ids[~usable]
        raise DataError(f"split {split!r} ranks {missing.size} movies without the features its missing-modality "
                        f"policy ({policy}) needs (movie ids {missing[:5].tolist()}...): content models need a split "
                        "made with `armor data split --catalogue multimodal` on this feature store", path=directory)
    return ({m: v[rows] for m, v in vectors.items()}, {m: np.where(stored, p[rows], False) for m, p in present.items()})
