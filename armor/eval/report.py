"""The paper's Table 1 under leave-one-out and 80/10/10, an item cold-start table, and figures,
reproduced on a workspace, with test scored once per model.

Reads the models trained into WORKSPACE/models/SPLIT/ for each protocol's split, evaluates each
on the test part of its own split (so on exactly that split's catalogue), and writes a report
directory: report.md (definitions, the funnel of each split, Table 1 per protocol with the
paper's numbers beside the leave-one-out one, paired differences, coverage and diversity, the
cold-start table, the interpretability table), table1.csv (one row per model and protocol),
coldstart.csv, Recall/NDCG bar charts (the paper's Figures 3-5), the top-5 for a query title with
posters (Figures 2, 6, 7) and a t-SNE of the overview embeddings by primary genre (Figure 8).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from armor.config import EvalConfig, setting
from armor.data.benchmark import Benchmark, load_benchmark
from armor.data.catalogue import funnel_markdown
from armor.data.splits import SplitData, catalogue_digest
from armor.errors import DataError
from armor.eval import figures, showcase, tables
from armor.eval.metrics import paired_bootstrap_difference
from armor.eval.protocol import EvaluationResult, evaluate
from armor.io import write_text
from armor.models.base import Recommender, load_recommender
from armor.models.registry import MODELS
from armor.workspace import METRICS_FILE, Workspace

log = logging.getLogger(__name__)

PROTOCOL_TITLES = {"loo": "leave-one-out (the paper's protocol)", "random": "random 80/10/10 per user",
                   "temporal": "temporal 80/10/10 per user", "cold": "item cold start"}
# (ours, reference): paired test differences reported wherever both models are present.
PAIRS: tuple[tuple[str, str], ...] = (("fused", "fused-paper"), ("armor-graph", "lightgcn"))
ABLATION_MARK = "~"  # models/SPLIT/MODEL~SLUG: MODEL with one part switched off

DEFINITIONS = """## Definitions

Full ranking: for each test user a model ranks every catalogue movie except the user's profile.
**Profile** (the paper's rule, §5): the training positives when scoring validation; every positive
except the test items (training + validation) when scoring test. Content models represent a user
by the mean of the profile's item vectors; ItemKNN, EASE and ALS fold the same profile in when
they score; BPR and LightGCN score with the user vectors they learned from the training positives
(they have no fold-in, so validation positives are not in their vectors).
**Recall@K** = test items in the top K / the user's number of test items. **NDCG@K**: binary gains,
DCG = sum over hits of 1 / log2(rank + 1), divided by the ideal DCG of min(|test|, K) hits.
**HR@K** = 1 if any test item is in the top K. **MRR@K** = 1 / rank of the first hit in the top K
(0 if none). **Coverage@K**: share of catalogue movies in at least one user's top K.
**Diversity@K**: mean pairwise genre Jaccard distance within a top-K list.
**Ties**: movies with equal scores are ordered by a seeded random key per (user, movie), so a tie
never rewards a model (a constant model scores at chance). **Leave-one-out**: each user's latest
positive by (timestamp, movie id) is test, the one before it validation.
Values are means over test users [95% percentile bootstrap CIs over users, paired across models];
they cover the sampling of users, not training noise. Every epoch, hyperparameter and model was
chosen on validation; test was scored once, here.
"""


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    protocols: tuple[str, ...] = setting(("loo", "random"), "splits of Table 1, one table each")
    cold_split: str | None = setting("cold", "split of the item cold-start table (skipped when it is absent)")
    models: tuple[str, ...] | None = setting(None, "model names under WORKSPACE/models/SPLIT (default: every one)")
    query_title: str | None = setting(None, 'query of the top-5 figure, e.g. "Matrix, The (1999)" (default: '
                                            "The Matrix if present, else the most-liked training movie)")
    bootstrap: int = setting(1000, "bootstrap resamples for the 95% CIs")
    seed: int = setting(0, "seed of the bootstrap, the tie order and the figures")
    header: str = ""


@dataclasses.dataclass
class ProtocolRun:
    """One split's benchmark, its trained models and their test results."""

    split: str
    bench: Benchmark
    models: dict[str, Recommender]
    results: dict[str, EvaluationResult]

    def best(self, metric: str = "ndcg@10") -> str:
        return max(self.results, key=lambda n: self.results[n].means[metric])


def label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def check_catalogue(model: Recommender, data: SplitData, directory: Path) -> None:
    """A model must rank exactly the split's catalogue: same movies, not just as many."""
    metrics = directory / METRICS_FILE
    digest = json.loads(metrics.read_text()).get("catalogue_digest") if metrics.exists() else None
    embeddings = model.item_embeddings()
    rows = getattr(model, "n_items", None) or (None if embeddings is None else embeddings.shape[0])
    if (digest is not None and digest != catalogue_digest(data.item_ids)) or rows not in (None, data.n_items):
        raise DataError(f"model {directory.name} was trained on another catalogue than this split's "
                        f"({data.n_items} movies); retrain it on this split", path=directory)


def load_models(ws: Workspace, split: str, data: SplitData, names: tuple[str, ...] | None) -> dict[str, Recommender]:
    """The models trained on ``split`` (default: all, in the registry's order), checked against its catalogue."""
    directory = ws.models / split
    found = sorted(p.name for p in directory.iterdir()
                   if (p / "model").is_dir() and ABLATION_MARK not in p.name) if directory.exists() else []
    order = list(MODELS)
    chosen = list(names) if names else sorted(found, key=lambda n: order.index(n) if n in order else len(order))
    missing = [n for n in chosen if n not in found]
    if missing or not chosen:
        raise DataError(f"no trained model {missing or ''} for split {split!r}; run `armor train --split {split}` "
                        "first", path=directory)
    models = {n: load_recommender(directory / n / "model") for n in chosen}
    for name, model in models.items():
        check_catalogue(model, data, directory / name)
    return models


def run_protocol(ws: Workspace, split: str, config: ReportConfig) -> ProtocolRun:
    bench = load_benchmark(ws.root, split, needs_features=False)
    models = load_models(ws, split, bench.data, config.models)
    eval_config = EvalConfig(bootstrap=config.bootstrap, seed=config.seed)
    results = {n: evaluate(m, bench.data, "test", eval_config, name=label(n), progress=True) for n, m in models.items()}
    return ProtocolRun(split, bench, models, results)


def make_report(workspace: str | Path, config: ReportConfig = ReportConfig(), out: Path | None = None) -> Path:
    """Write the report directory (see the module docstring); returns it."""
    ws = Workspace(workspace)
    out = Path(out or ws.root / "report")
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_protocol(ws, split, config) for split in config.protocols]
    lines = [config.header or f"# ARMoR report: {ws.root.name}\n", DEFINITIONS]
    for run in runs:
        lines += protocol_section(run, config, out)
    lines += [ablation_section(ws, run, config) for run in runs]
    lines += [cold_section(ws, config, out), showcase.attention_table(runs[0].models)]
    lines += qualitative(ws, runs[0], config, out)
    write_text("\n".join(line for line in lines if line), out / "report.md")
    write_text(tables.csv_rows([(result, {"protocol": r.split}) for r in runs for result in r.results.values()]),
               out / "table1.csv")
    summary = {r.split: {"best": r.best(), "ndcg@10": r.results[r.best()].means["ndcg@10"]} for r in runs}
    write_text(json.dumps(summary, indent=2) + "\n", out / "summary.json")
    log.info("report written to %s", out)
    return out


def protocol_section(run: ProtocolRun, config: ReportConfig, out: Path) -> list[str]:
    """Table 1 under one protocol: the funnel, the table (the paper's beside leave-one-out), paired
    differences, coverage and diversity, and the bar charts."""
    ordered = list(run.results.values())
    data = run.bench.data
    title = PROTOCOL_TITLES.get(run.bench.split.config.method, run.split)
    lines = [f"## Table 1 under {title} (split `{run.split}`)\n",
             f"Catalogue: {data.n_items} movies ({run.bench.excluded_movies} of {run.bench.movies_total} left out: "
             f"catalogue `{run.bench.split.config.catalogue}`, missing-modality policy `{run.bench.policy}`); "
             f"{ordered[0].users.size} test users. How the ratings became this split:\n",
             funnel_markdown(run.bench.split.funnel), tables.markdown_table(ordered, tables.DEFAULT_COLUMNS)]
    if run.bench.split.config.method == "loo":
        lines.append(paper_rows(list(run.models)))
    lines += [paired_differences(run, config),
              "\nHit rate, MRR, coverage and intra-list genre diversity (means):\n",
              tables.markdown_table(ordered, [f"{m}@{k}" for m in ("hr", "mrr", "coverage", "diversity")
                                              for k in (10, 20)], with_ci=False)]
    for metric in ("recall", "ndcg"):
        name = f"{metric}_{run.split}.png"
        figures.bar_chart(ordered, metric, (5, 10, 20), out / name,
                          f"{metric.upper() if metric == 'ndcg' else 'Recall'}@K on test ({title})")
        lines.append(f"![{metric}@K, {run.split}]({name})")
    return lines


def paper_rows(names: list[str]) -> str:
    rows = [(label(n), MODELS[n].paper_row) for n in names if n in MODELS and MODELS[n].paper_row]
    if not rows:
        return ""
    return ("\nThe paper's Table 1 (ML-1M with real TMDB content, ResNet-50, leave-one-out), for reference. "
            "Different data and encoders: compare the ordering of models, not the numbers.\n\n"
            + tables.paper_table_markdown(rows, tables.DEFAULT_COLUMNS))


def paired_differences(run: ProtocolRun, config: ReportConfig) -> str:
    lines = []
    for ours, reference in PAIRS:
        if ours in run.results and reference in run.results:
            diff, (lo, hi), p_not_better = paired_bootstrap_difference(
                run.results[ours].per_user["ndcg@10"], run.results[reference].per_user["ndcg@10"],
                max(config.bootstrap, 1), 0.95, config.seed)
            lines.append(f"- {label(ours)} minus {label(reference)}, test NDCG@10: {diff:+.4f} [95% CI {lo:+.4f}, "
                         f"{hi:+.4f}]; share of resamples where it is not better: {p_not_better:.3f}.")
    return ("\nPaired differences (same users, same resamples):\n\n" + "\n".join(lines) + "\n") if lines else ""


def ablation_section(ws: Workspace, run: ProtocolRun, config: ReportConfig) -> str:
    """Each model trained with one part switched off (models/SPLIT/MODEL~SLUG), beside the full one."""
    found = sorted(p.name for p in (ws.models / run.split).glob(f"*{ABLATION_MARK}*") if (p / "model").is_dir())
    if not found:
        return ""
    eval_config = EvalConfig(bootstrap=config.bootstrap, seed=config.seed)
    lines, rows = [], []
    for full in sorted({name.split(ABLATION_MARK)[0] for name in found}):
        if full not in run.results:
            continue
        rows.append(run.results[full])
        for name in (n for n in found if n.split(ABLATION_MARK)[0] == full):
            model = load_recommender(ws.models / run.split / name / "model")
            check_catalogue(model, run.bench.data, ws.models / run.split / name)
            result = evaluate(model, run.bench.data, "test", eval_config, name=ablation_label(name))
            rows.append(result)
            diff, (lo, hi), _ = paired_bootstrap_difference(
                run.results[full].per_user["ndcg@10"], result.per_user["ndcg@10"], max(config.bootstrap, 1), 0.95,
                config.seed)
            lines.append(f"- {label(full)} minus {result.model}: {diff:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}]")
    if not rows:
        return ""
    return (f"\n## Ablations (split `{run.split}`): one part switched off at a time, same settings\n\n"
            + tables.markdown_table(rows, ["recall@10", "ndcg@10", "ndcg@20"])
            + "\nTest NDCG@10 of the full model minus each ablation (paired):\n\n" + "\n".join(lines) + "\n")


def ablation_label(name: str) -> str:
    full, slug = name.split(ABLATION_MARK, 1)
    from armor.models.graph_hybrid import ABLATIONS

    what = ABLATIONS[slug][0] if full == "armor-graph" and slug in ABLATIONS else slug
    return f"{label(full)}, {what}"


NO_CONTENT = " (no content: cannot place movies nobody rated)"


def cold_section(ws: Workspace, config: ReportConfig, out: Path) -> str:
    """Item cold start: each user ranks the whole catalogue; hits are held-out movies nobody rated in
    training or validation. Models without content cannot place them: they rank them last (below the
    random ranker, which is chance itself)."""
    if not config.cold_split or not (ws.split_dir(config.cold_split) / "split.json").exists():
        return ""
    run = run_protocol(ws, config.cold_split, config)
    cold = run.bench.split.cold_items
    for name, result in run.results.items():
        if name in MODELS and MODELS[name].family in ("interaction", "reference") and name != "random":
            result.model += NO_CONTENT
    write_text(tables.csv_table(list(run.results.values()), {"protocol": run.split}), out / "coldstart.csv")
    held = run.bench.split.config
    return (f"\n## Item cold start (split `{run.split}`): {cold.size} movies held out entirely\n\n"
            f"A seeded {held.cold_share:.0%} of the catalogue's movies has none of its ratings in train or "
            "validation; test asks each user to rank them among the whole catalogue "
            f"({run.bench.data.n_items} movies). Validation is built the same way on another "
            f"{held.cold_valid_share:.0%} ({run.bench.split.cold_valid_items.size} movies), so early stopping "
            "and tuning select for ranking unrated movies. Content models place them by their features.\n\n"
            + funnel_markdown(run.bench.split.funnel) + "\n"
            + tables.markdown_table(list(run.results.values()), ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]))


def qualitative(ws: Workspace, run: ProtocolRun, config: ReportConfig, out: Path) -> list[str]:
    """The top-5 figure and the t-SNE, from the first protocol's content models."""
    movies = pq.read_table(ws.movies).to_pandas().set_index("movie_id")
    data = run.bench.data
    labels = {n: label(n) for n in run.models}
    query = showcase.query_index(data, movies, config.query_title)
    features = None
    if any(MODELS[n].needs_features for n in run.models if n in MODELS):
        features = load_benchmark(ws.root, run.split).features
    return [showcase.top_k_figure(ws, data, movies, run.models, labels, query, out / "top5.png"),
            showcase.tsne_figure(features, data, movies, out / "tsne_text.png", config.seed)]


def best_models(out: Path) -> dict[str, Any]:
    """The best model of each protocol by test NDCG@10, as the report found it."""
    return json.loads((out / "summary.json").read_text())

