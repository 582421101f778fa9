"""Fusion modules: the paper's equations by hand, the full variant's masking and what reaches z."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from armor.config import FusionConfig
from armor.errors import ConfigError
from armor.models.fusion import FullFusion, PaperFusion, Standardize, build_fusion, feature_stats


def _set(linear: torch.nn.Linear, weight, bias=None) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if bias is not None:
            linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def _matvec(m, v):
    return [sum(a * b for a, b in zip(row, v)) for row in m]


def _paper_by_hand(wq, wk, wv, wp, bp, text, poster, thumb, d):
    q = _matvec(wq, text)
    keys = [_matvec(wk, poster), _matvec(wk, thumb)]
    values = [_matvec(wv, poster), _matvec(wv, thumb)]
    scores = [sum(a * b for a, b in zip(q, k)) / math.sqrt(d) for k in keys]
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    attn = [e / sum(exp) for e in exp]
    fused = [attn[0] * a + attn[1] * b for a, b in zip(values[0], values[1])]
    relu = [max(0.0, x) for x in fused]
    z = [x + b for x, b in zip(_matvec(wp, relu), bp)]
    return z, attn


def test_paper_fusion_matches_equations_4_2_to_4_6_by_hand():
    # text 2-d, images 3-d, attention width d = 2, output 2-d.
    wq = [[1.0, -0.5], [0.25, 2.0]]
    wk = [[0.5, 0.0, -1.0], [1.0, 1.0, 0.0]]
    wv = [[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]
    wp = [[2.0, -1.0], [0.5, 0.5]]
    bp = [0.1, -0.2]
    fusion = PaperFusion({"text": 2, "poster": 3, "thumbnail": 3}, dim=2, out_dim=2)
    assert fusion.w_q.bias is None and fusion.w_k.bias is None and fusion.w_v.bias is None
    _set(fusion.w_q, wq)
    _set(fusion.w_k, wk)
    _set(fusion.w_v, wv)
    _set(fusion.proj, wp, bp)

    text = [[1.0, 2.0], [-1.0, 0.5]]
    poster = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]
    thumb = [[1.0, 0.0, -0.5], [-2.0, 0.5, 0.0]]
    features = {"text": torch.tensor(text), "poster": torch.tensor(poster), "thumbnail": torch.tensor(thumb)}
    with torch.no_grad():
        z, weights = fusion(features)
        z_eq, attn_eq = fusion.equations(features["text"], features["poster"], features["thumbnail"])

    for b in range(2):
        expected_z, expected_attn = _paper_by_hand(wq, wk, wv, wp, bp, text[b], poster[b], thumb[b], d=2)
        assert z[b].tolist() == pytest.approx(expected_z, abs=1e-5)
        assert z_eq[b].tolist() == pytest.approx(expected_z, abs=1e-5)
        assert attn_eq[b].tolist() == pytest.approx(expected_attn, abs=1e-6)
        # Uniform weights: (text, poster, thumbnail), text is the query and reported as 0.
        assert weights[b].tolist() == pytest.approx([0.0, *expected_attn], abs=1e-6)
    # The second item's fused vector has a negative coordinate, so ReLU really acted.
    _, attn = _paper_by_hand(wq, wk, wv, wp, bp, text[1], poster[1], thumb[1], d=2)
    v0, v1 = _matvec(wv, poster[1]), _matvec(wv, thumb[1])
    assert min(attn[0] * a + attn[1] * b for a, b in zip(v0, v1)) < 0


def test_inputs_are_standardised_by_buffers_before_the_equations():
    rng = np.random.default_rng(0)
    dims = {"text": 4, "poster": 5, "thumbnail": 5}
    raw = {m: rng.normal(3.0, 10.0, (50, d)).astype(np.float32) for m, d in dims.items()}
    stats = feature_stats(raw)
    fusion = PaperFusion(dims, dim=3, out_dim=2, stats=stats)
    x = {m: torch.from_numpy(v[:7]) for m, v in raw.items()}
    std = {m: torch.from_numpy((v[:7] - stats[m][0]) / stats[m][1]) for m, v in raw.items()}
    with torch.no_grad():
        z, _ = fusion(x)
        z_ref, _ = fusion.equations(std["text"], std["poster"], std["thumbnail"])
    assert torch.allclose(z, z_ref, atol=1e-5)
    assert set(fusion.state_dict()) >= {"norm.text.mean", "norm.text.std", "norm.poster.mean"}
    # One scale per modality (the RMS deviation), the mean per dimension.
    mean, scale = stats["poster"]
    assert np.allclose(mean, raw["poster"].mean(axis=0), atol=1e-4)
    assert np.allclose(scale, np.sqrt(((raw["poster"] - raw["poster"].mean(axis=0)) ** 2).mean()), rtol=1e-4)


def test_feature_stats_ignore_absent_rows():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [0.0, 0.0]], dtype=np.float32)
    mean, _ = feature_stats({"poster": x}, {"poster": np.array([True, True, False])})["poster"]
    assert mean.tolist() == pytest.approx([2.0, 4.0])


def test_standardize_zeroes_absent_rows():
    norm = Standardize(2, np.array([1.0, 1.0]), np.array([2.0, 2.0]))
    out = norm(torch.tensor([[3.0, 5.0], [7.0, 9.0]]), torch.tensor([True, False]))
    assert out.tolist() == [[1.0, 2.0], [0.0, 0.0]]


def test_paper_fusion_refuses_unequal_visual_dims_and_partial_modalities():
    with pytest.raises(ConfigError, match="poster 1280 and thumbnail 2048"):
        PaperFusion({"text": 384, "poster": 1280, "thumbnail": 2048}, dim=8, out_dim=4)
    with pytest.raises(ConfigError, match="text, poster and thumbnail"):
        build_fusion(FusionConfig(variant="paper", modalities=("text", "poster")), {"text": 4, "poster": 4})
    with pytest.raises(ConfigError, match="thumbnail"):
        build_fusion(FusionConfig(variant="full"), {"text": 4, "poster": 4})


DIMS = {"text": 6, "poster": 8, "thumbnail": 5}  # "full" allows a different size per modality


def _full(seed: int = 0, **kwargs) -> FullFusion:
    torch.manual_seed(seed)
    fusion = FullFusion(DIMS, dim=16, out_dim=7, heads=4, dropout=0.1, **kwargs)
    return fusion.eval()


def _inputs(batch: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g) for m, d in DIMS.items()}


def test_full_fusion_shapes_and_weights_sum_to_one():
    fusion = _full()
    with torch.no_grad():
        z, weights = fusion(_inputs())
    assert z.shape == (5, 7) and weights.shape == (5, 3)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5), atol=1e-6)
    assert bool((weights > 0).all())


def test_missing_modality_gets_zero_weight_and_cannot_change_z():
    fusion = _full()
    x = _inputs()
    x["thumbnail"][:2] = 0.0
    present = {"thumbnail": torch.tensor([False, False, True, True, True])}
    with torch.no_grad():
        z, weights = fusion(x, present)
        changed = dict(x, thumbnail=x["thumbnail"].clone())
        changed["thumbnail"][:2] = torch.randn(2, DIMS["thumbnail"]) * 100
        z_changed, _ = fusion(changed, present)
    assert weights[:2, 2].tolist() == [0.0, 0.0]
    assert torch.allclose(weights.sum(dim=1), torch.ones(5), atol=1e-6)
    assert torch.equal(z[:2], z_changed[:2])
    # ...whereas a present thumbnail does matter.
    with torch.no_grad():
        z_all, _ = fusion(changed)
    assert not torch.allclose(z_all[:2], z[:2])


def test_item_with_nothing_present_is_finite():
    fusion = _full()
    none = {m: torch.zeros(3, dtype=torch.bool) for m in DIMS}
    with torch.no_grad():
        z, weights = fusion(_inputs(3), none)
    assert torch.isfinite(z).all() and weights.abs().sum() == 0


def test_subset_of_modalities_reports_zero_for_the_rest():
    torch.manual_seed(0)
    fusion = FullFusion({"text": 6, "poster": 8}, dim=16, out_dim=4, heads=2, modalities=("text", "poster")).eval()
    x = _inputs()
    with torch.no_grad():
        _, weights = fusion({"text": x["text"], "poster": x["poster"]})
    assert weights[:, 2].abs().sum() == 0
    assert torch.allclose(weights[:, :2].sum(dim=1), torch.ones(5), atol=1e-6)


def test_text_content_reaches_full_fusion_but_not_paper_fusion():
    x = _inputs()
    other_text = dict(x, text=torch.randn(5, DIMS["text"]) * 3)

    full = _full()
    with torch.no_grad():
        assert not torch.allclose(full(x)[0], full(other_text)[0], atol=1e-4)

    # Paper: with identical poster and thumbnail, the two value vectors coincide, so the softmax
    # mix is that vector whatever the text (the query) says: z does not depend on text at all.
    torch.manual_seed(0)
    paper = PaperFusion({"text": 6, "poster": 8, "thumbnail": 8}, dim=16, out_dim=7).eval()
    same = {"text": x["text"], "poster": x["poster"], "thumbnail": x["poster"].clone()}
    same_other = dict(same, text=other_text["text"])
    with torch.no_grad():
        z_a, _ = paper(same)
        z_b, _ = paper(same_other)
    assert torch.allclose(z_a, z_b, atol=1e-6)
    # With different visuals, text moves only the two weights: z stays a function of the mix.
    diff = {"text": x["text"], "poster": x["poster"], "thumbnail": torch.randn(5, 8)}
    with torch.no_grad():
        z_c, w_c = paper(diff)
        z_d, w_d = paper(dict(diff, text=other_text["text"]))
        _, attn_c = paper.equations(diff["text"], diff["poster"], diff["thumbnail"])
    assert not torch.allclose(w_c, w_d)
    assert w_c[:, 0].abs().sum() == 0 and torch.allclose(w_c[:, 1:], attn_c)
    v = paper.w_v(torch.stack([diff["poster"], diff["thumbnail"]], dim=1))  # (B, 2, d)
    for weights, z in ((w_c, z_c), (w_d, z_d)):
        mix = torch.einsum("bm,bmd->bd", weights[:, 1:], v)
        assert torch.allclose(z, paper.proj(torch.relu(mix)), atol=1e-5)


def test_build_fusion_picks_the_variant_and_gradients_reach_every_parameter():
    dims = {"text": 6, "poster": 8, "thumbnail": 8}
    for variant, cls in (("paper", PaperFusion), ("full", FullFusion)):
        config = FusionConfig(variant=variant, dim=16, out_dim=4, heads=4, dropout=0.0)
        fusion = build_fusion(config, dims)
        assert isinstance(fusion, cls)
        x = {m: torch.randn(9, d) for m, d in dims.items()}
        z, _ = fusion(x)
        z.pow(2).sum().backward()
        for name, p in fusion.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
