"""A small planted world for the hybrid baselines' tests: users like the movies of their genre, the
features are noisy projections of the genre, and the last movies have no positive in training."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

N_USERS, N_ITEMS, N_GENRES = 60, 40, 4
COLD = np.arange(34, 40)  # movies nobody rated in training
TWINS = (34, 35)  # two new movies with identical features
DIMS = {"text": 12, "poster": 10, "thumbnail": 10}


def world(seed: int = 0, dims: dict[str, int] | None = None):
    """(train (U, I) CSR, features {modality: (I, d)}, genre (I,))."""
    rng = np.random.default_rng(seed)
    genre = np.arange(N_ITEMS) % N_GENRES  # (I,)
    taste = rng.integers(0, N_GENRES, N_USERS)  # (U,)
    likes = (taste[:, None] == genre[None, :]) & (rng.random((N_USERS, N_ITEMS)) < 0.6)  # (U, I)
    likes[:, COLD] = False
    onehot = np.eye(N_GENRES, dtype=np.float32)[genre]  # (I, G)
    features = {m: (onehot @ rng.standard_normal((N_GENRES, d)) + 0.3 * rng.standard_normal((N_ITEMS, d)))
                .astype(np.float32) for m, d in (dims or DIMS).items()}
    for x in features.values():
        x[TWINS[1]] = x[TWINS[0]]
    return sp.csr_matrix(likes.astype(np.float32)), features, genre


def liked_genre(train: sp.csr_matrix, genre: np.ndarray) -> np.ndarray:
    """(U,) the genre each user liked most in training."""
    return np.asarray((train @ np.eye(N_GENRES)[genre]).argmax(axis=1)).ravel()
