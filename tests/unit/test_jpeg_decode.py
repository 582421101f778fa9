"""Decoding on the encoder's device (``armor.features.jpeg``), run here on the CPU device: the same
statuses and error messages as the Pillow path, pixels within rounding, the same features, and
feature rows identical whichever stage decoded. tests/unit/test_device.py runs it on a simulated
CUDA device; tests/gpu runs it on a real one (nvJPEG)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from armor.features import jpeg as device_jpeg
from armor.features.image import ImageEncoder, preprocess_batch
from armor.features.store import FeatureStore, encode_rows

CPU = torch.device("cpu")


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def values() -> dict[str, object]:
    return sample_values()


def sample_values() -> dict[str, object]:
    """Every kind of value a scrape holds, by name (tests/gpu decodes them with nvJPEG)."""
    cat = Image.fromarray(skdata.chelsea())  # 451 x 300
    poster = Image.fromarray(skdata.astronaut()).resize((500, 750))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow turns it upright, so the device path leaves it to Pillow
    return {
        "jpeg": encode(cat, quality=90),
        "poster": encode(poster, quality=85),
        "progressive": encode(poster, quality=85, progressive=True),
        "grey": encode(cat.convert("L")),
        "small": encode(cat.resize((120, 80))),  # upsampled
        "rotated": encode(cat, exif=exif),
        "cmyk": encode(poster.convert("CMYK")),
        "png": encode(cat, "PNG"),
        "truncated": encode(cat)[:4000],
        "garbage": b"not an image at all",
        "none": None,
        "empty": b"",
        "array": np.frombuffer(encode(cat), dtype=np.uint8),  # how Ray hands binary columns over at times
    }


def test_device_path_takes_only_what_it_decodes_like_pillow(values):
    takes = {name for name, v in values.items() if isinstance(v, bytes) and device_jpeg.device_decodable(v)}
    assert takes == {"jpeg", "poster", "progressive", "grey", "small"}


def test_statuses_errors_and_pixels_match_the_pillow_path(values):
    column = np.array(list(values.values()), dtype=object)
    reference = preprocess_batch({"image": column}, columns=("image",))
    pixels, status, errors = device_jpeg.decode_batch(column, CPU, "image")
    assert status.tolist() == reference["image_status"].tolist()
    assert status.tolist().count("ok") == 9 and status.tolist().count("missing") == 2
    # Same messages; Pillow's own can name a BytesIO object by its address.
    assert [e.split(" <_io")[0] if e else e for e in errors] == \
        [e.split(" <_io")[0] if e else e for e in reference["image_error"]]
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (len(values), 3, 224, 224)
    diff = np.abs(pixels.permute(0, 2, 3, 1).numpy().astype(int) - reference["image_pixels"].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # rounding in the resize filter, nothing more


def test_a_decoder_refusal_falls_back_to_pillow(values, monkeypatch):
    monkeypatch.setattr(device_jpeg, "decode_jpegs", lambda datas, device: [None] * len(datas))
    column = [values["jpeg"], values["garbage"], values["poster"]]
    pixels, status, _ = device_jpeg.decode_batch(column, CPU)
    reference = preprocess_batch({"image": np.array(column, dtype=object)}, columns=("image",))
    assert status.tolist() == ["ok", "undecodable", "ok"]
    assert np.array_equal(pixels.permute(0, 2, 3, 1).numpy(), reference["image_pixels"])


def test_one_bad_jpeg_in_a_batch_costs_only_itself(values, monkeypatch):
    from torchvision import io as tvio

    decode = tvio.decode_jpeg
    bad = torch.from_numpy(np.frombuffer(values["poster"], dtype=np.uint8).copy())

    def refusing(data, **kwargs):  # a JPEG the decoder rejects although its header is fine
        if isinstance(data, list):
            if any(torch.equal(d, bad) for d in data):
                raise RuntimeError("nvjpeg: unsupported")
            return decode(data, **kwargs)
        if torch.equal(data, bad):
            raise RuntimeError("nvjpeg: unsupported")
        return decode(data, **kwargs)

    monkeypatch.setattr(tvio, "decode_jpeg", refusing)
    decoded = device_jpeg.decode_jpegs([values["jpeg"], values["poster"], values["grey"]], CPU)
    assert [d is None for d in decoded] == [False, True, False]


def test_encode_images_matches_preprocess_then_encode(values):
    encoder = ImageEncoder("efficientnet-lite0", device="cpu")
    column = np.array(list(values.values()), dtype=object)
    features, status, errors = encoder.encode_images(column)
    reference = preprocess_batch({"image": column}, columns=("image",))
    ok = reference["image_status"] == "ok"
    expected = np.zeros_like(features)
    expected[ok] = encoder(reference["image_pixels"][ok])
    assert status.tolist() == reference["image_status"].tolist()
    assert np.abs(features - expected).max() < 0.05 * np.abs(expected).max()
    cosine = (features[ok] * expected[ok]).sum(1) / np.linalg.norm(features[ok], axis=1) / np.linalg.norm(
        expected[ok], axis=1)
    assert cosine.min() > 0.999
    assert not features[~ok].any()


def test_feature_rows_are_the_same_whichever_stage_decodes(values, tmp_path):
    encoder = ImageEncoder("efficientnet-lite0", device="cpu")
    names = ["jpeg", "png", "truncated", "none", "poster"]
    batch = {"movie_id": np.arange(1, 6), "overview": np.array(["x"] * 5, dtype=object),
             "poster": np.array([values[n] for n in names], dtype=object),
             "thumbnail": np.array([values[n] for n in reversed(names)], dtype=object)}
    store = FeatureStore(tmp_path / "features", {"poster": 1280, "thumbnail": 1280},
                         {m: {"dim": 1280} for m in ("poster", "thumbnail")})
    raw = encode_rows(batch, ("poster", "thumbnail"), None, encoder, store.schema)
    decoded = encode_rows(preprocess_batch(batch), ("poster", "thumbnail"), None, encoder, store.schema)
    for column in ("poster_status", "thumbnail_status", "text_status", "error"):
        got, want = raw[column].to_pylist(), decoded[column].to_pylist()
        assert [g.split(" <_io")[0] if g else g for g in got] == [w.split(" <_io")[0] if w else w for w in want]
    for column in ("poster_emb", "thumb_emb"):
        a = np.stack(raw[column].to_numpy(zero_copy_only=False))
        b = np.stack(decoded[column].to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(a, b, atol=0.05 * np.abs(b).max())
    assert raw.schema == decoded.schema and isinstance(raw, pa.Table)
