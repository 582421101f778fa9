"""Where each stage reads and writes inside a workspace directory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from armor.errors import DataError
from armor.io import write_text

if TYPE_CHECKING:
    from armor.models.base import Recommender

EMBEDDINGS_FILE = "item_embeddings.parquet"
METRICS_FILE = "metrics.json"
# models/SPLIT/NAME holds a model trained with the run's first seed; NAME.seedS the same settings
# trained with seed S (``armor train --seeds``); NAME~SLUG an ablation of NAME.
SEED_MARK = ".seed"
ABLATION_MARK = "~"


def seed_name(name: str, seed: int) -> str:
    return f"{name}{SEED_MARK}{seed}"


def base_name(name: str) -> str:
    """NAME of NAME.seedS (NAME itself otherwise)."""
    head, mark, tail = name.rpartition(SEED_MARK)
    return head if mark and tail.isdigit() else name


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
    def report(self) -> Path:
        return self.root / "report"

    def require(self, *paths: Path, hint: str) -> None:
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataError(f"missing {', '.join(str(p) for p in missing)}; {hint}", path=self.root)


def write_model(model: Recommender, item_ids: np.ndarray, summary: dict[str, Any], directory: Path) -> None:
    """A trained model's directory: the model, its item embeddings and FAISS index (when it has
    them) and ``metrics.json``, each written atomically."""
    import pyarrow as pa

    from armor.io import write_parquet
    from armor.retrieval.index import ItemIndex

    model.save(directory / "model")
    embeddings = model.item_embeddings()
    if embeddings is not None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        table = pa.table({"movie_id": pa.array(item_ids, pa.int32()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)),
                                                                         embeddings.shape[1])})
        write_parquet(table, directory / EMBEDDINGS_FILE)
        ItemIndex(np.asarray(item_ids), embeddings).save(directory / "faiss")
    write_text(json.dumps(summary, indent=2, default=str) + "\n", directory / METRICS_FILE)
