"""Exceptions that name the thing that is wrong and what to do about it."""

from __future__ import annotations

from pathlib import Path


class ArmorError(Exception):
    """Base class for errors a user can act on; the CLI prints them without a traceback."""


class DataError(ArmorError, ValueError):
    """Bad input data. Carries the file and, where known, the 1-based line number."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)


class ConfigError(ArmorError, ValueError):
    """A configuration value or command-line flag is invalid."""


class OrientationError(DataError):
    """A user x item matrix was expected and its transpose (or another shape) was given."""
