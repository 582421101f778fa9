"""The paper's Table 1 and figures, reproduced on a workspace, with test scored once per model.

Reads the models trained into WORKSPACE/models/ (by `armor train`), evaluates each on the test
split of the same benchmark catalogue, and writes WORKSPACE/report/: report.md, table1.csv,
Recall/NDCG bar charts (the paper's Figures 3-5), the top-5 for a query title with posters for
the fused, text-only and image-only models (Figures 2, 6, 7), a t-SNE of the overview embeddings
coloured by primary genre (Figure 8), diversity and coverage per model, a cold-start table,
and the fused model's attention shares per modality.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipelines.cli import add_common, stage_main
from pipelines.tracking import add_tracking_arguments, options, stage_run

log = logging.getLogger("armor.report")

# Our model names -> (label in Table 1, the paper's row).
LABELS = {
    "text": ("Text-only (raw features)", "text"), "text-projected": ("Text-only (trained projection)", None),
    "image": ("Image-only (raw features)", "image"), "image-projected": ("Image-only (trained projection)", None),
    "fused-paper": ("Fused, paper's attention (eqs. 4.2-4.6)", "fused"), "fused": ("Fused, full attention (ours)", None),
    "bpr": ("BPR", "bpr"), "lightgcn": ("LightGCN", "lightgcn"),
    "popularity": ("Popularity", None), "random": ("Random", None),
}
ORDER = list(LABELS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--split", default="random", help="the split the models were trained on")
    parser.add_argument("--missing-modality", choices=("exclude", "impute"), default="exclude")
    parser.add_argument("--models", nargs="*", default=None,
                        help="model names under WORKSPACE/models (default: every one found)")
    parser.add_argument("--query-title", default=None,
                        help='query for the top-5 figure, e.g. "Matrix, The (1999)" (default: The Matrix if '
                        "present, else the most-liked training movie)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default WORKSPACE/report")
    add_tracking_arguments(parser)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    settings = {"split": args.split, "policy": args.missing_modality, "models": args.models or "all",
                "bootstrap": args.bootstrap, "seed": args.seed}
    with stage_run("report", args.workspace, settings, **options(args)) as tracked:
        out = make_report(args.workspace, args.split, policy=args.missing_modality, names=args.models,
                          query_title=args.query_title, bootstrap=args.bootstrap, seed=args.seed, out=args.out)
        if tracked is not None:
            tracked.log_artifacts(out, artifact_path="report")
    print((out / "report.md").read_text())
    return 0


def make_report(workspace: Path, split: str, *, policy: str = "exclude", names: list[str] | None = None,
                query_title: str | None = None, bootstrap: int = 1000, seed: int = 0,
                out: Path | None = None, header: str = "") -> Path:
    import numpy as np
    import pyarrow.parquet as pq

    from armor.config import EvalConfig
    from armor.data.benchmark import load_benchmark
    from armor.errors import DataError
    from armor.eval import report as R
    from armor.eval.metrics import paired_bootstrap_difference
    from armor.eval.protocol import evaluate
    from armor.io import write_text
    from armor.models.base import load_recommender
    from armor.workspace import Workspace

    ws = Workspace(workspace)
    out = Path(out or ws.root / "report")
    bench = load_benchmark(ws.root, split, policy)
    data = bench.data
    available = sorted(p.name for p in ws.models.iterdir() if (p / "model").is_dir()) if ws.models.exists() else []
    names = [n for n in (names or sorted(available, key=lambda n: ORDER.index(n) if n in ORDER else 99))]
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise DataError(f"no trained model {missing or ''} under {ws.models}; run `armor train` first",
                        path=ws.models)
    models = {n: load_recommender(ws.models / n / "model") for n in names}
    for name, model in models.items():
        if getattr(model, "n_items", None) not in (None, data.n_items) or (
                model.item_embeddings() is not None and model.item_embeddings().shape[0] != data.n_items):
            raise DataError(f"model {name} was trained on another catalogue than {split}/{policy} "
                            f"({data.n_items} movies); retrain it or pass the matching --split/--missing-modality",
                            path=ws.models / name)

    config = EvalConfig(bootstrap_samples=bootstrap, seed=seed)
    results = {n: evaluate(m, data, "test", config, name=LABELS.get(n, (n,))[0]) for n, m in models.items()}

    # Cold start: test items that nobody liked in training (all their interactions were held out).
    cold = np.flatnonzero((np.asarray(data.train.sum(axis=0)).ravel() == 0)
                          & (np.asarray(data.test.sum(axis=0)).ravel() > 0))
    cold_results = [evaluate(m, data, "test", EvalConfig(bootstrap_samples=0), name=results[n].model,
                             relevant_items=cold) for n, m in models.items()] if cold.size else []

    out.mkdir(parents=True, exist_ok=True)
    ordered = [results[n] for n in names]
    columns = list(R.DEFAULT_COLUMNS)
    lines = [header or f"# ARMoR report: {ws.root.name}, split `{split}`\n",
             f"Catalogue: {data.n_items} movies ({bench.excluded_movies} left out under the `{policy}` "
             f"missing-modality policy); {ordered[0].users.size} test users. Full ranking over the catalogue; a "
             "user's training positives and validation items are excluded from their ranking; ties by movie index. "
             "Models and epochs were chosen on validation; test was scored once, here. Values: mean over users "
             f"[95% bootstrap CI, {bootstrap} resamples, paired across models].\n",
             "## Table 1 (reproduced)\n", R.markdown_table(ordered, columns)]
    paper_rows = [(LABELS[n][0], LABELS[n][1]) for n in names if n in LABELS and LABELS[n][1]]
    if paper_rows:
        lines += ["\nThe paper's Table 1 (ML-1M with real TMDB content, ResNet-50; its own split), for reference. "
                  "Different data and encoders: compare the ordering of models, not the numbers.\n",
                  R.paper_table_markdown(paper_rows, columns)]
    if "fused" in results and "fused-paper" in results:
        diff, (lo, hi), p_not_better = paired_bootstrap_difference(
            results["fused"].per_user["ndcg@10"], results["fused-paper"].per_user["ndcg@10"],
            max(bootstrap, 1), 0.95, seed)
        lines.append(f"\nFull minus paper fusion, test NDCG@10: {diff:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}]; share of "
                     f"resamples where full is not better: {p_not_better:.3f}.\n")
    lines += ["\n## Beyond accuracy: coverage and intra-list genre diversity\n",
              R.markdown_table(ordered, [f"{m}@{k}" for m in ("hr", "mrr", "coverage", "diversity") for k in (10, 20)],
                               with_ci=False)]
    if cold_results:
        lines += [f"\n## Cold start: {cold.size} test movies nobody liked in training\n",
                  "Hits count only these movies; interaction-only models have never seen them.\n",
                  R.markdown_table(cold_results, ["recall@10", "recall@20", "ndcg@10", "ndcg@20"], with_ci=False)]
    else:
        lines.append("\n## Cold start\n\nNo test movie lacks training interactions in this split.\n")

    for metric, figure in (("recall", "recall.png"), ("ndcg", "ndcg.png")):
        R.bar_chart(ordered, metric, (5, 10, 20), out / figure,
                    f"{metric.upper() if metric == 'ndcg' else 'Recall'}@K on test ({split} split)")
    lines.append("\n## Figures\n\n![Recall@K](recall.png) ![NDCG@K](ndcg.png)\n")

    if "fused" in models and hasattr(models["fused"], "attention_weights"):
        weights = models["fused"].attention_weights()  # (I, 3): text, poster, thumbnail
        mean, spread = weights.mean(axis=0), weights.std(axis=0)
        leading = np.bincount(weights.argmax(axis=1), minlength=3) / len(weights)
        lines.append("\n## Interpretability: what the full fusion attends to, per movie\n\n"
                     "| | text | poster | thumbnail |\n|---|---:|---:|---:|\n"
                     f"| mean attention weight | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |\n"
                     f"| spread across movies (sd) | {spread[0]:.3f} | {spread[1]:.3f} | {spread[2]:.3f} |\n"
                     f"| share of movies where it leads | {leading[0]:.3f} | {leading[1]:.3f} | {leading[2]:.3f} |\n")

    movies = pq.read_table(ws.movies).to_pandas().set_index("movie_id")
    query = _query_index(data, movies, query_title)
    if query is not None:
        lines.append(_top_k_figure(ws, data, movies, models, query, out / "top5.png"))
    if "text" in bench.features:
        genres = [movies.loc[m, "genres"] for m in data.item_ids]
        primary = [g[0] if len(g) else "(none)" for g in genres]
        R.tsne_plot(bench.features["text"], primary, out / "tsne_text.png",
                    "t-SNE of overview embeddings, coloured by primary genre", seed=seed)
        lines.append("\n![t-SNE of overview embeddings](tsne_text.png)\n")

    write_text("\n".join(lines), out / "report.md")
    write_text(R.csv_table(ordered, {"protocol": split, "policy": policy}), out / "table1.csv")
    log.info("report written to %s", out)
    return out


def _query_index(data, movies, query_title: str | None):  # noqa: ANN001, ANN202
    import numpy as np

    from armor.data.schema import display_title
    from armor.errors import ConfigError

    titles = {display_title(movies.loc[m, "title"], None if movies.loc[m, "year"] != movies.loc[m, "year"]
                            else int(movies.loc[m, "year"])): i for i, m in enumerate(data.item_ids)}
    if query_title:
        if query_title not in titles:
            raise ConfigError(f"--query-title {query_title!r} is not in the catalogue (titles look like "
                              f"{next(iter(titles))!r})")
        return titles[query_title]
    if "Matrix, The (1999)" in titles:
        return titles["Matrix, The (1999)"]
    return int(np.argmax(np.asarray(data.train.sum(axis=0)).ravel()))


def _top_k_figure(ws, data, movies, models, query: int, path: Path) -> str:  # noqa: ANN001
    import numpy as np

    from armor.data.schema import display_title
    from armor.eval import report as R
    from armor.tmdb.scrape import ScrapeStore

    posters: dict[int, Any] = {}
    if ScrapeStore(ws.tmdb).parts():
        table = ScrapeStore(ws.tmdb).read(["movie_id", "poster"])
        posters = dict(zip(table["movie_id"].to_pylist(), table["poster"].to_pylist()))

    def label(movie_id: int) -> str:
        row = movies.loc[movie_id]
        return display_title(row["title"], None if row["year"] != row["year"] else int(row["year"]))

    rows = []
    for name in ("fused", "fused-paper", "text", "image"):
        model = models.get(name)
        if model is None or model.item_embeddings() is None:
            continue
        vectors = model.item_embeddings()
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = unit @ unit[query]
        scores[query] = -np.inf
        top = np.argsort(-scores, kind="stable")[:5]
        rows.append((LABELS[name][0], [(label(int(data.item_ids[i])), posters.get(int(data.item_ids[i])))
                                       for i in top]))
    if not rows:
        return ""
    query_label = label(int(data.item_ids[query]))
    R.topk_grid(query_label, rows, path)
    listing = "\n".join(f"- {name}: " + "; ".join(title for title, _ in items) for name, items in rows)
    return f"\n## Top-5 for {query_label}\n\n![top-5](top5.png)\n\n{listing}\n"


def main(argv: list[str] | None = None) -> int:
    return stage_main(add_arguments, run, "python -m pipelines.report", __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
