"""MovieLens movie -> TMDB id, by searching TMDB for the title and year.

Only for data sets without ``links.csv`` (ML-100K, ML-1M). When the canonical movies table
already has ``tmdb_id`` (ML-latest, 20M, 25M, 32M ship links.csv), the caller uses it and makes
no search: a search can only be worse than GroupLens' own link.

A MovieLens title moves its article to the end ("Matrix, The") and often carries the original
title in parentheses ("City of Lost Children, The (Cité des enfants perdus, La)");
``normalise_title`` turns it into what TMDB's search expects, plus alternates to try.
Candidates are scored by title similarity (difflib, accents and punctuation ignored) times a
year factor; below ``threshold`` the movie stays unlinked, with the reason recorded.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from armor.tmdb.client import AuthError, TMDBClient, TMDBError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.6

# Articles MovieLens moves to the end of a title. "L'" joins the next word without a space.
ARTICLES = ("The", "A", "An", "Les", "La", "Le", "L'", "Il", "Das", "Der", "Die", "El", "Los", "Las",
            "Lo", "Un", "Une", "Una", "Gli")
_ARTICLE_AT_END = re.compile(
    r"^(?P<head>.+?),\s+(?P<art>" + "|".join(re.escape(a) for a in ARTICLES) + r")(?P<tail>\s*:.*)?$")
_YEAR_AT_END = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")
_AKA = re.compile(r"^(?:a\.k\.a\.|aka)\s+", re.IGNORECASE)
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an|les|la|le|l|il|das|der|die|el|los|las|lo|un|une|una|gli)\s+")


def _front_article(title: str) -> str:
    """'Matrix, The' -> 'The Matrix'; 'Homme, L'' -> 'L'Homme'; other titles unchanged."""
    match = _ARTICLE_AT_END.match(title.strip())
    if not match:
        return title.strip()
    art, head, tail = match.group("art"), match.group("head").strip(), (match.group("tail") or "").strip()
    joined = f"{art}{head}" if art.endswith("'") else f"{art} {head}"
    return joined + tail


def _split_parentheticals(title: str) -> tuple[str, list[str]]:
    """The title without trailing parenthesised parts, and those parts (outermost last)."""
    parts: list[str] = []
    title = title.strip()
    while title.endswith(")"):
        depth = 0
        for i in range(len(title) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(title[i], 0)
            if depth == 0:
                break
        if depth != 0 or i == 0:
            break  # unbalanced, or the whole title is in parentheses: keep it as it is
        parts.insert(0, title[i + 1:-1].strip())
        title = title[:i].rstrip()
    return title, parts


def normalise_title(title: str) -> tuple[str, list[str]]:
    """A MovieLens title -> (primary search title, alternate titles).

    >>> normalise_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
    ('The City of Lost Children', ['La Cité des enfants perdus'])
    """
    title = _YEAR_AT_END.sub("", " ".join(str(title).split()))
    base, parts = _split_parentheticals(title)
    if not base:
        base, parts = title, []
    primary = _front_article(base)
    alternates: list[str] = []
    seen = {primary.casefold()}
    for part in parts:
        if re.fullmatch(r"\d{4}", part) or not part:
            continue
        for name in re.split(r"\s*;\s*", _AKA.sub("", part)):
            name = _front_article(_AKA.sub("", name))
            if name and name.casefold() not in seen:
                seen.add(name.casefold())
                alternates.append(name)
    return primary, alternates


def _key(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().casefold()
    text = re.sub(r"[^a-z0-9]+", " ", text.replace("&", " and ")).strip()
    return _LEADING_ARTICLE.sub("", text)


def title_similarity(a: str, b: str) -> float:
    """difflib ratio of the two titles, ignoring case, accents, punctuation and a leading article."""
    ka, kb = _key(a), _key(b)
    if not ka or not kb:
        return 0.0
    return difflib.SequenceMatcher(None, ka, kb, autojunk=False).ratio()


def year_factor(year: int | None, candidate_year: int | None) -> float:
    """1 for the same year, 0.9 one year off (release dates differ by country), falling after."""
    if year is None or candidate_year is None:
        return 0.85
    distance = abs(int(year) - int(candidate_year))
    if distance == 0:
        return 1.0
    if distance == 1:
        return 0.9
    return max(0.0, 0.7 - 0.1 * (distance - 2))


def _release_year(candidate: dict) -> int | None:
    date = candidate.get("release_date")
    if isinstance(date, str) and re.match(r"^\d{4}", date):
        return int(date[:4])
    return None


def score_candidate(titles: list[str], year: int | None, candidate: dict) -> float:
    names = [n for n in (candidate.get("title"), candidate.get("original_title")) if isinstance(n, str) and n]
    similarity = max((title_similarity(t, n) for t in titles for n in names), default=0.0)
    return similarity * year_factor(year, _release_year(candidate))


async def link_movie(client: TMDBClient, movie_id: int, title: str, year: int | None, *,
                     threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Search TMDB for one movie; returns movie_id, tmdb_id (None below ``threshold``), confidence,
    matched_title, query, reason (None when linked) and searches (requests made).

    Queries, stopping at the first that yields a candidate at or above the threshold: the primary
    title with the year, without it, then each alternate title with and without the year.
    Among equal scores the earlier query and TMDB's own order win.
    """
    primary, alternates = normalise_title(title)
    titles = [primary, *alternates]
    queries: list[tuple[str, int | None]] = []
    for name in titles:
        queries.append((name, year))
        if year is not None:
            queries.append((name, None))
    best: tuple[float, dict, str] | None = None
    searches, errors = 0, []
    for query, query_year in queries:
        searches += 1
        try:
            results = await client.search_movie(query, query_year)
        except AuthError:
            raise
        except TMDBError as exc:
            errors.append(str(exc))
            continue
        for candidate in results:
            score = score_candidate(titles, year, candidate)
            if best is None or score > best[0]:
                best = (score, candidate, query)
        if best is not None and best[0] >= threshold:
            break

    row: dict[str, Any] = {"movie_id": int(movie_id), "tmdb_id": None, "confidence": 0.0, "matched_title": None,
                           "query": primary, "reason": None, "searches": searches}
    if best is None:
        row["reason"] = ("search failed: " + "; ".join(errors)) if errors else \
            f"no TMDB results for {primary!r} ({year})"
        return row
    score, candidate, query = best
    row.update(confidence=round(float(score), 4), matched_title=candidate.get("title"), query=query)
    if score >= threshold:
        row["tmdb_id"] = int(candidate["id"])
    else:
        row["reason"] = (f"best candidate {candidate.get('title')!r} (tmdb {candidate['id']}, "
                         f"{candidate.get('release_date') or 'no date'}) scored {score:.2f} < {threshold}")
        log.debug("movie %s %r: not linked, %s", movie_id, title, row["reason"])
    return row


async def link_movies(client: TMDBClient, movies: Iterable[tuple[int, str, int | None]], *,
                      concurrency: int = 8, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """``link_movie`` over (movie_id, title, year) triples, ``concurrency`` at a time, in input order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(movie_id: int, title: str, year: int | None) -> dict[str, Any]:
        async with gate:
            return await link_movie(client, movie_id, title, year, threshold=threshold)

    return list(await asyncio.gather(*(one(*m) for m in movies)))
