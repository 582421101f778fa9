"""Tables of evaluation results: Markdown for people, CSV for tools."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from armor.eval.protocol import EvaluationResult

DEFAULT_COLUMNS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def _short(metric: str) -> str:
    name, k = metric.split("@")
    return {"recall": "R", "ndcg": "N", "hr": "HR", "mrr": "MRR", "coverage": "Cov",
            "diversity": "Div"}.get(name, name) + f"@{k}"


def markdown_table(results: Sequence[EvaluationResult], columns: Sequence[str] = DEFAULT_COLUMNS,
                   with_ci: bool = True) -> str:
    """One row per result: the metric mean and, below it in brackets, its 95 % bootstrap CI."""
    header = "| Model | " + " | ".join(_short(c) for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for result in results:
        row = result.row()
        cells = []
        for column in columns:
            value = row.get(column, float("nan"))
            cell = f"{value:.4f}"
            if with_ci and f"{column}_lo" in row:
                cell += f" [{row[f'{column}_lo']:.4f}, {row[f'{column}_hi']:.4f}]"
            cells.append(cell)
        lines.append(f"| {result.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: Sequence[EvaluationResult], extra: dict[str, str] | None = None) -> str:
    rows = []
    for result in results:
        row: dict[str, object] = {"model": result.model, "split": result.split, **(extra or {})}
        row.update(result.row())
        rows.append(row)
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# The paper's Table 1 (ML-1M + TMDB, its own split), for reference beside our numbers.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "text": {"recall@5": 0.018, "recall@10": 0.043, "recall@20": 0.107,
             "ndcg@5": 0.0070, "ndcg@10": 0.0160, "ndcg@20": 0.0320},
    "image": {"recall@5": 0.052, "recall@10": 0.122, "recall@20": 0.196,
              "ndcg@5": 0.0260, "ndcg@10": 0.0480, "ndcg@20": 0.0650},
    "fused": {"recall@5": 0.004, "recall@10": 0.012, "recall@20": 0.036,
              "ndcg@5": 0.0025, "ndcg@10": 0.0050, "ndcg@20": 0.0105},
    "bpr": {"recall@5": 0.017, "recall@10": 0.035, "recall@20": 0.073,
            "ndcg@5": 0.0100, "ndcg@10": 0.0156, "ndcg@20": 0.0250},
    "lightgcn": {"recall@5": 0.010, "recall@10": 0.030, "recall@20": 0.065,
                 "ndcg@5": 0.0055, "ndcg@10": 0.0110, "ndcg@20": 0.0201},
}


def paper_table_markdown(rows: Sequence[tuple[str, str]], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """The paper's rows for (our label, paper key) pairs; keys the paper does not report are skipped."""
    lines = ["| Model (paper, ML-1M) | " + " | ".join(_short(c) for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, key in rows:
        if key in PAPER_TABLE1:
            lines.append(f"| {label} | " + " | ".join(f"{PAPER_TABLE1[key][c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: Sequence[EvaluationResult], metric: str, ks: Sequence[int], path, title: str) -> None:
    """Grouped bars (one group per K, one bar per model) with 95 % CI error bars, as a PNG."""
    import numpy as np

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


def topk_grid(query: str, rows: Sequence[tuple[str, Sequence[tuple[str, bytes | None]]]], path) -> None:
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


def tsne_plot(embeddings, labels: Sequence[str], path, title: str, seed: int = 0) -> None:
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
