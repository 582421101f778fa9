"""Feature rows, provenance and the encoder-mixing guard, without Ray or real models."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from armor.config import EncodeConfig
from armor.errors import ConfigError
from armor.features.image import ImageEncoder
from armor.features.store import METADATA_KEY, FeatureStore, encode_rows, load_features
from armor.features.text import TextEncoder
from pipelines.encode import describe_encoders

DIMS = {"text": 3, "poster": 2, "thumbnail": 2}
ENCODERS = {m: {"model": "fake", "dim": d} for m, d in DIMS.items()}


def fake_text(texts):
    return np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)


def fake_image(pixels):
    return pixels.reshape(len(pixels), -1)[:, :2].astype(np.float32) + 1.0


def batch():
    pixels = np.zeros((3, 224, 224, 3), dtype=np.uint8)
    pixels[:, 0, 0, :2] = [[1, 2], [3, 4], [5, 6]]
    return {"movie_id": np.array([7, 8, 9]), "overview": np.array(["Hello <b>World</b>", None, "x"], dtype=object),
            "poster_pixels": pixels, "poster_status": np.array(["ok", "undecodable", "ok"], dtype=object),
            "poster_error": np.array([None, "cannot identify image", None], dtype=object),
            "thumbnail_pixels": pixels, "thumbnail_status": np.array(["missing", "ok", "ok"], dtype=object),
            "thumbnail_error": np.array([None, None, None], dtype=object),
            "scraped_at": np.array([1000, 2000, 3000], dtype="datetime64[ms]")}


def test_encode_rows_fills_present_modalities_and_records_the_rest(tmp_path):
    store = FeatureStore(tmp_path, DIMS, ENCODERS)
    table = encode_rows(batch(), ("text", "poster", "thumbnail"), fake_text, fake_image, store.schema)
    rows = {r["movie_id"]: r for r in table.to_pylist()}
    assert rows[7]["text_emb"] == [11.0, 1.0, 2.0]  # cleaned: "hello world"
    assert rows[8]["text_status"] == "missing" and rows[8]["text_emb"] == [0.0, 0.0, 0.0]
    assert rows[7]["poster_emb"] == [2.0, 3.0] and rows[9]["poster_emb"] == [6.0, 7.0]
    assert rows[8]["poster_status"] == "undecodable" and rows[8]["poster_emb"] == [0.0, 0.0]
    assert "cannot identify image" in rows[8]["error"]
    assert rows[7]["thumbnail_status"] == "missing"
    assert [r["source_scraped_at"].timestamp() for r in table.to_pylist()] == [1.0, 2.0, 3.0]

    store.write_part(table)
    part = store.parts()[0]
    assert json.loads(pq.read_schema(part).metadata[METADATA_KEY]) == ENCODERS
    store.claim()
    ids, vectors, present = load_features(tmp_path)
    assert ids.tolist() == [7, 8, 9]
    assert present["poster"].tolist() == [True, False, True]
    assert vectors["thumbnail"].tolist() == [[0.0, 0.0], [4.0, 5.0], [6.0, 7.0]]
    assert store.done() == {(7, 1000), (8, 2000), (9, 3000)}


def test_skipped_modalities_are_marked(tmp_path):
    store = FeatureStore(tmp_path, DIMS, ENCODERS)
    table = encode_rows(batch(), ("text",), fake_text, None, store.schema)
    assert set(table["poster_status"].to_pylist()) == {"skipped"}


def test_claim_refuses_other_encoders_unless_overwriting(tmp_path):
    FeatureStore(tmp_path, DIMS, ENCODERS).claim()
    other = {**ENCODERS, "poster": {"model": "other", "dim": 2}}
    with pytest.raises(ConfigError, match="--overwrite"):
        FeatureStore(tmp_path, DIMS, other).claim()
    FeatureStore(tmp_path, DIMS, other).claim(overwrite=True)
    assert FeatureStore.open(tmp_path).encoders["poster"]["model"] == "other"


@pytest.mark.slow
def test_driver_side_metadata_equals_the_loaded_encoders():
    dims, encoders = describe_encoders(EncodeConfig())
    assert encoders["text"] == TextEncoder(device="cpu").metadata
    assert encoders["poster"] == ImageEncoder("efficientnet-lite0", "imagenet", device="cpu").metadata
    assert dims == {"text": 384, "poster": 1280, "thumbnail": 1280}
    _, random_init = describe_encoders(EncodeConfig(image_backbone="resnet50", image_weights="none",
                                                    modalities=("poster",)))
    assert random_init["poster"] == ImageEncoder("resnet50", "none", device="cpu").metadata
    assert random_init["poster"]["random_init"] is True
