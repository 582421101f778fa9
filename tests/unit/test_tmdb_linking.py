"""MovieLens titles -> TMDB search titles, and search-based linking against the fixture server."""

from __future__ import annotations

import asyncio

import pytest

from armor.config import ScrapeConfig
from armor.tmdb.client import AuthError, Credentials, TMDBClient
from armor.tmdb.fixture import Faults, FixtureServer
from armor.tmdb.linking import link_movie, link_movies, normalise_title, title_similarity, year_factor
from armor.tmdb.standin import FixtureMovie

TOKEN = "linking-test-token"


@pytest.mark.parametrize("title, primary, alternates", [
    ("Matrix, The", "The Matrix", []),
    ("Matrix, The (1999)", "The Matrix", []),
    ("City of Lost Children, The (Cité des enfants perdus, La)", "The City of Lost Children",
     ["La Cité des enfants perdus"]),
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "The City of Lost Children",
     ["La Cité des enfants perdus"]),
    ("Seven (a.k.a. Se7en) (1995)", "Seven", ["Se7en"]),
    ("Postman, The (Postino, Il) (1994)", "The Postman", ["Il Postino"]),
    ("Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il)", "The Good, the Bad and the Ugly",
     ["Il Buono, il brutto, il cattivo"]),
    ("Close Shave, A", "A Close Shave", []),
    ("American in Paris, An", "An American in Paris", []),
    ("Misérables, Les", "Les Misérables", []),
    ("Homme qui aimait les femmes, L'", "L'Homme qui aimait les femmes", []),
    ("Boot, Das", "Das Boot", []),
    ("Wings of Desire (Himmel über Berlin, Der)", "Wings of Desire", ["Der Himmel über Berlin"]),
    ("Unendliche Geschichte, Die", "Die Unendliche Geschichte", []),
    ("Mariachi, El", "El Mariachi", []),
    ("Olvidados, Los", "Los Olvidados", []),
    ("Crow, The: City of Angels", "The Crow: City of Angels", []),
    ("Toy Story", "Toy Story", []),
    ("(500) Days of Summer (2009)", "(500) Days of Summer", []),
    ("Shawshank Redemption, The", "The Shawshank Redemption", []),
    ("Theory of Everything", "Theory of Everything", []),  # "The" inside a word is no article
])
def test_normalise_title(title, primary, alternates):
    assert normalise_title(title) == (primary, alternates)


def test_similarity_and_year_factor():
    assert title_similarity("The Matrix", "Matrix") == 1.0  # leading articles ignored
    assert title_similarity("La Cité des enfants perdus", "la cite des enfants perdus") == 1.0
    assert title_similarity("The Matrix", "Heat") <= 0.4
    assert year_factor(1999, 1999) == 1.0 and year_factor(1999, 2000) == 0.9
    assert year_factor(1999, 2001) < 0.9 and year_factor(1960, 1998) == 0.0
    assert 0 < year_factor(None, 1999) < 1


def jpeg_maker():
    import io

    from PIL import Image

    def make() -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (10, 15), (1, 2, 3)).save(buf, format="JPEG")
        return buf.getvalue()

    return make


def catalogue() -> list[FixtureMovie]:
    poster = jpeg_maker()
    rows = [
        (603, "The Matrix", 1999, None), (604, "The Matrix Reloaded", 2003, None),
        (539, "Psycho", 1960, None), (11252, "Psycho", 1998, None),
        (902, "The City of Lost Children", 1995, "La Cité des enfants perdus"),
        (144, "Der Himmel über Berlin", 1987, None),
        (949, "Heat", 1996, None),  # one year off the MovieLens year, as release dates often are
    ]
    return [FixtureMovie(tid, title, year, ["Drama"], f"About {title}.", poster=poster, trailer_key=None,
                         original_title=original) for tid, title, year, original in rows]


def link(server: FixtureServer, *args, **kwargs) -> dict:
    async def go():
        config = ScrapeConfig(**server.client_urls(), backoff_base=0.0, **kwargs.pop("client", {}))
        async with TMDBClient(config, Credentials(token=TOKEN)) as client:
            return await link_movie(client, *args, **kwargs)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def server():
    with FixtureServer(catalogue(), token=TOKEN, api_key=None) as running:
        yield running


def test_links_with_confidence(server):
    matrix = link(server, 1, "Matrix, The", 1999)
    assert (matrix["tmdb_id"], matrix["confidence"], matrix["reason"]) == (603, 1.0, None)
    assert matrix["matched_title"] == "The Matrix" and matrix["query"] == "The Matrix" and matrix["searches"] == 1

    # Same title, two films: the year decides.
    assert link(server, 2, "Psycho", 1998)["tmdb_id"] == 11252
    assert link(server, 3, "Psycho", 1960)["tmdb_id"] == 539

    lost = link(server, 4, "City of Lost Children, The (Cité des enfants perdus, La)", 1995)
    assert lost["tmdb_id"] == 902 and lost["confidence"] == 1.0


def test_falls_back_to_no_year_and_to_alternates(server):
    heat = link(server, 5, "Heat", 1995)  # the year filter finds nothing; without it, 1996
    assert heat["tmdb_id"] == 949 and heat["confidence"] == pytest.approx(0.9) and heat["searches"] == 2

    wings = link(server, 6, "Wings of Desire (Himmel über Berlin, Der)", 1987)
    # "Wings of Desire" with and without the year finds nothing; the original title does.
    assert wings["tmdb_id"] == 144 and wings["query"] == "Der Himmel über Berlin" and wings["searches"] == 3
    assert wings["confidence"] == 1.0


def test_below_threshold_and_no_results_stay_unlinked(server):
    far = link(server, 7, "Matrix, The", 1950)  # only a 1999 film exists: the year rules it out
    assert far["tmdb_id"] is None and far["matched_title"] == "The Matrix"
    assert far["confidence"] < 0.6 and "scored" in far["reason"] and "tmdb 603" in far["reason"]

    none = link(server, 8, "Completely Unknown Film", 2001)
    assert none["tmdb_id"] is None and none["confidence"] == 0.0 and "no TMDB results" in none["reason"]

    strict = link(server, 9, "Heat", 1995, threshold=0.95)
    assert strict["tmdb_id"] is None and strict["confidence"] == pytest.approx(0.9)


def test_search_failures_and_auth():
    with FixtureServer(catalogue(), token=TOKEN, api_key=None,
                       faults=Faults(fail_first=10, fail_mode="500")) as failing:
        row = link(failing, 1, "Heat", 1995, client={"max_attempts": 1})
    assert row["tmdb_id"] is None and row["reason"].startswith("search failed") and row["searches"] == 2

    with FixtureServer(catalogue(), token="other", api_key=None) as server:
        with pytest.raises(AuthError):
            link(server, 1, "Heat", 1995)


def test_link_movies_keeps_input_order(server):
    async def go():
        async with TMDBClient(ScrapeConfig(**server.client_urls()), Credentials(token=TOKEN)) as client:
            return await link_movies(client, [(1, "Heat", 1995), (2, "Matrix, The", 1999), (3, "Nope", 2000)],
                                     concurrency=3)

    rows = asyncio.run(go())
    assert [(r["movie_id"], r["tmdb_id"]) for r in rows] == [(1, 949), (2, 603), (3, None)]
