"""TMDB access: the async client, MovieLens -> TMDB linking, and a local TMDB-compatible fixture server
with its stand-in catalogue."""
