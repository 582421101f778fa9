"""What a saved model may be scored on: exactly the catalogue it ranks, and the split it was trained
on (another split of the same ratings may hold, in its validation or test part, positives the model
trained on: 80/10/10's training part holds most of leave-one-out's held-out positives)."""

from __future__ import annotations

import json
from pathlib import Path

from armor.data.splits import SplitData, catalogue_digest, split_digest
from armor.errors import DataError
from armor.models.base import Recommender
from armor.workspace import METRICS_FILE


def check_model(model: Recommender, data: SplitData, directory: Path, split: str,
                allow_other_split: bool = False) -> str | None:
    """Raise unless ``model`` (saved in ``directory``) ranks exactly ``data``'s catalogue and was trained
    on this split. With ``allow_other_split`` a model of another split is let through and the returned
    note says which split it was trained on (None when it is this split's own)."""
    metrics = directory / METRICS_FILE
    meta = json.loads(metrics.read_text()) if metrics.exists() else {}
    embeddings = model.item_embeddings()
    rows = getattr(model, "n_items", None) or (None if embeddings is None else embeddings.shape[0])
    digest = meta.get("catalogue_digest")
    if (digest is not None and digest != catalogue_digest(data.item_ids)) or rows not in (None, data.n_items):
        raise DataError(f"model {directory.name} was trained on another catalogue than this split's "
                        f"({data.n_items} movies); retrain it on this split", path=directory)
    trained_on, origin = meta.get("split_digest"), meta.get("split")
    # A model saved before splits had digests still names its split: a different name is another split.
    same = trained_on == split_digest(data) if trained_on is not None else origin in (None, split)
    if same:
        return None
    origin = origin or "another split"
    if not allow_other_split:
        raise DataError(f"model {directory.name} was trained on split {origin!r}, not on {split!r}: its training "
                        f"positives may be {split!r}'s held-out ones, so its scores here would be inflated. Train "
                        f"it on {split!r}, or pass --allow-other-split to score it anyway (the table says so)",
                        path=directory)
    return f"trained on split {origin!r}"
