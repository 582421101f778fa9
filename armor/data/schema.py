"""The canonical Arrow schemas every loader produces and every stage reads."""

from __future__ import annotations

import pyarrow as pa

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("movie_id", pa.int32(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),  # seconds since the epoch
    ]
)

MOVIES_SCHEMA = pa.schema(
    [
        pa.field("movie_id", pa.int32(), nullable=False),
        # The title without its trailing "(year)"; MovieLens article order is kept ("Matrix, The").
        pa.field("title", pa.string(), nullable=False),
        pa.field("year", pa.int32()),
        pa.field("genres", pa.list_(pa.string()), nullable=False),
        pa.field("imdb_id", pa.string()),  # "tt0133093" form
        pa.field("tmdb_id", pa.int32()),
    ]
)

# Interaction and split files share the interactions schema; split files add nothing.
SPLIT_NAMES = ("train", "valid", "test")

MIN_RATING = 0.5
MAX_RATING = 5.0


def display_title(title: str, year: int | None) -> str:
    return f"{title} ({year})" if year is not None else title
