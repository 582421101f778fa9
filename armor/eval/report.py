"""The paper's Table 1 under leave-one-out and 80/10/10, an item cold-start table, and figures,
reproduced on a workspace, with test scored once per model.

Reads the models trained into WORKSPACE/models/SPLIT/ for each protocol's split, evaluates each
on the test part of its own split (so on exactly that split's catalogue), and writes a report
directory: report.md (definitions, the funnel of each split, Table 1 per protocol with the
paper's numbers beside the leave-one-out one, paired differences and all-pairs significance, the
tuning budget with training and scoring times, coverage and diversity, precision, MAP and popularity
bias, results by user activity, the cold-start table, the interpretability table), table1.csv (one
row per model and protocol), coldstart.csv, Recall/NDCG bar charts (the paper's Figures 3-5),
learning curves, one test user's top-5 under the best model of each family with posters (after
Figures 2, 6, 7), a t-SNE of the overview embeddings by primary genre (Figure 8), and
provenance.json (configuration, job, package versions, git commit).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from armor.config import EvalConfig
from armor.data.benchmark import Benchmark, load_benchmark
from armor.data.catalogue import funnel_markdown
from armor.data.splits import split_digest
from armor.errors import DataError
from armor.eval import beyond, claims, figures, provenance, showcase, significance, tables
from armor.eval.guard import check_model
from armor.eval.metrics import paired_bootstrap_difference
from armor.eval.protocol import EvaluationResult, evaluate, new_items
from armor.eval.report_config import ReportConfig
from armor.io import write_text
from armor.models.base import Recommender, load_recommender
from armor.models.registry import MODELS
from armor.workspace import ABLATION_MARK, METRICS_FILE, SEED_MARK, Workspace, base_name

log = logging.getLogger(__name__)

PROTOCOL_TITLES = {"loo": "leave-one-out (the paper's protocol)", "random": "random 80/10/10 per user",
                   "temporal": "temporal 80/10/10 per user", "cold": "item cold start"}
# (ours, reference): paired test differences reported wherever both models are present; ARMoR-Graph
# is also compared with the best other model by validation.
PAIRS: tuple[tuple[str, str], ...] = (("fused", "fused-paper"), ("armor-graph", "lightgcn"))
OURS = "armor-graph"

DEFINITIONS = """## Definitions

Full ranking: for each test user a model ranks every catalogue movie except the user's profile.
**Profile** (the paper's rule, §5): the training positives when scoring validation; every positive
except the test items (training + validation) when scoring test. Content models represent a user
by the mean of the profile's item vectors; ItemKNN, EASE and ALS fold the same profile in when
they score; BPR, LightGCN and ARMoR-Graph score with the user vectors they learned (after the refit
below, from training and validation positives).
**Recall@K** = test items in the top K / the user's number of test items. **NDCG@K**: binary gains,
DCG = sum over hits of 1 / log2(rank + 1), divided by the ideal DCG of min(|test|, K) hits.
**HR@K** = 1 if any test item is in the top K. **MRR@K** = 1 / rank of the first hit in the top K
(0 if none). **Coverage@K**: share of catalogue movies in at least one user's top K.
**Diversity@K**: mean pairwise genre Jaccard distance within a top-K list.
**Precision@K** = test items in the top K / K; **MAP@K** = the sum of Precision@j over the ranks j <= K
that hold a test item, divided by min(|test|, K) (RecBole's definitions). Popularity bias (Elliot's and
RecBole's measures), with a movie's popularity = its positives in the log behind the profile (training
+ validation at test): **ARP@K** = mean popularity of a user's top K; **Tail@K** = the share of the top
K outside the short head, the most popular movies that together hold 80% of those positives (Elliot's
rule); **Novelty@K** = mean -log2(popularity / all positives) over the top K, a movie nobody liked
counting as the least popular liked one (self-information, as Elliot's EFD without relevance or rank
weights); **Gini@K** = the Gini coefficient of how often each rankable movie appears in the users'
top-K lists (RecBole's GiniIndex: 0 when all appear equally often, towards 1 when a few take every
slot). **By user activity**: users grouped by the quartile of their test profile's size.
**All-pairs significance**: two-sided Wilcoxon signed-rank tests on per-user NDCG@10 for every pair
of models of a table, Holm-adjusted over the pairs. **Times**: training time is the search plus the
refit from metrics.json; scoring time is measured here, the time `score` takes per 1,000 test users
on this machine (shared with whatever else ran), excluding the ranking and metrics.
**Ties**: movies with equal scores are ordered by a seeded random key per (user, movie), so a tie
never rewards a model (a constant model scores at chance). **Leave-one-out**: each user's latest
positive by (timestamp, movie id) is test, the one before it validation.
Values are means over test users [95% percentile bootstrap CIs over users, paired across models];
they cover the sampling of users; a model trained with several seeds is scored per seed and its
per-user values are averaged over the seeds before the bootstrap, and its row also gives the mean
and standard deviation over seeds. **Same information at test**: once validation has chosen a
model's settings and epoch count, the model is refit on train + validation with them (no early
stopping), so every row has seen the same positives when it scores test (a row marked "fold-in
only" was trained on train alone). **Claims**: "A beats B" needs the paired bootstrap CI of the
seed-averaged per-user difference above 0 and the same sign in every seed. Every epoch,
hyperparameter and model was chosen on validation; test was scored once, here, and the best model
of each protocol is named by its validation NDCG@10.
"""


@dataclasses.dataclass
class ProtocolRun:
    """One split's benchmark, its trained models (first seed) and their test results: averaged over
    seeds (``results``) and per seed (``seeds``); ``meta`` is each model's metrics.json."""

    split: str
    bench: Benchmark
    models: dict[str, Recommender]
    results: dict[str, EvaluationResult]
    seeds: dict[str, list[EvaluationResult]]
    meta: dict[str, dict[str, Any]]

    def best(self) -> str | None:
        """The model with the best validation NDCG@10 (validation picks; test reports)."""
        return claims.best_by_validation(self.meta)


def label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def model_colours(names: list[str]) -> dict[str, Any]:
    """Each model's colour by label, fixed by its place in the registry so that it is the same in
    every figure and protocol; models outside the registry take the colours after."""
    known = list(MODELS) + [n for n in names if n not in MODELS]
    return {label(n): colour for n, colour in zip(known, figures.palette(len(known)))}


def trained_models(ws: Workspace, split: str, names: tuple[str, ...] | None) -> dict[str, list[Path]]:
    """Model name -> its directories, one per seed (NAME first, then NAME.seedS by seed), in the
    registry's order; ablations (NAME~SLUG) are left to ``ablation_section``."""
    directory = ws.models / split
    found = sorted(p for p in directory.iterdir() if (p / "model").is_dir() and ABLATION_MARK not in p.name
                   ) if directory.exists() else []
    by_name: dict[str, list[Path]] = {}
    for path in found:
        by_name.setdefault(base_name(path.name), []).append(path)
    for paths in by_name.values():  # NAME, then its seeds in numeric order
        paths.sort(key=lambda p: (p.name != base_name(p.name), int(p.name.rpartition(SEED_MARK)[2] or 0)
                                  if p.name != base_name(p.name) else 0))
    order = list(MODELS)
    chosen = list(names) if names else sorted(by_name, key=lambda n: order.index(n) if n in order else len(order))
    missing = [n for n in chosen if n not in by_name]
    if missing or not chosen:
        raise DataError(f"no trained model {missing or ''} for split {split!r}; run `armor train --split {split}` "
                        "first", path=directory)
    return {n: [p for p in by_name[n] if (p / "model").is_dir()] for n in chosen}


@dataclasses.dataclass
class Loaded:
    """A split's benchmark and its trained models (every seed), loaded once, scored under any setting."""

    split: str
    bench: Benchmark
    models: dict[str, list[Recommender]]
    meta: dict[str, dict[str, Any]]


def load_split_models(ws: Workspace, split: str, config: ReportConfig) -> Loaded:
    bench = load_benchmark(ws.root, split, needs_features=False)
    models: dict[str, list[Recommender]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name, paths in trained_models(ws, split, config.models).items():
        models[name] = []
        for path in paths:
            model = load_recommender(path / "model")
            check_model(model, bench.data, path, split)
            models[name].append(model)
        metrics = paths[0] / METRICS_FILE
        meta[name] = {**(json.loads(metrics.read_text()) if metrics.exists() else {}), "seeds": len(paths)}
    return Loaded(split, bench, models, meta)


def score(loaded: Loaded, config: ReportConfig, names: tuple[str, ...] | None = None, **setting: Any) -> ProtocolRun:
    """Test results of ``loaded``'s models (``names``, default all): each seed scored, then averaged;
    ``setting`` goes to ``evaluate`` (``candidates``, ``new``)."""
    per_seed = EvalConfig(bootstrap=0, seed=config.seed)
    chosen = [n for n in loaded.models if names is None or n in names]
    seeds = {n: [evaluate(m, loaded.bench.data, "test", per_seed, name=label(n), progress=True, **setting)
                 for m in loaded.models[n]] for n in chosen}
    results = {n: claims.seed_average(seeds[n], config.bootstrap, config.seed) for n in chosen}
    most = max((len(v) for v in seeds.values()), default=1)
    for n in chosen:  # a deterministic model (no seed setting) was fitted once: the same in every seed
        if loaded.meta[n].get("deterministic") and len(seeds[n]) == 1:
            seeds[n] = seeds[n] * most
    return ProtocolRun(loaded.split, loaded.bench, {n: loaded.models[n][0] for n in chosen}, results, seeds,
                       {n: loaded.meta[n] for n in chosen})


def run_protocol(ws: Workspace, split: str, config: ReportConfig) -> ProtocolRun:
    return score(load_split_models(ws, split, config), config)


def make_report(workspace: str | Path, config: ReportConfig | None = None, out: Path | None = None,
                job: Any = None) -> Path:
    """Write the report directory (see the module docstring) with ``config`` (default ReportConfig());
    returns it. ``job`` (the demo's or benchmark's, when the caller has one) goes into provenance.json."""
    config = config or ReportConfig()
    ws = Workspace(workspace)
    out = Path(out or ws.report)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_protocol(ws, split, config) for split in config.protocols]
    record = provenance.provenance(config, ws.root, job, {r.split: split_digest(r.bench.data) for r in runs})
    write_text(json.dumps(record, indent=2) + "\n", out / provenance.PROVENANCE_FILE)
    lines = [config.header or f"# ARMoR report: {ws.root.name}\n", provenance.provenance_line(record), DEFINITIONS,
             seeds_note(runs)]
    for run in runs:
        lines += protocol_section(run, config, out)
    lines += [ablation_section(ws, run, config) for run in runs]
    lines += [cold_section(ws, config, out), showcase.attention_table(runs[0].models)]
    lines += qualitative(ws, runs, config, out)
    write_text("\n".join(line for line in lines if line), out / "report.md")
    write_text(tables.csv_rows([(result, {"protocol": r.split}) for r in runs for result in r.results.values()]),
               out / "table1.csv")
    write_text(json.dumps({r.split: best_summary(r) for r in runs if r.best()}, indent=2) + "\n",
               out / "summary.json")
    log.info("report written to %s", out)
    return out


def protocol_section(run: ProtocolRun, config: ReportConfig, out: Path) -> list[str]:
    """Table 1 under one protocol: the funnel, the table (the paper's beside leave-one-out), paired
    differences and all-pairs tests, the tuning budget with times, beyond-accuracy metrics, results by
    user activity, and the figures."""
    ordered = list(run.results.values())
    data = run.bench.data
    title = PROTOCOL_TITLES.get(run.bench.split.config.method, run.split)
    labels = {n: label(n) for n in run.results}
    lines = [f"## Table 1 under {title} (split `{run.split}`)\n",
             f"Catalogue: {data.n_items} movies ({run.bench.excluded_movies} of {run.bench.movies_total} left out: "
             f"catalogue `{run.bench.split.config.catalogue}`, missing-modality policy `{run.bench.policy}`); "
             f"{ordered[0].users.size} test users. How the ratings became this split:\n",
             funnel_markdown(run.bench.split.funnel), tables.markdown_table(ordered, tables.DEFAULT_COLUMNS)]
    if run.bench.split.config.method == "loo":
        lines.append(paper_rows(list(run.models)))
    lines += [best_line(run), seed_table(run), paired_differences(run, config),
              significance.matrix_markdown(significance.all_pairs(
                  {n: r.per_user[claims.CLAIM_METRIC] for n, r in run.results.items()}), labels,
                  seeds=fewest_seeds(run)),
              budget_section(run),
              "\nHit rate, MRR, coverage and intra-list genre diversity (means):\n",
              tables.markdown_table(ordered, [f"{m}@{k}" for m in ("hr", "mrr", "coverage", "diversity")
                                              for k in (10, 20)], with_ci=False),
              beyond.beyond_accuracy(ordered),
              beyond.activity_table(run.results, labels, data, config.bootstrap, config.seed)]
    colours = model_colours(list(run.results))
    for metric in ("recall", "ndcg"):
        name = f"{metric}_{run.split}.png"
        figures.bar_chart(ordered, metric, (5, 10, 20), out / name,
                          f"{metric.upper() if metric == 'ndcg' else 'Recall'}@K on test ({title})", colours)
        lines.append(f"![{metric}@K, {run.split}]({name})")
    lines.append(beyond.learning_section(run.meta, labels, run.split, out, colours))
    return lines


def paper_rows(names: list[str]) -> str:
    rows = [(label(n), MODELS[n].paper_row) for n in names if n in MODELS and MODELS[n].paper_row]
    if not rows:
        return ""
    return ("\nThe paper's Table 1 (ML-1M with real TMDB content, ResNet-50, leave-one-out), for reference. "
            "Different data and encoders: compare the ordering of models, not the numbers.\n\n"
            + tables.paper_table_markdown(rows, tables.DEFAULT_COLUMNS))


def comparisons(run: ProtocolRun, config: ReportConfig) -> list[claims.Comparison]:
    """The fixed pairs, and ARMoR-Graph against the best other model by validation."""
    pairs = [pair for pair in PAIRS if all(name in run.results for name in pair)]
    others = {n: m for n, m in run.meta.items() if n != OURS}
    rival = claims.best_by_validation(others)
    if OURS in run.results and rival is not None and (OURS, rival) not in pairs:
        pairs.append((OURS, rival))
    return [claims.compare(run.seeds[a], run.seeds[b], config.bootstrap, config.seed) for a, b in pairs]


def paired_differences(run: ProtocolRun, config: ReportConfig) -> str:
    found = comparisons(run, config)
    return ("\nPaired differences (same users, same resamples; per seed: seed i of each model):\n\n"
            + claims.comparison_lines(found)) if found else ""


def best_summary(run: ProtocolRun) -> dict[str, Any]:
    best = run.best()
    assert best is not None
    return {"best": best, "label": label(best), "valid_ndcg@10": run.meta[best]["valid"]["ndcg@10"],
            "test_ndcg@10": run.results[best].means["ndcg@10"]}


def best_line(run: ProtocolRun) -> str:
    if run.best() is None:
        return ""
    best = best_summary(run)
    return (f"\nBest by validation NDCG@10: **{best['label']}** (validation {best['valid_ndcg@10']:.4f}; "
            f"test {best['test_ndcg@10']:.4f}).\n")


def seed_table(run: ProtocolRun) -> str:
    lines = ["\nTest NDCG@10 and Recall@10 over training seeds (mean ± standard deviation of the seeds' means):\n",
             "| Model | seeds | N@10 | R@10 |", "|---|---:|---:|---:|"]
    for name, results in run.seeds.items():
        cells = [claims.seed_spread(results, metric) for metric in ("ndcg@10", "recall@10")]
        count = "deterministic" if run.meta[name].get("deterministic") else str(len(results))
        lines.append(f"| {label(name)} | {count} | " + " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in cells) + " |")
    return "\n".join(lines) + "\n"


def budget_section(run: ProtocolRun) -> str:
    """The tuning-budget table under a caption that says how big the search was."""
    inference = {n: claims.inference_per_thousand(r) for n, r in run.results.items()}
    rows = claims.budget_rows(run.meta, {n: label(n) for n in run.meta}, inference)
    if any(row["trials"] for row in rows if not row["sweep"]):
        caption = ("every trainable model: the same number of validation trials of its registry search space, "
                   "then refit; a trial whose best validation NDCG@10 fell below the median of the earlier trials' "
                   "at the same epoch was stopped early, by the same rule for every model")
    else:
        caption = ("no search: every trainable model at its registry defaults, early-stopped on validation, then "
                   "refit; `make benchmark` gives every model the same search")
    swept = [row["label"] for row in rows if row["sweep"]]
    if swept:
        caption += f"; {', '.join(swept)}: chosen by its Ray Tune sweep instead"
    return f"\nTuning budget ({caption}):\n\n{claims.budget_markdown(rows)}"


def fewest_seeds(run: ProtocolRun) -> int:
    """The fewest training seeds behind a seeded row (deterministic rows need only one)."""
    counts = [len(r) for name, r in run.seeds.items() if not run.meta.get(name, {}).get("deterministic")]
    return min(counts, default=1)


def seeds_note(runs: list[ProtocolRun]) -> str:
    counts = sorted({len(r) for run in runs for r in run.seeds.values()})
    if counts and counts[0] < 2:
        return ("**One training seed.** Some rows were trained with a single seed: their differences are not "
                "claims (a gap smaller than the seed-to-seed spread, about 0.01 NDCG@10 for content models here, "
                "means nothing). `make benchmark` trains every model with three seeds.\n")
    return f"Every row was trained with {counts[0]} or more seeds.\n" if counts else ""


def ablation_section(ws: Workspace, run: ProtocolRun, config: ReportConfig) -> str:
    """Each model trained with one part switched off (models/SPLIT/MODEL~SLUG), beside the full one
    trained with the same (first) seed."""
    found = sorted(p.name for p in (ws.models / run.split).glob(f"*{ABLATION_MARK}*") if (p / "model").is_dir())
    eval_config = EvalConfig(bootstrap=config.bootstrap, seed=config.seed)
    lines, rows = [], []
    for full in sorted({name.split(ABLATION_MARK)[0] for name in found} & set(run.seeds)):
        reference = run.seeds[full][0]
        rows.append(claims.seed_average([reference], config.bootstrap, config.seed))  # with its CI
        for name in (n for n in found if n.split(ABLATION_MARK)[0] == full):
            model = load_recommender(ws.models / run.split / name / "model")
            check_model(model, run.bench.data, ws.models / run.split / name, run.split)
            result = evaluate(model, run.bench.data, "test", eval_config, name=ablation_label(name))
            rows.append(result)
            diff, (lo, hi), _ = paired_bootstrap_difference(
                reference.per_user["ndcg@10"], result.per_user["ndcg@10"], max(config.bootstrap, 1), 0.95, config.seed)
            lines.append(f"- {label(full)} minus {result.model}: {diff:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}]")
    if not lines:
        return ""
    return (f"\n## Ablations (split `{run.split}`): one part switched off at a time, same settings, same seed\n\n"
            + tables.markdown_table(rows, ["recall@10", "ndcg@10", "ndcg@20"])
            + "\nTest NDCG@10 of the full model minus each ablation (paired, one seed):\n\n" + "\n".join(lines) + "\n")


# Ablations every model can have besides its own (armor.models.graph_hybrid.ABLATIONS).
COMMON_ABLATIONS = {"fold-in": "fold-in only: trained on train; validation positives only in its test-time profile"}


def ablation_label(name: str) -> str:
    full, slug = name.split(ABLATION_MARK, 1)
    from armor.models.graph_hybrid import ABLATIONS

    what = COMMON_ABLATIONS.get(slug) or (ABLATIONS[slug][0] if full == "armor-graph" and slug in ABLATIONS else slug)
    return f"{label(full)}, {what}"


NO_CONTENT = " (no content)"
COLD_COLUMNS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


def cold_section(ws: Workspace, config: ReportConfig, out: Path) -> str:
    """Item cold start in its two settings. A movie is new when the log behind the test profile
    (train + validation) has no positive for it, decided from that matrix alone. **cold**: each user
    ranks only the new movies; **all**: the whole catalogue, with each model's share of top-10 slots
    that go to new movies. Reference rows: random, and in **all** the new-first ranker (which knows
    only which movies are new)."""
    if not config.cold_split or not (ws.split_dir(config.cold_split) / "split.json").exists():
        return ""
    loaded = load_split_models(ws, config.cold_split, config)
    new = new_items(loaded.bench.data, "test")
    cold = score(loaded, config, tuple(n for n in loaded.models if n != "new-first"), candidates=new)
    everything = score(loaded, config, new=new)
    for run in (cold, everything):
        for name, result in run.results.items():
            if name in MODELS and MODELS[name].family == "interaction":
                result.model += NO_CONTENT
    write_text(tables.csv_rows([(r, {"protocol": loaded.split, "setting": setting})
                                for setting, run in (("cold", cold), ("all", everything))
                                for r in run.results.values()]), out / "coldstart.csv")
    held = loaded.bench.split.config
    return (f"\n## Item cold start (split `{loaded.split}`): {loaded.bench.split.cold_items.size} movies held out "
            f"entirely\n\nA seeded {held.cold_share:.0%} of the catalogue's movies (drawn among all rated movies, "
            "liked or not) has none of its ratings in train or validation; another "
            f"{held.cold_valid_share:.0%} ({loaded.bench.split.cold_valid_items.size} movies) is held out the same "
            "way as the validation part, so early stopping and tuning select for ranking movies nobody rated. "
            "No model is told which movies were held out: a movie is **new** when the log a model learned from "
            f"has no positive for it (at test time, train + validation): {new.size} of {loaded.bench.data.n_items} "
            "movies here, the held-out ones and every movie nobody liked. Models marked \"no content\" learn "
            "from ratings alone.\n\n" + funnel_markdown(loaded.bench.split.funnel)
            + f"\n**cold** setting: each user ranks only the {new.size} new movies.\n\n"
            + tables.markdown_table(list(cold.results.values()), COLD_COLUMNS) + claims_block(cold, config)
            + "\n**all** setting: each user ranks the whole catalogue; new@10 is the share of the top-10 slots "
              "that go to new movies.\n\n"
            + tables.markdown_table(list(everything.results.values()), [*COLD_COLUMNS, "new@10"])
            + claims_block(everything, config))


def claims_block(run: ProtocolRun, config: ReportConfig) -> str:
    """ARMoR-Graph against every other model of a cold-start setting (paired, per seed)."""
    if OURS not in run.seeds:
        return ""
    found = [claims.compare(run.seeds[OURS], run.seeds[n], config.bootstrap, config.seed)
             for n in run.seeds if n != OURS]
    return "\n" + claims.comparison_lines(found)


def qualitative(ws: Workspace, runs: list[ProtocolRun], config: ReportConfig, out: Path) -> list[str]:
    """One test user's top-5 under each family's best model, from the protocol with the most held-out
    movies per user (so that hits can show), and the t-SNE of the first protocol's overview features."""
    movies = pq.read_table(ws.movies).to_pandas().set_index("movie_id")
    shown = max(runs, key=lambda r: r.bench.data.test.nnz / max(r.bench.data.n_users, 1))
    families = claims.best_per_family(shown.meta, {n: MODELS[n].family for n in shown.models if n in MODELS})
    query = showcase.query_index(shown.bench.data, movies, config.query_title)
    first = runs[0]
    features = None
    if any(MODELS[n].needs_features for n in first.models if n in MODELS):
        features = load_benchmark(ws.root, first.split).features
    return [showcase.top_k_figure(ws, shown.bench.data, movies, shown.models, {n: label(n) for n in shown.models},
                                  families, query, out / "top5.png", config.seed, shown.split),
            showcase.tsne_figure(features, first.bench.data, movies, out / "tsne_text.png", config.seed,
                                 showcase.standin_overviews(ws))]


def best_models(out: Path) -> dict[str, Any]:
    """The best model of each protocol by validation NDCG@10, with its test score, as the report found it."""
    return json.loads((out / "summary.json").read_text())

