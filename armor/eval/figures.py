"""The report's figures: Recall/NDCG bars with CIs, top-K poster grids, a t-SNE of item embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from armor.eval.protocol import EvaluationResult


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: Sequence[EvaluationResult], metric: str, ks: Sequence[int], path: str | Path,
              title: str) -> None:
    """Grouped bars (one group per K, one bar per model) with 95 % CI error bars, as a PNG."""
    from armor.io import atomic_path

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(ks) * max(1, len(results)) / 3, 3.6), dpi=120)
    width = 0.8 / max(1, len(results))
    x = np.arange(len(ks))
    for i, result in enumerate(results):
        row = result.row()
        means = [row[f"{metric}@{k}"] for k in ks]
        low = [row[f"{metric}@{k}"] - row.get(f"{metric}@{k}_lo", row[f"{metric}@{k}"]) for k in ks]
        high = [row.get(f"{metric}@{k}_hi", row[f"{metric}@{k}"]) - row[f"{metric}@{k}"] for k in ks]
        ax.bar(x + (i - (len(results) - 1) / 2) * width, means, width, yerr=[low, high], capsize=2,
               label=result.model)
    ax.set_xticks(x, [f"@{k}" for k in ks])
    ax.set_ylabel(metric.upper() if metric == "ndcg" else metric.capitalize())
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def topk_grid(query: str, rows: Sequence[tuple[str, Sequence[tuple[str, bytes | None]]]], path: str | Path) -> None:
    """One row per model: the query's top-K as poster thumbnails with their titles (PNG)."""
    import io as _io
    import textwrap

    from PIL import Image

    from armor.io import atomic_path

    plt = _pyplot()
    n_cols = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.7 * n_cols + 1.2, 2.6 * len(rows)), dpi=110,
                             squeeze=False)
    for r, (model, items) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(items):
                continue
            caption, image = items[c]
            if image:
                try:
                    ax.imshow(Image.open(_io.BytesIO(image)).convert("RGB"))
                except OSError:
                    pass
            ax.set_title("\n".join(textwrap.wrap(caption, 18)[:3]), fontsize=7)
        axes[r][0].text(-0.15, 0.5, model, transform=axes[r][0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=9, fontweight="bold")
    fig.suptitle(f"Top-{n_cols} for {query}", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def tsne_plot(embeddings: np.ndarray, labels: Sequence[str], path: str | Path, title: str, seed: int = 0) -> None:
    """2-D t-SNE of ``embeddings`` coloured by ``labels`` (e.g. primary genre), as a PNG."""
    import numpy as np
    from sklearn.manifold import TSNE

    from armor.io import atomic_path

    plt = _pyplot()
    points = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(labels) - 1)
                  ).fit_transform(np.asarray(embeddings, dtype=np.float32))
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=120)
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20", max(len(names), 1))
    labels_arr = np.asarray(labels)
    for i, name in enumerate(names):
        mask = labels_arr == name
        ax.scatter(points[mask, 0], points[mask, 1], s=6, color=cmap(i), label=f"{name} ({mask.sum()})")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
