"""What the local TMDB server serves: its catalogue of movies and their stand-in content.

The catalogue is generic (a list of :class:`FixtureMovie`); overviews and images are made lazily
by callables, so a catalogue of ML-32M's size costs nothing until a movie is asked for.
:func:`load_catalogue` builds one from a synthetic world or from a workspace's movies, whose
content is rendered from their genres (:func:`default_standin_content`). The byte helpers make
the bad images the server's faults serve: a decompression bomb, corrupt and truncated JPEGs,
and YouTube's grey placeholder for a missing thumbnail.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import io
import logging
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from armor.errors import ConfigError, DataError

log = logging.getLogger(__name__)

WORKSPACE_TMDB_BASE = 900_000  # tmdb_id = this + movie_id for workspace movies without a link


@dataclasses.dataclass(frozen=True)
class FixtureMovie:
    """One movie the server knows. ``overview`` may be a string or a callable giving one."""

    tmdb_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    overview: str | Callable[[], str]
    poster: Callable[[], bytes] | None = None
    thumbnail: Callable[[], bytes] | None = None
    trailer_key: str | None = None
    original_title: str | None = None
    movie_id: int | None = None  # the MovieLens id it came from, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "genres", tuple(self.genres))
        if not (isinstance(self.tmdb_id, int) and self.tmdb_id > 0):
            raise ConfigError(f"FixtureMovie.tmdb_id: must be a positive integer, got {self.tmdb_id!r}")

    @property
    def poster_path(self) -> str | None:
        return f"/p{self.tmdb_id}.jpg" if self.poster is not None else None


# ---- content helpers ---------------------------------------------------------------------------


def youtube_key(tmdb_id: int, seed: int = 0, tag: str = "trailer") -> str:
    """A deterministic 11-character YouTube-shaped video id."""
    digest = hashlib.blake2b(f"{seed}:{tag}:{tmdb_id}".encode(), digest_size=9).digest()
    return base64.urlsafe_b64encode(digest).decode()[:11]


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG of a few hundred bytes whose header declares ``width x height`` RGB pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = zlib.compress((b"\x00" * (1 + 3 * width)) * 4, 9)  # a few real rows; the rest is absent
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=1)
def placeholder_jpeg() -> bytes:
    """YouTube's answer for a missing thumbnail: a 120x90 grey JPEG (sent with HTTP 404)."""
    return solid_jpeg((120, 90), (204, 204, 204))


def solid_jpeg(size: tuple[int, int], colour: tuple[int, int, int], quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def corrupt(data: bytes) -> bytes:
    """Keep the 2-byte start-of-image marker, scramble the headers after it."""
    return data[:2] + bytes(b ^ 0x5A for b in data[2:256]) + data[256:]


def truncate(data: bytes) -> bytes:
    """Cut the image data in half, headers intact: it opens, but its pixels run out."""
    start = 16
    if data[:2] == b"\xff\xd8":  # JPEG: keep everything up to the start of the scan
        sos = data.find(b"\xff\xda")
        if sos > 0:
            start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    return data[: start + max(1, (len(data) - start) // 2)]


def default_standin_content(title: str, year: int | None, genres: Iterable[str], seed: int = 0
                            ) -> tuple[str, bytes, bytes]:
    """(overview, poster JPEG, thumbnail JPEG) for a movie we have no real content for.

    The synthetic world's renderers drawn from the movie's real genres: genre words in the
    text, genre palettes and shapes in the images. Deterministic in its inputs.
    """
    from armor.data.synthetic import standin_content

    return standin_content(title, year, [g for g in genres if g and g != "(no genres listed)"], seed)


# ---- catalogues --------------------------------------------------------------------------------


def load_catalogue(spec: str | Path, *, content: Callable[..., tuple[str, bytes, bytes]] = default_standin_content,
                   seed: int = 0) -> list[FixtureMovie]:
    """``synthetic:SIZE`` (a SyntheticWorld preset) or a workspace directory with movies.parquet.

    Workspace movies without a TMDB id get ``900000 + movie_id``; their content comes from
    ``content(title, year, genres, seed)``. MovieLens titles ("Matrix, The") are served the way
    TMDB spells them ("The Matrix"), with the foreign title as ``original_title``.
    """
    from armor.tmdb.linking import normalise_title

    text = str(spec)
    movies: list[FixtureMovie] = []
    if text.startswith("synthetic:"):
        from armor.data.synthetic import SyntheticConfig, SyntheticWorld

        world = SyntheticWorld(SyntheticConfig.preset(text.split(":", 1)[1], seed=seed))
        table = world.movies()
        for row in table.to_pylist():
            mid, tmdb_id = int(row["movie_id"]), int(row["tmdb_id"])
            primary, alternates = normalise_title(row["title"])
            movies.append(FixtureMovie(
                tmdb_id=tmdb_id, title=primary, year=row["year"], genres=tuple(row["genres"]),
                overview=functools.partial(world.overview, mid), poster=functools.partial(world.poster, mid),
                thumbnail=functools.partial(world.thumbnail, mid), trailer_key=youtube_key(tmdb_id, seed),
                original_title=alternates[0] if alternates else None, movie_id=mid))
        return movies

    path = Path(text)
    parquet = path / "movies.parquet" if path.is_dir() else path
    if not parquet.is_file():
        raise ConfigError(f"catalogue {text!r}: expected synthetic:SIZE or a workspace directory holding "
                          "movies.parquet (run `armor data prepare` first)")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(parquet, columns=["movie_id", "title", "year", "genres", "tmdb_id"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read the movie catalogue: {exc}", path=parquet) from exc
    seen: set[int] = set()
    for row in table.to_pylist():
        mid = int(row["movie_id"])
        tmdb_id = int(row["tmdb_id"]) if row["tmdb_id"] is not None else WORKSPACE_TMDB_BASE + mid
        if tmdb_id in seen:
            log.warning("movie %d: tmdb_id %d already served for another movie; skipped", mid, tmdb_id)
            continue
        seen.add(tmdb_id)
        primary, alternates = normalise_title(row["title"])
        genres = tuple(row["genres"] or ())
        args = (row["title"], row["year"], genres, seed)
        movies.append(FixtureMovie(
            tmdb_id=tmdb_id, title=primary, year=row["year"], genres=genres,
            overview=_pick(content, args, 0), poster=_pick(content, args, 1), thumbnail=_pick(content, args, 2),
            trailer_key=youtube_key(tmdb_id, seed), original_title=alternates[0] if alternates else None,
            movie_id=mid))
    return movies


def _pick(content: Callable[..., tuple], args: tuple, index: int) -> Callable[[], Any]:
    return lambda: content(*args)[index]
