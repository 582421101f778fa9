"""Content rendering for the synthetic world: overviews, posters and trailer thumbnails.

Pure functions of (seed, :class:`ContentSpec`), shared by the synthetic world and by the stand-in
content the local TMDB server gives real MovieLens movies (:func:`standin_content`).

Content. ``overview``, ``poster`` and ``thumbnail`` are pure functions of (config, movie_id): they
seed their own generator from (seed, movie_id) and read only the movie's genres, tone and title,
so a server can render any movie on demand. Overview words come from the movie's genres' word
lists (70 %), from a random other genre (10 %, noise) and from neutral filler; each movie has its
own protagonist's name. Posters (200x300) and thumbnails (320x180) use the primary genre's
palette for the background and draw each genre's shape family in that genre's colours, more
shapes for heavier genres, with per-movie jitter in colour, position, size and count.

Titles. Every movie id maps to a distinct point of a product space of title words
(:func:`title_at` decodes a point; the world picks the bijection), so titles are unique without
a registry.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # PIL is imported where images are drawn: ratings alone should not need it
    from PIL import Image, ImageDraw, ImageFont

GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
)
N_GENRES = len(GENRES)

# Tags separate the random streams of content; the world's own streams use 11-14 and 24.
_TAG_TEXT, _TAG_POSTER, _TAG_THUMB = 21, 22, 23

POSTER_SIZE = (200, 300)
THUMBNAIL_SIZE = (320, 180)


def stream_rng(*key: int) -> np.random.Generator:
    """The generator of one random stream, keyed by (seed, tag, ...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


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


# --------------------------------------------------------------------------------------------
# Titles
# --------------------------------------------------------------------------------------------

# Every movie id maps to a distinct point of this product space (the world picks the bijection),
# so titles are unique without a registry. Some words are Latin-1 on purpose, to exercise encodings.
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
TITLE_SPACE = sum(_TITLE_PATTERN_SIZES)


def title_at(index: int) -> str:
    """Decode a point of the title space; distinct indices give distinct strings."""
    pattern = 0
    while index >= _TITLE_PATTERN_SIZES[pattern]:
        index -= _TITLE_PATTERN_SIZES[pattern]
        pattern += 1
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
    rng = stream_rng(seed, _TAG_TEXT, spec.key)
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

    rng = stream_rng(seed, _TAG_POSTER, spec.key)
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

    rng = stream_rng(seed, _TAG_THUMB, spec.key)
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
    key = zlib.crc32(f"{title}|{year}".encode())
    tone = (key % 2001) / 1000.0 - 1.0
    spec = ContentSpec(key=key, title=title, genre_weights=weights,
                       primary=known[0] if known else GENRES.index("Drama"), tone=0.5 * tone)
    return render_overview(seed, spec), render_poster(seed, spec), render_thumbnail(seed, spec)


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


class _Pen:
    """Where shapes go and in which colours; every draw of position or colour uses ``rng``."""

    def __init__(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int],
                 colours: list[tuple[int, ...]]):
        self.draw, self.rng, self.colours = draw, rng, colours
        self.x0, self.y0, self.x1, self.y1 = box
        self.bw, self.bh = self.x1 - self.x0, self.y1 - self.y0
        self.s = min(self.bw, self.bh)

    def colour(self) -> tuple[int, ...]:
        return self.colours[self.rng.integers(len(self.colours))]

    def point(self) -> tuple[float, float]:
        return self.x0 + self.rng.random() * self.bw, self.y0 + self.rng.random() * self.bh


# One function per shape family. Each consumes ``pen.rng`` in a fixed order: reordering a single
# draw changes every later shape, and so every stored poster and thumbnail.
def _triangles(pen: _Pen) -> None:  # sharp, narrow spikes
    x, y = pen.point()
    half, tall = pen.s * pen.rng.uniform(0.03, 0.08), pen.s * pen.rng.uniform(0.25, 0.6)
    up = 1 if pen.rng.random() < 0.5 else -1
    pen.draw.polygon([(x - half, y), (x + half, y), (x, y - up * tall)], fill=pen.colour())


def _circles(pen: _Pen) -> None:
    x, y = pen.point()
    r = pen.s * pen.rng.uniform(0.05, 0.18)
    pen.draw.ellipse((x - r, y - r, x + r, y + r), fill=pen.colour())


def _hstripes(pen: _Pen) -> None:
    y = pen.y0 + pen.rng.random() * pen.bh
    pen.draw.rectangle((pen.x0, y, pen.x1, y + pen.bh * pen.rng.uniform(0.03, 0.09)), fill=pen.colour())


def _vbars(pen: _Pen) -> None:
    x = pen.x0 + pen.rng.random() * pen.bw
    pen.draw.rectangle((x, pen.y0, x + pen.bw * pen.rng.uniform(0.02, 0.06), pen.y1), fill=pen.colour())


def _stars(pen: _Pen) -> None:
    x, y = pen.point()
    r = pen.s * pen.rng.uniform(0.03, 0.08)
    pts = []
    for j in range(10):
        rad = r if j % 2 == 0 else r * 0.4
        ang = math.pi * j / 5
        pts.append((x + rad * math.cos(ang), y + rad * math.sin(ang)))
    pen.draw.polygon(pts, fill=pen.colour())


def _burst(pen: _Pen) -> None:  # rays from one point: an explosion
    cx, cy = pen.point()
    for _ in range(3):
        ang = pen.rng.uniform(0, 2 * math.pi)
        length = pen.s * pen.rng.uniform(0.3, 0.7)
        pen.draw.line((cx, cy, cx + length * math.cos(ang), cy + length * math.sin(ang)),
                      fill=pen.colour(), width=int(pen.rng.integers(3, 7)))


def _mountains(pen: _Pen) -> None:  # broad peaks standing on the bottom edge
    x = pen.x0 + pen.rng.random() * pen.bw
    half, tall = pen.bw * pen.rng.uniform(0.12, 0.3), pen.bh * pen.rng.uniform(0.25, 0.6)
    pen.draw.polygon([(x - half, pen.y1), (x + half, pen.y1), (x, pen.y1 - tall)], fill=pen.colour())


def _squares(pen: _Pen) -> None:  # axis-aligned frames, like archive photos
    x, y = pen.point()
    a = pen.s * pen.rng.uniform(0.08, 0.2)
    pen.draw.rectangle((x, y, x + a, y + a * 0.8), fill=pen.colour(), outline=(255, 255, 255))


def _blobs(pen: _Pen) -> None:  # large, soft, low-contrast shapes
    x, y = pen.point()
    rx, ry = pen.s * pen.rng.uniform(0.12, 0.3), pen.s * pen.rng.uniform(0.1, 0.22)
    pen.draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=pen.colour())


def _rings(pen: _Pen) -> None:
    x, y = pen.point()
    r = pen.s * pen.rng.uniform(0.08, 0.22)
    pen.draw.ellipse((x - r, y - r, x + r, y + r), outline=pen.colour(), width=int(pen.rng.integers(3, 7)))


def _ellipses(pen: _Pen) -> None:  # two overlapping lobes, a rough heart
    x, y = pen.point()
    r = pen.s * pen.rng.uniform(0.04, 0.1)
    c = pen.colour()
    pen.draw.ellipse((x - 2 * r, y - r, x, y + r), fill=c)
    pen.draw.ellipse((x, y - r, x + 2 * r, y + r), fill=c)
    pen.draw.polygon([(x - 2 * r, y + 0.2 * r), (x + 2 * r, y + 0.2 * r), (x, y + 2.4 * r)], fill=c)


def _waves(pen: _Pen) -> None:
    y = pen.y0 + pen.rng.random() * pen.bh
    amp, period = pen.bh * pen.rng.uniform(0.02, 0.06), pen.bw * pen.rng.uniform(0.15, 0.35)
    pts = [(pen.x0 + t, y + amp * math.sin(2 * math.pi * t / period)) for t in range(0, pen.bw + 1, 8)]
    pen.draw.line(pts, fill=pen.colour(), width=int(pen.rng.integers(3, 7)))


_SHAPES: dict[str, Callable[[_Pen], None]] = {
    "triangles": _triangles, "circles": _circles, "hstripes": _hstripes, "vbars": _vbars, "stars": _stars,
    "burst": _burst, "mountains": _mountains, "squares": _squares, "blobs": _blobs, "rings": _rings,
    "ellipses": _ellipses, "waves": _waves,
}


def _draw_shapes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, family: str,
                 box: tuple[int, int, int, int], count: int,
                 colours: list[tuple[int, ...]]) -> None:
    if family not in _SHAPES:
        raise ValueError(f"unknown shape family {family!r}")
    pen = _Pen(draw, rng, box, colours)
    for _ in range(count):
        _SHAPES[family](pen)


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    return ImageFont.load_default()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
