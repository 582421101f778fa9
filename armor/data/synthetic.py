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

Content. ``overview``, ``poster`` and ``thumbnail`` are pure functions of (config, movie_id): they
seed their own generator from (seed, movie_id) and read only the movie's genres, tone and title,
so a server can render any movie on demand. Overview words come from the movie's genres' word
lists (70 %), from a random other genre (10 %, noise) and from neutral filler; each movie has its
own protagonist's name. Posters (200x300) and thumbnails (320x180) use the primary genre's
palette for the background and draw each genre's shape family in that genre's colours, more
shapes for heavier genres, with per-movie jitter in colour, position, size and count.

Generation streams: ratings are produced for fixed blocks of users (vectorised numpy per block),
and each block seeds its own generator from (seed, block), so any chunking of the output and any
subrange of users yields the same rows, and ml-32m never holds all its ratings in memory.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import io
import logging
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armor.data.schema import INTERACTIONS_SCHEMA, MOVIES_SCHEMA
from armor.errors import ConfigError, DataError
from armor.io import atomic_path

if TYPE_CHECKING:  # PIL is imported where images are drawn: ratings alone should not need it
    from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
)
N_GENRES = len(GENRES)

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

# Tags separate the random streams, so that e.g. the number of users never changes the movies.
_TAG_CENTROIDS, _TAG_MOVIES, _TAG_USERS, _TAG_BLOCK = 11, 12, 13, 14
_TAG_TEXT, _TAG_POSTER, _TAG_THUMB, _TAG_DEMOGRAPHICS = 21, 22, 23, 24

# About this many (user, movie) cells per block: big enough to amortise numpy's per-call cost,
# small enough that a block's temporaries stay in the tens of megabytes for any catalogue.
_BLOCK_CELLS = 1 << 21
_MAX_ROUNDS = 30
_QUALITY_WEIGHT = 0.1  # in affinity (cosine) units; quality is ~N(0, 0.45)
_USER_BIAS_SD = 0.35


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


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
    "ml-32m": SyntheticConfig(200_948, 87_585, 32_000_204, max_user_fraction=0.4,
                              rating_years=(1995, 2023), movie_years=(1874, 2023)),
})


# --------------------------------------------------------------------------------------------
# Vocabulary, palettes and shapes per genre
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _GenreStyle:
    palette: tuple[tuple[int, int, int], ...]  # background top, background bottom, accents...
    shape: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_STYLES: dict[str, _GenreStyle] = {
    "Action": _GenreStyle(
        ((70, 75, 85), (230, 90, 20), (250, 200, 40), (200, 30, 30)), "burst",
        _words("explosion chase mercenary commando gunfight bomb convoy helicopter assassin "
               "showdown stuntman hostage warlord"),
        _words("explosive relentless armed fearless deadly brutal furious unstoppable"),
        _words("battles chases outruns blasts fights storms ambushes rescues")),
    "Adventure": _GenreStyle(
        ((20, 110, 130), (40, 140, 90), (220, 190, 120), (120, 80, 40)), "mountains",
        _words("expedition treasure jungle voyage map island explorer temple quest river pirate "
               "compass shipwreck"),
        _words("uncharted legendary lost daring exotic ancient remote faraway"),
        _words("explores discovers sails treks crosses searches uncovers journeys")),
    "Animation": _GenreStyle(
        ((80, 200, 255), (255, 80, 80), (255, 220, 60), (120, 230, 100)), "circles",
        _words("cartoon toy bunny critter doodle puppet sidekick bubble paintbrush penguin "
               "squirrel kitten raccoon"),
        _words("animated colorful zany playful whimsical tiny cuddly bouncy"),
        _words("bounces giggles doodles tumbles waddles squeaks scribbles wiggles")),
    "Children's": _GenreStyle(
        ((173, 216, 230), (255, 182, 193), (255, 250, 160), (190, 240, 190)), "circles",
        _words("kid puppy school family birthday playground classmate grandma camp pony teacher "
               "treehouse lollipop"),
        _words("young friendly lovable mischievous gentle curious silly heartwarming"),
        _words("befriends learns adopts plays helps shares grows tidies")),
    "Comedy": _GenreStyle(
        ((255, 210, 40), (255, 140, 30), (250, 250, 220), (60, 160, 220)), "circles",
        _words("prank blunder roommate slacker party joke mishap neighbor bachelor boss trip "
               "disaster misfit"),
        _words("hilarious clumsy goofy wacky awkward outrageous bumbling quirky"),
        _words("bungles pranks stumbles jokes fakes crashes bluffs fumbles")),
    "Crime": _GenreStyle(
        ((20, 20, 25), (90, 90, 100), (200, 160, 40), (150, 20, 20)), "vbars",
        _words("detective gangster heist mob robbery cop informant cartel gang lawyer bank "
               "dealer racketeer"),
        _words("corrupt ruthless undercover criminal crooked violent notorious cunning"),
        _words("robs investigates smuggles betrays arrests launders testifies extorts")),
    "Documentary": _GenreStyle(
        ((230, 230, 225), (150, 160, 170), (40, 60, 90), (200, 200, 200)), "squares",
        _words("interview footage history archive scientist musician activist community nature "
               "journalist era movement ecosystem"),
        _words("real candid true historical intimate political environmental archival"),
        _words("examines documents chronicles profiles records follows surveys interviews")),
    "Drama": _GenreStyle(
        ((70, 90, 120), (130, 100, 80), (180, 170, 160), (40, 50, 70)), "blobs",
        _words("marriage grief illness father mother son daughter divorce memory struggle "
               "redemption farm widow"),
        _words("poignant tragic emotional troubled bittersweet lonely estranged grieving"),
        _words("confronts struggles mourns forgives reconciles endures sacrifices questions")),
    "Fantasy": _GenreStyle(
        ((40, 30, 90), (110, 50, 160), (230, 190, 60), (200, 160, 230)), "stars",
        _words("wizard dragon sorcerer elf kingdom spell prophecy sword enchantress unicorn "
               "realm goblin amulet"),
        _words("enchanted mystical magical mythical spellbound fabled otherworldly fairy"),
        _words("enchants conjures summons curses bewitches vanquishes transforms casts")),
    "Film-Noir": _GenreStyle(
        ((15, 15, 15), (70, 70, 70), (230, 230, 230), (140, 140, 140)), "vbars",
        _words("dame gumshoe alibi cigarette nightclub shadow fedora insurance blackmail drifter "
               "racket lounge"),
        _words("smoky shadowy cynical doomed hardboiled fatalistic rainy sultry"),
        _words("doublecrosses blackmails seduces frames tails lies confesses broods")),
    "Horror": _GenreStyle(
        ((10, 10, 10), (120, 0, 0), (60, 0, 20), (200, 200, 180)), "triangles",
        _words("ghost demon curse corpse asylum ritual creature nightmare coffin witch zombie "
               "vampire cellar"),
        _words("haunted cursed bloody sinister undead eerie rotting possessed"),
        _words("haunts stalks devours possesses terrorizes awakens slaughters lurks")),
    "Musical": _GenreStyle(
        ((120, 30, 120), (220, 40, 160), (250, 200, 60), (250, 240, 250)), "waves",
        _words("song dancer stage chorus melody band broadway singer show rehearsal orchestra "
               "ballroom tune"),
        _words("dazzling musical rhythmic showstopping glamorous melodic lively jazzy"),
        _words("sings dances performs rehearses auditions serenades taps harmonizes")),
    "Mystery": _GenreStyle(
        ((60, 30, 90), (20, 110, 110), (180, 170, 200), (30, 30, 50)), "rings",
        _words("clue puzzle disappearance riddle manor suspect inspector locket letter identity "
               "enigma code butler"),
        _words("mysterious baffling hidden cryptic puzzling secretive missing unexplained"),
        _words("deciphers unravels suspects vanishes conceals solves deduces probes")),
    "Romance": _GenreStyle(
        ((255, 220, 225), (240, 100, 140), (200, 20, 60), (150, 60, 120)), "ellipses",
        _words("lover romance kiss wedding heart courtship sweetheart bride passion affair "
               "valentine soulmate fiance"),
        _words("romantic passionate tender lovestruck charming forbidden heartbroken sweet"),
        _words("loves kisses woos marries courts longs yearns flirts")),
    "Sci-Fi": _GenreStyle(
        ((10, 10, 40), (140, 40, 220), (20, 240, 240), (180, 255, 120)), "rings",
        _words("spaceship alien robot planet android galaxy laser starship cyborg mutant colony "
               "asteroid clone"),
        _words("futuristic cybernetic interstellar robotic dystopian genetic galactic orbital"),
        _words("invades colonizes teleports clones mutates hacks launches orbits")),
    "Thriller": _GenreStyle(
        ((30, 50, 80), (10, 20, 30), (200, 40, 40), (100, 110, 120)), "triangles",
        _words("conspiracy killer spy agent fugitive stalker threat psychopath plot target "
               "assassination bomber kidnapper"),
        _words("tense paranoid suspenseful dangerous psychological twisted chilling ruthless"),
        _words("hunts pursues threatens escapes kidnaps traps eludes manipulates")),
    "War": _GenreStyle(
        ((85, 95, 50), (60, 50, 40), (150, 140, 90), (200, 190, 150)), "hstripes",
        _words("soldier battalion trench battlefield general platoon invasion sergeant regiment "
               "army resistance tank bunker"),
        _words("wartime heroic wounded embattled military occupied patriotic fallen"),
        _words("defends liberates marches surrenders bombs deserts commands enlists")),
    "Western": _GenreStyle(
        ((240, 210, 150), (210, 160, 90), (160, 80, 30), (90, 50, 30)), "hstripes",
        _words("cowboy sheriff outlaw ranch saloon frontier gunslinger stagecoach cattle posse "
               "bandit horse prairie"),
        _words("dusty lawless rugged lone sunbaked rowdy untamed western"),
        _words("rides duels rustles wrangles shoots tames drifts lassos")),
}
_STYLE_LIST = [_STYLES[g] for g in GENRES]

_FILLER_NOUNS = _words("life world town city friend journey story night day past future stranger "
                       "man woman group home")
_FILLER_ADJECTIVES = _words("new old small unlikely ordinary strange certain single")
_FILLER_VERBS = _words("meets finds faces changes leaves joins follows remembers")
_TONE_WORDS = (
    _words("grim bleak brooding somber"),
    _words("gripping moving striking remarkable"),
    _words("warm hopeful joyful lighthearted"),
)
_FIRST_NAMES = _words(
    "Anna Ben Clara David Elena Frank Grace Henry Iris Jack Kate Leo Maria Nick Olivia Paul "
    "Quinn Rosa Sam Tessa Victor Wendy Xavier Yara Zoe Hugo Nina Oscar Lucy Felix Ruth Marco "
    "Ingrid Theo Alma Dmitri Elise Rafael Greta Simon")
_LAST_NAMES = _words(
    "Adler Brennan Castillo Dorsey Ellison Fischer Garner Hale Ivers Jensen Keller Lambert "
    "Moreau Novak Ortega Pryce Quarles Reyes Sterling Thorne Upton Vance Whitaker Yates Zeller "
    "Abbott Blake Carver Duval Easton Flynn Grady Holm Irwin Jovanovic Kowalski Lindqvist")

_SENTENCES = (
    "{P}, a {A} {N}, {V} a {A} {N}.",
    "When a {A} {N} {V} the {N}, {P} {V} the {A} {N}.",
    "{P} {V} a {N} while the {A} {N} {V} the {N}.",
)
_MORE_SENTENCES = (
    "Set in a {A} {N}, this {T} story {V} a {N} and a {N}.",
    "The {A} {N} {V} the {N} of the {N}.",
    "Only a {A} {N} {V} the {A} {N}.",
    "A {T} tale of a {N}, a {N} and a {A} {N}.",
)

# Titles: every movie id maps to a distinct point of this product space (a bijection, below), so
# titles are unique without a registry. Some words are Latin-1 on purpose, to exercise encodings.
_TITLE_ADJECTIVES = _words(
    "Crimson Silent Last Golden Broken Hidden Burning Frozen Hollow Wild Lonely Secret Distant "
    "Scarlet Midnight Iron Silver Dark Bright Endless Forgotten Fallen Lost Savage Quiet Restless "
    "Wicked Sacred Bitter Velvet Electric Painted Stolen Shattered Sleeping Wandering Shining "
    "Dancing Falling Rising Blue Green Black White Red Copper Glass Paper Stone Northern Southern "
    "Eastern Western Final First Second Little Great Long Short Deep High Cold Warm Empty Open "
    "Naked Perfect Strange Dangerous Gentle Brave Proud Fragile Hungry Sweet Eternal Ancient "
    "Modern Savage Radiant Twisted Crooked Hollywood Lucky Naïve Marble Amber Ivory Jade Scarred "
    "Whispering Howling Drifting Burning Sunken Haunted Lunar Solar Winter Summer Autumn Spring")
_TITLE_NOUNS = _words(
    "Harbor River Night Garden Mirror Crown Storm Shadow Road Bridge Island Tower Forest Desert "
    "Ocean Mountain Valley City Station Circus Hotel Kingdom Empire Heart Soul Dream Promise "
    "Secret Letter Song Dance Game Hunter Stranger Witness Angel Devil Saint Sinner Soldier "
    "Sheriff Outlaw Detective Doctor Professor Captain Prince Princess Queen King Widow Orphan "
    "Thief Killer Lover Dancer Singer Painter Poet Pilot Sailor Rider Runner Dreamer Prophet "
    "Ghost Machine Engine Clock Key Door Window Room House Castle Cathedral Prison Factory Farm "
    "Ranch Saloon Café Señor Fiancée Lagoon Canyon Glacier Volcano Jungle Swamp Meadow Orchard "
    "Vineyard Lighthouse Carnival Parade Festival Wedding Funeral Voyage Journey Escape Return "
    "Revenge Legacy Fortune Treasure Diamond Pearl Emerald Rose Lily Orchid Raven Falcon Wolf "
    "Tiger Lion Bear Fox Serpent Dragon Horse Stallion Sparrow Butterfly Spider Moon Sun Star "
    "Comet Planet Galaxy Horizon Frontier Border Harvest Rain Snow Thunder Lightning Fire Ice "
    "Smoke Ash Dust Sand Salt Bone Blood Iron Gold Silver Steel Glass Silk Velvet Thorn Crow "
    "Season Summer Winter Tide Wave Shore Reef Anchor Compass Map Voyager Pioneer Rebel Exile "
    "Stranger Nomad Wanderer Guardian Keeper Maker Painter Sculptor Musician Gambler Champion")
_TITLE_ADJECTIVES = tuple(dict.fromkeys(_TITLE_ADJECTIVES))
_TITLE_NOUNS = tuple(dict.fromkeys(_TITLE_NOUNS))
_NA, _NN = len(_TITLE_ADJECTIVES), len(_TITLE_NOUNS)
# Patterns: "Adj Noun", "Adj Noun, The", "Adj Noun, A", "Noun of the Noun2", "Noun and the Noun2".
_TITLE_PATTERN_SIZES = (_NA * _NN, _NA * _NN, _NA * _NN, _NN * (_NN - 1), _NN * (_NN - 1))
_TITLE_SPACE = sum(_TITLE_PATTERN_SIZES)


def _title(index: int) -> str:
    """Decode a point of the title space; distinct indices give distinct strings."""
    for pattern, size in enumerate(_TITLE_PATTERN_SIZES):
        if index < size:
            break
        index -= size
    if pattern < 3:
        adjective, noun = _TITLE_ADJECTIVES[index // _NN], _TITLE_NOUNS[index % _NN]
        if pattern == 0:
            return f"{adjective} {noun}"
        if pattern == 1:
            return f"{adjective} {noun}, The"
        article = "An" if adjective[0] in "AEIOU" else "A"
        return f"{adjective} {noun}, {article}"
    first, second = divmod(index, _NN - 1)
    second += second >= first
    joiner = "of the" if pattern == 3 else "and the"
    return f"{_TITLE_NOUNS[first]} {joiner} {_TITLE_NOUNS[second]}"


@functools.cache
def _title_stride(space: int) -> int:
    # A stride coprime with the space makes i -> (stride * i + offset) % space a bijection.
    stride = 7919
    while math.gcd(stride, space) != 1:
        stride += 2
    return stride


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    return ImageFont.load_default()


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

POSTER_SIZE = (200, 300)
THUMBNAIL_SIZE = (320, 180)


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

        rng = _rng(config.seed, _TAG_CENTROIDS)
        moods = _unit(rng.standard_normal((len(_MOOD_NAMES), d)))
        own = _unit(rng.standard_normal((N_GENRES, d)))
        self.genre_centroids = _unit(0.6 * moods[_GENRE_MOOD] + 0.8 * own)  # (18, d)
        light, dark = moods[_MOOD_NAMES.index("light")], moods[_MOOD_NAMES.index("dark")]
        self._tone_axis = _unit(light - dark)

        rng = _rng(config.seed, _TAG_MOVIES)
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
        self._title_offset = int(rng.integers(_TITLE_SPACE))
        if n_movies > _TITLE_SPACE:
            raise ConfigError(f"synthetic.n_movies: at most {_TITLE_SPACE} movies have distinct "
                              f"titles, got {n_movies}")

        rng = _rng(config.seed, _TAG_USERS)
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
        space = _TITLE_SPACE
        return _title((_title_stride(space) * i + self._title_offset) % space)

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
        rng = _rng(self.config.seed, _TAG_DEMOGRAPHICS)
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
        rng = _rng(cfg.seed, _TAG_BLOCK, b)
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
# Content rendering: pure functions of (seed, spec), shared by the synthetic world and by the
# stand-in content the local TMDB server gives real MovieLens movies.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContentSpec:
    """What a movie's content depends on: a key for its random streams and its genre cues."""

    key: int
    title: str
    genre_weights: np.ndarray  # (18,) non-negative, sums to 1
    primary: int  # index into GENRES
    tone: float  # in [-1, 1]: darker / lighter palette and words

    def genre_shares(self) -> list[tuple[int, float]]:
        genres = [int(g) for g in np.flatnonzero(self.genre_weights)]
        genres.sort(key=lambda g: -self.genre_weights[g])
        return [(g, float(self.genre_weights[g])) for g in genres]


def render_overview(seed: int, spec: ContentSpec) -> str:
    rng = _rng(seed, _TAG_TEXT, spec.key)
    weights = spec.genre_weights
    genres = np.flatnonzero(weights)
    gp = weights[genres] / weights[genres].sum()
    tone = _TONE_WORDS[int(np.digitize(spec.tone, [-0.33, 0.33]))]
    name = f"{_FIRST_NAMES[rng.integers(len(_FIRST_NAMES))]} " \
           f"{_LAST_NAMES[rng.integers(len(_LAST_NAMES))]}"
    short = name.split()[0]

    def pick(kind: str) -> str:
        u = rng.random()
        if u < 0.70:
            style = _STYLE_LIST[genres[rng.choice(len(genres), p=gp)]]
        elif u < 0.80:
            style = _STYLE_LIST[rng.integers(N_GENRES)]
        else:
            pool = {"N": _FILLER_NOUNS, "A": _FILLER_ADJECTIVES, "V": _FILLER_VERBS}[kind]
            return pool[rng.integers(len(pool))]
        pool = {"N": style.nouns, "A": style.adjectives, "V": style.verbs}[kind]
        return pool[rng.integers(len(pool))]

    templates = [_SENTENCES[rng.integers(len(_SENTENCES))]]
    n_more = 1 + int(rng.random() < 0.5)
    more = rng.choice(len(_MORE_SENTENCES), n_more, replace=False)
    templates += [_MORE_SENTENCES[j] for j in more]
    sentences = []
    for j, template in enumerate(templates):
        out = []
        for part in template.split("{"):
            if "}" in part:
                slot, rest = part.split("}", 1)
                if slot == "P":
                    word = name if j == 0 else short
                elif slot == "T":
                    word = tone[rng.integers(len(tone))]
                else:
                    word = pick(slot)
                out.append(word + rest)
            else:
                out.append(part)
        sentences.append(_fix_articles("".join(out)))
    return " ".join(s[0].upper() + s[1:] for s in sentences)

def render_poster(seed: int, spec: ContentSpec) -> bytes:
    from PIL import ImageDraw

    rng = _rng(seed, _TAG_POSTER, spec.key)
    w, h = POSTER_SIZE
    primary = _STYLE_LIST[spec.primary]
    gain = 1.0 + 0.25 * spec.tone
    top, bottom = (_jitter(rng, c, gain) for c in primary.palette[:2])
    image = _gradient(rng, w, h, top, bottom)
    draw = ImageDraw.Draw(image)
    for g, weight in spec.genre_shares():
        style = _STYLE_LIST[g]
        count = max(1, int(round(weight * rng.uniform(7, 11))))
        _draw_shapes(draw, rng, style.shape, (0, 0, w, int(h * 0.82)), count,
                     [_jitter(rng, c, gain) for c in style.palette[1:]])
    band = _jitter(rng, primary.palette[0], 0.45 * gain)
    draw.rectangle((0, int(h * 0.84), w, h), fill=band)
    draw.text((8, int(h * 0.87)), spec.title[:28], fill=(235, 235, 235),
              font=_font())
    return _jpeg(image)

def render_thumbnail(seed: int, spec: ContentSpec) -> bytes:
    from PIL import Image, ImageDraw

    rng = _rng(seed, _TAG_THUMB, spec.key)
    w, h = THUMBNAIL_SIZE
    primary = _STYLE_LIST[spec.primary]
    gain = 1.0 + 0.25 * spec.tone
    # A film still: sky and ground split at a horizon, genre shapes across the scene, a
    # figure in the foreground and letterbox bars; same palette cues as the poster.
    horizon = int(h * rng.uniform(0.5, 0.7))
    sky = _gradient(rng, w, horizon, _jitter(rng, primary.palette[1], gain),
                    _jitter(rng, primary.palette[0], gain))
    image = Image.new("RGB", (w, h), _jitter(rng, primary.palette[-1], 0.7 * gain))
    image.paste(sky, (0, 0))
    draw = ImageDraw.Draw(image)
    for g, weight in spec.genre_shares():
        style = _STYLE_LIST[g]
        count = max(1, int(round(weight * rng.uniform(6, 10))))
        _draw_shapes(draw, rng, style.shape, (0, int(h * 0.1), w, int(h * 0.9)), count,
                     [_jitter(rng, c, gain) for c in style.palette[1:]])
    x = int(rng.uniform(0.15, 0.85) * w)
    figure = _jitter(rng, (20, 20, 20), 1.0)
    draw.ellipse((x - 9, horizon - 52, x + 9, horizon - 34), fill=figure)
    draw.rectangle((x - 12, horizon - 34, x + 12, horizon + 10), fill=figure)
    bar = int(h * 0.08)
    draw.rectangle((0, 0, w, bar), fill=(0, 0, 0))
    draw.rectangle((0, h - bar, w, h), fill=(0, 0, 0))
    return _jpeg(image)



def standin_content(title: str, year: int | None, genres: Sequence[str], seed: int = 0
                    ) -> tuple[str, bytes, bytes]:
    """(overview, poster JPEG, thumbnail JPEG) for a real movie we have no content for.

    Rendered with the synthetic world's genre vocabularies, palettes and shapes from the
    movie's real genres, keyed by its title and year, so the stand-in carries the same kind of
    genre cues real posters do and is identical on every run.
    """
    known = [GENRES.index(g) for g in genres if g in GENRES]
    weights = np.zeros(N_GENRES)
    if known:
        weights[known] = 1.0 / len(known)
    else:
        weights[GENRES.index("Drama")] = 1.0  # unknown genre: the catalogue's most common one
    key = zlib.crc32(f"{title}|{year}".encode("utf-8"))
    tone = (key % 2001) / 1000.0 - 1.0
    spec = ContentSpec(key=key, title=title, genre_weights=weights,
                       primary=known[0] if known else GENRES.index("Drama"), tone=0.5 * tone)
    return render_overview(seed, spec), render_poster(seed, spec), render_thumbnail(seed, spec)


# --------------------------------------------------------------------------------------------
# Sampling helpers
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


def _allocate_counts(activity: np.ndarray, total: int, lo: int, hi: int) -> np.ndarray:
    """Integer counts in [lo, hi], roughly proportional to ``activity``, summing to ``total``."""
    def filled(scale: float) -> np.ndarray:
        return np.clip(scale * activity, lo, hi)

    a, b = 0.0, hi / activity.min()
    for _ in range(200):
        mid = 0.5 * (a + b)
        if filled(mid).sum() < total:
            a = mid
        else:
            b = mid
    x = filled(b)
    counts = np.floor(x).astype(np.int64)
    deficit = total - int(counts.sum())
    # Hand the remainder to the users closest to the next integer, never crossing the bounds.
    if deficit > 0:
        room = np.flatnonzero(counts < hi)
        best = room[np.argsort(-(x[room] - counts[room]), kind="stable")[:deficit]]
        counts[best] += 1
    elif deficit < 0:
        room = np.flatnonzero(counts > lo)
        best = room[np.argsort(x[room] - counts[room], kind="stable")[:-deficit]]
        counts[best] -= 1
    if int(counts.sum()) != total:  # unreachable after validation; guards the arithmetic
        raise ConfigError(f"synthetic.n_ratings: could not allocate {total} ratings")
    return counts


def _gumbel_top_k(rng: np.random.Generator, w: np.ndarray, k: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` movie indices; the first k[r] are a successive sample ∝ w[r]."""
    n = w.shape[1]
    with np.errstate(divide="ignore", over="ignore"):
        keys = rng.standard_exponential(w.shape, dtype=np.float32) / w  # smallest k win
    kmax = int(k.max())
    if kmax < n:
        cand = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax]
    else:
        cand = np.broadcast_to(np.arange(n), keys.shape).copy()
    cand = np.take_along_axis(cand, np.argsort(np.take_along_axis(keys, cand, 1), 1), 1)
    out = np.zeros((len(k), width), dtype=np.int64)
    out[:, :kmax] = cand
    return out


def _first_distinct_draws(rng: np.random.Generator, w: np.ndarray,
                          k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose first k[r] entries are the first k[r] distinct draws (with replacement) ∝ w[r].

    Drawing with replacement and skipping repeats is successive sampling without replacement.
    All rows share one flat CDF: row r owns the interval [cdf[r-1], cdf[r]) of it. Also returns
    which rows completed; a row still short after ``_MAX_ROUNDS`` rounds is left to the caller.
    """
    nb, n = w.shape
    cdf = np.cumsum(w.ravel(), dtype=np.float64)
    row_end = cdf[n - 1 :: n]
    row_start = np.concatenate([[0.0], row_end[:-1]])
    keys = np.empty(0, dtype=np.int64)  # row * n + movie, in draw order
    have = np.zeros(nb, dtype=np.int64)
    rate = np.full(nb, 1.3)  # draws per new distinct movie, learnt per round
    for _ in range(_MAX_ROUNDS):
        short = np.flatnonzero(have < k)
        if short.size == 0:
            break
        m = np.ceil((k[short] - have[short]) * rate[short]).astype(np.int64) + 4
        rows = np.repeat(short, m)
        u = row_start[rows] + rng.random(rows.size) * (row_end[rows] - row_start[rows])
        flat = np.searchsorted(cdf, u, side="right")
        flat = np.clip(flat, rows * n, rows * n + n - 1)
        keys = np.concatenate([keys, flat])
        distinct, first = np.unique(keys, return_index=True)
        new_have = np.bincount(distinct // n, minlength=nb)
        gained = np.maximum(new_have[short] - have[short], 1)
        rate[short] = np.clip(m / gained, 1.0, 64.0) * 1.2
        have = new_have
    order = np.argsort(first, kind="stable")  # distinct keys in order of first draw
    distinct = distinct[order]
    row = distinct // n
    order = np.argsort(row, kind="stable")
    distinct, row = distinct[order], row[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=nb))[:-1]])
    rank = np.arange(distinct.size) - starts[row]
    keep = rank < k[row]
    out = np.zeros((nb, int(k.max())), dtype=np.int64)
    out[row[keep], rank[keep]] = distinct[keep] - row[keep] * n
    return out, have >= k


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


# --------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------


def _fix_articles(sentence: str) -> str:
    words = sentence.split(" ")
    for j in range(len(words) - 1):
        if words[j] in ("a", "A") and words[j + 1][:1].lower() in "aeiou":
            words[j] += "n"
    return " ".join(words)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], gain: float) -> tuple[int, ...]:
    c = np.asarray(colour, dtype=np.float64) * gain + rng.normal(0.0, 14.0, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _gradient(rng: np.random.Generator, w: int, h: int, top: tuple[int, ...],
              bottom: tuple[int, ...]) -> Image.Image:
    """A top-to-bottom colour gradient with a faint per-movie grain."""
    from PIL import Image

    t = np.linspace(0.0, 1.0, h)[:, None]
    line = (1 - t) * np.asarray(top, dtype=np.float64) + t * np.asarray(bottom, dtype=np.float64)
    # Low-resolution grain, upsampled: texture that differs per movie at a tiny cost.
    grain = rng.normal(0.0, 10.0, (12, 8, 3))
    base = np.broadcast_to(line[:, None, :], (h, w, 3)).astype(np.float32)
    grain_img = Image.fromarray(np.clip(grain + 128, 0, 255).astype(np.uint8)).resize((w, h))
    base = base + (np.asarray(grain_img, dtype=np.float32) - 128.0)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _draw_shapes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, family: str,
                 box: tuple[int, int, int, int], count: int,
                 colours: list[tuple[int, ...]]) -> None:
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    s = min(bw, bh)

    def colour() -> tuple[int, ...]:
        return colours[rng.integers(len(colours))]

    def point() -> tuple[float, float]:
        return x0 + rng.random() * bw, y0 + rng.random() * bh

    for _ in range(count):
        if family == "triangles":  # sharp, narrow spikes
            x, y = point()
            half, tall = s * rng.uniform(0.03, 0.08), s * rng.uniform(0.25, 0.6)
            up = 1 if rng.random() < 0.5 else -1
            draw.polygon([(x - half, y), (x + half, y), (x, y - up * tall)], fill=colour())
        elif family == "circles":
            x, y = point()
            r = s * rng.uniform(0.05, 0.18)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour())
        elif family == "hstripes":
            y = y0 + rng.random() * bh
            draw.rectangle((x0, y, x1, y + bh * rng.uniform(0.03, 0.09)), fill=colour())
        elif family == "vbars":
            x = x0 + rng.random() * bw
            draw.rectangle((x, y0, x + bw * rng.uniform(0.02, 0.06), y1), fill=colour())
        elif family == "stars":
            x, y = point()
            r = s * rng.uniform(0.03, 0.08)
            pts = []
            for j in range(10):
                rad = r if j % 2 == 0 else r * 0.4
                ang = math.pi * j / 5
                pts.append((x + rad * math.cos(ang), y + rad * math.sin(ang)))
            draw.polygon(pts, fill=colour())
        elif family == "burst":  # rays from one point: an explosion
            cx, cy = point()
            for _ in range(3):
                ang = rng.uniform(0, 2 * math.pi)
                length = s * rng.uniform(0.3, 0.7)
                draw.line((cx, cy, cx + length * math.cos(ang), cy + length * math.sin(ang)),
                          fill=colour(), width=int(rng.integers(3, 7)))
        elif family == "mountains":  # broad peaks standing on the bottom edge
            x = x0 + rng.random() * bw
            half, tall = bw * rng.uniform(0.12, 0.3), bh * rng.uniform(0.25, 0.6)
            draw.polygon([(x - half, y1), (x + half, y1), (x, y1 - tall)], fill=colour())
        elif family == "squares":  # axis-aligned frames, like archive photos
            x, y = point()
            a = s * rng.uniform(0.08, 0.2)
            draw.rectangle((x, y, x + a, y + a * 0.8), fill=colour(), outline=(255, 255, 255))
        elif family == "blobs":  # large, soft, low-contrast shapes
            x, y = point()
            rx, ry = s * rng.uniform(0.12, 0.3), s * rng.uniform(0.1, 0.22)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour())
        elif family == "rings":
            x, y = point()
            r = s * rng.uniform(0.08, 0.22)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=colour(),
                         width=int(rng.integers(3, 7)))
        elif family == "ellipses":  # two overlapping lobes, a rough heart
            x, y = point()
            r = s * rng.uniform(0.04, 0.1)
            c = colour()
            draw.ellipse((x - 2 * r, y - r, x, y + r), fill=c)
            draw.ellipse((x, y - r, x + 2 * r, y + r), fill=c)
            draw.polygon([(x - 2 * r, y + 0.2 * r), (x + 2 * r, y + 0.2 * r), (x, y + 2.4 * r)],
                         fill=c)
        elif family == "waves":
            y = y0 + rng.random() * bh
            amp, period = bh * rng.uniform(0.02, 0.06), bw * rng.uniform(0.15, 0.35)
            pts = [(x0 + t, y + amp * math.sin(2 * math.pi * t / period))
                   for t in range(0, bw + 1, 8)]
            draw.line(pts, fill=colour(), width=int(rng.integers(3, 7)))
        else:
            raise ValueError(f"unknown shape family {family!r}")


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# MovieLens-1M format writer
# --------------------------------------------------------------------------------------------


def _dat_bytes(columns: Sequence[pa.Array]) -> pa.Buffer:
    """``a::b::c\\n`` lines of the given columns, as one buffer, without a Python loop."""
    strings = [pc.cast(c, pa.string()) for c in columns]
    joined = pc.binary_join_element_wise(*strings, "::")
    lines = pc.binary_join_element_wise(joined, "", "\n")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return lines.buffers()[2].slice(start, end - start)


def write_movielens(world: SyntheticWorld, out_dir: str | Path, *, content: bool = True,
                    chunk_users: int = 8192, content_chunk: int = 256) -> Path:
    """Write ``world`` in the ML-1M file format (plus ``content.parquet``) under ``out_dir``.

    Each file is written to a temporary sibling and renamed when complete, so a failure leaves
    earlier files whole and the failing one absent. Text files are Latin-1, like ML-1M's.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = world.config

    movies = world.movies()
    lines = [
        f"{mid}::{title} ({year})::{'|'.join(genres)}\n"
        for mid, title, year, genres in zip(
            movies["movie_id"].to_pylist(), movies["title"].to_pylist(),
            movies["year"].to_pylist(), movies["genres"].to_pylist())
    ]
    with atomic_path(out / "movies.dat") as tmp:
        tmp.write_bytes("".join(lines).encode("latin-1"))

    users = world.users()
    with atomic_path(out / "users.dat") as tmp, open(tmp, "wb") as f:
        f.write(_dat_bytes([users[c] for c in users.column_names]))

    with atomic_path(out / "ratings.dat") as tmp, open(tmp, "wb") as f:
        written = 0
        for table in world.iter_interactions(chunk_users=chunk_users):
            f.write(_dat_bytes([table["user_id"], table["movie_id"],
                                pc.cast(table["rating"], pa.int32()), table["timestamp"]]))
            written += table.num_rows
        log.info("wrote %d ratings to %s", written, out / "ratings.dat")

    if content:
        with atomic_path(out / "content.parquet") as tmp:
            with pq.ParquetWriter(tmp, CONTENT_SCHEMA) as writer:
                for first in range(1, cfg.n_movies + 1, content_chunk):
                    ids = range(first, min(first + content_chunk, cfg.n_movies + 1))
                    writer.write_table(world.content(ids))
    return out
