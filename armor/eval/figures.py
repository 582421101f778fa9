"""The report's figures: Recall/NDCG bars with CIs, learning curves, top-K poster grids, a t-SNE of item
embeddings. Every model keeps its colour across figures (the caller maps labels to ``palette``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from armor.eval.protocol import EvaluationResult


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def palette(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10's ten, then tab20's ten lighter shades, then evenly spaced hues."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    fixed = [(*tab20[i], 1.0) for i in range(0, 20, 2)] + [(*tab20[i], 1.0) for i in range(1, 20, 2)]
    if n <= len(fixed):
        return fixed[:n]
    hsv = colormaps["hsv"]
    return fixed + [hsv(i / (n - len(fixed))) for i in range(n - len(fixed))]


def _legend_outside(ax: Any, wrap: int = 42) -> None:
    """The legend to the right of the axes, where it can cover no bar or line; long labels wrapped."""
    import textwrap

    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, ["\n".join(textwrap.wrap(label, wrap)) for label in labels], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _save(fig: Any, path: str | Path) -> None:
    from armor.io import atomic_path

    # "tight" grows the canvas to hold the legend outside the axes.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    _pyplot().close(fig)


def bar_figure(results: Sequence[EvaluationResult], metric: str, ks: Sequence[int], title: str,
               colours: Mapping[str, Any] | None = None) -> Any:
    """Grouped bars (one group per K, one bar per model, each model its own colour: ``colours`` by
    model label, else ``palette``) with 95 % CI error bars and the legend outside the axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 + 0.22 * len(ks) * max(1, len(results))), 3.6), dpi=120)
    width = 0.8 / max(1, len(results))
    x = np.arange(len(ks))
    fallback = palette(len(results))
    for i, result in enumerate(results):
        row = result.row()
        means = [row[f"{metric}@{k}"] for k in ks]
        low = [row[f"{metric}@{k}"] - row.get(f"{metric}@{k}_lo", row[f"{metric}@{k}"]) for k in ks]
        high = [row.get(f"{metric}@{k}_hi", row[f"{metric}@{k}"]) - row[f"{metric}@{k}"] for k in ks]
        low, high = np.nan_to_num(low), np.nan_to_num(high)  # no bootstrap: no error bar
        ax.bar(x + (i - (len(results) - 1) / 2) * width, means, width, yerr=[low, high], capsize=2,
               label=result.model, color=(colours or {}).get(result.model, fallback[i]))
    ax.set_xticks(x, [f"@{k}" for k in ks])
    ax.set_ylabel(metric.upper() if metric == "ndcg" else metric.capitalize())
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    ax.grid(axis="y", alpha=0.3)
    return fig


def bar_chart(results: Sequence[EvaluationResult], metric: str, ks: Sequence[int], path: str | Path,
              title: str, colours: Mapping[str, Any] | None = None) -> None:
    """``bar_figure`` as a PNG."""
    _save(bar_figure(results, metric, ks, title, colours), path)


def learning_figure(curves: Mapping[str, tuple[Sequence[int], Sequence[float], int | None]], title: str,
                    colours: Mapping[str, Any] | None = None) -> Any:
    """Validation NDCG@10 per epoch, one line per model (``curves``: label -> (epochs, values, best
    epoch)); the epoch validation chose is a filled dot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    fallback = palette(len(curves))
    for i, (name, (epochs, values, best)) in enumerate(curves.items()):
        colour = (colours or {}).get(name, fallback[i])
        ax.plot(epochs, values, color=colour, label=name, linewidth=1.3, marker="." if len(epochs) < 30 else None)
        if best in epochs:
            ax.plot([best], [values[list(epochs).index(best)]], "o", color=colour, markersize=5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return fig


def learning_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float], int | None]], path: str | Path,
                    title: str, colours: Mapping[str, Any] | None = None) -> None:
    """``learning_figure`` as a PNG."""
    _save(learning_figure(curves, title, colours), path)


def topk_grid(title: str, rows: Sequence[tuple[str, Sequence[tuple[Any, ...]]]], path: str | Path,
              note: str = "") -> None:
    """One row per model: its top-K as poster thumbnails with their titles (PNG). An item is
    (caption, image bytes or None[, marked]); a marked item is framed in green and its caption starts
    with a check mark (the report marks the user's held-out movies). ``note`` goes under the title."""
    import io as _io
    import textwrap

    from matplotlib.patches import Rectangle
    from PIL import Image

    plt = _pyplot()
    n_cols = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.7 * n_cols + 1.4, 2.6 * len(rows)), dpi=110,
                             squeeze=False)
    for r, (model, items) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(items):
                continue
            caption, image, marked = (*items[c], False)[:3]
            if image:
                try:
                    ax.imshow(Image.open(_io.BytesIO(image)).convert("RGB"))
                except OSError:
                    pass
            if marked:
                caption = "\u2713 " + caption
                ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor="#2ca02c",
                                       linewidth=4, clip_on=False))
            ax.set_title("\n".join(textwrap.wrap(caption, 18)[:3]), fontsize=7,
                         color="#1b7a1b" if marked else "black", fontweight="bold" if marked else "normal")
        axes[r][0].text(-0.15, 0.5, "\n".join(textwrap.wrap(model, 30)[:3]), transform=axes[r][0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=8, fontweight="bold")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    _save(fig, path)


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
