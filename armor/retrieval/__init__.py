"""Nearest-neighbour retrieval over item embeddings (FAISS, CPU or GPU)."""

from armor.retrieval.index import (
    ItemIndex,
    RetrievalError,
    UnknownMovieError,
    gpu_available,
)

__all__ = ["ItemIndex", "RetrievalError", "UnknownMovieError", "gpu_available"]
