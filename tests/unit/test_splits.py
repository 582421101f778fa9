"""Splits follow the protocol and leak nothing into profiles or the training matrix."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from armor.config import SplitConfig
from armor.data.catalogue import Catalogue
from armor.data.schema import INTERACTIONS_SCHEMA
from armor.data.splits import build_split_data, make_split, read_split, split_interactions, write_split
from armor.errors import ConfigError, DataError


def table(rows):
    users, movies, ratings, times = zip(*rows)
    return pa.table({"user_id": users, "movie_id": movies, "rating": ratings, "timestamp": times},
                    schema=INTERACTIONS_SCHEMA)


def random_interactions(n_users=200, n_movies=300, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        n = rng.integers(3, 60)
        movies = rng.choice(np.arange(1, n_movies + 1), size=n, replace=False)
        ratings = rng.integers(1, 6, size=n)
        times = 1_000_000 + rng.integers(0, 50, size=n)  # coarse: many ties
        rows.extend(zip([u] * n, movies.tolist(), ratings.astype(float).tolist(), times.tolist()))
    return table(rows)


def pairs(t):
    return set(zip(t["user_id"].to_pylist(), t["movie_id"].to_pylist()))


@pytest.mark.parametrize("method", ["random", "temporal", "loo"])
def test_partition_is_exact_and_disjoint(method):
    data = random_interactions()
    config = SplitConfig(method=method, seed=3)
    parts = split_interactions(data, config)
    train, valid, test = (pairs(parts[n]) for n in ("train", "valid", "test"))
    assert not (train & valid) and not (train & test) and not (valid & test)

    positives = data.filter(np.asarray(data["rating"]) >= 4.0)
    users, counts = np.unique(positives["user_id"].to_numpy(), return_counts=True)
    kept = set(users[counts >= 5].tolist())
    expected = {(u, m) for u, m in pairs(positives) if u in kept}
    assert train | valid | test == expected
    for name in ("train", "valid", "test"):
        assert set(parts[name]["user_id"].to_pylist()) == kept  # every kept user in every part
        assert min(parts[name]["rating"].to_pylist()) >= 4.0


@pytest.mark.parametrize("method", ["random", "temporal", "loo"])
def test_no_held_out_item_reaches_a_profile_or_the_training_matrix(method):
    data = random_interactions(seed=1)
    parts = split_interactions(data, SplitConfig(method=method))
    catalogue = np.arange(1, 301)
    split = build_split_data(parts, catalogue)
    assert split.train.multiply(split.valid).nnz == 0
    assert split.train.multiply(split.test).nnz == 0
    assert split.valid.multiply(split.test).nnz == 0
    assert split.train.nnz == parts["train"].num_rows
    assert split.valid.nnz + split.test.nnz == parts["valid"].num_rows + parts["test"].num_rows
    # the training matrix as a set of movie ids per user equals the train table and nothing else
    rows, cols = split.train.nonzero()
    assert set(zip(split.user_ids[rows].tolist(), split.item_ids[cols].tolist())) == pairs(parts["train"])


def test_ratios_per_user():
    rows = [(1, m, 5.0, m) for m in range(1, 11)] + [(2, m, 4.0, m) for m in range(1, 6)]
    rows += [(3, m, 5.0, m) for m in range(1, 5)]  # 4 positives: dropped (< 5)
    rows += [(4, m, 3.0, m) for m in range(1, 20)]  # no positives: dropped
    parts = split_interactions(table(rows), SplitConfig(method="random"))
    def count(name, user):
        return parts[name]["user_id"].to_pylist().count(user)
    assert (count("train", 1), count("valid", 1), count("test", 1)) == (8, 1, 1)
    assert (count("train", 2), count("valid", 2), count("test", 2)) == (3, 1, 1)
    assert all(count(n, u) == 0 for n in ("train", "valid", "test") for u in (3, 4))


def test_leave_one_out_takes_latest_with_movie_id_tie_break():
    # user 1: movies 7 and 3 share the latest second; movie id breaks the tie -> 7 is test, 3 valid
    rows = [(1, 5, 4.0, 100), (1, 9, 5.0, 50), (1, 7, 4.0, 300), (1, 3, 5.0, 300), (1, 1, 4.0, 200),
            (1, 2, 2.0, 900)]  # rating 2 is not a positive even though it is latest
    for seed_order in (0, 1):
        t = table(rows if seed_order == 0 else rows[::-1])
        parts = split_interactions(t, SplitConfig(method="loo"))
        assert parts["test"]["movie_id"].to_pylist() == [7]
        assert parts["valid"]["movie_id"].to_pylist() == [3]
        assert sorted(parts["train"]["movie_id"].to_pylist()) == [1, 5, 9]


def test_temporal_split_orders_by_time():
    data = random_interactions(seed=2)
    parts = split_interactions(data, SplitConfig(method="temporal"))
    key = {name: {} for name in parts}
    for name, t in parts.items():
        for u, m, ts in zip(t["user_id"].to_pylist(), t["movie_id"].to_pylist(), t["timestamp"].to_pylist()):
            key[name].setdefault(u, []).append((ts, m))
    for u in key["test"]:
        assert max(key["train"][u]) < min(key["valid"][u])
        assert max(key["valid"][u]) < min(key["test"][u])


def test_random_split_ignores_row_order_and_depends_on_seed():
    data = random_interactions(seed=4)
    shuffled = data.take(np.random.default_rng(0).permutation(data.num_rows))
    a = split_interactions(data, SplitConfig(seed=7))
    b = split_interactions(shuffled, SplitConfig(seed=7))
    c = split_interactions(data, SplitConfig(seed=8))
    assert pairs(a["test"]) == pairs(b["test"])
    assert pairs(a["test"]) != pairs(c["test"])


@pytest.mark.parametrize("method", ["loo", "cold"])
def test_write_and_read_round_trip(tmp_path, method):
    data = random_interactions(seed=5)
    config = SplitConfig(method=method, seed=2)
    made = make_split(data, config)
    write_split(made, tmp_path / "s")
    again = read_split(tmp_path / "s")
    assert again.config == config and again.funnel == made.funnel
    assert all(again.tables[n].equals(made.tables[n]) for n in made.tables)
    np.testing.assert_array_equal(again.catalogue, made.catalogue)
    np.testing.assert_array_equal(again.cold_items, made.cold_items)
    np.testing.assert_array_equal(again.cold_valid_items, made.cold_valid_items)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_bad_configs_and_inputs_name_the_setting():
    with pytest.raises(ConfigError, match="split.ratios"):
        SplitConfig(ratios=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="split.method"):
        SplitConfig(method="by-genre")
    with pytest.raises(DataError, match="min_user_positives"):
        split_interactions(table([(1, 1, 5.0, 1)]), SplitConfig())
    with pytest.raises(DataError, match="incomplete"):
        read_split("/nonexistent/split")


# --------------------------------------------------------------------------------------------
# Catalogue first, then users, then the split; the funnel says what each step dropped
# --------------------------------------------------------------------------------------------


def narrow_catalogue(data, keep_share=0.7, seed=0):
    movies = np.unique(data["movie_id"].to_numpy())
    kept = np.sort(np.random.default_rng(seed).choice(movies, size=int(keep_share * movies.size), replace=False))
    return Catalogue("multimodal/exclude", kept, {"no thumbnail": int(movies.size - kept.size)})


@pytest.mark.parametrize("method", ["random", "loo", "temporal"])
def test_every_evaluated_user_has_five_positives_inside_the_catalogue_and_none_is_dropped(method):
    data = random_interactions(seed=6)
    catalogue = narrow_catalogue(data)
    made = make_split(data, SplitConfig(method=method, seed=1), catalogue)
    split = build_split_data(made.tables, made.catalogue)
    per_user = np.diff((split.train + split.valid + split.test).tocsr().indptr)
    assert per_user.min() >= 5  # counted inside the catalogue, so the split can honour it
    # every kept user is evaluated: one or more test items each, none silently lost
    assert (np.diff(split.test.indptr) > 0).all() and (np.diff(split.valid.indptr) > 0).all()
    assert set(made.tables["test"]["movie_id"].to_numpy()) <= set(catalogue.movie_ids)
    steps = {row["step"].split(" (")[0]: row for row in made.funnel}
    kept = steps["users with >= 5 positives in the catalogue"]
    assert kept["users"] == split.n_users == steps["test"]["users"]
    inside = steps["in the catalogue"]
    assert inside["positives_on_movies_outside"] > 0 and inside["movies_no_thumbnail"] > 0
    assert kept["positives"] == split.train.nnz + split.valid.nnz + split.test.nnz
    assert inside["users"] - kept["users"] == kept["users_with_fewer"]


def test_leave_one_out_keeps_users_whose_latest_positive_is_outside_the_catalogue():
    # A user's latest positive is on a movie the catalogue excludes: splitting after the catalogue
    # gives them their latest in-catalogue positive as test instead of silently losing them.
    rows = [(1, m, 5.0, t) for m, t in zip(range(1, 8), range(100, 107))] + [(1, 99, 5.0, 999)]
    made = make_split(table(rows), SplitConfig(method="loo"), Catalogue("c", np.arange(1, 8), {}))
    assert made.tables["test"]["movie_id"].to_pylist() == [7]
    assert made.tables["valid"]["movie_id"].to_pylist() == [6]


def test_the_cold_split_holds_movies_out_of_train_entirely_for_test_and_for_validation():
    data = random_interactions(seed=7, n_users=300)
    config = SplitConfig(method="cold", seed=3, cold_share=0.1, cold_valid_share=0.05)
    made = make_split(data, config)
    cold, cold_valid = set(made.cold_items.tolist()), set(made.cold_valid_items.tolist())
    assert len(cold) == round(0.1 * made.catalogue.size) and len(cold_valid) == round(0.05 * made.catalogue.size)
    assert not cold & cold_valid
    train_movies = set(made.tables["train"]["movie_id"].to_pylist())
    assert not (cold | cold_valid) & train_movies
    assert set(made.tables["valid"]["movie_id"].to_pylist()) <= cold_valid  # validation measures the cold task
    assert set(made.tables["test"]["movie_id"].to_pylist()) <= cold
    # every positive of a kept user lands in the part its movie belongs to
    positives = data.filter(np.asarray(data["rating"]) >= 4.0)
    kept_users = set(made.tables["train"]["user_id"].to_pylist())
    kept = {(u, m) for u, m in pairs(positives) if u in kept_users}
    assert pairs(made.tables["test"]) == {(u, m) for u, m in kept if m in cold}
    assert pairs(made.tables["valid"]) == {(u, m) for u, m in kept if m in cold_valid}
    assert pairs(made.tables["train"]) == {(u, m) for u, m in kept if m not in cold | cold_valid}
    again = make_split(data, config)  # seeded
    assert again.cold_items.tolist() == made.cold_items.tolist()
    assert again.cold_valid_items.tolist() == made.cold_valid_items.tolist()
    # the test movies do not depend on the validation share
    other = make_split(data, dataclasses.replace(config, cold_valid_share=0.2))
    assert other.cold_items.tolist() == made.cold_items.tolist()


def test_held_out_movies_are_drawn_among_all_rated_movies_not_only_liked_ones():
    """If only liked movies could be held out, "held out" would be readable off the catalogue (every
    movie nobody liked would be warm). Movies 1-40 have ratings but no positive here; with 40 % of
    the catalogue held out, a draw among rated movies holds some of them out, a draw among liked
    movies none."""
    rows = [(u, m, 5.0 if m > 40 else 2.0, 1_000_000 + m) for u in range(1, 61) for m in range(1, 121)
            if (u + m) % 3 == 0]
    config = SplitConfig(method="cold", seed=1, cold_share=0.3, cold_valid_share=0.1)
    made = make_split(table(rows), config)
    held = np.union1d(made.cold_items, made.cold_valid_items)
    never_liked = held[held <= 40]
    assert never_liked.size > 0
    # Their (absent) positives change nothing else: test and validation are still positives only.
    assert not set(made.tables["test"]["movie_id"].to_pylist()) & set(never_liked.tolist())


def test_user_major_order_is_lexsort():
    """The packed-key sort the splits use is np.lexsort's permutation, ties in row order included,
    and falls back to lexsort where the keys do not pack (negative ids, time spans over 2^40)."""
    from armor.data.splits import _user_major_order

    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 400))
        users = rng.integers(0, int(rng.integers(1, 30)), n).astype(rng.choice([np.int32, np.int64]))
        times = rng.integers(-5, int(rng.integers(1, 12)), n).astype(np.int64)  # many ties
        movies = rng.integers(0, 8, n).astype(np.int32)
        np.testing.assert_array_equal(_user_major_order(users, times, movies), np.lexsort((movies, times, users)))
        np.testing.assert_array_equal(_user_major_order(users, movies), np.lexsort((movies, users)))
        wide = times * (1 << 41)
        np.testing.assert_array_equal(_user_major_order(users, wide, movies), np.lexsort((movies, wide, users)))
        negative = users - 3
        np.testing.assert_array_equal(_user_major_order(negative, movies), np.lexsort((movies, negative)))


def test_n_distinct_matches_unique():
    from armor.data.catalogue import n_distinct

    rng = np.random.default_rng(1)
    for values in (rng.integers(0, 50, 1000), rng.integers(0, 50, 1000).astype(np.int32), np.array([], np.int64),
                   rng.integers(-5, 5, 100), np.array([0, 1 << 40, 7]), rng.random(100).round(1)):
        assert n_distinct(values) == np.unique(values).size
