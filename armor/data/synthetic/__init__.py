"""A seeded synthetic MovieLens world whose ratings and content share one planted truth.

world.py draws movies, users and ratings from one generative model (documented there) and
sampling.py holds its exact samplers; render.py draws each movie's overview, poster and trailer
thumbnail from its genres (also the stand-in content of real movies); writer.py writes a world in
the MovieLens-1M file format.
"""

from armor.data.synthetic.render import (
    GENRES,
    N_GENRES,
    POSTER_SIZE,
    THUMBNAIL_SIZE,
    ContentSpec,
    render_overview,
    render_poster,
    render_thumbnail,
    standin_content,
)
from armor.data.synthetic.sampling import _first_distinct_draws, _gumbel_top_k  # noqa: F401 - tested directly
from armor.data.synthetic.world import CONTENT_SCHEMA, SIZES, SyntheticConfig, SyntheticWorld
from armor.data.synthetic.writer import write_movielens

__all__ = [
    "CONTENT_SCHEMA", "GENRES", "N_GENRES", "POSTER_SIZE", "SIZES", "THUMBNAIL_SIZE", "ContentSpec",
    "SyntheticConfig", "SyntheticWorld", "render_overview", "render_poster", "render_thumbnail",
    "standin_content", "write_movielens",
]
