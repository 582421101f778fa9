"""VBPR (armor.models.vbpr): the paper's content term scores a movie nobody rated."""

from __future__ import annotations

import numpy as np

from armor.models.base import load_recommender
from armor.models.vbpr import VBPR, VBPRConfig
from tests.threads import one_thread  # noqa: F401 - autouse for this module
from tests.unit.hybrid_world import COLD, N_USERS, TWINS, liked_genre, world

SMALL = VBPRConfig(dim=8, content_dim=8, lr=2e-2, batch_size=256, epochs=30, patience=30)


def test_the_content_term_scores_a_movie_with_no_ratings(tmp_path):
    train, features, genre = world()
    model = VBPR(SMALL, features).fit(train)
    # New means no positive in the training matrix; the model is told nothing else.
    assert model.cold[COLD].all() and not model.cold[:COLD[0]].any()
    items = model.item_embeddings()  # (I, K + K' + 1): [gamma_i; E f_i; beta_i + beta' . f_i]
    # No ID factors or ID bias for a new movie: its vector is the content term of its features alone ...
    np.testing.assert_array_equal(items[COLD, :SMALL.dim], 0.0)
    np.testing.assert_allclose(items[COLD], model.content_vectors({m: x[COLD] for m, x in features.items()}),
                               rtol=1e-5, atol=1e-6)
    # ... which is not a constant: different features, different scores; the same features, the same.
    scores = model.score(np.arange(N_USERS), train)  # (U, I)
    np.testing.assert_allclose(scores[:, TWINS[0]], scores[:, TWINS[1]], rtol=1e-6)
    distinct = COLD[1:]
    assert all(np.ptp(row) > 1e-3 for row in scores[:, distinct])
    # The content term learned taste from the rated movies: users score new movies of their genre higher.
    own = genre[distinct][None, :] == liked_genre(train, genre)[:, None]  # (U, 5)
    # Seen: a gap of 6.8 after training, 0.12 before (the control below).
    assert scores[:, distinct][own].mean() > scores[:, distinct][~own].mean() + 1.0
    # A saved model scores, and maps new features, as the fitted one.
    loaded = load_recommender(model.save(tmp_path / "vbpr"))
    np.testing.assert_array_equal(loaded.score(np.arange(5), train[:5]), model.score(np.arange(5), train[:5]))
    np.testing.assert_allclose(loaded.content_vectors(features)[COLD], items[COLD], rtol=1e-5, atol=1e-6)


def test_without_training_the_content_term_of_a_new_movie_is_only_its_initial_projection():
    # The control for the test above: its taste gap comes from training E and beta', not from the features.
    train, features, genre = world()
    model = VBPR(VBPRConfig(**{**SMALL.__dict__, "lr": 1e-9, "epochs": 1}), features).fit(train)
    scores = model.score(np.arange(N_USERS), train)[:, COLD[1:]]
    own = genre[COLD[1:]][None, :] == liked_genre(train, genre)[:, None]
    assert abs(scores[own].mean() - scores[~own].mean()) < 0.5
