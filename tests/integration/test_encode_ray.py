"""The Ray Data encode job: feature store contents, statuses, resumability, encoder provenance."""

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from armor.config import EncodeConfig
from armor.data.synthetic import SyntheticConfig, SyntheticWorld
from armor.errors import ConfigError
from armor.features.image import ImageEncoder, preprocess_image
from armor.features.store import METADATA_KEY, FeatureStore, load_features
from armor.features.text import TextEncoder
from armor.tmdb.scrape import SCRAPE_SCHEMA, ScrapeStore
from pipelines.encode import encode

pytestmark = [pytest.mark.ray, pytest.mark.slow]

N_MOVIES = 20


def scraped_rows(world, movie_ids, scraped_at):
    content = world.content(movie_ids).to_pylist()
    rows = []
    for c in content:
        rows.append({"movie_id": c["movie_id"], "tmdb_id": c["movie_id"] + 100000, "status": "ok",
                     "title": world.title(c["movie_id"]), "overview": c["overview"], "release_date": None,
                     "genres": world.genres(c["movie_id"]), "poster_path": None, "poster": c["poster"],
                     "trailer_key": "k", "thumbnail": c["thumbnail"], "error": None, "attempts": 3,
                     "link_confidence": None, "link_query": None, "scraped_at": scraped_at})
    return rows


@pytest.fixture
def workspace(tmp_path):
    world = SyntheticWorld(SyntheticConfig.preset("tiny"))
    rows = scraped_rows(world, list(range(1, N_MOVIES + 1)), 1_000)
    rows[2]["poster"] = rows[2]["poster"][:200]  # truncated: undecodable
    rows[3]["thumbnail"], rows[3]["status"] = None, "no_trailer"
    rows[4]["overview"] = "   "
    store = ScrapeStore(tmp_path / "tmdb")
    store.write_part(pa.Table.from_pylist(rows[:12], schema=SCRAPE_SCHEMA))
    store.write_part(pa.Table.from_pylist(rows[12:], schema=SCRAPE_SCHEMA))
    return tmp_path, world, rows


def test_encode_writes_one_row_per_movie_with_statuses_and_provenance(ray_local, workspace):
    ws, world, rows = workspace
    config = EncodeConfig(batch_size=8)
    summary = encode(ws, config)
    assert summary["encoded_this_run"] == N_MOVIES
    table = FeatureStore.open(ws / "features").read()
    assert sorted(table["movie_id"].to_pylist()) == list(range(1, N_MOVIES + 1))
    by_id = {r["movie_id"]: r for r in table.to_pylist()}
    assert by_id[3]["poster_status"] == "undecodable" and not any(by_id[3]["poster_emb"])
    assert "poster" in by_id[3]["error"]
    assert by_id[4]["thumbnail_status"] == "missing" and not any(by_id[4]["thumb_emb"])
    assert by_id[5]["text_status"] == "missing" and not any(by_id[5]["text_emb"])
    assert by_id[1]["poster_status"] == by_id[1]["thumbnail_status"] == by_id[1]["text_status"] == "ok"

    # provenance: in encoders.json and in every part's schema metadata
    meta = json.loads((ws / "features" / "encoders.json").read_text())["encoders"]
    assert meta["poster"]["backbone"] == "efficientnet-lite0" and meta["poster"]["random_init"] is False
    assert meta["poster"]["dim"] == 1280 and meta["text"]["dim"] == 384
    for part in FeatureStore.open(ws / "features").parts():
        schema = pq.read_schema(part)
        assert json.loads(schema.metadata[METADATA_KEY])["poster"]["weights"] == meta["poster"]["weights"]
        assert schema.field("poster_emb").type == pa.list_(pa.float32(), 1280)

    # the pipeline's embeddings are the encoders' own, whatever the batching
    image, text = ImageEncoder("efficientnet-lite0", "imagenet", device="cpu"), TextEncoder(device="cpu")
    pixels = np.stack([preprocess_image(rows[i]["poster"]) for i in (0, 7, 15)])
    np.testing.assert_allclose(np.stack([by_id[m]["poster_emb"] for m in (1, 8, 16)]), image(pixels), atol=1e-4)
    np.testing.assert_allclose(np.asarray(by_id[2]["text_emb"]), text([rows[1]["overview"]])[0], atol=1e-5)

    movie_ids, vectors, present = load_features(ws / "features")
    assert movie_ids.tolist() == list(range(1, N_MOVIES + 1))
    assert not present["poster"][2] and present["poster"][0]
    assert vectors["poster"].shape == (N_MOVIES, 1280) and not vectors["poster"][2].any()


def test_encode_resumes_and_reencodes_only_rescraped_movies(ray_local, workspace):
    ws, world, rows = workspace
    config = EncodeConfig(batch_size=8, modalities=("text",))  # text only keeps this test quick
    encode(ws, config)
    first = {r["movie_id"]: r["encoded_at"] for r in FeatureStore.open(ws / "features").read().to_pylist()}
    assert encode(ws, config)["encoded_this_run"] == 0

    time.sleep(0.01)
    rescraped = scraped_rows(world, [6, 7], 2_000)  # a later scrape of two movies
    ScrapeStore(ws / "tmdb").write_part(pa.Table.from_pylist(rescraped, schema=SCRAPE_SCHEMA))
    assert encode(ws, config)["encoded_this_run"] == 2
    table = FeatureStore.open(ws / "features").read()
    assert sorted(table["movie_id"].to_pylist()) == list(range(1, N_MOVIES + 1))
    again = {r["movie_id"]: r["encoded_at"] for r in table.to_pylist()}
    assert {m for m in again if again[m] != first[m]} == {6, 7}


def test_features_from_other_encoders_are_never_mixed(ray_local, workspace):
    ws, _, _ = workspace
    encode(ws, EncodeConfig(batch_size=8, modalities=("text",)))
    with pytest.raises(ConfigError, match="--overwrite"):
        encode(ws, EncodeConfig(batch_size=8, modalities=("poster",), image_weights="none"))
    summary = encode(ws, EncodeConfig(batch_size=8, modalities=("poster",), image_weights="none"), overwrite=True)
    assert summary["encoded_this_run"] == N_MOVIES
    meta = json.loads((ws / "features" / "encoders.json").read_text())["encoders"]
    assert set(meta) == {"poster"} and meta["poster"]["random_init"] is True
