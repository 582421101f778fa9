"""Per-user train / valid / test splits of positive interactions, and their sparse matrices.

The protocol follows the paper: ratings >= 4.0 are positives, users need enough positives,
then each user's positives are split 80/10/10 (random with a seed, or temporal) or
leave-one-out (latest positive to test, the one before it to valid). "Latest" is ordered by
(timestamp, movie_id) because MovieLens timestamps tie often and file order is arbitrary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from armor.config import SplitConfig, from_dict
from armor.data.schema import INTERACTIONS_SCHEMA, SPLIT_NAMES
from armor.errors import DataError
from armor.io import atomic_path

log = logging.getLogger(__name__)


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # numpy rounds half to even, which would give a 5-positive user 0 test items at 10 %.
    return np.floor(x + 0.5).astype(np.int64)


def split_interactions(interactions: pa.Table, config: SplitConfig) -> dict[str, pa.Table]:
    """Split positives per user. Returns {"train", "valid", "test"} tables in the interactions schema.

    Deterministic for a given config whatever the row order of ``interactions``.
    """
    positives = interactions.filter(pc.greater_equal(interactions["rating"], config.positive_threshold))
    users = positives["user_id"].to_numpy()
    movies = positives["movie_id"].to_numpy()
    times = positives["timestamp"].to_numpy()

    unique_users, counts = np.unique(users, return_counts=True)
    kept_users = unique_users[counts >= config.min_user_positives]
    keep = np.isin(users, kept_users)
    log.info("split: %d of %d users have >= %d positives", kept_users.size, unique_users.size,
             config.min_user_positives)
    positives = positives.filter(pa.array(keep))
    users, movies, times = users[keep], movies[keep], times[keep]
    if users.size == 0:
        raise DataError(
            f"no user has {config.min_user_positives} or more ratings >= {config.positive_threshold}; "
            "lower split.min_user_positives or check the ratings")

    if config.method == "random":
        # Random keys are drawn in (user, movie) order so the split ignores the input row order.
        canonical = np.lexsort((movies, users))
        keys = np.empty(users.size)
        keys[canonical] = np.random.default_rng(config.seed).random(users.size)
        order = np.lexsort((keys, users))
    else:
        order = np.lexsort((movies, times, users))

    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    sizes = np.diff(np.r_[starts, sorted_users.size])
    position = np.arange(sorted_users.size) - np.repeat(starts, sizes)

    if config.method == "loo":
        n_test = np.ones_like(sizes)
        n_valid = np.ones_like(sizes)
    else:
        _, valid_ratio, test_ratio = config.ratios
        # Every user keeps at least one item in each part, whatever the ratios.
        n_test = np.clip(_round_half_up(sizes * test_ratio), 1, sizes - 2)
        n_valid = np.clip(_round_half_up(sizes * valid_ratio), 1, sizes - 1 - n_test)
    n_train_per_row = np.repeat(sizes - n_test - n_valid, sizes)
    n_valid_per_row = np.repeat(n_valid, sizes)

    part = np.full(sorted_users.size, 2, dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[position < n_train_per_row] = 0
    part[(position >= n_train_per_row) & (position < n_train_per_row + n_valid_per_row)] = 1

    ordered = positives.take(pa.array(order))
    tables = {}
    for index, name in enumerate(SPLIT_NAMES):
        tables[name] = ordered.filter(pa.array(part == index)).cast(INTERACTIONS_SCHEMA)
    return tables


def write_splits(tables: dict[str, pa.Table], config: SplitConfig, out_dir: str | Path) -> Path:
    """Write the three split tables and the config that made them, all or nothing."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for name in SPLIT_NAMES:
            pq.write_table(tables[name], tmp / f"{name}.parquet")
        (tmp / "split.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    return out_dir


def read_splits(split_dir: str | Path) -> tuple[dict[str, pa.Table], SplitConfig]:
    split_dir = Path(split_dir)
    missing = [n for n in (*[f"{s}.parquet" for s in SPLIT_NAMES], "split.json")
               if not (split_dir / n).exists()]
    if missing:
        raise DataError(f"split directory is incomplete (missing {', '.join(missing)}); "
                        "run `armor data split` first", path=split_dir)
    config = from_dict(SplitConfig, json.loads((split_dir / "split.json").read_text()))
    return {name: pq.read_table(split_dir / f"{name}.parquet") for name in SPLIT_NAMES}, config


@dataclasses.dataclass(frozen=True)
class SplitData:
    """A split as dense-indexed binary user x item CSR matrices over a fixed catalogue.

    Row u is ``user_ids[u]``; column i is ``item_ids[i]`` (sorted movie ids). Every catalogue
    movie is a column, including movies nobody liked in training: full ranking ranks them all.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    item_genres: sp.csr_matrix | None = None  # (I, G) multi-hot, for diversity
    genre_names: tuple[str, ...] = ()

    @property
    def n_users(self) -> int:
        return int(self.user_ids.size)

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    def item_index(self, movie_ids: np.ndarray) -> np.ndarray:
        """Column indices of ``movie_ids``; -1 where a movie is not in the catalogue."""
        movie_ids = np.asarray(movie_ids)
        pos = np.searchsorted(self.item_ids, movie_ids)
        pos = np.minimum(pos, self.item_ids.size - 1)
        return np.where(self.item_ids[pos] == movie_ids, pos, -1)


def build_split_data(tables: dict[str, pa.Table], catalogue: np.ndarray,
                     movies: pa.Table | None = None) -> SplitData:
    """Index split tables against ``catalogue`` (movie ids). Interactions outside it are dropped."""
    item_ids = np.unique(np.asarray(catalogue, dtype=np.int64))
    user_ids = np.unique(tables["train"]["user_id"].to_numpy())

    def to_csr(table: pa.Table) -> sp.csr_matrix:
        rows = np.searchsorted(user_ids, table["user_id"].to_numpy())
        movie = table["movie_id"].to_numpy()
        cols = np.searchsorted(item_ids, movie)
        cols_clipped = np.minimum(cols, item_ids.size - 1)
        known = (item_ids[cols_clipped] == movie) & (rows < user_ids.size)
        known &= user_ids[np.minimum(rows, user_ids.size - 1)] == table["user_id"].to_numpy()
        if not known.all():
            log.info("dropping %d interactions outside the catalogue", int((~known).sum()))
        data = np.ones(int(known.sum()), dtype=np.float32)
        matrix = sp.csr_matrix((data, (rows[known], cols_clipped[known])),
                               shape=(user_ids.size, item_ids.size))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    genres, genre_names = (None, ())
    if movies is not None:
        genres, genre_names = genre_matrix(movies, item_ids)
    return SplitData(user_ids=user_ids, item_ids=item_ids, train=to_csr(tables["train"]),
                     valid=to_csr(tables["valid"]), test=to_csr(tables["test"]),
                     item_genres=genres, genre_names=genre_names)


def genre_matrix(movies: pa.Table, item_ids: np.ndarray) -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """Multi-hot (item x genre) matrix aligned with ``item_ids``; unknown movies get no genres."""
    movie_ids = movies["movie_id"].to_numpy()
    genre_lists = movies["genres"].to_pylist()
    names = tuple(sorted({g for gl in genre_lists for g in gl}))
    column = {g: j for j, g in enumerate(names)}
    pos = np.searchsorted(item_ids, movie_ids)
    pos_clipped = np.minimum(pos, item_ids.size - 1)
    rows, cols = [], []
    for i, (p, gl) in enumerate(zip(pos_clipped, genre_lists)):
        if item_ids[p] != movie_ids[i]:
            continue
        for g in gl:
            rows.append(p)
            cols.append(column[g])
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(item_ids.size, len(names)))
    matrix.data[:] = 1.0
    return matrix, names


def load_split_data(split_dir: str | Path, movies_path: str | Path) -> SplitData:
    """Read a split directory and index it against every movie in the movies table."""
    tables, _ = read_splits(split_dir)
    movies = pq.read_table(movies_path)
    return build_split_data(tables, movies["movie_id"].to_numpy(), movies)
