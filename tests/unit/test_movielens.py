"""MovieLens loaders: every format to the canonical tables, exact error locations, safe downloads."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import socket
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from armor.data import movielens as ml
from armor.data.schema import INTERACTIONS_SCHEMA, MOVIES_SCHEMA
from armor.errors import DataError

GENRES = ml.ML100K_GENRES
CITY_RAW = "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
CITY = "City of Lost Children, The (Cité des enfants perdus, La)"


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


# ---------------------------------------------------------------------------------------------
# Tiny valid fixtures, one per format. Overrides replace a file's content (str or bytes).

LATEST_RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,29,0.5,964982224\n2,1,5.0,964982931\n"


def default_files(fmt: str) -> dict[str, str | bytes]:
    if fmt == "ml-100k":
        return {
            "u.data": "196\t242\t3\t881250949\n186\t302\t1\t891717742\n196\t267\t5\t881250950\n",
            "u.item": "\n".join([
                f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags('Comedy')}",
                f"267|unknown||||{flags('unknown')}",
                f"302|{CITY_RAW}|01-Jan-1995||http://x|{flags('Adventure', 'Sci-Fi')}",
                f"303|Wings of Courage|01-Jan-1995||http://x|{flags('Adventure', 'Romance')}",
            ]).encode("latin-1") + b"\n",
        }
    if fmt == "ml-100k-atomic":
        return {
            "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                             "196\t242\t3\t881250949\n186\t302\t1\t891717742\n196\t267\t5\t881250950\n",
            "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                            "242\tKolya\t1996\tComedy\n"
                            "267\tunkonwn\tunkonwn\tunknown\n"
                            f"302\t{CITY}\t1995\tAdventure Sci-Fi\n"
                            "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\t"
                            "Animation Children's\n",
        }
    if fmt == "ml-1m":
        return {
            "ratings.dat": "1::1193::5::978300760\n1::2::3::978302109\n2::3::4::978301968\n",
            "movies.dat": ("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                           "2::Misérables, Les (1995)::Drama|Musical\n"
                           f"3::{CITY_RAW}::Adventure|Sci-Fi\n").encode("latin-1"),
            "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
        }
    if fmt == "ml-latest":
        return {
            "ratings.csv": LATEST_RATINGS,
            "movies.csv": "movieId,title,genres\n"
                          "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                          f'29,"{CITY_RAW}",Adventure|Drama|Fantasy|Mystery|Sci-Fi\n'
                          "30,Babylon 5 ,(no genres listed)\n"
                          '31,"Matrix, The (1999) ",Action|Sci-Fi|Thriller\n',
            "links.csv": "movieId,imdbId,tmdbId\n1,0114709,862\n29,0112682,\n30,0105946,\n",
        }
    raise AssertionError(fmt)


def write_format(directory: Path, fmt: str, **overrides: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = default_files(fmt)
    files.update({name.replace("__", "."): content for name, content in overrides.items()})
    for name, content in files.items():
        if content is None:
            continue
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return directory


def movies_by_id(data: ml.MovieLensData) -> dict[int, dict]:
    return {row["movie_id"]: row for row in data.movies.to_pylist()}


def assert_canonical(data: ml.MovieLensData) -> None:
    assert data.interactions.schema.equals(INTERACTIONS_SCHEMA, check_metadata=True)
    assert data.movies.schema.equals(MOVIES_SCHEMA, check_metadata=True)


# ---------------------------------------------------------------------------------------------
# Each format loads to the canonical tables


def test_ml100k_raw(tmp_path):
    data = ml.load_movielens(write_format(tmp_path, "ml-100k"))
    assert data.format == "ml-100k" and data.source == tmp_path
    assert_canonical(data)
    assert data.interactions.to_pydict() == {
        "user_id": [196, 186, 196], "movie_id": [242, 302, 267], "rating": [3.0, 1.0, 5.0],
        "timestamp": [881250949, 891717742, 881250950]}
    movies = movies_by_id(data)
    assert movies[242] == {"movie_id": 242, "title": "Kolya", "year": 1996, "genres": ["Comedy"],
                           "imdb_id": None, "tmdb_id": None}
    assert movies[267]["title"] == "unknown" and movies[267]["year"] is None and movies[267]["genres"] == []
    assert movies[302]["title"] == CITY and movies[302]["year"] == 1995
    assert movies[302]["genres"] == ["Adventure", "Sci-Fi"]
    # No year in the title: it comes from the release date.
    assert movies[303]["title"] == "Wings of Courage" and movies[303]["year"] == 1995


def test_ml100k_atomic(tmp_path):
    data = ml.load_movielens(write_format(tmp_path, "ml-100k-atomic"))
    assert data.format == "ml-100k-atomic"
    assert_canonical(data)
    assert data.interactions["timestamp"].to_pylist() == [881250949, 891717742, 881250950]
    movies = movies_by_id(data)
    assert movies[242]["title"] == "Kolya" and movies[242]["year"] == 1996
    assert movies[267] == {"movie_id": 267, "title": "unkonwn", "year": None, "genres": [],
                           "imdb_id": None, "tmdb_id": None}
    assert movies[302]["title"] == CITY and movies[302]["genres"] == ["Adventure", "Sci-Fi"]
    # RecBole left this year in the title and put "V" in the year column.
    assert movies[1412]["title"] == "Land Before Time III: The Time of the Great Giving"
    assert movies[1412]["year"] == 1995 and movies[1412]["genres"] == ["Animation", "Children's"]


def test_atomic_accepts_any_name_and_column_order(tmp_path):
    (tmp_path / "mydata.inter").write_text("timestamp:float\trating:float\titem_id:token\tuser_id:token\textra:token\n"
                                           "100\t4\t7\t1\tx\n")
    (tmp_path / "mydata.item").write_text("item_id:token\tmovie_title:token_seq\n7\tHeat (1995)\n")
    data = ml.load_movielens(tmp_path)
    assert data.interactions.to_pylist() == [{"user_id": 1, "movie_id": 7, "rating": 4.0, "timestamp": 100}]
    assert data.movies.to_pylist()[0] == {"movie_id": 7, "title": "Heat", "year": 1995, "genres": [],
                                        "imdb_id": None, "tmdb_id": None}


def test_ml1m(tmp_path):
    data = ml.load_movielens(write_format(tmp_path, "ml-1m"))
    assert data.format == "ml-1m"
    assert_canonical(data)
    assert data.interactions.to_pydict() == {
        "user_id": [1, 1, 2], "movie_id": [1193, 2, 3], "rating": [5.0, 3.0, 4.0],
        "timestamp": [978300760, 978302109, 978301968]}
    movies = movies_by_id(data)
    assert movies[1193]["title"] == "One Flew Over the Cuckoo's Nest" and movies[1193]["year"] == 1975
    assert movies[2]["title"] == "Misérables, Les"  # latin-1 decoded
    assert movies[2]["genres"] == ["Drama", "Musical"]
    assert movies[3]["title"] == CITY and movies[3]["year"] == 1995


def test_ml_latest(tmp_path):
    data = ml.load_movielens(write_format(tmp_path, "ml-latest"))
    assert data.format == "ml-latest"
    assert_canonical(data)
    assert data.interactions["rating"].to_pylist() == [4.0, 0.5, 5.0]
    movies = movies_by_id(data)
    assert movies[1] == {"movie_id": 1, "title": "Toy Story", "year": 1995,
                         "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
                         "imdb_id": "tt0114709", "tmdb_id": 862}
    assert movies[29]["title"] == CITY and movies[29]["year"] == 1995
    assert movies[29]["imdb_id"] == "tt0112682" and movies[29]["tmdb_id"] is None  # empty tmdbId
    assert movies[30] == {"movie_id": 30, "title": "Babylon 5", "year": None, "genres": [],
                          "imdb_id": "tt0105946", "tmdb_id": None}
    assert movies[31]["title"] == "Matrix, The" and movies[31]["year"] == 1999
    assert movies[31]["imdb_id"] is None and movies[31]["tmdb_id"] is None  # not in links.csv


def test_ml_latest_without_links(tmp_path):
    data = ml.load_movielens(write_format(tmp_path, "ml-latest", links__csv=None))
    assert data.movies["imdb_id"].null_count == data.movies.num_rows == 4


def test_raw_and_atomic_ml100k_agree(tmp_path):
    rng = np.random.default_rng(7)
    pairs = rng.choice(40 * 60, size=300, replace=False)
    users, items = pairs // 60 + 1, pairs % 60 + 1
    ratings = rng.integers(1, 6, size=300)
    stamps = rng.integers(874724710, 893286638, size=300)
    genre_flags = rng.random((60, len(GENRES))) < 0.2
    genre_flags[0] = False
    genre_flags[0, 0] = True  # only "unknown": no genres in both formats
    raw, atomic = tmp_path / "raw", tmp_path / "atomic"
    raw.mkdir(), atomic.mkdir()
    rows = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in zip(users, items, ratings, stamps, strict=True))
    (raw / "u.data").write_text(rows)
    (atomic / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + rows)
    raw_items, atomic_items = [], ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for movie in range(1, 61):
        row = genre_flags[movie - 1]
        names = [g for g, on in zip(GENRES, row, strict=True) if on and g != "unknown"] or ["unknown"]
        year = 1930 + movie
        raw_items.append(f"{movie}|Film {movie} (Part {movie % 3}) ({year})|01-Jan-{year}||http://x|"
                         + "|".join("1" if on else "0" for on in row))
        atomic_items.append(f"{movie}\tFilm {movie} (Part {movie % 3})\t{year}\t{' '.join(names)}")
    (raw / "u.item").write_text("\n".join(raw_items) + "\n", encoding="latin-1")
    (atomic / "ml-100k.item").write_text("\n".join(atomic_items) + "\n")

    from_raw, from_atomic = ml.load_movielens(raw), ml.load_movielens(atomic)
    assert (from_raw.format, from_atomic.format) == ("ml-100k", "ml-100k-atomic")
    assert from_raw.interactions.num_rows == 300
    assert from_raw.interactions.equals(from_atomic.interactions)
    assert from_raw.movies.equals(from_atomic.movies)
    assert from_raw.movies.to_pylist()[0]["genres"] == []


# ---------------------------------------------------------------------------------------------
# Detection


@pytest.mark.parametrize("fmt", ["ml-100k", "ml-100k-atomic", "ml-1m", "ml-latest"])
def test_detect_format(tmp_path, fmt):
    assert ml.detect_format(write_format(tmp_path / fmt, fmt)) == fmt


def test_unknown_directory_lists_what_each_format_needs(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as err:
        ml.detect_format(tmp_path)
    assert err.value.path == str(tmp_path)
    for needed in ("u.data", "u.item", ".inter", ".item", "ratings.dat", "movies.dat", "ratings.csv", "movies.csv"):
        assert needed in str(err.value)


def test_unknown_directory_points_at_a_subdirectory_with_data(tmp_path):
    write_format(tmp_path / "ml-1m", "ml-1m")
    with pytest.raises(DataError, match="subdirectory .*ml-1m"):
        ml.detect_format(tmp_path)
    # resolve_movielens accepts the zip's parent directory.
    assert ml.resolve_movielens(tmp_path, tmp_path / "cache") == tmp_path / "ml-1m"


@pytest.mark.parametrize(("fmt", "remove", "missing"), [
    ("ml-1m", "movies.dat", "movies.dat"),
    ("ml-1m", "ratings.dat", "ratings.dat"),
    ("ml-latest", "movies.csv", "movies.csv"),
    ("ml-100k", "u.data", "u.data"),
    ("ml-100k-atomic", "ml-100k.item", "ml-100k.item"),
])
def test_missing_required_file_is_named(tmp_path, fmt, remove, missing):
    write_format(tmp_path, fmt)
    (tmp_path / remove).unlink()
    with pytest.raises(DataError) as err:
        ml.load_movielens(tmp_path)
    assert err.value.path == str(tmp_path)
    assert f"{missing} is missing" in str(err.value) and fmt in str(err.value)


# ---------------------------------------------------------------------------------------------
# Bad input: the exact file and line

BAD_INPUT = [
    # id, format, file, content, line, message fragment
    ("ml1m-commas", "ml-1m", "ratings.dat", "1,1193,5,978300760\n1,2,3,978302109\n", 1, "expected 4 columns"),
    ("ml1m-short-row-after-empty-line", "ml-1m", "ratings.dat",
     "1::1193::5::978300760\n\n1::2::3\n", 3, "found 3"),
    ("ml100k-spaces", "ml-100k", "u.data", "196\t242\t3\t881250949\n186 302 1 891717742\n", 2, "expected 4 columns"),
    ("ml100k-bad-user", "ml-100k", "u.data", "196\t242\t3\t881250949\nabc\t302\t1\t891717742\n", 2, "'abc'"),
    ("latest-bad-movie-after-empty", "ml-latest", "ratings.csv",
     "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n\n1,x29,0.5,964982224\n", 4, "'x29' is not an integer"),
    ("latest-bad-header", "ml-latest", "ratings.csv", LATEST_RATINGS.replace(",", ";"), 1, "expected the header"),
    ("latest-empty-value", "ml-latest", "ratings.csv",
     "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,,0.5,964982224\n", 3, "empty movieId"),
    ("latest-overflow-id", "ml-latest", "ratings.csv",
     "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n99999999999,29,0.5,964982224\n", 3, "integer in"),
    ("latest-crlf", "ml-latest", "ratings.csv",
     "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n\r\n2,1,high,964982931\r\n", 4, "'high'"),
    ("ml1m-empty", "ml-1m", "ratings.dat", "", None, "no ratings"),
    ("latest-header-only", "ml-latest", "ratings.csv", "userId,movieId,rating,timestamp\n", None, "no ratings"),
    ("ml100k-duplicate", "ml-100k", "u.data",
     "196\t242\t3\t881250949\n186\t302\t1\t891717742\n1\t242\t3\t881250949\n186\t302\t5\t891717799\n",
     4, "line 2 and line 4"),
    ("latest-rating-high", "ml-latest", "ratings.csv",
     "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,29,5.5,964982224\n", 3, "rating 5.5 is outside"),
    ("ml1m-rating-zero", "ml-1m", "ratings.dat", "1::1193::5::978300760\n1::2::0::978302109\n", 2, "outside"),
    ("atomic-rating-nan", "ml-100k-atomic", "ml-100k.inter",
     "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\tnan\t881250949\n", 2, "outside"),
    ("atomic-timestamp-text", "ml-100k-atomic", "ml-100k.inter",
     "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"
     "186\t302\t1\tyesterday\n", 3, "timestamp 'yesterday'"),
    ("atomic-timestamp-fraction", "ml-100k-atomic", "ml-100k.inter",
     "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949.5\n", 2, "whole number"),
    ("atomic-header-missing-field", "ml-100k-atomic", "ml-100k.inter",
     "user_id:token\titem_id:token\trating:float\n196\t242\t3\n", 1, "lacks timestamp"),
    ("ml100k-timestamp-text", "ml-100k", "u.data", "196\t242\t3\t881250949\n186\t302\t1\t8917e\n", 2, "'8917e'"),
    ("ml1m-unknown-movie", "ml-1m", "ratings.dat", "1::1193::5::978300760\n1::9999::3::978302109\n", 2,
     "movie id 9999 is not in movies.dat"),
    ("latest-duplicate-movie", "ml-latest", "movies.csv",
     "movieId,title,genres\n1,Toy Story (1995),Comedy\n29,Heat (1995),Action\n1,Copy (1995),Drama\n", 4,
     "also on line 2"),
    ("ml100k-bad-genre-flag", "ml-100k", "u.item",
     f"242|Kolya (1996)|24-Jan-1997||http://x|{flags('Comedy')}\n302|X (1995)|||http://x|{flags()[:-1]}2\n"
     f"267|unknown||||{flags('unknown')}\n", 2, "'Western' is 2"),
    ("latest-bad-tmdb", "ml-latest", "links.csv", "movieId,imdbId,tmdbId\n1,0114709,862\n29,0112682,abc\n", 3,
     "tmdbId 'abc'"),
    ("latest-movies-not-utf8", "ml-latest", "movies.csv",
     b"movieId,title,genres\n1,Toy Story (1995),Comedy\n29,Mis\xe9rables (1995),Drama\n", 3, "not valid UTF-8"),
    ("ml1m-bad-movie-id-in-movies", "ml-1m", "movies.dat",
     "1193::Cuckoo (1975)::Drama\nx2::Misérables, Les (1995)::Drama\n".encode("latin-1"), 2, "'x2'"),
]


@pytest.mark.parametrize(("fmt", "name", "content", "line", "fragment"),
                         [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_names_file_and_line(tmp_path, fmt, name, content, line, fragment):
    write_format(tmp_path, fmt, **{name.replace(".", "__"): content})
    expected_file = tmp_path / name
    with pytest.raises(DataError) as err:
        ml.load_movielens(tmp_path)
    assert err.value.path == str(expected_file), str(err.value)
    assert err.value.line == line, str(err.value)
    assert fragment in str(err.value)
    where = f"{expected_file}:{line}: " if line is not None else f"{expected_file}: "
    assert str(err.value).startswith(where)


def test_first_bad_row_is_reported_across_parse_blocks(tmp_path):
    # Big enough for several 8 MiB parse blocks, parsed in parallel: the earliest bad row must win,
    # whatever block the threaded parse happens to reject first.
    n = 900_000
    lines = [f"{i}::{i}::4::978300760" for i in range(1, n + 1)]
    lines[600_000] = "600001::600001::4::soon"  # line 600001: timestamp (a later column)
    lines[850_000] = "oops::850001::4::978300760"  # later block, earlier column
    lines.insert(300_000, "")  # an empty line before both shifts their line numbers by one
    write_format(tmp_path, "ml-1m", ratings__dat="\n".join(lines) + "\n",
                 movies__dat="1::M (1995)::Drama\n")
    with pytest.raises(DataError) as err:
        ml.load_movielens(tmp_path)
    assert (err.value.path, err.value.line) == (str(tmp_path / "ratings.dat"), 600_002)
    assert "'soon'" in str(err.value)


# ---------------------------------------------------------------------------------------------
# prepare(): all or nothing


def test_prepare_writes_canonical_parquet(tmp_path):
    src, out = write_format(tmp_path / "src", "ml-latest"), tmp_path / "ws"
    counts = ml.prepare(src, out)
    assert counts["interactions"] == 3 and counts["users"] == 2 and counts["movies"] == 4
    assert counts["rated_movies"] == 2 and counts["movies_with_imdb_id"] == 3 and counts["format"] == "ml-latest"
    assert pq.read_schema(out / "interactions.parquet").equals(INTERACTIONS_SCHEMA)
    assert pq.read_schema(out / "movies.parquet").equals(MOVIES_SCHEMA)
    assert pq.read_table(out / "movies.parquet").equals(ml.load_movielens(src).movies)
    assert sorted(p.name for p in out.iterdir()) == ["interactions.parquet", "movies.parquet"]


def test_failed_prepare_leaves_no_output(tmp_path):
    src = write_format(tmp_path / "src", "ml-1m", ratings__dat="1::1193::5::978300760\n1::1193::4::978300761\n")
    out = tmp_path / "ws"
    with pytest.raises(DataError, match="twice"):
        ml.prepare(src, out)
    assert not out.exists() or list(out.iterdir()) == []


def test_failed_prepare_keeps_previous_output_intact(tmp_path):
    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "ws"
    ml.prepare(write_format(good, "ml-1m"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_format(bad, "ml-1m", ratings__dat="1::1193::9::978300760\n")
    with pytest.raises(DataError, match="outside"):
        ml.prepare(bad, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# The embedded real ML-100K

needs_recbole = pytest.mark.skipif(importlib.util.find_spec("recbole") is None,
                                   reason="recbole (which ships the embedded ML-100K) is not installed")


@needs_recbole
def test_embedded_ml100k_is_the_real_dataset():
    data = ml.load_movielens(ml.embedded_ml100k_dir())
    assert data.format == "ml-100k-atomic"
    assert_canonical(data)
    assert data.interactions.num_rows == 100_000
    assert len(data.interactions["user_id"].unique()) == 943
    assert data.movies.num_rows == 1682
    assert len(data.interactions["movie_id"].unique()) == 1682
    movies = movies_by_id(data)
    assert movies[1]["title"] == "Toy Story" and movies[1]["year"] == 1995
    assert movies[1]["genres"] == ["Animation", "Children's", "Comedy"]
    assert movies[267]["year"] is None and movies[267]["genres"] == []
    assert ml.resolve_movielens("embedded", "/nonexistent-cache") == ml.embedded_ml100k_dir()


def test_embedded_without_recbole_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=r"pip install --no-deps recbole==1\.2\.1"):
        ml.embedded_ml100k_dir()


# ---------------------------------------------------------------------------------------------
# Downloads against a local server


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}", hits=hits)
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def make_zip(path: Path, members: dict[str, str | bytes]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    path.write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue()).hexdigest()


def release_members(top: str, fmt: str) -> dict[str, str | bytes]:
    return {f"{top}/{name}": content for name, content in default_files(fmt).items()}


def test_download_verifies_extracts_and_loads(tmp_path, server):
    md5 = make_zip(server.root / "ml-1m.zip", release_members("ml-1m", "ml-1m"))
    cache = tmp_path / "cache"
    directory = ml.download_movielens("ml-1m", cache, base_url=server.url, checksums={"ml-1m": md5})
    assert directory == cache / "ml-1m" / "ml-1m"
    assert ml.load_movielens(directory).interactions.num_rows == 3
    assert [p.name for p in cache.iterdir()] == ["ml-1m"]  # no temporary zip or directory left
    # A cached release is used as is: no request, even with the network gone.
    requests = len(server.hits)
    assert ml.resolve_movielens("ml-1m", cache, base_url=closed_port_url()) == directory
    assert len(server.hits) == requests


def test_download_uses_the_md5_sidecar_for_unpinned_releases(tmp_path, server):
    md5 = make_zip(server.root / "ml-latest-small.zip", release_members("ml-latest-small", "ml-latest"))
    (server.root / "ml-latest-small.zip.md5").write_text(f"{md5}  ml-latest-small.zip\n")
    cache = tmp_path / "cache"
    directory = ml.resolve_movielens("ml-latest-small", cache, base_url=server.url)
    assert directory == cache / "ml-latest-small" / "ml-latest-small"
    assert "/ml-latest-small.zip.md5" in server.hits
    assert ml.load_movielens(directory).movies.num_rows == 4


def test_sidecar_checksum_mismatch_leaves_nothing(tmp_path, server):
    md5 = make_zip(server.root / "ml-latest-small.zip", release_members("ml-latest-small", "ml-latest"))
    (server.root / "ml-latest-small.zip.md5").write_text("0123456789abcdef0123456789abcdef\n")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        ml.download_movielens("ml-latest-small", cache, base_url=server.url)
    message = str(err.value)
    assert f"{server.url}/ml-latest-small.zip" in message
    assert "0123456789abcdef0123456789abcdef" in message and md5 in message
    assert not isinstance(err.value, ml.DownloadError)
    assert list(cache.iterdir()) == []


def test_pinned_checksum_is_enforced(tmp_path, server):
    # Not the real ml-1m zip, so the pinned digest cannot match.
    make_zip(server.root / "ml-1m.zip", release_members("ml-1m", "ml-1m"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=ml.KNOWN_DATASETS["ml-1m"][1]):
        ml.download_movielens("ml-1m", cache, base_url=server.url)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("evil", ["../evil.txt", "ml-1m/../../evil.txt", "/tmp/evil-armor-test.txt"])
def test_zip_slip_is_rejected(tmp_path, server, evil):
    members = release_members("ml-1m", "ml-1m") | {evil: "pwned"}
    md5 = make_zip(server.root / "ml-1m.zip", members)
    cache = tmp_path / "sub" / "cache"
    with pytest.raises(DataError, match="outside the target directory"):
        ml.download_movielens("ml-1m", cache, base_url=server.url, checksums={"ml-1m": md5})
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "sub" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_network_failure_of_other_releases_is_an_error(tmp_path):
    with pytest.raises(ml.DownloadError, match="could not download"):
        ml.resolve_movielens("ml-1m", tmp_path / "cache", base_url=closed_port_url())
    with pytest.raises(DataError, match="offline"):
        ml.resolve_movielens("ml-1m", tmp_path / "cache", offline=True)


@needs_recbole
def test_ml100k_falls_back_to_embedded_when_offline_or_unreachable(tmp_path, server, caplog):
    cache = tmp_path / "cache"
    assert ml.resolve_movielens("ml-100k", cache, base_url=server.url, offline=True) == ml.embedded_ml100k_dir()
    assert server.hits == []  # offline means no request at all
    with caplog.at_level("WARNING", logger="armor.data.movielens"):
        assert ml.resolve_movielens("ml-100k", cache, base_url=closed_port_url()) == ml.embedded_ml100k_dir()
    assert "embedded" in caplog.text
    missing = ml.resolve_movielens("ml-100k", cache, base_url=server.url)  # HTTP 404 is a network failure too
    assert missing == ml.embedded_ml100k_dir() and server.hits == ["/ml-100k.zip"]


def test_ml100k_checksum_mismatch_does_not_fall_back(tmp_path, server):
    make_zip(server.root / "ml-100k.zip", release_members("ml-100k", "ml-100k"))
    with pytest.raises(DataError, match="checksum mismatch"):
        ml.resolve_movielens("ml-100k", tmp_path / "cache", base_url=server.url)


def test_unknown_name_lists_known_releases(tmp_path):
    with pytest.raises(DataError) as err:
        ml.resolve_movielens("ml-3m", tmp_path / "cache")
    for name in ml.KNOWN_DATASETS:
        assert name in str(err.value)
    assert "embedded" in str(err.value)


def test_known_datasets_point_at_grouplens():
    for name, (url, _) in ml.KNOWN_DATASETS.items():
        assert url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    assert {n for n, (_, md5) in ml.KNOWN_DATASETS.items() if md5 is None} == {"ml-latest-small", "ml-latest",
                                                                                "ml-32m"}
