"""JPEG images decoded, resized and cropped on the encoder's device (nvJPEG through torchvision on CUDA).

The output is ``armor.features.image.preprocess_image``'s: an upright RGB image whose short side
is resized to 256 (bilinear, antialiased), centre-cropped to 224x224, uint8; here as a
(B, 3, 224, 224) tensor on the device. Statuses and error messages are exactly the Pillow path's,
because every image this path does not take is decoded by that path instead: a value that is
not JPEG bytes, a JPEG with an EXIF rotation, a colour space other than RGB or grey (CMYK), a
declared size over the pixel limit, no end-of-image marker (truncated), or one the device
decoder rejects. A missing image is "missing" as there.

Pixels differ from Pillow's by rounding only (its bilinear filter and torch's antialiased
interpolation are the same filter; nvJPEG's IDCT differs from libjpeg-turbo's in the last bit).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from armor.features.image import IMAGE_SIZE, MAX_PIXELS, RESIZE_SIZE, _decode_column, _is_missing

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_SOI, _EOI = b"\xff\xd8\xff", b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112


def device_decodable(data: bytes) -> bool:
    """True for a complete baseline/progressive RGB or grey JPEG without EXIF rotation, within the
    pixel limit: what the device path decodes exactly as Pillow would. Reads the header only."""
    if data[:3] != _SOI or data.rstrip(b"\x00")[-2:] != _EOI:
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.format != "JPEG" or image.mode not in ("RGB", "L") or not 0 < width * height <= MAX_PIXELS:
                return False
            return image.getexif().get(_EXIF_ORIENTATION, 1) == 1
    except Exception:  # noqa: BLE001 - whatever Pillow dislikes goes to Pillow, which names the problem
        return False


def _as_bytes(value: Any) -> bytes | None:
    try:
        return value.tobytes() if isinstance(value, np.ndarray) else bytes(value)
    except Exception:  # noqa: BLE001 - the Pillow path reports it
        return None


def decode_jpegs(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 RGB tensors on ``device`` for JPEG bytes; None where the decoder refuses one.

    One batched call (nvJPEG decodes the batch together on CUDA); if it fails, one call per image
    finds the culprits.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    encoded = [torch.from_numpy(np.frombuffer(d, dtype=np.uint8).copy()) for d in datas]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec (from 0.16, compatible with
        # torch >= 2.11), which is not a dependency yet. The plan: pin the torchcodec release built
        # for our torch in pyproject.toml, import ``decode_jpeg`` from ``torchcodec.decoders`` here
        # (the same CHW uint8 result, CPU or CUDA), check that it still takes a list of tensors
        # (nvJPEG's batch) and how it reports a bad image, keep the one-by-one fallback, and drop
        # this filter; tests/unit/test_jpeg_decode.py and tests/unit/test_device.py pin the behaviour.
        # Until then, this decoder is the only deprecated call silenced, and only here.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as e:
            log.debug("batched JPEG decode failed (%s); decoding one by one", e)
        out: list[torch.Tensor | None] = []
        for data in encoded:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def resize_center_crop_tensor(image: torch.Tensor) -> torch.Tensor:
    """``armor.features.image.resize_center_crop`` on a (3, H, W) uint8 tensor -> (3, 224, 224) uint8."""
    from torchvision.transforms.v2 import functional as TF

    height, width = image.shape[-2:]
    short, long = min(width, height), max(width, height)
    new_short, new_long = RESIZE_SIZE, int(RESIZE_SIZE * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        image = TF.resize(image, [new_h, new_w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    top = round((new_h - IMAGE_SIZE) / 2.0)
    left = round((new_w - IMAGE_SIZE) / 2.0)
    return image[:, top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]


def decode_batch(values: Sequence[Any], device: torch.device,
                 column: str = "image") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(pixels (B, 3, 224, 224) uint8 on ``device``, zeros where not ok; status (B,); error (B,)).

    JPEGs the device path takes are decoded there; every other present value goes through
    ``armor.features.image``'s Pillow decoding (``_decode_column``), which sets its status and
    error, so both paths report alike. ``column`` names the images in log messages.
    """
    import torch

    n = len(values)
    pixels = torch.zeros((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, device=device)
    status = np.full(n, "ok", dtype=object)
    errors = np.full(n, None, dtype=object)
    device_rows, datas, host_rows = [], [], []
    for i, value in enumerate(values):
        if _is_missing(value):
            status[i] = "missing"
            continue
        data = _as_bytes(value)
        if data is not None and device_decodable(data):
            device_rows.append(i)
            datas.append(data)
        else:
            host_rows.append(i)
    for i, image in zip(device_rows, decode_jpegs(datas, device)):
        if image is None:
            host_rows.append(i)
        else:
            pixels[i] = resize_center_crop_tensor(image)
    if host_rows:
        host_rows.sort()
        host_pixels, host_status, host_errors = _decode_column([values[i] for i in host_rows], column)
        index = torch.as_tensor(host_rows, device=device)
        pixels[index] = torch.from_numpy(host_pixels).to(device).permute(0, 3, 1, 2)
        status[host_rows], errors[host_rows] = host_status, host_errors
    return pixels, status, errors
