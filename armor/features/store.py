"""The feature store: one row of embeddings per movie, plus which encoders made them.

Rows live in a PartStore under ``WORKSPACE/features/``; ``encoders.json`` beside the parts
names each encoder, its weights and dimension, and the same description is attached to every
part's Parquet schema metadata so a part copied elsewhere still says what it holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from armor.errors import ConfigError
from armor.io import write_text
from armor.parts import PartStore

METADATA_FILE = "encoders.json"
METADATA_KEY = b"armor.encoders"
EMBEDDING_COLUMNS = {"text": "text_emb", "poster": "poster_emb", "thumbnail": "thumb_emb"}
SOURCE_COLUMNS = {"text": "overview", "poster": "poster", "thumbnail": "thumbnail"}
MODALITY_STATUSES = ("ok", "missing", "undecodable", "skipped")


def feature_schema(dims: dict[str, int], encoders: dict[str, Any] | None = None) -> pa.Schema:
    """movie_id, one fixed-size float32 embedding and one status per modality, provenance."""
    fields = [pa.field("movie_id", pa.int32(), nullable=False), pa.field("status", pa.string(), nullable=False)]
    for modality, column in EMBEDDING_COLUMNS.items():
        fields.append(pa.field(column, pa.list_(pa.float32(), dims.get(modality, 1))))
        fields.append(pa.field(f"{modality}_status", pa.string()))
    fields += [pa.field("error", pa.string()),
               pa.field("source_scraped_at", pa.timestamp("ms", tz="UTC")),
               pa.field("encoded_at", pa.timestamp("ms", tz="UTC"), nullable=False)]
    metadata = {METADATA_KEY: json.dumps(encoders or {}, sort_keys=True).encode()}
    return pa.schema(fields, metadata=metadata)


class FeatureStore(PartStore):
    def __init__(self, directory: str | Path, dims: dict[str, int], encoders: dict[str, Any] | None = None):
        super().__init__(directory, feature_schema(dims, encoders), time_column="encoded_at")
        self.encoders = encoders or {}

    @classmethod
    def open(cls, directory: str | Path) -> FeatureStore:
        """An existing store, with the dimensions and encoders it was written with."""
        directory = Path(directory)
        meta = read_metadata(directory)
        return cls(directory, {m: e["dim"] for m, e in meta["encoders"].items()}, meta["encoders"])

    def claim(self, overwrite: bool = False) -> None:
        """Bind this directory to these encoders; refuse to mix embeddings from different ones."""
        path = self.directory / METADATA_FILE
        wanted = {"encoders": self.encoders}
        if path.exists():
            existing = json.loads(path.read_text())
            if existing != wanted:
                if not overwrite:
                    raise ConfigError(
                        f"{self.directory} holds features from other encoders ({_describe(existing)}); "
                        f"this run asks for {_describe(wanted)}. Pass --overwrite to re-encode, or "
                        "choose another --features-dir")
                for part in self.parts():
                    part.unlink()
        write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", path)

    def done(self) -> set[tuple[int, int]]:
        """(movie_id, source_scraped_at in ms) already encoded: a re-scraped movie is encoded again."""
        table = self.read(["movie_id", "source_scraped_at"])
        times = pc.fill_null(table["source_scraped_at"].cast(pa.int64()), -1).to_pylist()
        return set(zip(table["movie_id"].to_pylist(), times))


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.exists():
        from armor.errors import DataError

        raise DataError("no features here; run `armor encode --workspace WORKSPACE` first", path=path)
    return json.loads(path.read_text())


def _describe(meta: dict[str, Any]) -> str:
    return ", ".join(f"{m}: {e.get('backbone') or e.get('model')} {e.get('weights', '')} ({e.get('dim')}-d)".strip()
                     for m, e in sorted(meta.get("encoders", {}).items()))


def encode_rows(batch: dict[str, np.ndarray], modalities: tuple[str, ...], text_encoder: Callable | None,
                image_encoder: Callable | None, schema: pa.Schema) -> pa.Table:
    """Embed one batch into feature rows: images preprocessed by armor.features.image.preprocess_batch
    (``{modality}_pixels``), or still encoded (``{modality}`` bytes), which the image encoder decodes.

    A modality that is missing or does not decode gets a zero embedding and a status saying
    which (``{modality}_status`` is the truth, not the vector); it never fails the batch. Zeros,
    not nulls: Parquet readers disagree on null fixed-size lists (pyarrow 25 fails to read them
    back).
    """
    from armor.features.text import clean_text

    n = len(batch["movie_id"])
    columns: dict[str, Any] = {"movie_id": np.asarray(batch["movie_id"], dtype=np.int32)}
    errors: list[list[str]] = [[] for _ in range(n)]
    for modality, column in EMBEDDING_COLUMNS.items():
        dim = schema.field(column).type.list_size
        embeddings = np.zeros((n, dim), dtype=np.float32)
        status = np.full(n, "skipped", dtype=object)
        if modality in modalities:
            if modality == "text":
                texts = [clean_text(t) for t in batch["overview"]]
                present = np.array([bool(t) for t in texts])
                status[:] = np.where(present, "ok", "missing")
                if present.any():
                    vectors = text_encoder([t for t, p in zip(texts, present) if p])  # (n_present, dim)
                    embeddings[present] = vectors
            elif f"{modality}_pixels" in batch:  # decoded by preprocess_batch in a CPU task
                status[:] = batch[f"{modality}_status"]
                ok = status == "ok"
                for i in np.flatnonzero(~ok):
                    if batch[f"{modality}_error"][i]:
                        errors[i].append(f"{modality}: {batch[f'{modality}_error'][i]}")
                if ok.any():
                    vectors = image_encoder(np.asarray(batch[f"{modality}_pixels"])[ok])  # (n_ok, dim)
                    embeddings[ok] = vectors
            else:  # encoded bytes: the encoder decodes them on its device (EncodeConfig.device_decode)
                embeddings[:], status[:], messages = image_encoder.encode_images(batch[modality], column=modality)
                for i in np.flatnonzero(status != "ok"):
                    if messages[i]:
                        errors[i].append(f"{modality}: {messages[i]}")
        columns[column] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim)
        columns[f"{modality}_status"] = status.tolist()
    columns["status"] = ["ok"] * n
    columns["error"] = ["; ".join(e) if e else None for e in errors]
    scraped = batch.get("scraped_at")
    columns["source_scraped_at"] = pa.array(
        [None] * n if scraped is None else np.asarray(scraped).astype("datetime64[ms]").astype(np.int64),
        pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    columns["encoded_at"] = pa.array([int(time.time() * 1000)] * n, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)


def load_features(directory: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(movie_ids sorted, {modality: (n, dim) float32, zeros where absent}, {modality: present mask})."""
    store = FeatureStore.open(directory)
    table = store.read()
    order = np.argsort(table["movie_id"].to_numpy())
    movie_ids = table["movie_id"].to_numpy()[order]
    vectors, present = {}, {}
    for modality, column in EMBEDDING_COLUMNS.items():
        if modality not in store.encoders:
            continue
        values = table[column].take(pa.array(order)).combine_chunks()
        mask = pc.equal(table[f"{modality}_status"].take(pa.array(order)), "ok").to_numpy(zero_copy_only=False)
        matrix = values.flatten().to_numpy().reshape(len(movie_ids), values.type.list_size).copy()
        matrix[~mask] = 0.0
        vectors[modality], present[modality] = matrix, mask
    return movie_ids, vectors, present
