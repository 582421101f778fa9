"""The four MovieLens formats loaded into the canonical interactions and movies tables, validated,
and written as a workspace's Parquet files."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armor.data.movielens.parse import TextFile, dat_file, read, read_header
from armor.data.movielens.sources import (
    DEFAULT_BASE_URL,
    DEFAULT_CACHE_DIR,
    EMBEDDED,
    detect_files,
    resolve_movielens,
)
from armor.data.schema import INTERACTIONS_SCHEMA, MAX_RATING, MIN_RATING, MOVIES_SCHEMA
from armor.errors import DataError
from armor.io import atomic_path

log = logging.getLogger(__name__)

# u.genre order; the flag columns of u.item follow it.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")

# Lazy title so parentheses inside the title ("..., The (Cité des enfants perdus, La) (1995)") stay in it;
# only a final four-digit "(YYYY)" is the year.
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>[0-9]{4})\)\s*$"


@dataclasses.dataclass(frozen=True)
class MovieLensData:
    interactions: pa.Table
    movies: pa.Table
    format: str
    source: Path


# --------------------------------------------------------------------------------------------
# Per-format loaders. Each returns (ratings in the canonical column names, the ratings TextFile,
# movies in the canonical column names, the movies TextFile); the TextFiles turn rows into lines
# for the checks in _validate. Column names inside a loader are the file's own, so messages use them.


def _ratings_types(user: str, movie: str, rating: str, ts: str,
                   ts_type: pa.DataType | None = None) -> dict[str, pa.DataType]:
    return {user: pa.int32(), movie: pa.int32(), rating: pa.float32(), ts: ts_type or pa.int64()}


def _canonical_ratings(table: pa.Table, user: str, movie: str, rating: str, ts: str) -> pa.Table:
    return pa.table({"user_id": table[user], "movie_id": table[movie], "rating": table[rating],
                     "timestamp": table[ts]})


def _load_ml100k(files: dict[str, Path]) -> tuple[pa.Table, TextFile, pa.Table, TextFile]:
    ratings_file = TextFile(files["ratings"], "\t", "tabs")
    names = ["user id", "item id", "rating", "timestamp"]
    ratings = _canonical_ratings(read(ratings_file, names, _ratings_types(*names)), *names)

    movies_file = TextFile(files["movies"], "|", "'|'", encoding="latin-1")
    names = ["movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES]
    types = {"movie id": pa.int32(), "movie title": pa.string(), "release date": pa.string(),
             **{g: pa.int8() for g in ML100K_GENRES}}
    table = read(movies_file, names, types)
    title, year = _split_title(table["movie title"])
    release_year = pc.cast(pc.struct_field(pc.extract_regex(pc.utf8_trim_whitespace(table["release date"]),
                                                            r"(?P<y>[0-9]{4})$"), "y"), pa.int32())
    year = pc.coalesce(year, release_year)
    flags = np.column_stack([table[g].to_numpy() for g in ML100K_GENRES]) if table.num_rows else \
        np.zeros((0, len(ML100K_GENRES)), np.int8)
    bad_rows, bad_cols = np.nonzero(~np.isin(flags, (0, 1)))
    if bad_rows.size:
        row, col = int(bad_rows[0]), int(bad_cols[0])
        raise movies_file.error(f"genre flag {ML100K_GENRES[col]!r} is {int(flags[row, col])}, expected 0 or 1", row)
    genres = _genres_from_flags(flags[:, 1:] == 1, ML100K_GENRES[1:])  # "unknown" means no genre
    movies = _movies_table(table["movie id"], title, year, genres)
    return ratings, ratings_file, movies, movies_file


def _load_atomic(files: dict[str, Path]) -> tuple[pa.Table, TextFile, pa.Table, TextFile]:
    inter_path, item_path = files["ratings"], files["movies"]
    fields = read_header(inter_path, None, "\t")
    names = [x.split(":", 1)[0] for x in fields]
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in names]
    if missing:
        raise DataError(f"header lacks {', '.join(missing)}; expected tab-separated fields like "
                        "'user_id:token\\titem_id:token\\trating:float\\ttimestamp:float'", inter_path, 1)
    ratings_file = TextFile(inter_path, "\t", "tabs", header_lines=1)
    # RecBole declares timestamp:float; parse it as such and insist on whole seconds.
    table = read(ratings_file, names, _ratings_types("user_id", "item_id", "rating", "timestamp", pa.float64()))
    ts = table["timestamp"]
    whole = pc.and_(pc.is_finite(ts), pc.equal(pc.floor(ts), ts))
    row = pc.index(whole, False).as_py()
    if row >= 0:
        raise ratings_file.error(f"timestamp {ts[row].as_py()!r} is not a whole number of seconds", row)
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pc.cast(ts, pa.int64()))
    ratings = _canonical_ratings(table, "user_id", "item_id", "rating", "timestamp")

    fields = read_header(item_path, None, "\t")
    names = [x.split(":", 1)[0] for x in fields]
    for column in ("item_id", "movie_title"):
        if column not in names:
            raise DataError(f"header lacks {column}; expected tab-separated fields like 'item_id:token\\t"
                            "movie_title:token_seq\\trelease_year:token\\tclass:token_seq'", item_path, 1)
    movies_file = TextFile(item_path, "\t", "tabs", header_lines=1)
    types = {"item_id": pa.int32(), "movie_title": pa.string()}
    types.update({c: pa.string() for c in ("release_year", "class") if c in names})
    table = read(movies_file, names, types)
    title, title_year = _split_title(table["movie_title"])
    if "release_year" in names:
        column = pc.utf8_trim_whitespace(table["release_year"])
        numeric = pc.match_substring_regex(column, r"^[0-9]{4}$")
        # Non-numeric years ("unkonwn" for movie 267, "V" where the year stayed in the title) fall back to the title.
        year = pc.coalesce(pc.cast(pc.if_else(numeric, column, None), pa.int32()), title_year)
    else:
        year = title_year
    if "class" in names:
        genres = _split_genres(table["class"], " ", drop=("unknown",))
    else:
        genres = pa.array([[]] * table.num_rows, pa.list_(pa.string()))
    movies = _movies_table(table["item_id"], title, year, genres)
    return ratings, ratings_file, movies, movies_file


def _load_ml1m(files: dict[str, Path]) -> tuple[pa.Table, TextFile, pa.Table, TextFile]:
    ratings_file = dat_file(files["ratings"])
    names = ["UserID", "MovieID", "Rating", "Timestamp"]
    ratings = _canonical_ratings(read(ratings_file, names, _ratings_types(*names)), *names)

    movies_file = dat_file(files["movies"])
    names = ["MovieID", "Title", "Genres"]
    table = read(movies_file, names, {"MovieID": pa.int32(), "Title": pa.string(), "Genres": pa.string()})
    title, year = _split_title(table["Title"])
    movies = _movies_table(table["MovieID"], title, year, _split_genres(table["Genres"], "|"))
    return ratings, ratings_file, movies, movies_file


def _load_latest(files: dict[str, Path]) -> tuple[pa.Table, TextFile, pa.Table, TextFile]:
    names = ["userId", "movieId", "rating", "timestamp"]
    read_header(files["ratings"], names, ",")
    ratings_file = TextFile(files["ratings"], ",", "commas", header_lines=1, quoted=True)
    ratings = _canonical_ratings(read(ratings_file, names, _ratings_types(*names)), *names)

    names = ["movieId", "title", "genres"]
    read_header(files["movies"], names, ",")
    movies_file = TextFile(files["movies"], ",", "commas", header_lines=1, quoted=True)
    table = read(movies_file, names, {"movieId": pa.int32(), "title": pa.string(), "genres": pa.string()})
    title, year = _split_title(table["title"])
    genres = _split_genres(table["genres"], "|", drop=("(no genres listed)",))
    imdb = tmdb = None
    if "links" in files:
        imdb, tmdb = _load_links(files["links"], table["movieId"])
    movies = _movies_table(table["movieId"], title, year, genres, imdb, tmdb)
    return ratings, ratings_file, movies, movies_file


def _load_links(path: Path, movie_ids: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    names = ["movieId", "imdbId", "tmdbId"]
    read_header(path, names, ",")
    links_file = TextFile(path, ",", "commas", header_lines=1, quoted=True)
    # imdbId stays text: its leading zeros are part of the "tt0114709" form.
    table = read(links_file, names, {"movieId": pa.int32(), "imdbId": pa.string(), "tmdbId": pa.int32()},
                  nullable=("tmdbId",))
    raw = pc.utf8_trim_whitespace(table["imdbId"])
    ok = pc.or_(pc.match_substring_regex(raw, r"^[0-9]+$"), pc.equal(raw, ""))
    row = pc.index(ok, False).as_py()
    if row >= 0:
        raise links_file.error(f"imdbId {raw[row].as_py()!r} is not numeric", row)
    imdb = pc.if_else(pc.equal(raw, ""), None, pc.binary_join_element_wise("tt", raw, ""))
    where = pc.index_in(movie_ids, value_set=table["movieId"].combine_chunks())
    return pc.take(imdb, where), pc.take(table["tmdbId"], where)


# --------------------------------------------------------------------------------------------
# Column helpers


def _split_title(raw: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    raw = pc.utf8_trim_whitespace(raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw)
    match = pc.extract_regex(raw, _TITLE_YEAR)
    has_year = pc.fill_null(pc.not_equal(pc.struct_field(match, "title"), ""), False)
    title = pc.if_else(has_year, pc.struct_field(match, "title"), raw)
    year = pc.if_else(has_year, pc.cast(pc.struct_field(match, "year"), pa.int32()), pa.scalar(None, pa.int32()))
    return title, year


def _split_genres(raw: pa.ChunkedArray, sep: str, drop: Sequence[str] = ()) -> pa.Array:
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    lists = pc.split_pattern(pc.utf8_trim_whitespace(raw), sep)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    parents = pc.list_parent_indices(lists)
    keep = pc.invert(pc.is_in(flat, value_set=pa.array(["", *drop], pa.string())))
    flat, parents = flat.filter(keep), parents.filter(keep)
    counts = np.bincount(parents.to_numpy(), minlength=len(raw))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)


def _genres_from_flags(mask: np.ndarray, names: Sequence[str]) -> pa.Array:
    _, cols = np.nonzero(mask)  # row-major, so genres keep u.genre order within a movie
    offsets = np.concatenate(([0], np.cumsum(mask.sum(axis=1)))).astype(np.int32)
    values = pa.array(np.asarray(names, dtype=object)[cols], pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _movies_table(movie_id: pa.Array, title: pa.Array, year: pa.Array, genres: pa.Array,
                  imdb: pa.Array | None = None, tmdb: pa.Array | None = None) -> pa.Table:
    n = len(movie_id)
    if imdb is None:
        imdb = pa.nulls(n, pa.string())
    if tmdb is None:
        tmdb = pa.nulls(n, pa.int32())
    return pa.table({"movie_id": movie_id, "title": title, "year": year, "genres": genres,
                     "imdb_id": imdb, "tmdb_id": tmdb})


def _first_duplicate(*keys: np.ndarray) -> tuple[int, int] | None:
    """(first row, repeating row) of the earliest row whose key appeared before, else None."""
    if keys[0].size < 2:
        return None
    key = np.zeros(keys[0].size, dtype=np.int64)
    for k in keys:  # in place: at ML-32M size every temporary costs 256 MB and a pass over memory
        lo, hi = int(k.min()), int(k.max())
        key *= hi - lo + 1
        key += k
        key -= lo
    if bool(np.all(key[1:] > key[:-1])):  # released files are sorted: O(n) common case
        return None
    ordered = np.sort(key)
    if not bool(np.any(ordered[1:] == ordered[:-1])):
        return None
    order = np.argsort(key, kind="stable")
    sk = key[order]
    repeats = order[np.flatnonzero(sk[1:] == sk[:-1]) + 1]
    second = int(repeats.min())
    first = int(order[np.searchsorted(sk, key[second], side="left")])
    return first, second


# --------------------------------------------------------------------------------------------
# Validation shared by all formats


def _validate(ratings: pa.Table, ratings_file: TextFile, movies: pa.Table, movies_file: TextFile) -> None:
    if ratings.num_rows == 0:
        raise DataError("no ratings in the file" + (" after the header" if ratings_file.header_lines else ""),
                        ratings_file.path)
    if movies.num_rows == 0:
        raise DataError("no movies in the file", movies_file.path)

    rating = ratings["rating"]
    in_range = pc.and_(pc.greater_equal(rating, MIN_RATING), pc.less_equal(rating, MAX_RATING))
    row = pc.index(in_range, False).as_py()  # NaN compares false, so it is caught here too
    if row >= 0:
        raise ratings_file.error(f"rating {rating[row].as_py()} is outside [{MIN_RATING}, {MAX_RATING}]", row)

    dup = _first_duplicate(movies["movie_id"].to_numpy())
    if dup is not None:
        first, second = dup
        raise movies_file.error(f"movie id {movies['movie_id'][second].as_py()} is listed twice: also on line "
                                f"{movies_file.line_of_row(first)}", second)

    dup = _first_duplicate(ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy())
    if dup is not None:
        first, second = dup
        raise ratings_file.error(
            f"user {ratings['user_id'][second].as_py()} rated movie {ratings['movie_id'][second].as_py()} twice: "
            f"line {ratings_file.line_of_row(first)} and line {ratings_file.line_of_row(second)}", second)

    known = pc.is_in(ratings["movie_id"], value_set=movies["movie_id"].combine_chunks())
    row = pc.index(known, False).as_py()
    if row >= 0:
        unknown = ratings.num_rows - pc.sum(known.cast(pa.int64())).as_py()
        raise ratings_file.error(
            f"movie id {ratings['movie_id'][row].as_py()} is not in {movies_file.path.name} "
            f"({unknown} rating(s) refer to unknown movies)", row)


# --------------------------------------------------------------------------------------------
# Public loading API


_LOADERS = {"ml-100k": _load_ml100k, "ml-100k-atomic": _load_atomic, "ml-1m": _load_ml1m,
            "ml-latest": _load_latest}


def load_movielens(directory: str | Path) -> MovieLensData:
    """Load a MovieLens directory of any known format into the canonical interactions and movies tables."""
    directory = Path(directory).expanduser()
    started = time.perf_counter()
    fmt, files = detect_files(directory)
    ratings, ratings_file, movies, movies_file = _LOADERS[fmt](files)
    _validate(ratings, ratings_file, movies, movies_file)
    interactions = ratings.cast(INTERACTIONS_SCHEMA)
    movies = movies.cast(MOVIES_SCHEMA)
    log.info("loaded %s from %s: %d ratings, %d movies in %.2fs", fmt, directory, interactions.num_rows,
             movies.num_rows, time.perf_counter() - started)
    return MovieLensData(interactions=interactions, movies=movies, format=fmt, source=directory)


def prepare(source: str | Path, out_dir: str | Path, *, cache_dir: str | Path | None = None,
            base_url: str = DEFAULT_BASE_URL, offline: bool = False) -> dict[str, object]:
    """Load ``source`` (a directory, a release name or "embedded") and write the workspace's Parquet files.

    Writes ``out_dir/interactions.parquet`` and ``out_dir/movies.parquet``. Everything is loaded and
    validated before anything is written, and both files are renamed into place only after both were
    written, so a failure leaves neither a partial nor a mismatched pair.
    """
    path = Path(source).expanduser()
    if not path.is_dir() or str(source) == EMBEDDED:
        path = resolve_movielens(source, cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR,
                                 base_url=base_url, offline=offline)
    data = load_movielens(path)
    out = Path(out_dir)
    with atomic_path(out / "interactions.parquet") as inter_tmp, atomic_path(out / "movies.parquet") as movies_tmp:
        pq.write_table(data.interactions, inter_tmp)
        pq.write_table(data.movies, movies_tmp)
    return {
        "format": data.format,
        "source": str(data.source),
        "interactions": data.interactions.num_rows,
        "users": pc.count_distinct(data.interactions["user_id"]).as_py(),
        "movies": data.movies.num_rows,
        "rated_movies": pc.count_distinct(data.interactions["movie_id"]).as_py(),
        "movies_with_imdb_id": data.movies.num_rows - data.movies["imdb_id"].null_count,
        "movies_with_tmdb_id": data.movies.num_rows - data.movies["tmdb_id"].null_count,
    }
