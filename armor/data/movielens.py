"""Load the public MovieLens releases into the canonical Arrow tables, and fetch them.

Four on-disk formats are recognised from a directory's contents:

* ``ml-100k``: the raw ML-100K files ``u.data`` and ``u.item``;
* ``ml-100k-atomic``: RecBole atomic files ``<name>.inter`` / ``<name>.item`` (the copy of ML-100K
  that ships inside the recbole wheel is one);
* ``ml-1m``: ``ratings.dat`` / ``movies.dat`` with ``::`` separators (``users.dat`` is not read);
* ``ml-latest``: ``ratings.csv`` / ``movies.csv`` (+ ``links.csv``), the format of ml-latest,
  ml-latest-small, ml-20m, ml-25m and ml-32m.

Each file is parsed once, by pyarrow's streaming CSV reader, so ML-32M loads in seconds. That one
parse reports where it failed: the row it rejects (a wrong number of columns), or, since numeric
columns are read as text and converted batch by batch, the first value that is not a number. Errors
give the 1-based line number (header lines count; pyarrow skips empty lines, and the line numbers
account for them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import importlib.util
import logging
import mmap
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from armor.data.schema import INTERACTIONS_SCHEMA, MAX_RATING, MIN_RATING, MOVIES_SCHEMA
from armor.errors import DataError
from armor.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "armor" / "movielens"

# None: verified against GroupLens' published `{url}.md5` sidecar at download time, because these
# releases are re-cut now and then and a pinned digest here would go stale.
KNOWN_DATASETS: dict[str, tuple[str, str | None]] = {
    "ml-100k": (f"{DEFAULT_BASE_URL}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": (f"{DEFAULT_BASE_URL}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": (f"{DEFAULT_BASE_URL}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": (f"{DEFAULT_BASE_URL}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-32m": (f"{DEFAULT_BASE_URL}/ml-32m.zip", None),
    "ml-latest-small": (f"{DEFAULT_BASE_URL}/ml-latest-small.zip", None),
    "ml-latest": (f"{DEFAULT_BASE_URL}/ml-latest.zip", None),
}

EMBEDDED = "embedded"
FORMATS = ("ml-100k", "ml-100k-atomic", "ml-1m", "ml-latest")

# What each format needs, in the words of the error message. Detection tries them in this order.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ml-latest": ("ratings.csv", "movies.csv"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-100k": ("u.data", "u.item"),
}
_NEEDS = {
    "ml-100k": "u.data + u.item",
    "ml-100k-atomic": "<name>.inter + <name>.item (RecBole atomic files)",
    "ml-1m": "ratings.dat + movies.dat (users.dat is not read)",
    "ml-latest": "ratings.csv + movies.csv (+ links.csv for IMDb/TMDB ids)",
}

# u.genre order; the flag columns of u.item follow it.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")

# Lazy title so parentheses inside the title ("..., The (Cité des enfants perdus, La) (1995)") stay in it;
# only a final four-digit "(YYYY)" is the year.
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>[0-9]{4})\)\s*$"
_INT_RE = r"^-?[0-9]{1,18}$"
_FLOAT_RE = r"(?i)^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|nan|inf|infinity)$"
_ONE_BYTE_SEP = "\x1f"  # ASCII unit separator: never in MovieLens text, stands in for "::"


@dataclasses.dataclass(frozen=True)
class MovieLensData:
    interactions: pa.Table
    movies: pa.Table
    format: str
    source: Path


class DownloadError(DataError):
    """The release could not be fetched (network, HTTP status, timeout): not a corrupt download."""


# --------------------------------------------------------------------------------------------
# Detection


def detect_format(directory: str | Path) -> str:
    """Return "ml-100k", "ml-100k-atomic", "ml-1m" or "ml-latest" from the files in ``directory``."""
    return _detect(Path(directory))[0]


def _detect(directory: Path) -> tuple[str, dict[str, Path]]:
    if not directory.is_dir():
        raise DataError("not a directory; expected a MovieLens directory (" + _needs_text() + ")", directory)
    names = {p.name for p in directory.iterdir() if p.is_file()}
    found: list[tuple[str, dict[str, Path]]] = []
    partial: list[tuple[str, list[str]]] = []
    for fmt, required in _REQUIRED.items():
        missing = [f for f in required if f not in names]
        if not missing:
            files = {"ratings": directory / required[0], "movies": directory / required[1]}
            if fmt == "ml-latest" and "links.csv" in names:
                files["links"] = directory / "links.csv"
            found.append((fmt, files))
        elif len(missing) < len(required):
            partial.append((fmt, missing))

    inter = {n[: -len(".inter")] for n in names if n.endswith(".inter")}
    item = {n[: -len(".item")] for n in names if n.endswith(".item")}
    pairs = sorted(inter & item)
    if pairs:
        stem = directory.name if directory.name in pairs else pairs[0]
        if len(pairs) > 1:
            log.warning("%s holds several atomic pairs %s; using %s", directory, pairs, stem)
        found.append(("ml-100k-atomic", {"ratings": directory / f"{stem}.inter",
                                         "movies": directory / f"{stem}.item"}))
    elif inter:
        # A lone .item is no evidence (ml-100k's u.item is one); a lone .inter is.
        partial.append(("ml-100k-atomic", [f"{sorted(inter)[0]}.item"]))

    if found:
        if len(found) > 1:
            log.warning("%s matches several MovieLens formats %s; using %s", directory,
                        [f for f, _ in found], found[0][0])
        return found[0]
    if partial:
        fmt, missing = partial[0]
        raise DataError(f"incomplete MovieLens directory: looks like {fmt} but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} missing. Formats and the files they need: "
                        + _needs_text(), directory)
    hint = ""
    subdirs = [d for d in sorted(directory.iterdir()) if d.is_dir() and _quiet_detect(d)]
    if subdirs:
        hint = f" Did you mean the subdirectory {subdirs[0]}?"
    raise DataError("no MovieLens files found. Formats and the files they need: " + _needs_text() + "." + hint,
                    directory)


def _needs_text() -> str:
    return "; ".join(f"{fmt}: {needs}" for fmt, needs in _NEEDS.items())


def _quiet_detect(directory: Path) -> str | None:
    try:
        return _detect(directory)[0]
    except DataError:
        return None


def _find_data_dir(root: Path) -> Path:
    """``root`` itself or its one subdirectory holding a known format (release zips have a top folder)."""
    if _quiet_detect(root):
        return root
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        if sub.is_dir() and not sub.name.startswith((".", "__MACOSX")) and _quiet_detect(sub):
            return sub
    _detect(root)  # raises the detailed message
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Delimited text files: one serial parse that knows where it failed


@dataclasses.dataclass
class _TextFile:
    path: Path
    delimiter: str  # the one byte pyarrow splits on
    label: str  # the separator as the user's file spells it, for messages
    header_lines: int = 0
    encoding: str = "utf8"
    quoted: bool = False
    data: bytes | None = None  # content already rewritten for pyarrow (ml-1m's "::" -> one byte)
    _nonempty: np.ndarray | None = None
    _counted: bool = False

    def source(self):
        return pa.BufferReader(self.data) if self.data is not None else str(self.path)

    def line_of_ordinal(self, ordinal: int) -> int:
        """Physical 1-based line of the ``ordinal``-th (1-based) non-empty line, as pyarrow counts rows."""
        if not self._counted:
            self._nonempty, self._counted = _nonempty_lines(self.path), True
        if self._nonempty is not None and 1 <= ordinal <= self._nonempty.size:
            return int(self._nonempty[ordinal - 1])
        return ordinal

    def line_of_row(self, row: int) -> int:
        """Physical line of 0-based data row ``row`` (header lines are non-empty: checked or absent)."""
        return self.line_of_ordinal(self.header_lines + row + 1)

    def error(self, message: str, row: int | None = None) -> DataError:
        return DataError(message, self.path, None if row is None else self.line_of_row(row))


def _nonempty_lines(path: Path) -> np.ndarray | None:
    """Physical line numbers of the non-empty lines, or None when no line is empty (then row = line)."""
    # pyarrow skips empty lines, so its row numbers count only the others. Error path only, but
    # ML-32M is 800 MB: memory-map it and skip the count when no line is empty.
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return np.zeros(0, dtype=np.int64)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if mapped[:1] not in (b"\n", b"\r") and mapped.find(b"\n\n") < 0 and mapped.find(b"\n\r\n") < 0:
                return None
            raw = np.frombuffer(mapped, dtype=np.uint8)
            try:
                nl = np.flatnonzero(raw == 10)
                starts = np.concatenate(([0], nl + 1))
                ends = np.concatenate((nl, [raw.size]))
                length = ends - starts
                crlf = (length > 0) & (raw[np.maximum(ends - 1, 0)] == 13)
                return np.flatnonzero(length - crlf > 0) + 1
            finally:
                del raw  # the mmap cannot close while a numpy view holds it


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _read(f: _TextFile, names: Sequence[str], types: Mapping[str, pa.DataType],
          nullable: Sequence[str] = ()) -> pa.Table:
    """Parse ``f`` into the columns of ``types`` (a subset of ``names``), or raise a DataError with a line.

    One serial, streaming parse. Serial, because only then does pyarrow number the row it rejects;
    streaming, because batches come in file order, so the first batch that fails holds the first
    bad row. Numeric columns are parsed as text and converted batch by batch, so a value that does
    not convert is found in the text already parsed, with no second pass over the file.
    """
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    text_types = {c: pa.string() if _is_number(t) else t for c, t in types.items()}
    schema = pa.schema(list(types.items()))
    batches: list[pa.RecordBatch] = []
    rows = 0
    try:
        reader = pacsv.open_csv(
            f.source(),
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=f.header_lines,
                                           encoding=f.encoding, block_size=8 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=f.delimiter, quote_char='"' if f.quoted else False,
                                             invalid_row_handler=on_invalid),
            # An unquoted empty value is null (then "empty <column>" unless nullable); a quoted one
            # stays "", which is not a number, as in pyarrow's own typed conversion.
            convert_options=pacsv.ConvertOptions(column_types=text_types, include_columns=list(types),
                                                 null_values=[""], strings_can_be_null=True,
                                                 quoted_strings_can_be_null=False))
        for batch in reader:
            batches.append(_convert(f, batch, schema, first_row=rows))
            rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):  # no rows at all: the caller decides whether that is an error
            return schema.empty_table()
        if invalid:
            raise _column_count_error(f, invalid[0]) from exc
        if "UTF8" in str(exc) and f.encoding == "utf8":
            raise _utf8_error(f.path) from exc
        raise DataError(f"cannot parse: {exc}", f.path) from exc
    table = pa.Table.from_batches(batches, schema=schema)
    for column in types:
        if column not in nullable and table[column].null_count:
            row = pc.index(pc.is_null(table[column]), True).as_py()
            raise f.error(f"empty {column}", row)
    return table


def _convert(f: _TextFile, batch: pa.RecordBatch, schema: pa.Schema, first_row: int) -> pa.RecordBatch:
    """``batch`` with its numeric text columns converted to ``schema``; rows count from ``first_row``."""
    columns = []
    for field in schema:
        values = batch[field.name]
        if not _is_number(field.type):
            values = pc.fill_null(values, "")  # text may be empty, never missing
        elif (values := _to_number(values, field.type)) is None:
            row, column, value, kind = _first_bad_number(batch, schema)
            raise f.error(f"{column} {value!r} is not {kind}", first_row + row)
        columns.append(values)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _to_number(values: pa.Array, kind: pa.DataType) -> pa.Array | None:
    """Text ``values`` as ``kind``, or None when one does not convert. Spaces and tabs around a
    number are allowed, as in pyarrow's own typed CSV conversion."""
    try:
        return pc.cast(values, kind)
    except pa.ArrowInvalid:
        pass  # a padded value or a bad one: trimming first tells which
    try:
        return pc.cast(pc.utf8_trim(values, " \t"), kind)
    except pa.ArrowInvalid:
        return None


def _first_bad_number(batch: pa.RecordBatch, schema: pa.Schema) -> tuple[int, str, str, str]:
    """(row in ``batch``, column, value, what it should be) of the earliest value that is not a number."""
    best: tuple[int, str, str, str] | None = None
    for field in schema:
        if not _is_number(field.type):
            continue
        values = batch[field.name]
        trimmed = pc.utf8_trim(values, " \t")  # nulls stay null: the empty-value check reports them
        if pa.types.is_integer(field.type):
            info = np.iinfo(field.type.to_pandas_dtype())
            syntax = pc.fill_null(pc.match_substring_regex(trimmed, _INT_RE), True)
            as_int = pc.cast(pc.if_else(syntax, trimmed, "0"), pa.int64())
            fits = pc.fill_null(pc.and_(pc.greater_equal(as_int, int(info.min)),
                                        pc.less_equal(as_int, int(info.max))), True)
            checks = [(syntax, "an integer"),
                      (pc.or_(pc.invert(syntax), fits), f"an integer in [{info.min}, {info.max}]")]
        else:
            checks = [(pc.fill_null(pc.match_substring_regex(trimmed, _FLOAT_RE), True), "a number")]
        for ok, description in checks:
            row = pc.index(ok, False).as_py()
            if row >= 0 and (best is None or row < best[0]):
                best = (row, field.name, values[row].as_py(), description)
    if best is None:  # the cast and the checks above disagree: a bug here, not in the file
        raise AssertionError(f"no bad value found in a batch that failed to convert: {schema}")
    return best


def _column_count_error(f: _TextFile, row: pacsv.InvalidRow) -> DataError:
    line = f.line_of_ordinal(row.number) if row.number is not None else None
    text = row.text.replace(_ONE_BYTE_SEP, "::") if f.data is not None else row.text
    if len(text) > 120:
        text = text[:117] + "..."
    return DataError(f"expected {row.expected_columns} columns separated by {f.label}, found "
                     f"{row.actual_columns}: {text!r}. Is the separator right for this format?", f.path, line)


def _utf8_error(path: Path) -> DataError:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return DataError(f"not valid UTF-8 (byte {data[exc.start]:#04x}); MovieLens CSV releases are UTF-8, "
                         "re-save the file as UTF-8", path, line)
    return DataError("invalid UTF-8 text", path)


def _read_header(path: Path, expected: Sequence[str] | None, sep: str, encoding: str = "utf8") -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise DataError("empty file or empty header line" if first else "empty file", path, 1)
    fields = first.decode(encoding, errors="replace").lstrip("\ufeff").rstrip("\r\n").split(sep)
    fields = [x.strip().strip('"') for x in fields]
    if expected is not None and fields != list(expected):
        raise DataError(f"expected the header {sep.join(expected)!r}, found {sep.join(fields)!r}; "
                        "is this the right file and separator?", path, 1)
    return fields


# --------------------------------------------------------------------------------------------
# Per-format loaders. Each returns (ratings in the canonical column names, the ratings _TextFile,
# movies in the canonical column names, the movies _TextFile); the _TextFiles turn rows into lines
# for the checks in _validate. Column names inside a loader are the file's own, so messages use them.


def _ratings_types(user: str, movie: str, rating: str, ts: str,
                   ts_type: pa.DataType | None = None) -> dict[str, pa.DataType]:
    return {user: pa.int32(), movie: pa.int32(), rating: pa.float32(), ts: ts_type or pa.int64()}


def _canonical_ratings(table: pa.Table, user: str, movie: str, rating: str, ts: str) -> pa.Table:
    return pa.table({"user_id": table[user], "movie_id": table[movie], "rating": table[rating],
                     "timestamp": table[ts]})


def _load_ml100k(files: dict[str, Path]):
    ratings_file = _TextFile(files["ratings"], "\t", "tabs")
    names = ["user id", "item id", "rating", "timestamp"]
    ratings = _canonical_ratings(_read(ratings_file, names, _ratings_types(*names)), *names)

    movies_file = _TextFile(files["movies"], "|", "'|'", encoding="latin-1")
    names = ["movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES]
    types = {"movie id": pa.int32(), "movie title": pa.string(), "release date": pa.string(),
             **{g: pa.int8() for g in ML100K_GENRES}}
    table = _read(movies_file, names, types)
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


def _load_atomic(files: dict[str, Path]):
    inter_path, item_path = files["ratings"], files["movies"]
    fields = _read_header(inter_path, None, "\t")
    names = [x.split(":", 1)[0] for x in fields]
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in names]
    if missing:
        raise DataError(f"header lacks {', '.join(missing)}; expected tab-separated fields like "
                        "'user_id:token\\titem_id:token\\trating:float\\ttimestamp:float'", inter_path, 1)
    ratings_file = _TextFile(inter_path, "\t", "tabs", header_lines=1)
    # RecBole declares timestamp:float; parse it as such and insist on whole seconds.
    table = _read(ratings_file, names, _ratings_types("user_id", "item_id", "rating", "timestamp", pa.float64()))
    ts = table["timestamp"]
    whole = pc.and_(pc.is_finite(ts), pc.equal(pc.floor(ts), ts))
    row = pc.index(whole, False).as_py()
    if row >= 0:
        raise ratings_file.error(f"timestamp {ts[row].as_py()!r} is not a whole number of seconds", row)
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pc.cast(ts, pa.int64()))
    ratings = _canonical_ratings(table, "user_id", "item_id", "rating", "timestamp")

    fields = _read_header(item_path, None, "\t")
    names = [x.split(":", 1)[0] for x in fields]
    for column in ("item_id", "movie_title"):
        if column not in names:
            raise DataError(f"header lacks {column}; expected tab-separated fields like 'item_id:token\\t"
                            "movie_title:token_seq\\trelease_year:token\\tclass:token_seq'", item_path, 1)
    movies_file = _TextFile(item_path, "\t", "tabs", header_lines=1)
    types = {"item_id": pa.int32(), "movie_title": pa.string()}
    types.update({c: pa.string() for c in ("release_year", "class") if c in names})
    table = _read(movies_file, names, types)
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


def _dat_file(path: Path) -> _TextFile:
    raw = path.read_bytes()
    return _TextFile(path, _ONE_BYTE_SEP, "'::'", encoding="latin-1",
                     data=raw.replace(b"::", _ONE_BYTE_SEP.encode()))


def _load_ml1m(files: dict[str, Path]):
    ratings_file = _dat_file(files["ratings"])
    names = ["UserID", "MovieID", "Rating", "Timestamp"]
    ratings = _canonical_ratings(_read(ratings_file, names, _ratings_types(*names)), *names)

    movies_file = _dat_file(files["movies"])
    names = ["MovieID", "Title", "Genres"]
    table = _read(movies_file, names, {"MovieID": pa.int32(), "Title": pa.string(), "Genres": pa.string()})
    title, year = _split_title(table["Title"])
    movies = _movies_table(table["MovieID"], title, year, _split_genres(table["Genres"], "|"))
    return ratings, ratings_file, movies, movies_file


def _load_latest(files: dict[str, Path]):
    names = ["userId", "movieId", "rating", "timestamp"]
    _read_header(files["ratings"], names, ",")
    ratings_file = _TextFile(files["ratings"], ",", "commas", header_lines=1, quoted=True)
    ratings = _canonical_ratings(_read(ratings_file, names, _ratings_types(*names)), *names)

    names = ["movieId", "title", "genres"]
    _read_header(files["movies"], names, ",")
    movies_file = _TextFile(files["movies"], ",", "commas", header_lines=1, quoted=True)
    table = _read(movies_file, names, {"movieId": pa.int32(), "title": pa.string(), "genres": pa.string()})
    title, year = _split_title(table["title"])
    genres = _split_genres(table["genres"], "|", drop=("(no genres listed)",))
    imdb = tmdb = None
    if "links" in files:
        imdb, tmdb = _load_links(files["links"], table["movieId"])
    movies = _movies_table(table["movieId"], title, year, genres, imdb, tmdb)
    return ratings, ratings_file, movies, movies_file


def _load_links(path: Path, movie_ids: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    names = ["movieId", "imdbId", "tmdbId"]
    _read_header(path, names, ",")
    links_file = _TextFile(path, ",", "commas", header_lines=1, quoted=True)
    # imdbId stays text: its leading zeros are part of the "tt0114709" form.
    table = _read(links_file, names, {"movieId": pa.int32(), "imdbId": pa.string(), "tmdbId": pa.int32()},
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


def _movies_table(movie_id, title, year, genres, imdb=None, tmdb=None) -> pa.Table:
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


def _validate(ratings: pa.Table, ratings_file: _TextFile, movies: pa.Table, movies_file: _TextFile) -> None:
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
    fmt, files = _detect(directory)
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


# --------------------------------------------------------------------------------------------
# The embedded copy, downloads and name resolution


def embedded_ml100k_dir() -> Path:
    """The ML-100K atomic files inside the installed recbole package (found without importing it)."""
    # Importing recbole would pull torch extensions and other heavy deps; find_spec only locates it.
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise DataError("the embedded ML-100K ships inside the recbole wheel, which is not installed; run "
                        "`pip install --no-deps recbole==1.2.1`, or pass a MovieLens directory or release name")
    directory = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (directory / "ml-100k.inter").is_file() or not (directory / "ml-100k.item").is_file():
        raise DataError("the installed recbole has no dataset_example/ml-100k atomic files; reinstall it with "
                        "`pip install --no-deps --force-reinstall recbole==1.2.1`", directory)
    return directory


_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, TimeoutError)


def _network_error(url: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc
    return DownloadError(f"could not download {url}: {reason}. Check the network, pass a mirror as base_url "
                         "(--base-url), or download and unzip the release yourself and pass its directory")


def _expected_md5(name: str, url: str, checksums: Mapping[str, str | None] | None, timeout: float) -> str:
    if checksums is not None and name in checksums:
        md5 = checksums[name]
    else:
        md5 = KNOWN_DATASETS[name][1]
    if md5 is not None:
        return md5.lower()
    sidecar = f"{url}.md5"
    try:
        with urllib.request.urlopen(sidecar, timeout=timeout) as resp:
            text = resp.read(4096).decode("ascii", errors="replace")
    except _NETWORK_ERRORS as exc:
        raise _network_error(sidecar, exc) from exc
    # GroupLens' sidecars hold the hex digest, possibly followed (or preceded, BSD style) by the file name.
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise DataError(f"the checksum file {sidecar} holds no md5 digest: {text[:80]!r}")
    return found.group(0).lower()


def _safe_extract(zip_path: Path, target: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                    raise DataError(f"refusing to extract {url}: member {info.filename!r} would be written "
                                    "outside the target directory")
            zf.extractall(target, members)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{url} is not a valid zip file: {exc}") from exc


def download_movielens(name: str, cache_dir: str | Path, *, base_url: str = DEFAULT_BASE_URL,
                       timeout: float = 30.0, checksums: Mapping[str, str | None] | None = None) -> Path:
    """Download release ``name``, verify its md5, extract it into ``cache_dir/name``; return the data directory.

    ``checksums`` overrides the expected md5 per name (None: use the ``.md5`` sidecar). Network failures
    raise DownloadError; a checksum mismatch or unsafe zip raises DataError. Either way nothing is left
    in the cache: the zip goes to a temporary name and the tree is renamed into place only when complete.
    """
    from tqdm import tqdm

    if name not in KNOWN_DATASETS:
        raise DataError(f"unknown MovieLens release {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    cache_dir = Path(cache_dir).expanduser()
    url = f"{base_url.rstrip('/')}/{name}.zip"
    expected = _expected_md5(name, url, checksums, timeout)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=cache_dir)
    part = Path(part_name)
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except _NETWORK_ERRORS as exc:
            raise _network_error(url, exc) from exc
        digest = hashlib.md5()
        received = 0
        with resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                      disable=None) as bar:
                while True:
                    try:
                        chunk = resp.read(1 << 20)
                    except _NETWORK_ERRORS as exc:
                        raise _network_error(url, exc) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"could not download {url}: connection closed after {received} of {total} bytes")
        actual = digest.hexdigest()
        if actual != expected:
            raise DataError(f"checksum mismatch for {url}: expected md5 {expected}, got {actual}. The download "
                            "is corrupt or the file changed upstream; retry, or check the mirror")
        log.info("downloaded %s (%d bytes, md5 %s)", url, received, actual)
        target = cache_dir / name
        with atomic_path(target) as tmp:
            tmp.mkdir()
            _safe_extract(part, tmp, url)
            relative = _find_data_dir(tmp).relative_to(tmp)
        return target / relative
    finally:
        part.unlink(missing_ok=True)


def resolve_movielens(spec: str | Path, cache_dir: str | Path, *, base_url: str = DEFAULT_BASE_URL,
                      offline: bool = False, checksums: Mapping[str, str | None] | None = None) -> Path:
    """Turn a directory, a release name or "embedded" into a directory holding MovieLens files.

    A release already in ``cache_dir`` is used as is. ``ml-100k`` falls back to the embedded copy when
    offline or when the download fails for network reasons (never on a checksum mismatch).
    """
    text = str(spec)
    if text == EMBEDDED:
        return embedded_ml100k_dir()
    path = Path(text).expanduser()
    if path.is_dir():
        return _find_data_dir(path)
    if text not in KNOWN_DATASETS:
        if "/" in text or os.sep in text or path.exists():
            raise DataError(f"no such directory (or not a directory): {path}. Pass a MovieLens directory, or a "
                            f"release name: {', '.join(KNOWN_DATASETS)}, or {EMBEDDED!r}")
        raise DataError(f"{text!r} is neither a directory nor a known MovieLens release; known releases: "
                        f"{', '.join(KNOWN_DATASETS)}, or {EMBEDDED!r} for the ML-100K copy in the recbole wheel")
    cached = Path(cache_dir).expanduser() / text
    if cached.is_dir():
        try:
            return _find_data_dir(cached)
        except DataError:
            log.warning("cached %s at %s holds no MovieLens files; fetching it again", text, cached)
    if offline:
        if text == "ml-100k":
            directory = embedded_ml100k_dir()
            log.warning("offline and ml-100k is not cached in %s; using the embedded copy at %s", cache_dir,
                        directory)
            return directory
        raise DataError(f"offline and {text} is not in the cache {cached}; run once without --offline, or "
                        "download and unzip it yourself and pass its directory")
    try:
        return download_movielens(text, cache_dir, base_url=base_url, checksums=checksums)
    except DownloadError as exc:
        if text != "ml-100k":
            raise
        directory = embedded_ml100k_dir()
        log.warning("%s; using the embedded ML-100K at %s", exc, directory)
        return directory
