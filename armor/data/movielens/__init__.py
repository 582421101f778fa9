"""Load the public MovieLens releases into the canonical Arrow tables, and fetch them.

Four on-disk formats are recognised from a directory's contents:

* ``ml-100k``: the raw ML-100K files ``u.data`` and ``u.item``;
* ``ml-100k-atomic``: RecBole atomic files ``<name>.inter`` / ``<name>.item`` (the copy of ML-100K
  that ships inside the recbole wheel is one);
* ``ml-1m``: ``ratings.dat`` / ``movies.dat`` with ``::`` separators (``users.dat`` is not read);
* ``ml-latest``: ``ratings.csv`` / ``movies.csv`` (+ ``links.csv``), the format of ml-latest,
  ml-latest-small, ml-20m, ml-25m and ml-32m.

sources.py finds the files (detection, downloads, the embedded copy), parse.py parses one file and
says where it is bad, load.py turns each format into the canonical tables and validates them.
"""

from armor.data.movielens.load import ML100K_GENRES, MovieLensData, load_movielens, prepare
from armor.data.movielens.sources import (
    DEFAULT_BASE_URL,
    DEFAULT_CACHE_DIR,
    EMBEDDED,
    FORMATS,
    KNOWN_DATASETS,
    DownloadError,
    detect_format,
    download_movielens,
    embedded_ml100k_dir,
    resolve_movielens,
)

__all__ = [
    "DEFAULT_BASE_URL", "DEFAULT_CACHE_DIR", "EMBEDDED", "FORMATS", "KNOWN_DATASETS", "ML100K_GENRES",
    "DownloadError", "MovieLensData", "detect_format", "download_movielens", "embedded_ml100k_dir",
    "load_movielens", "prepare", "resolve_movielens",
]
