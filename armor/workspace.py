"""Where each stage reads and writes inside a workspace directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from armor.errors import DataError


@dataclasses.dataclass(frozen=True)
class Workspace:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def interactions(self) -> Path:
        return self.root / "interactions.parquet"

    @property
    def movies(self) -> Path:
        return self.root / "movies.parquet"

    def split_dir(self, name: str) -> Path:
        return self.root / "splits" / name

    @property
    def tmdb(self) -> Path:
        return self.root / "tmdb"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def require(self, *paths: Path, hint: str) -> None:
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataError(f"missing {', '.join(str(p) for p in missing)}; {hint}", path=self.root)
