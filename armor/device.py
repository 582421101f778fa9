"""Where tensors live: choosing a torch device, and handing arrays to host-memory libraries.

The one place that asks whether CUDA is there (the device tests simulate a GPU by patching
``cuda_available``), and the one conversion to the float32 C-contiguous host arrays that FAISS
and numpy code expect, whatever device a tensor was computed on. torch is imported lazily: Ray's
CPU decode tasks import ``armor.features.image`` without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from armor.errors import ConfigError

if TYPE_CHECKING:
    import torch


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str | None, what: str = "device") -> torch.device:
    """None or "auto" -> cuda when available, else cpu; a named CUDA device must exist.

    ``what`` names the setting in error messages (e.g. "lightgcn device").
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if cuda_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"{what} {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from e
    if resolved.type == "cuda" and not cuda_available():
        raise ConfigError(f"{what} {device!r} asked for, but CUDA is not available here; use cpu or auto")
    return resolved


def host_float32(x: Any) -> np.ndarray:
    """``x`` (numpy array, torch tensor on any device, or nested lists) as a float32 C-contiguous
    numpy array in host memory: what FAISS's Python API needs (it reads the raw buffer)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, wherever it lives
        x = x.detach().to(device="cpu").float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
