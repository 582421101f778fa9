"""A workspace's MLflow store follows the workspace when it is copied or moved.

An SQLite store records absolute locations: the experiment's artifact root, every run's artifact
URI, logged models, model versions, and tags and params that name the workspace (``armor.workspace``,
``armor.model_dir``); the pyfunc's MLmodel files under ``mlartifacts/`` name the model directory
too. Copied elsewhere, the copy would write new runs into the original's ``mlartifacts/`` and serve
the original's models. MLflow has no API to move a store, so :func:`relocate_store` rewrites those
fields in the database (one transaction) and in the MLmodel files, from the root the store was made
in to the one it is in now. It runs before a workspace's default store is used; on a store that is
where it was made it only reads one row.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

ARTIFACTS_DIR = "mlartifacts"


def recorded_root(db: Path) -> Path | None:
    """The directory the store was made in: the parent of its experiments' ``mlartifacts`` root."""
    with sqlite3.connect(db) as connection:
        try:
            locations = [row[0] for row in connection.execute("SELECT artifact_location FROM experiments")]
        except sqlite3.OperationalError:  # an empty file, or not yet migrated: nothing recorded
            return None
    for location in locations:
        path = Path(unquote(urlparse(location).path)) if location and "://" in location else Path(location or "")
        if path.name == ARTIFACTS_DIR and path.is_absolute():
            return path.parent
    return None


def relocate_store(db: Path) -> int:
    """Rewrite the store's recorded paths from where it was made to ``db``'s directory; returns how
    many fields and files changed (0 when it is where it was made)."""
    db = Path(db)
    if not db.is_file():
        return 0
    old, new = recorded_root(db), db.resolve().parent
    if old is None or old == new:
        return 0
    changed = _rewrite_database(db, str(old), str(new))
    for mlmodel in (new / ARTIFACTS_DIR).rglob("MLmodel"):
        text = mlmodel.read_text()
        if str(old) + "/" in text:
            mlmodel.write_text(text.replace(str(old) + "/", str(new) + "/"))
            changed += 1
    log.info("MLflow store %s was made in %s: %d recorded paths now point into %s", db, old, changed, new)
    return changed


def _rewrite_database(db: Path, old: str, new: str) -> int:
    """Every text field naming ``old`` (itself, or a path under it) names ``new`` instead."""
    changed = 0
    with sqlite3.connect(db) as connection:  # one transaction: all or nothing
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')
                       if row[2].upper() in ("TEXT", "VARCHAR") or row[2].upper().startswith("VARCHAR")]
            for column in columns:
                cursor = connection.execute(
                    f'UPDATE "{table}" SET "{column}" = CASE WHEN "{column}" = ? THEN ? '
                    f'ELSE REPLACE("{column}", ?, ?) END WHERE "{column}" = ? OR instr("{column}", ?) > 0',
                    (old, new, old + "/", new + "/", old, old + "/"))
                changed += cursor.rowcount
    return changed
