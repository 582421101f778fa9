"""Item encoders that fuse text, poster and thumbnail features into one retrieval vector.

Two variants share one call signature, ``forward(features, present=None) -> (z, weights)``:

``PaperFusion`` ("paper") is equations 4.2-4.6 of the paper and nothing else: the text embedding
is the query, the two visual embeddings are keys and values, and the output is a projection of a
softmax mix of the two visual value vectors. Text therefore only chooses *how much* poster versus
thumbnail goes into ``z``; its content never reaches ``z``.

``FullFusion`` ("full") projects every modality to a token, lets one learned query attend over all
present tokens with several heads, then applies residual + LayerNorm + feed-forward, so each
modality's content (text included) can reach the output, and a missing modality is masked out.

Modality weights are always returned as (B, 3) over ``MODALITIES`` = (text, poster, thumbnail),
with 0 for a modality the variant does not attend to. For "paper" the text column is always 0
(text is the query, never a key) and the poster and thumbnail columns sum to 1.

Inputs are standardised inside the model by buffers (``Standardize``), so a saved state dict
carries the statistics it was trained with and raw SBERT / CNN features can be fed as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from armor.config import FusionConfig
from armor.errors import ConfigError, DataError

MODALITIES: tuple[str, ...] = ("text", "poster", "thumbnail")

Stats = Mapping[str, tuple[np.ndarray, np.ndarray]]


def feature_stats(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None = None,
                  eps: float = 1e-6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-modality (mean (d,), std (d,)) over the rows where the modality is present.

    The mean is per dimension; the std is one scalar per modality (the RMS deviation over all
    dimensions), broadcast to (d,). A per-dimension std would blow near-constant CNN channels up
    to unit variance; a scalar only evens out the scale *between* modalities and keeps each
    encoder's own geometry.
    """
    stats = {}
    for name, x in features.items():
        x = np.asarray(x, dtype=np.float64)
        rows = x if present is None or name not in present else x[np.asarray(present[name], dtype=bool)]
        if rows.shape[0] == 0:
            mean, scale = np.zeros(x.shape[1]), 1.0
        else:
            mean = rows.mean(axis=0)
            scale = float(np.sqrt(((rows - mean) ** 2).mean()))
        scale = scale if scale > eps else 1.0
        stats[name] = (mean.astype(np.float32), np.full(x.shape[1], scale, dtype=np.float32))
    return stats


class Standardize(nn.Module):
    """``(x - mean) / std`` with buffers; rows whose modality is absent become exactly 0.

    Zeroing absent rows after standardising means whatever placeholder an absent row holds
    (zeros in the feature store) can never leak into the output.
    """

    def __init__(self, dim: int, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        # Checked in numpy, before any tensor exists: no device round trip, and the module can be
        # built under a fake-tensor mode (the device tests).
        mean_a = np.zeros(dim, np.float32) if mean is None else np.asarray(mean, dtype=np.float32)
        std_a = np.ones(dim, np.float32) if std is None else np.asarray(std, dtype=np.float32)
        if mean_a.shape != (dim,) or std_a.shape != (dim,):
            raise ConfigError(f"standardisation stats must have shape ({dim},), got mean {mean_a.shape} "
                              f"and std {std_a.shape}")
        if not (std_a > 0).all():
            raise ConfigError("standardisation std must be > 0 in every dimension")
        self.register_buffer("mean", torch.tensor(mean_a))
        self.register_buffer("std", torch.tensor(std_a))

    def forward(self, x: Tensor, present: Tensor | None = None) -> Tensor:
        x = (x - self.mean) / self.std  # (B, d_in)
        if present is not None:
            x = x * present.to(x.dtype)[:, None]
        return x


def _check_dims(dims: Mapping[str, int], needed: tuple[str, ...], variant: str) -> None:
    missing = [m for m in needed if m not in dims]
    if missing:
        raise ConfigError(f"fusion.modalities: the {variant!r} fusion needs features for "
                          f"{', '.join(missing)}; got dims for {', '.join(dims) or 'nothing'}")
    bad = [m for m in needed if int(dims[m]) < 1]
    if bad:
        raise ConfigError(f"feature dimension of {bad[0]} must be >= 1, got {dims[bad[0]]}")


def _presence(features: Mapping[str, Tensor], present: Mapping[str, Tensor] | None,
              modalities: tuple[str, ...]) -> dict[str, Tensor]:
    batch = next(iter(features.values())).shape[0]
    out = {}
    for m in modalities:
        if present is not None and m in present:
            out[m] = present[m].to(torch.bool)
        else:
            out[m] = torch.ones(batch, dtype=torch.bool, device=features[m].device)
    return out


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis restricted to ``mask``; an all-masked row gets all-zero weights."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    # softmax of an all -inf row is NaN; such an item has nothing to attend to.
    return torch.where(mask.any(dim=-1, keepdim=True), weights, torch.zeros_like(weights))


class PaperFusion(nn.Module):
    """Equations 4.2-4.6: text queries, poster and thumbnail are keys and values.

    ``W^Q``, ``W^K`` and ``W^V`` have no bias (the equations have none); ``W^K`` and ``W^V`` are
    shared by the two visual tokens, so poster and thumbnail features must have the same
    dimension. Only the output projection ``W_p`` has a bias ``b_p`` (eq. 4.6). The paper has no
    dropout here, so ``FusionConfig.dropout`` is ignored by this variant.

    One addition that changes nothing when every modality is present: an absent visual token is
    masked out of the softmax (an item with neither gets ``e_fused = 0``, i.e. ``z = b_p``).
    """

    def __init__(self, dims: Mapping[str, int], dim: int, out_dim: int, stats: Stats | None = None):
        super().__init__()
        _check_dims(dims, MODALITIES, "paper")
        if int(dims["poster"]) != int(dims["thumbnail"]):
            raise ConfigError(
                f"the 'paper' fusion shares W^K and W^V between poster and thumbnail (eqs. 4.3-4.4), so "
                f"their features need one dimension; got poster {dims['poster']} and thumbnail "
                f"{dims['thumbnail']}. Encode both with the same image backbone, or use fusion.variant=full")
        stats = stats or {}
        self.dim = int(dim)
        self.norm = nn.ModuleDict({m: Standardize(int(dims[m]), *stats.get(m, (None, None))) for m in MODALITIES})
        self.w_q = nn.Linear(int(dims["text"]), dim, bias=False)
        self.w_k = nn.Linear(int(dims["poster"]), dim, bias=False)
        self.w_v = nn.Linear(int(dims["poster"]), dim, bias=False)
        self.proj = nn.Linear(dim, out_dim)  # W_p, b_p

    def equations(self, text: Tensor, poster: Tensor, thumbnail: Tensor,
                  visual_present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Eqs. 4.2-4.6 on already standardised embeddings -> (z (B, out_dim), attention (B, 2)).

        ``visual_present`` (B, 2) bool masks absent poster / thumbnail tokens.
        """
        q = self.w_q(text)  # (B, d)                                    eq. 4.2
        visual = torch.stack([poster, thumbnail], dim=1)  # (B, 2, d_img)
        k = self.w_k(visual)  # (B, 2, d)                               eq. 4.3
        v = self.w_v(visual)  # (B, 2, d)                               eq. 4.4
        scores = torch.einsum("bd,bmd->bm", q, k) / math.sqrt(self.dim)  # (B, 2)
        if visual_present is None:
            attention = torch.softmax(scores, dim=-1)  # (B, 2)
        else:
            attention = _masked_softmax(scores, visual_present)  # (B, 2)
        fused = torch.einsum("bm,bmd->bd", attention, v)  # (B, d)      eq. 4.5
        z = self.proj(F.relu(fused))  # (B, out_dim)                     eq. 4.6
        return z, attention

    def forward(self, features: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        mask = _presence(features, present, MODALITIES)
        x = {m: self.norm[m](features[m], mask[m]) for m in MODALITIES}  # each (B, d_m)
        visual_present = torch.stack([mask["poster"], mask["thumbnail"]], dim=1)  # (B, 2)
        z, attention = self.equations(x["text"], x["poster"], x["thumbnail"], visual_present)
        weights = F.pad(attention, (1, 0))  # (B, 3): text column is 0 by convention
        return z, weights


class FullFusion(nn.Module):
    """A learned query attends over one token per modality (text included), multi-head.

    t_m = W_m standardise(x_m) + e_m                per-modality projection + modality embedding
    a   = softmax_m(q W^Q (t_m W^K)^T / sqrt(d/H))  per head; absent modalities masked out
    h   = LN(q + mean_m t_m + W^O concat_h(a V))    residual stream: query + mean present token
    h   = LN(h + FFN(h))                            small feed-forward block
    z   = W_out h

    Why this shape: several heads over per-modality tokens can each pick a different modality,
    so the pooled vector carries them side by side, and the weights stay interpretable per item.
    The residual stream holds the mean of the present tokens, so every present modality (text
    included) always has a direct path to ``z`` and attention re-weights on top of it rather
    than having to learn to route each modality through a head; on the synthetic world this
    was at least as good as the plain query residual on every seed tried. Masking lets a movie
    without a thumbnail be encoded from what it has instead of from a placeholder. The modality
    embeddings tell the shared key/value maps which encoder a token came from.
    """

    def __init__(self, dims: Mapping[str, int], dim: int, out_dim: int, heads: int = 4, dropout: float = 0.1,
                 modalities: tuple[str, ...] = MODALITIES, stats: Stats | None = None):
        super().__init__()
        _check_dims(dims, tuple(modalities), "full")
        if dim % heads:
            raise ConfigError(f"fusion.heads: must divide fusion.dim={dim}, got {heads}")
        stats = stats or {}
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.dim, self.heads = int(dim), int(heads)
        self.norm = nn.ModuleDict({m: Standardize(int(dims[m]), *stats.get(m, (None, None)))
                                   for m in self.modalities})
        self.embed = nn.ModuleDict({m: nn.Linear(int(dims[m]), dim) for m in self.modalities})
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, dim)
        self.norm_attn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, features: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        mask = _presence(features, present, self.modalities)
        tokens = torch.stack([self.embed[m](self.norm[m](features[m], mask[m])) for m in self.modalities],
                             dim=1)  # (B, M, d)
        tokens = self.dropout(tokens + self.modality_embedding)  # (B, M, d)
        B, M, d = tokens.shape
        H, dh = self.heads, d // self.heads
        q = self.w_q(self.query).view(H, dh)  # (H, d/H)
        k = self.w_k(tokens).view(B, M, H, dh).transpose(1, 2)  # (B, H, M, d/H)
        v = self.w_v(tokens).view(B, M, H, dh).transpose(1, 2)  # (B, H, M, d/H)
        scores = torch.einsum("hd,bhmd->bhm", q, k) / math.sqrt(dh)  # (B, H, M)
        present_m = torch.stack([mask[m] for m in self.modalities], dim=1)  # (B, M)
        attention = _masked_softmax(scores, present_m[:, None, :].expand(B, H, M))  # (B, H, M)
        pooled = torch.einsum("bhm,bhmd->bhd", attention, v).reshape(B, d)  # (B, d)
        share = present_m.to(tokens.dtype) / present_m.sum(dim=1, keepdim=True).clamp(min=1)  # (B, M)
        mean_token = torch.einsum("bm,bmd->bd", share, tokens)  # (B, d)
        h = self.norm_attn(self.query + mean_token + self.dropout(self.w_o(pooled)))  # (B, d)
        h = self.norm_ffn(h + self.dropout(self.ffn(h)))  # (B, d)
        z = self.out(h)  # (B, out_dim)
        weights = attention.new_zeros(B, len(MODALITIES))  # (B, 3)
        mean_heads = attention.mean(dim=1)  # (B, M)
        for j, m in enumerate(self.modalities):
            weights[:, MODALITIES.index(m)] = mean_heads[:, j]
        return z, weights


def build_fusion(config: FusionConfig, dims: Mapping[str, int], stats: Stats | None = None) -> nn.Module:
    """The fusion module named by ``config.variant`` for features of ``dims`` ({modality: d}).

    ``stats`` ({modality: (mean, std)}, see ``feature_stats``) fill the standardisation buffers;
    without them inputs pass unchanged (as when a saved state dict is about to be loaded).
    """
    for m in dims:
        if m not in MODALITIES:
            raise DataError(f"unknown modality {m!r} in feature dims; known: {', '.join(MODALITIES)}")
    if config.variant == "paper":
        if set(config.modalities) != set(MODALITIES):
            raise ConfigError(f"fusion.modalities: the 'paper' fusion is defined on text, poster and thumbnail "
                              f"together (eqs. 4.2-4.4); got {', '.join(config.modalities)}")
        return PaperFusion(dims, config.dim, config.out_dim, stats)
    return FullFusion(dims, config.dim, config.out_dim, config.heads, config.dropout, tuple(config.modalities), stats)
