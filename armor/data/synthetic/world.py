"""A seeded synthetic MovieLens world whose ratings and content share one planted truth.

Tests and benchmarks need data where the right answer is known. Here a handful of latent factors
drive *both* who rates what and what each movie's overview, poster and trailer thumbnail look
like, so a content model can be shown to beat random and a collaborative model can learn too.

The generative model
--------------------
Genres. The 18 MovieLens-1M genres, grouped into four moods (light, dark, epic, serious). Each
genre has a centroid ``c_g`` in ``R^d``: a unit mix of its mood's direction and its own, so genres
of one mood are closer to each other than to the rest.

Movies. Each movie draws 1-3 genres (50/35/15 %): the primary from a prior proportional to the
ML-1M genre counts (Drama and Comedy common, Film-Noir rare), the others from that prior boosted
3x inside the primary's mood. Genre weights are 1 for the primary and U(0.4, 0.7) for the others,
normalised to sum to 1. The latent vector is ``m = unit(unit(sum_g w_g c_g) + movie_noise * e)``
with ``e ~ N(0, I/d)``, so a movie carries a genre part that content can reveal and a private part
that only ratings reveal. Popularity is Zipf-like: ``p ∝ (rank + 10) ** -popularity_exponent``
over a random ranking. Quality (a rating bias) leans towards popular movies. The year leans recent.
A scalar *tone* in [-1, 1] (the factor's projection on the light-minus-dark mood axis) sets poster
brightness and the overview's mood adjective, so content also carries a little of the latent
factor beyond the genre labels.

Users. Each user prefers 1-3 genres drawn from a flattened prior; ``u = unit(unit(sum w_g c_g) +
user_noise * e)``. Activity is lognormal, clipped to ``[min_ratings_per_user, max_user_fraction *
n_movies]`` and scaled so the counts sum to exactly ``n_ratings``.

Affinity and choice. ``affinity(u, i) = u . m_i``, a cosine in [-1, 1]. A user's rated movies are
a sample without replacement (successive sampling) with weights ``p_i * exp(taste_strength *
affinity)``. Two exact samplers are used: light users draw with replacement from the weights and
keep the first k distinct movies (which is successive sampling); heavy users (k > n_movies / 8),
for whom repeats would dominate, take the k smallest ``Exp(1) / w_i`` keys (Gumbel top-k). Both
give the same distribution; which one runs depends only on k and n_movies.

Ratings. ``z`` is ``affinity + 0.1 * quality`` standardised over the user's own rated movies
(the sample's bias towards liked, popular movies varies with the config; standardising keeps the
histogram fixed). The latent ``rating_signal * z + sqrt(1 - rating_signal^2) * noise +
user_bias`` is rescaled to unit variance and cut at the normal quantiles of the ML-1M rating
histogram (5.6 / 10.8 / 26.1 / 34.9 / 22.6 %), so 56-59 % of ratings are >= 4 across presets.

Timestamps. Each user starts at a time skewed towards the start of ``rating_years`` and rates in
sessions: 25 % of gaps are 0 s (ties, as in MovieLens), most are about a minute, 6 % are days.
A user whose sessions would run past the end of the range is compressed into it. Rows of a user
are in time order; the order in which movies were watched is a random permutation of the sample.

Content is drawn by :mod:`armor.data.synthetic.render` from each movie's genres, tone and title.

Generation streams: ratings are produced for fixed blocks of users (vectorised numpy per block),
and each block seeds its own generator from (seed, block), so any chunking of the output and any
subrange of users yields the same rows, and ml-32m never holds all its ratings in memory.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import pyarrow as pa

from armor.data.schema import INTERACTIONS_SCHEMA, MOVIES_SCHEMA
from armor.data.synthetic.render import (
    GENRES,
    N_GENRES,
    TITLE_SPACE,
    ContentSpec,
    render_overview,
    render_poster,
    render_thumbnail,
    stream_rng,
    title_at,
)
from armor.data.synthetic.sampling import _allocate_counts, _first_distinct_draws, _gumbel_top_k
from armor.errors import ConfigError, DataError

# Movies per genre in ML-1M's movies.dat: the prior keeps the synthetic genre mix MovieLens-like.
_GENRE_COUNTS = np.array(
    [503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471, 276, 492, 143, 68],
    dtype=np.float64,
)

_MOODS = {
    "light": ("Animation", "Children's", "Comedy", "Musical", "Romance"),
    "dark": ("Crime", "Film-Noir", "Horror", "Mystery", "Thriller"),
    "epic": ("Action", "Adventure", "Fantasy", "Sci-Fi", "War", "Western"),
    "serious": ("Documentary", "Drama"),
}
_MOOD_NAMES = tuple(_MOODS)
_GENRE_MOOD = np.array(
    [next(i for i, m in enumerate(_MOOD_NAMES) if g in _MOODS[m]) for g in GENRES], dtype=np.int64
)

# Normal quantiles of the cumulative ML-1M rating histogram (5.6, 16.4, 42.5, 77.4 %).
_RATING_CUTS = np.array([-1.589, -0.978, -0.189, 0.753], dtype=np.float32)

# Tags separate the random streams, so that e.g. the number of users never changes the movies;
# render.py's content streams use 21-23.
_TAG_CENTROIDS, _TAG_MOVIES, _TAG_USERS, _TAG_BLOCK = 11, 12, 13, 14
_TAG_DEMOGRAPHICS = 24

# About this many (user, movie) cells per block: big enough to amortise numpy's per-call cost,
# small enough that a block's temporaries stay in the tens of megabytes for any catalogue.
_BLOCK_CELLS = 1 << 21
_QUALITY_WEIGHT = 0.1  # in affinity (cosine) units; quality is ~N(0, 0.45)
_USER_BIAS_SD = 0.35


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"synthetic.{field}: {message}")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and knobs of a synthetic world; ``preset(name)`` gives MovieLens-shaped ones."""

    n_users: int
    n_movies: int
    n_ratings: int
    seed: int = 0
    latent_dim: int = 32
    min_ratings_per_user: int = 20
    max_user_fraction: float = 0.6  # the most one user rates, as a share of the catalogue
    activity_sigma: float = 1.0  # spread of log activity; 1.0 gives ML-1M's mean/median ~ 1.7
    popularity_exponent: float = 1.0
    taste_strength: float = 5.0  # beta in p_i * exp(beta * affinity)
    rating_signal: float = 0.7  # weight of the standardised affinity in the latent rating
    movie_noise: float = 0.7
    user_noise: float = 0.6
    rating_years: tuple[int, int] = (2000, 2003)
    movie_years: tuple[int, int] = (1919, 2000)

    def __post_init__(self) -> None:
        for name in ("n_users", "n_movies", "n_ratings", "latent_dim", "min_ratings_per_user"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                   f"must be a positive integer, got {value!r}")
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed",
               f"must be a non-negative integer, got {self.seed!r}")
        _check(self.latent_dim >= 4, "latent_dim", f"must be >= 4, got {self.latent_dim}")
        _check(0.0 < self.max_user_fraction <= 1.0, "max_user_fraction",
               f"must be in (0, 1], got {self.max_user_fraction}")
        _check(self.min_ratings_per_user <= self.max_per_user, "min_ratings_per_user",
               f"{self.min_ratings_per_user} exceeds the per-user cap {self.max_per_user} "
               f"(max_user_fraction * n_movies); lower it or add movies")
        lo, hi = self.n_users * self.min_ratings_per_user, self.n_users * self.max_per_user
        _check(lo <= self.n_ratings <= hi, "n_ratings",
               f"{self.n_ratings} is not reachable with {self.n_users} users rating between "
               f"{self.min_ratings_per_user} and {self.max_per_user} movies each "
               f"(allowed {lo}..{hi})")
        _check(self.activity_sigma >= 0.0, "activity_sigma", "must be >= 0")
        _check(self.popularity_exponent >= 0.0, "popularity_exponent", "must be >= 0")
        _check(self.taste_strength >= 0.0, "taste_strength", "must be >= 0")
        _check(0.0 <= self.rating_signal <= 1.0, "rating_signal", "must be in [0, 1]")
        _check(self.movie_noise >= 0.0, "movie_noise", "must be >= 0")
        _check(self.user_noise >= 0.0, "user_noise", "must be >= 0")
        for name in ("rating_years", "movie_years"):
            years = getattr(self, name)
            _check(len(years) == 2 and 1870 <= years[0] <= years[1] <= 2100, name,
                   f"must be (first, last) years within 1870-2100, got {years!r}")

    @property
    def max_per_user(self) -> int:
        return max(1, int(self.max_user_fraction * self.n_movies))

    @classmethod
    def preset(cls, name: str, seed: int = 0) -> SyntheticConfig:
        if name not in SIZES:
            raise ConfigError(f"synthetic preset {name!r} is unknown; known: {', '.join(SIZES)}")
        return dataclasses.replace(SIZES[name], seed=seed)


SIZES: Mapping[str, SyntheticConfig] = MappingProxyType({
    # Dense enough that every user's 20+ ratings fit into 80 movies; for unit tests.
    "tiny": SyntheticConfig(60, 80, 1_800),
    "small": SyntheticConfig(600, 800, 36_000),
    "ml-100k": SyntheticConfig(943, 1_682, 100_000, rating_years=(1997, 1998),
                               movie_years=(1922, 1998)),
    "ml-1m": SyntheticConfig(6_040, 3_706, 1_000_209),
    "ml-10m": SyntheticConfig(69_878, 10_677, 10_000_054, rating_years=(1995, 2009),
                              movie_years=(1915, 2008)),
    "ml-32m": SyntheticConfig(200_948, 87_585, 32_000_204, max_user_fraction=0.4,
                              rating_years=(1995, 2023), movie_years=(1874, 2023)),
})


@functools.cache
def _title_stride(space: int) -> int:
    # A stride coprime with the space makes i -> (stride * i + offset) % space a bijection.
    stride = 7919
    while math.gcd(stride, space) != 1:
        stride += 2
    return stride


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------

CONTENT_SCHEMA = pa.schema(
    [
        pa.field("movie_id", pa.int32(), nullable=False),
        pa.field("overview", pa.string(), nullable=False),
        pa.field("poster", pa.binary(), nullable=False),
        pa.field("thumbnail", pa.binary(), nullable=False),
    ]
)


class SyntheticWorld:
    """Movies, users, ratings and content drawn from one seeded generative model.

    Planted truth, for tests: ``movie_factors`` (n_movies, d) and ``user_factors`` (n_users, d)
    are unit vectors whose dot product is the affinity that drove choices and ratings;
    ``movie_genre_matrix`` (n_movies, 18) is multi-hot over ``genre_names``;
    ``movie_primary_genre`` indexes the genre that dominates content.
    """

    genre_names: tuple[str, ...] = GENRES

    def __init__(self, config: SyntheticConfig):
        self.config = config
        d = config.latent_dim
        n_movies, n_users = config.n_movies, config.n_users

        rng = stream_rng(config.seed, _TAG_CENTROIDS)
        moods = _unit(rng.standard_normal((len(_MOOD_NAMES), d)))
        own = _unit(rng.standard_normal((N_GENRES, d)))
        self.genre_centroids = _unit(0.6 * moods[_GENRE_MOOD] + 0.8 * own)  # (18, d)
        light, dark = moods[_MOOD_NAMES.index("light")], moods[_MOOD_NAMES.index("dark")]
        self._tone_axis = _unit(light - dark)

        rng = stream_rng(config.seed, _TAG_MOVIES)
        self.movie_genre_weights, self.movie_primary_genre = _draw_genres(
            rng, n_movies, _GENRE_COUNTS, counts_p=(0.5, 0.35, 0.15), secondary=(0.4, 0.7))
        self.movie_genre_matrix = self.movie_genre_weights > 0  # (n_movies, 18) bool
        genre_part = _unit(self.movie_genre_weights @ self.genre_centroids)
        noise = rng.standard_normal((n_movies, d)) / math.sqrt(d)
        self.movie_factors = _unit(genre_part + config.movie_noise * noise).astype(np.float32)
        self._movie_factors_t = np.ascontiguousarray(self.movie_factors.T)  # faster matmuls
        rank = rng.permutation(n_movies)
        popularity = (rank + 10.0) ** -config.popularity_exponent
        self.movie_popularity = popularity / popularity.sum()  # (n_movies,) sums to 1
        log_pop = np.log(self.movie_popularity)
        self._log_popularity = log_pop.astype(np.float32)
        self.movie_quality = (
            0.25 * (log_pop - log_pop.mean()) / (log_pop.std() + 1e-9)
            + 0.35 * rng.standard_normal(n_movies)
        ).astype(np.float32)
        first, last = config.movie_years
        ago = np.floor(rng.exponential(max(1.0, (last - first) / 5.0), n_movies))
        self.movie_years = np.clip(last - ago, first, last).astype(np.int32)
        self.movie_tone = np.clip(3.0 * (self.movie_factors @ self._tone_axis), -1.0, 1.0)
        self._title_offset = int(rng.integers(TITLE_SPACE))
        if n_movies > TITLE_SPACE:
            raise ConfigError(f"synthetic.n_movies: at most {TITLE_SPACE} movies have distinct "
                              f"titles, got {n_movies}")

        rng = stream_rng(config.seed, _TAG_USERS)
        self.user_genre_weights, _ = _draw_genres(
            rng, n_users, np.sqrt(_GENRE_COUNTS), counts_p=(0.3, 0.45, 0.25), secondary=(0.5, 1.0))
        self.user_genre_matrix = self.user_genre_weights > 0
        taste = _unit(self.user_genre_weights @ self.genre_centroids)
        noise = rng.standard_normal((n_users, d)) / math.sqrt(d)
        self.user_factors = _unit(taste + config.user_noise * noise).astype(np.float32)
        self.user_n_ratings = _allocate_counts(
            rng.lognormal(0.0, config.activity_sigma, n_users), config.n_ratings,
            config.min_ratings_per_user, config.max_per_user)
        self._block_users = max(1, min(n_users, _BLOCK_CELLS // n_movies))
        # The planted truth is shared with every caller; freeze it so no test can corrupt it.
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    # ---- catalogue --------------------------------------------------------------------------

    def title(self, movie_id: int) -> str:
        i = self._index(movie_id)
        space = TITLE_SPACE
        return title_at((_title_stride(space) * i + self._title_offset) % space)

    def genres(self, movie_id: int) -> list[str]:
        row = self.movie_genre_matrix[self._index(movie_id)]
        return [g for g, on in zip(GENRES, row) if on]

    def movies(self) -> pa.Table:
        n = self.config.n_movies
        ids = np.arange(1, n + 1, dtype=np.int32)
        genre_lists = [[GENRES[j] for j in np.flatnonzero(row)] for row in self.movie_genre_matrix]
        return pa.table(
            {
                "movie_id": ids,
                "title": [self.title(i) for i in range(1, n + 1)],
                "year": self.movie_years,
                "genres": genre_lists,
                "imdb_id": pa.nulls(n, pa.string()),
                # A fake but stable TMDB id, so the linking stage has something to link.
                "tmdb_id": ids + np.int32(100_000),
            },
            schema=MOVIES_SCHEMA,
        )

    def users(self) -> pa.Table:
        """ML-1M-style demographics (gender, age code, occupation 0-20, zip), uniform noise."""
        n = self.config.n_users
        rng = stream_rng(self.config.seed, _TAG_DEMOGRAPHICS)
        ages = np.array([1, 18, 25, 35, 45, 50, 56], dtype=np.int32)
        age_p = np.array([0.037, 0.183, 0.347, 0.197, 0.091, 0.082, 0.063])
        return pa.table({
            "user_id": np.arange(1, n + 1, dtype=np.int32),
            "gender": np.where(rng.random(n) < 0.717, "M", "F"),
            "age": ages[rng.choice(len(ages), n, p=age_p / age_p.sum())],
            "occupation": rng.integers(0, 21, n).astype(np.int32),
            "zip_code": [f"{z:05d}" for z in rng.integers(1000, 99999, n)],
        })

    # ---- interactions -----------------------------------------------------------------------

    def iter_interactions(self, chunk_users: int = 4096, *, start_user: int = 1,
                          stop_user: int | None = None) -> Iterator[pa.Table]:
        """Yield INTERACTIONS_SCHEMA tables for users ``start_user <= id < stop_user``.

        Each table holds exactly ``chunk_users`` consecutive users (the last may hold fewer),
        rows ordered by (user, timestamp). The rows do not depend on ``chunk_users`` or on the
        user range: a subrange reproduces exactly the rows of a full run.
        """
        n_users = self.config.n_users
        stop_user = n_users + 1 if stop_user is None else stop_user
        if chunk_users < 1:
            raise ConfigError(f"chunk_users: must be >= 1, got {chunk_users}")
        if not 1 <= start_user <= stop_user <= n_users + 1:
            raise ConfigError(f"start_user={start_user}, stop_user={stop_user}: need "
                              f"1 <= start_user <= stop_user <= {n_users + 1}")
        lo, hi = start_user - 1, stop_user - 1  # 0-based user indices
        if hi == lo:
            return
        bs = self._block_users
        pending: list[tuple[np.ndarray, ...]] = []  # rows of users not yet emitted, in order
        chunk_end = min(lo + chunk_users, hi)
        for b in range(lo // bs, (hi - 1) // bs + 1):
            cols = self._block(b)
            a, z = np.searchsorted(cols[0], [lo, hi])
            pending.append(tuple(c[a:z] for c in cols))
            covered = min((b + 1) * bs, hi)
            if chunk_end > covered:
                continue
            merged = tuple(np.concatenate(p) for p in zip(*pending))
            start = 0
            while chunk_end <= covered:
                cut = int(np.searchsorted(merged[0], chunk_end))
                yield _interactions_table(tuple(c[start:cut] for c in merged))
                start = cut
                if chunk_end == hi:
                    return
                chunk_end = min(chunk_end + chunk_users, hi)
            pending = [tuple(c[start:] for c in merged)]

    def interactions(self) -> pa.Table:
        """All ratings as one table; meant for the small presets."""
        return pa.concat_tables(self.iter_interactions(chunk_users=self.config.n_users))

    def affinity(self, user_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
        """The planted affinity of each (user, movie) pair, ids 1-based."""
        u = self.user_factors[np.asarray(user_ids) - 1]
        m = self.movie_factors[np.asarray(movie_ids) - 1]
        return np.einsum("ij,ij->i", u, m)

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ratings of the users in block ``b``: (user index, movie index, rating, timestamp)."""
        cfg = self.config
        lo = b * self._block_users
        hi = min(lo + self._block_users, cfg.n_users)
        nb, n = hi - lo, cfg.n_movies
        rng = stream_rng(cfg.seed, _TAG_BLOCK, b)
        k = self.user_n_ratings[lo:hi]
        kmax = int(k.max())

        aff = self.user_factors[lo:hi] @ self._movie_factors_t  # (nb, n)
        logw = aff * np.float32(cfg.taste_strength)
        logw += self._log_popularity
        logw -= logw.max(axis=1, keepdims=True)
        w = np.exp(logw)  # (nb, n), row max 1

        chosen = np.zeros((nb, kmax), dtype=np.int64)  # movie indices, first k[r] valid
        heavy = k > n // 8
        if heavy.any():
            rows = np.flatnonzero(heavy)
            chosen[rows] = _gumbel_top_k(rng, w[rows], k[rows], kmax)
        if not heavy.all():
            rows = np.flatnonzero(~heavy)
            light, done = _first_distinct_draws(rng, w[rows], k[rows])
            chosen[rows, : light.shape[1]] = light
            if not done.all():  # only for extreme weights, where repeats swamp the draws
                rows = rows[~done]
                chosen[rows] = _gumbel_top_k(rng, w[rows], k[rows], kmax)
        valid = np.arange(kmax)[None, :] < k[:, None]  # (nb, kmax)

        # The watch order is a random permutation of the sample; invalid slots sort last.
        order_key = rng.random((nb, kmax))
        order_key[~valid] = 2.0
        chosen = np.take_along_axis(chosen, np.argsort(order_key, axis=1), axis=1)

        ratings = self._ratings(rng, np.take_along_axis(aff, chosen, axis=1), chosen, valid, k)
        times = self._timestamps(rng, k, kmax)

        user_index = np.broadcast_to(np.arange(lo, hi, dtype=np.int32)[:, None], (nb, kmax))
        return (user_index[valid], chosen[valid].astype(np.int32), ratings[valid], times[valid])

    def _ratings(self, rng: np.random.Generator, aff: np.ndarray, chosen: np.ndarray,
                 valid: np.ndarray, k: np.ndarray) -> np.ndarray:
        cfg = self.config
        nb, kmax = aff.shape
        # Taste plus a little quality, standardised over the user's own sample: the sample is
        # biased towards liked and popular movies by an amount that varies with the config, and
        # standardising here keeps the rating histogram MovieLens-shaped regardless.
        score = np.where(valid, aff + _QUALITY_WEIGHT * self.movie_quality[chosen], 0.0)
        mean = score.sum(axis=1) / k
        var = np.where(valid, (score - mean[:, None]) ** 2, 0.0).sum(axis=1) / k
        z = (score - mean[:, None]) / np.sqrt(var + 1e-9)[:, None]
        user_bias = rng.normal(0.0, _USER_BIAS_SD, nb)
        rho = cfg.rating_signal
        latent = (rho * z + math.sqrt(1.0 - rho * rho) * rng.standard_normal((nb, kmax))
                  + user_bias[:, None]) / math.sqrt(1.0 + _USER_BIAS_SD**2)
        return (1 + np.searchsorted(_RATING_CUTS, latent.astype(np.float32))).astype(np.float32)

    def _timestamps(self, rng: np.random.Generator, k: np.ndarray, kmax: int) -> np.ndarray:
        first, last = self.config.rating_years
        t0 = _epoch(first)
        t1 = _epoch(last + 1) - 1
        start = t0 + (t1 - t0) * rng.beta(1.0, 2.5, len(k))
        kind = rng.random((len(k), kmax))
        gaps = np.where(kind < 0.25, 0.0, rng.exponential(45.0, (len(k), kmax)))
        gaps = np.where(kind > 0.94, rng.exponential(15 * 86_400.0, (len(k), kmax)), gaps)
        gaps[:, 0] = 0.0
        offsets = np.cumsum(gaps, axis=1)
        span = offsets[np.arange(len(k)), k - 1]
        room = t1 - start
        scale = np.where(span > room, room / np.maximum(span, 1.0), 1.0)
        return (start[:, None] + offsets * scale[:, None]).astype(np.int64)

    # ---- content ----------------------------------------------------------------------------

    def content_spec(self, movie_id: int) -> ContentSpec:
        i = self._index(movie_id)
        return ContentSpec(key=int(movie_id), title=self.title(movie_id),
                           genre_weights=self.movie_genre_weights[i],
                           primary=int(self.movie_primary_genre[i]), tone=float(self.movie_tone[i]))

    def overview(self, movie_id: int) -> str:
        return render_overview(self.config.seed, self.content_spec(movie_id))

    def poster(self, movie_id: int) -> bytes:
        return render_poster(self.config.seed, self.content_spec(movie_id))

    def thumbnail(self, movie_id: int) -> bytes:
        return render_thumbnail(self.config.seed, self.content_spec(movie_id))

    def content(self, movie_ids: Sequence[int]) -> pa.Table:
        """CONTENT_SCHEMA rows for ``movie_ids``, in that order."""
        ids = [int(m) for m in movie_ids]
        return pa.table(
            {
                "movie_id": pa.array(ids, pa.int32()),
                "overview": [self.overview(m) for m in ids],
                "poster": [self.poster(m) for m in ids],
                "thumbnail": [self.thumbnail(m) for m in ids],
            },
            schema=CONTENT_SCHEMA,
        )

    def _index(self, movie_id: int) -> int:
        movie_id = int(movie_id)
        if not 1 <= movie_id <= self.config.n_movies:
            raise DataError(f"movie_id {movie_id} is outside this synthetic world's "
                            f"1..{self.config.n_movies}")
        return movie_id - 1


# --------------------------------------------------------------------------------------------
# Drawing the world's genres and rows
# --------------------------------------------------------------------------------------------


def _draw_genres(rng: np.random.Generator, n: int, prior: np.ndarray, *,
                 counts_p: tuple[float, float, float],
                 secondary: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 18) genre weights summing to 1 per row, and the primary genre of each row."""
    p = prior / prior.sum()
    primary = rng.choice(N_GENRES, n, p=p)
    n_genres = rng.choice(3, n, p=counts_p) + 1
    # Secondary genres: Gumbel top-k over the prior, boosted inside the primary's mood.
    logits = np.log(p)[None, :] + np.log(3.0) * (_GENRE_MOOD[None, :] == _GENRE_MOOD[primary, None])
    keys = logits + rng.gumbel(size=(n, N_GENRES))
    keys[np.arange(n), primary] = np.inf
    order = np.argsort(-keys, axis=1)
    weights = np.zeros((n, N_GENRES))
    extra = rng.uniform(*secondary, size=(n, 2))
    weights[np.arange(n), primary] = 1.0
    for j in (1, 2):
        rows = np.flatnonzero(n_genres > j)
        weights[rows, order[rows, j]] = extra[rows, j - 1]
    return weights / weights.sum(axis=1, keepdims=True), primary


def _interactions_table(cols: tuple[np.ndarray, ...]) -> pa.Table:
    users, movies, ratings, times = cols
    return pa.table(
        {
            "user_id": (users + 1).astype(np.int32),
            "movie_id": (movies + 1).astype(np.int32),
            "rating": ratings.astype(np.float32),
            "timestamp": times.astype(np.int64),
        },
        schema=INTERACTIONS_SCHEMA,
    )


def _epoch(year: int) -> int:
    return calendar.timegm((year, 1, 1, 0, 0, 0))
