"""The synthetic MovieLens world: shapes, determinism, streaming, planted signal, file format."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.stats import spearmanr

from armor.data.schema import INTERACTIONS_SCHEMA, MOVIES_SCHEMA
from armor.data.synthetic import (
    CONTENT_SCHEMA,
    GENRES,
    POSTER_SIZE,
    SIZES,
    THUMBNAIL_SIZE,
    SyntheticConfig,
    SyntheticWorld,
    _first_distinct_draws,
    _gumbel_top_k,
    write_movielens,
)
from armor.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tiny() -> SyntheticWorld:
    return SyntheticWorld(SyntheticConfig.preset("tiny"))


@pytest.fixture(scope="module")
def small() -> SyntheticWorld:
    return SyntheticWorld(SyntheticConfig.preset("small"))


@pytest.fixture(scope="module")
def small_ratings(small: SyntheticWorld) -> pa.Table:
    return small.interactions()


# A catalogue wide enough that a block holds ~100 users, so 300 users span several blocks.
MULTI_BLOCK = SyntheticConfig(n_users=300, n_movies=20_000, n_ratings=15_000, seed=3)


# ---- configuration -------------------------------------------------------------------------


def test_presets_have_the_movielens_sizes() -> None:
    expected = {
        "ml-100k": (943, 1_682, 100_000),
        "ml-1m": (6_040, 3_706, 1_000_209),
        "ml-10m": (69_878, 10_677, 10_000_054),
        "ml-32m": (200_948, 87_585, 32_000_204),
    }
    for name, sizes in expected.items():
        cfg = SyntheticConfig.preset(name, seed=5)
        assert (cfg.n_users, cfg.n_movies, cfg.n_ratings) == sizes
        assert cfg.seed == 5
    assert {"tiny", "small"} <= set(SIZES)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="ml-1m") as info:
        SyntheticConfig.preset("ml-2m")
    assert "ml-2m" in str(info.value) and "tiny" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_movies": -3}, "n_movies"),
        ({"n_ratings": 10}, "n_ratings"),  # fewer than 20 per user
        ({"n_ratings": 10**9}, "n_ratings"),  # more than the catalogue allows
        ({"rating_signal": 1.5}, "rating_signal"),
        ({"max_user_fraction": 0.0}, "max_user_fraction"),
        ({"rating_years": (2003, 2000)}, "rating_years"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    base = {"n_users": 10, "n_movies": 100, "n_ratings": 400}
    with pytest.raises(ConfigError, match=rf"synthetic\.{field}:"):
        SyntheticConfig(**{**base, **kwargs})


def test_rating_counts_are_exact_and_bounded(small: SyntheticWorld) -> None:
    cfg = small.config
    counts = small.user_n_ratings
    assert counts.sum() == cfg.n_ratings
    assert counts.min() >= cfg.min_ratings_per_user
    assert counts.max() <= cfg.max_per_user
    # Heavy-tailed like MovieLens: the mean user rates clearly more than the median one.
    assert counts.mean() > 1.2 * np.median(counts)


# ---- tables --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_preset_tables_have_exact_sizes_and_schemas(name: str, tiny: SyntheticWorld,
                                                    small: SyntheticWorld) -> None:
    world = {"tiny": tiny, "small": small}[name]
    cfg = world.config
    ratings = world.interactions()
    assert ratings.schema == INTERACTIONS_SCHEMA
    assert ratings.num_rows == cfg.n_ratings
    users = ratings["user_id"].to_numpy()
    movies = ratings["movie_id"].to_numpy()
    assert np.array_equal(np.unique(users), np.arange(1, cfg.n_users + 1))
    assert movies.min() >= 1 and movies.max() <= cfg.n_movies
    assert np.all(np.diff(users) >= 0), "users must come in order"
    assert np.array_equal(np.bincount(users)[1:], world.user_n_ratings)
    pairs = users.astype(np.int64) * (cfg.n_movies + 1) + movies
    assert np.unique(pairs).size == pairs.size, "duplicate (user, movie) pairs"

    table = world.movies()
    assert table.schema == MOVIES_SCHEMA
    assert table["movie_id"].to_pylist() == list(range(1, cfg.n_movies + 1))
    titles = table["title"].to_pylist()
    assert len(set(titles)) == len(titles)
    assert table["imdb_id"].null_count == cfg.n_movies
    assert np.array_equal(table["tmdb_id"].to_numpy(), np.arange(1, cfg.n_movies + 1) + 100_000)
    years = table["year"].to_numpy()
    assert years.min() >= cfg.movie_years[0] and years.max() <= cfg.movie_years[1]
    for genres, row in zip(table["genres"].to_pylist(), world.movie_genre_matrix):
        assert 1 <= len(genres) <= 3
        assert genres == [g for g, on in zip(GENRES, row) if on]


def test_titles_use_movielens_article_order(small: SyntheticWorld) -> None:
    titles = small.movies()["title"].to_pylist()
    assert any(t.endswith(", The") for t in titles)
    assert not any(t.startswith(("The ", "A ", "An ")) for t in titles)
    for t in titles:
        t.encode("latin-1")


def test_ratings_are_movielens_shaped(small_ratings: pa.Table, small: SyntheticWorld) -> None:
    r = small_ratings["rating"].to_numpy()
    assert set(np.unique(r)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 0.45 <= (r >= 4).mean() <= 0.7
    users = small_ratings["user_id"].to_numpy()
    ts = small_ratings["timestamp"].to_numpy()
    same_user = users[1:] == users[:-1]
    assert np.all(np.diff(ts)[same_user] >= 0), "timestamps must not decrease within a user"
    tie_share = (np.diff(ts)[same_user] == 0).mean()
    assert 0.05 < tie_share < 0.6, tie_share
    lo = np.datetime64(f"{small.config.rating_years[0]}-01-01").astype("datetime64[s]").astype(int)
    hi = np.datetime64(f"{small.config.rating_years[1] + 1}-01-01").astype("datetime64[s]")
    assert ts.min() >= lo and ts.max() < hi.astype(int)
    # Popularity is heavy-tailed: the top 10% of movies take a large share of the ratings.
    counts = np.sort(np.bincount(small_ratings["movie_id"].to_numpy()))[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()


def test_out_of_range_movie_is_an_error_naming_it(tiny: SyntheticWorld) -> None:
    with pytest.raises(DataError, match="movie_id 81"):
        tiny.poster(81)
    with pytest.raises(DataError, match="movie_id 0"):
        tiny.overview(0)


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_same_world_different_seed_different_world(tiny: SyntheticWorld) -> None:
    again = SyntheticWorld(SyntheticConfig.preset("tiny"))
    assert again.interactions().equals(tiny.interactions())
    assert again.movies().equals(tiny.movies())
    for m in (1, 40, 80):
        assert again.overview(m) == tiny.overview(m)
        assert again.poster(m) == tiny.poster(m)
        assert again.thumbnail(m) == tiny.thumbnail(m)

    other = SyntheticWorld(SyntheticConfig.preset("tiny", seed=1))
    assert not other.interactions().equals(tiny.interactions())
    assert other.movies()["title"].to_pylist() != tiny.movies()["title"].to_pylist()
    assert other.overview(1) != tiny.overview(1)
    assert other.poster(1) != tiny.poster(1)
    assert other.thumbnail(1) != tiny.thumbnail(1)


def test_content_depends_only_on_the_movie_not_on_call_order_or_users() -> None:
    a = SyntheticWorld(SyntheticConfig(n_users=50, n_movies=100, n_ratings=2_000, seed=9))
    b = SyntheticWorld(SyntheticConfig(n_users=70, n_movies=100, n_ratings=3_000, seed=9))
    for m in range(1, 20):  # render other movies first: no shared generator state
        b.poster(m)
        b.overview(m)
    assert a.poster(42) == b.poster(42)
    assert a.thumbnail(42) == b.thumbnail(42)
    assert a.overview(42) == b.overview(42)
    assert np.array_equal(a.movie_factors, b.movie_factors)


# ---- streaming -----------------------------------------------------------------------------


def test_chunks_reproduce_the_one_shot_table() -> None:
    world = SyntheticWorld(MULTI_BLOCK)
    assert world._block_users < MULTI_BLOCK.n_users  # the test must cross block boundaries
    whole = world.interactions()
    assert whole.num_rows == MULTI_BLOCK.n_ratings
    for chunk_users in (1, 37, world._block_users, 1000):
        chunks = list(world.iter_interactions(chunk_users=chunk_users))
        assert len(chunks) == -(-MULTI_BLOCK.n_users // chunk_users)
        for j, chunk in enumerate(chunks):
            assert chunk.schema == INTERACTIONS_SCHEMA
            expected = min(chunk_users, MULTI_BLOCK.n_users - j * chunk_users)
            assert len(np.unique(chunk["user_id"].to_numpy())) == expected
        assert pa.concat_tables(chunks).equals(whole), chunk_users


def test_a_user_subrange_matches_the_full_run() -> None:
    world = SyntheticWorld(MULTI_BLOCK)
    whole = world.interactions()
    part = pa.concat_tables(world.iter_interactions(chunk_users=50, start_user=90, stop_user=231))
    users = whole["user_id"].to_numpy()
    assert part.equals(whole.filter(pa.array((users >= 90) & (users < 231))))
    assert list(world.iter_interactions(start_user=5, stop_user=5)) == []
    with pytest.raises(ConfigError):
        list(world.iter_interactions(start_user=0))
    with pytest.raises(ConfigError):
        list(world.iter_interactions(chunk_users=0))


def test_samplers_draw_successive_samples_with_the_right_inclusion_probabilities() -> None:
    # Successive sampling of k=2 from weights w: P(i in sample) = w_i/W + sum_j w_j/W * w_i/(W-w_j).
    w = np.array([8.0, 4.0, 2.0, 1.0, 1.0])
    total = w.sum()
    exact = w / total + np.array(
        [sum(w[j] / total * w[i] / (total - w[j]) for j in range(5) if j != i) for i in range(5)]
    )
    rows = 20_000
    weights = np.broadcast_to(w.astype(np.float32), (rows, 5)).copy()
    k = np.full(rows, 2)
    rng = np.random.default_rng(0)
    gumbel = _gumbel_top_k(rng, weights, k, 2)
    stream, done = _first_distinct_draws(rng, weights, k)
    assert done.all()
    for sample in (gumbel, stream):
        assert np.all(sample[:, 0] != sample[:, 1])
        freq = np.bincount(sample.ravel(), minlength=5) / rows
        assert np.allclose(freq, exact, atol=0.015), (freq, exact)
    # The first draw alone is proportional to w.
    assert np.allclose(np.bincount(stream[:, 0], minlength=5) / rows, w / total, atol=0.015)


# ---- the planted signal --------------------------------------------------------------------


def test_ratings_follow_the_planted_affinity(small: SyntheticWorld,
                                            small_ratings: pa.Table) -> None:
    users = small_ratings["user_id"].to_numpy()
    movies = small_ratings["movie_id"].to_numpy()
    r = small_ratings["rating"].to_numpy()
    aff = small.affinity(users, movies)
    starts = np.searchsorted(users, np.arange(1, small.config.n_users + 2))
    rho = [spearmanr(r[a:b], aff[a:b]).statistic for a, b in zip(starts[:-1], starts[1:])]
    assert np.nanmean(rho) > 0.3
    assert aff[r >= 4].mean() > aff[r <= 2].mean() + 0.05

    # Choice follows taste too: rated movies beat the catalogue on affinity for most users.
    catalogue = small.user_factors @ small.movie_factors.T  # (n_users, n_movies)
    rated_mean = np.bincount(users - 1, weights=aff) / small.user_n_ratings
    assert (rated_mean > catalogue.mean(axis=1) + 0.05).mean() > 0.9


def test_overview_words_reveal_the_primary_genre(small: SyntheticWorld) -> None:
    n = small.config.n_movies
    y = small.movie_primary_genre
    docs = [re.findall(r"[a-z]+", small.overview(m).lower()) for m in range(1, n + 1)]
    vocab = {w: j for j, w in enumerate(sorted({w for d in docs for w in d}))}
    x = np.zeros((n, len(vocab)))
    for row, doc in enumerate(docs):
        np.add.at(x[row], [vocab[w] for w in doc], 1.0)
    train = np.arange(n) % 4 != 0
    # Multinomial naive Bayes fitted on three quarters, scored on the rest.
    counts = np.stack([x[train & (y == g)].sum(axis=0) for g in range(len(GENRES))]) + 0.1
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    log_prior = np.log((np.bincount(y[train], minlength=len(GENRES)) + 1.0) / (train.sum() + 18))
    pred = (x[~train] @ log_p.T + log_prior).argmax(axis=1)
    accuracy = (pred == y[~train]).mean()
    majority = (y[~train] == np.bincount(y[train]).argmax()).mean()
    assert accuracy > majority + 0.3, (accuracy, majority)


def test_overviews_are_short_prose() -> None:
    world = SyntheticWorld(SyntheticConfig.preset("tiny"))
    for m in range(1, 30):
        text = world.overview(m)
        sentences = [s for s in re.split(r"(?<=\.)\s", text) if s]
        assert 2 <= len(sentences) <= 3, text
        assert all(s[0].isupper() and s.endswith(".") for s in sentences)
        assert re.search(r"\ba [aeiou]", text) is None, text  # "an" before vowels
        text.encode("latin-1")


def _image_features(data: bytes, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert image.size == size
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    hsv = np.asarray(image.convert("HSV"), dtype=np.float64) / 255.0
    return np.concatenate([rgb.reshape(-1, 3).mean(0), hsv.reshape(-1, 3).mean(0)])


@pytest.mark.parametrize("kind", ["poster", "thumbnail"])
def test_mean_image_colour_separates_genres(small: SyntheticWorld, kind: str) -> None:
    n = 300
    size = POSTER_SIZE if kind == "poster" else THUMBNAIL_SIZE
    render = getattr(small, kind)
    x = np.stack([_image_features(render(m), size) for m in range(1, n + 1)])
    x = (x - x.mean(0)) / x.std(0)
    y = small.movie_primary_genre[:n]
    train = np.arange(n) % 3 != 0
    present = [g for g in range(len(GENRES)) if (train & (y == g)).any()]
    centroids = np.stack([x[train & (y == g)].mean(0) for g in present])
    dist = ((x[~train][:, None, :] - centroids[None]) ** 2).sum(-1)
    pred = np.array(present)[dist.argmin(1)]
    accuracy = (pred == y[~train]).mean()
    majority = (y[~train] == np.bincount(y[train]).argmax()).mean()
    assert accuracy > majority + 0.25, (accuracy, majority)


def test_poster_and_thumbnail_are_different_compositions(tiny: SyntheticWorld) -> None:
    poster = np.asarray(Image.open(io.BytesIO(tiny.poster(3))).convert("L").resize((64, 64)))
    thumb = np.asarray(Image.open(io.BytesIO(tiny.thumbnail(3))).convert("L").resize((64, 64)))
    assert np.abs(poster.astype(int) - thumb.astype(int)).mean() > 10
    assert thumb[:5].mean() < 10  # letterbox bars


# ---- MovieLens files -----------------------------------------------------------------------


def _read_dat(path: Path) -> list[list[str]]:
    return [line.split("::") for line in path.read_text(encoding="latin-1").splitlines()]


def test_write_movielens_round_trips(tmp_path: Path, tiny: SyntheticWorld) -> None:
    out = write_movielens(tiny, tmp_path / "ml", chunk_users=7, content_chunk=32)
    assert sorted(p.name for p in out.iterdir()) == [
        "content.parquet", "movies.dat", "ratings.dat", "users.dat"]

    raw = np.array(_read_dat(out / "ratings.dat"), dtype=np.int64)
    expected = tiny.interactions()
    assert raw.shape == (expected.num_rows, 4)
    assert np.array_equal(raw[:, 0], expected["user_id"].to_numpy())
    assert np.array_equal(raw[:, 1], expected["movie_id"].to_numpy())
    assert np.array_equal(raw[:, 2], expected["rating"].to_numpy().astype(np.int64))
    assert np.array_equal(raw[:, 3], expected["timestamp"].to_numpy())

    movies = tiny.movies()
    rows = _read_dat(out / "movies.dat")
    assert [int(r[0]) for r in rows] == movies["movie_id"].to_pylist()
    for (_, title_year, genres), title, year, gl in zip(
            rows, movies["title"].to_pylist(), movies["year"].to_pylist(),
            movies["genres"].to_pylist()):
        assert title_year == f"{title} ({year})"
        assert genres.split("|") == gl

    users = _read_dat(out / "users.dat")
    assert [int(u[0]) for u in users] == list(range(1, tiny.config.n_users + 1))
    for _, gender, age, occupation, zip_code in users:
        assert gender in ("M", "F") and int(age) in (1, 18, 25, 35, 45, 50, 56)
        assert 0 <= int(occupation) <= 20 and re.fullmatch(r"\d{5}", zip_code)

    content = pq.read_table(out / "content.parquet")
    assert content.schema == CONTENT_SCHEMA
    assert content["movie_id"].to_pylist() == list(range(1, tiny.config.n_movies + 1))
    assert content["overview"][10].as_py() == tiny.overview(11)
    assert content["poster"][10].as_py() == tiny.poster(11)
    assert content["thumbnail"][79].as_py() == tiny.thumbnail(80)


def test_movies_dat_is_latin1(tmp_path: Path, small: SyntheticWorld) -> None:
    titles = small.movies()["title"].to_pylist()
    accented = [t for t in titles if not t.isascii()]
    assert accented, "the world should exercise non-ASCII titles"
    out = write_movielens(small, tmp_path, content=False)
    assert not (out / "content.parquet").exists()
    data = (out / "movies.dat").read_bytes()
    assert accented[0].encode("latin-1") in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, tiny: SyntheticWorld,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ml"
    write_movielens(tiny, out, content=False)
    complete = (out / "ratings.dat").read_bytes()

    def broken(chunk_users: int = 4096, **_: object):
        chunks = SyntheticWorld.iter_interactions(tiny, chunk_users=chunk_users)
        yield next(chunks)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tiny, "iter_interactions", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_movielens(tiny, out, content=False, chunk_users=5)
    assert (out / "ratings.dat").read_bytes() == complete  # the old file, whole
    assert sorted(p.name for p in out.iterdir()) == ["movies.dat", "ratings.dat", "users.dat"]
    monkeypatch.undo()

    fresh = tmp_path / "fresh"

    def failing_poster(movie_id: int) -> bytes:
        if movie_id == 50:
            raise RuntimeError("renderer crashed")
        return SyntheticWorld.poster(tiny, movie_id)

    monkeypatch.setattr(tiny, "poster", failing_poster)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_movielens(tiny, fresh, content_chunk=16)
    assert sorted(p.name for p in fresh.iterdir()) == ["movies.dat", "ratings.dat", "users.dat"]


# ---- large presets -------------------------------------------------------------------------


@pytest.mark.slow
def test_ml_1m_generates_in_full() -> None:
    world = SyntheticWorld(SyntheticConfig.preset("ml-1m"))
    rows = users = positives = 0
    last_user = 0
    for chunk in world.iter_interactions(chunk_users=1000):
        u = chunk["user_id"].to_numpy()
        assert u[0] == last_user + 1
        last_user = int(u[-1])
        rows += chunk.num_rows
        users += len(np.unique(u))
        positives += int((chunk["rating"].to_numpy() >= 4).sum())
    assert rows == 1_000_209 and users == 6_040
    assert 0.45 <= positives / rows <= 0.7


@pytest.mark.slow
def test_ml_32m_serves_any_user_range_without_generating_the_rest() -> None:
    world = SyntheticWorld(SyntheticConfig.preset("ml-32m"))
    part = pa.concat_tables(world.iter_interactions(start_user=150_000, stop_user=150_200))
    users = part["user_id"].to_numpy()
    assert users.min() == 150_000 and users.max() == 150_199
    assert part.num_rows == world.user_n_ratings[150_000 - 1: 150_200 - 1].sum()
    assert part["movie_id"].to_numpy().max() <= 87_585
