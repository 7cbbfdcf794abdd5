"""``text-features report``: how good the clusters are, in numbers and pictures.

Reads the published mart ``posts_features``, the staged posts and what the
text-feature step keeps (run log, stored fit, embedding cache), and writes to
``--out`` (default ``target/quality/``):

``report.json``
    scores for the configured ``n_clusters`` and for k = number of topics:
    normalised mutual information, adjusted Rand index and purity against
    ``topic``, beside the same scores of a TF-IDF baseline computed here on
    the same posts. Top-level ``nmi``, ``ari``, ``purity`` and ``baseline_*``
    are those at k = number of topics, for tools; then one entry per cluster.
``report.md``
    the same for a person, with the pictures inline.
``cluster_sizes.png``, ``topic_cluster_heatmap.png``, ``posts_map.png``
    posts per cluster; posts per topic and cluster; a 2-D map of the posts
    (first two principal components of the space the posts were clustered in) coloured by
    cluster and marked by topic.

The clusters scored at the configured ``n_clusters`` are the mart's own. For
k = number of topics the report fits centring, SVD and KMeans again on the
cached vectors of the same posts (:func:`python_udf.clustering.fit_clusters`,
the pipeline's code and settings but ``n_clusters``); nothing is embedded.

Staged posts, run log, fits and cache live in the local DuckDB file on every
target; with ``--target postgres`` the mart is read from Postgres, attached
read-only the way the dbt plugin attaches it (POSTGRES_* variables).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from .clustering import ClusterFit, fit_and_place
from .logs import get_logger
from .quality import (
    BaselineSettings,
    baseline_tfidf,
    cluster_tfidf,
    clustering_scores,
    describe_clusters,
    project_2d,
    topic_cluster_counts,
    topic_mask,
)
from .settings import FeatureSettings
from .state import DEFAULT_STATE_SCHEMA
from .text import text_hash

log = get_logger()

DEFAULT_OUT = Path("target") / "quality"
PICTURES = {
    "cluster_sizes": "cluster_sizes.png",
    "topic_cluster_heatmap": "topic_cluster_heatmap.png",
    "posts_map": "posts_map.png",
}
# Above this many posts the map shows a seeded sample, so the PNG stays readable.
MAP_MAX_POINTS = 20_000
_DISTANCE = re.compile(r"^distance_to_cluster_(\d+)$")


class ReportError(RuntimeError):
    """The report cannot be made from what the warehouse holds; the message says why."""


# ---------------------------------------------------------------- command line


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="score the clusters against topics and draw them (quality report)",
        description=(
            "Read posts_features and the staged posts, score the clusters against "
            "topic beside a TF-IDF baseline, and write report.json, report.md and "
            "PNG pictures."
        ),
    )
    parser.add_argument("--target", choices=("dev", "postgres"), default="dev",
                        help="where the mart was published (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for the report files (default: %(default)s)")
    parser.add_argument("--db", type=Path, default=None,
                        help="local DuckDB file (default: $POSTS_DUCKDB_PATH, else posts_features.duckdb)")
    parser.add_argument("--schema", default=None,
                        help="schema of the published mart (default: main on dev; on postgres "
                             "public, the default of var postgres_schema: pass the same value)")
    parser.add_argument("--local-schema", default="main",
                        help="schema of stg_posts in the local file (default: %(default)s)")
    parser.add_argument("--state-schema", default=DEFAULT_STATE_SCHEMA,
                        help="schema of the step's state tables (default: %(default)s)")
    parser.add_argument("--top-terms", type=int, default=10, help="terms shown per cluster (default: %(default)s)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    db = args.db or Path(os.environ.get("POSTS_DUCKDB_PATH") or "posts_features.duckdb")
    schema = args.schema or ("main" if args.target == "dev" else "public")
    sources = ReportSources(
        db=db,
        target=args.target,
        mart_schema=schema,
        local_schema=args.local_schema,
        state_schema=args.state_schema,
    )
    if args.top_terms < 1:
        raise ValueError(f"--top-terms={args.top_terms} must be at least 1")
    report = write_report(sources, args.out, top_terms=args.top_terms)
    headline = report["scores_at_topics"]
    if headline:
        print(
            f"k={headline['k']}: NMI {headline['features']['nmi']:.3f} "
            f"(baseline {headline['baseline']['nmi']:.3f}), ARI {headline['features']['ari']:.3f} "
            f"(baseline {headline['baseline']['ari']:.3f})"
        )
    print(f"wrote {', '.join(report['files'])} to {args.out}")
    return 0


# ---------------------------------------------------------------- read


@dataclass(frozen=True)
class ReportSources:
    """Where the report reads from."""

    db: Path
    target: str = "dev"
    mart_schema: str = "main"
    local_schema: str = "main"
    state_schema: str = DEFAULT_STATE_SCHEMA

    def mart_relation(self) -> str:
        database = "pg." if self.target == "postgres" else ""
        return f'{database}"{self.mart_schema}".posts_features'


@dataclass
class ReportInputs:
    """Everything the report is computed from, one row per post in ``posts``."""

    posts: pd.DataFrame  # post_id, text, topic, text_cluster (mart), sorted by post_id
    distances: np.ndarray  # posts x n_clusters, from the mart
    vectors: np.ndarray  # posts x width, from the embedding cache
    fit: ClusterFit
    settings: FeatureSettings
    run: dict


def connect(sources: ReportSources) -> duckdb.DuckDBPyConnection:
    """Open the local file read-only, with Postgres attached read-only on that target."""
    if not sources.db.exists():
        raise ReportError(
            f"local DuckDB file {sources.db} does not exist: build first (dbt build), "
            "or point --db / POSTS_DUCKDB_PATH at the file dbt wrote"
        )
    try:
        con = duckdb.connect(str(sources.db), read_only=True)
    except duckdb.Error as exc:
        raise ReportError(f"cannot open {sources.db} read-only (is a dbt build still running?): {exc}") from None
    if sources.target == "postgres":
        from .pg_connection import PostgresSettings, attach_postgres

        attach_postgres(con, PostgresSettings.from_env(), "pg", read_only=True)
    return con


def read_inputs(con: duckdb.DuckDBPyConnection, sources: ReportSources) -> ReportInputs:
    mart_relation = sources.mart_relation()
    # text and topic come from stg_posts, in the local file on every target
    mart = _query(con, f"select * exclude (text, topic) from {mart_relation}", f"the mart {mart_relation}")
    distance_columns = sorted(
        (c for c in mart.columns if _DISTANCE.match(c)), key=lambda c: int(_DISTANCE.match(c).group(1))
    )
    expected = [f"distance_to_cluster_{c}" for c in range(len(distance_columns))]
    if not distance_columns or distance_columns != expected:
        raise ReportError(f"{mart_relation} should have columns distance_to_cluster_0..k-1; found {distance_columns}")
    staged_relation = f'"{sources.local_schema}".stg_posts'
    staged = _query(con, f"select post_id, text, topic from {staged_relation}", f"the staged posts {staged_relation}")

    only_mart = len(set(mart["post_id"]) - set(staged["post_id"]))
    only_staged = len(set(staged["post_id"]) - set(mart["post_id"]))
    if only_mart or only_staged:
        raise ReportError(
            f"{mart_relation} ({len(mart)} posts) and {staged_relation} ({len(staged)} posts) "
            f"disagree: {only_mart} post(s) only in the mart, {only_staged} only staged; "
            "rebuild (dbt build) so both come from the same posts"
        )
    posts = staged.merge(mart[["post_id", "text_cluster", "fit_id", *distance_columns]], on="post_id")
    posts = posts.sort_values("post_id", kind="stable").reset_index(drop=True)

    fit_ids = sorted(posts["fit_id"].dropna().unique())
    if len(fit_ids) != 1:
        raise ReportError(f"{mart_relation} should have been placed with one fit; it names {len(fit_ids)}: {fit_ids[:5]}")
    fit_id = fit_ids[0]
    state = sources.state_schema
    run = _query(
        con,
        f"select * from {state}.feature_runs_log where fit_id = ? order by finished_at desc limit 1",
        "the run log",
        [fit_id],
    )
    if run.empty:
        raise ReportError(f"no run in {state}.feature_runs_log used fit {fit_id}, the fit of {mart_relation}")
    run_record = run.iloc[0].to_dict()
    payload = con.execute(f"select payload from {state}.cluster_fits where fit_id = ?", [fit_id]).fetchone()
    if payload is None:
        raise ReportError(f"fit {fit_id} of {mart_relation} is missing from {state}.cluster_fits")
    fit = ClusterFit.from_bytes(bytes(payload[0]))
    if fit.n_clusters != len(distance_columns):
        raise ReportError(
            f"fit {fit_id} has {fit.n_clusters} clusters but {mart_relation} has "
            f"{len(distance_columns)} distance columns"
        )
    settings = FeatureSettings.from_mapping(json.loads(run_record["settings_json"]))
    vectors = _cached_vectors(con, state, run_record["embedding_key"], posts["text"].tolist())
    return ReportInputs(
        posts=posts[["post_id", "text", "topic", "text_cluster"]],
        distances=posts[distance_columns].to_numpy(dtype=np.float64),
        vectors=vectors,
        fit=fit,
        settings=settings,
        run={k: _plain(v) for k, v in run_record.items()},
    )


def _cached_vectors(con, state: str, key: str, texts: list[str]) -> np.ndarray:
    hashes = [text_hash(t) for t in texts]
    wanted = pd.DataFrame({"text_hash": sorted(set(hashes))})
    cur = con.cursor()
    cur.register("wanted_hashes", wanted)
    table = cur.execute(
        f"""
        select c.text_hash, c.vector
        from {state}.embedding_cache as c
        join wanted_hashes as w using (text_hash)
        where c.embedding_key = ?""",
        [key],
    ).fetch_arrow_table()
    cur.close()
    row_of = {h: i for i, h in enumerate(table.column("text_hash").to_pylist())}
    missing = [h for h in wanted["text_hash"] if h not in row_of]
    if missing:
        raise ReportError(
            f"{len(missing)} of {len(wanted)} distinct texts have no cached vector under "
            f"embedding key {key!r} (first text_hash {missing[0]}); rebuild (dbt build) to embed them"
        )
    vectors = table.column("vector").combine_chunks()
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), -1)
    return np.ascontiguousarray(matrix[[row_of[h] for h in hashes]], dtype=np.float32)


def _query(con, sql: str, what: str, params=None) -> pd.DataFrame:
    try:
        return con.execute(sql, params or []).df()
    except duckdb.CatalogException as exc:
        raise ReportError(f"cannot read {what}: {exc}. Build first with dbt build") from None


def _plain(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


# ---------------------------------------------------------------- compute


def score_at(inputs: ReportInputs, tfidf: tuple, k: int, labels: np.ndarray, source: str) -> dict:
    """Scores of ``labels`` and of the baseline at the same k, on the same posts.

    ``tfidf`` is :func:`python_udf.quality.baseline_tfidf` of the posts' texts.
    """
    settings = inputs.settings
    started = time.perf_counter()
    matrix, min_df = tfidf
    baseline, baseline_info = cluster_tfidf(
        matrix,
        n_components=settings.n_components,
        n_clusters=k,
        random_state=settings.random_state,
        n_init=settings.kmeans_n_init,
    )
    topics = inputs.posts["topic"].tolist()
    entry = {
        "k": k,
        "features_from": source,
        "features": clustering_scores(topics, labels).as_dict(),
        "baseline": clustering_scores(topics, baseline).as_dict(),
        "baseline_settings": {"method": "tfidf_svd_l2_kmeans", **asdict(BaselineSettings()), "min_df": min_df,
                              **baseline_info},
    }
    log.info(
        "k=%d: NMI %.3f (baseline %.3f), ARI %.3f (baseline %.3f) on %d posts in %.1fs",
        k, entry["features"]["nmi"], entry["baseline"]["nmi"], entry["features"]["ari"],
        entry["baseline"]["ari"], entry["features"]["posts_scored"], time.perf_counter() - started,
    )
    return entry


def compute_report(inputs: ReportInputs, *, top_terms: int = 10) -> dict:
    posts, settings = inputs.posts, inputs.settings
    topics = posts["topic"].tolist()
    labelled = topic_mask(topics)
    topic_names = sorted({str(t).strip() for t, has in zip(topics, labelled) if has})
    n_clusters = inputs.fit.n_clusters
    mart_labels = posts["text_cluster"].to_numpy()
    texts = posts["text"].tolist()
    placed_again, _ = inputs.fit.place(inputs.vectors, texts)

    scores = []
    if topic_names:
        tfidf = baseline_tfidf(posts["text"].tolist())
        scores.append(score_at(inputs, tfidf, n_clusters, mart_labels, "posts_features.text_cluster"))
        k = len(topic_names)
        if k != n_clusters and 2 <= k <= len(posts):
            _, placed = fit_and_place(
                inputs.vectors, replace(settings, n_clusters=k), embedding_key=inputs.run["embedding_key"],
                texts=texts,
            )
            labels = placed.labels
            scores.append(
                score_at(inputs, tfidf, k, labels, f"fit_clusters on the cached vectors with n_clusters={k}")
            )
    at_topics = next((s for s in scores if s["k"] == len(topic_names)), None)
    clusters = describe_clusters(
        posts["post_id"].to_numpy(), posts["text"].tolist(), topics, mart_labels, inputs.distances, top_n=top_terms
    )
    return {
        "posts": len(posts),
        "posts_with_topic": int(labelled.sum()),
        "posts_without_topic": int((~labelled).sum()),
        "topics": topic_names,
        "n_topics": len(topic_names),
        "n_clusters": n_clusters,
        # at k = number of topics, for tools; null without topics
        "nmi": at_topics["features"]["nmi"] if at_topics else None,
        "ari": at_topics["features"]["ari"] if at_topics else None,
        "purity": at_topics["features"]["purity"] if at_topics else None,
        "baseline_nmi": at_topics["baseline"]["nmi"] if at_topics else None,
        "baseline_ari": at_topics["baseline"]["ari"] if at_topics else None,
        "baseline_purity": at_topics["baseline"]["purity"] if at_topics else None,
        "scores": scores,
        "scores_at_topics": at_topics,
        # the stored fit must reproduce the mart; anything below 1 means they drifted apart
        "mart_clusters_reproduced": float(np.mean(placed_again == mart_labels)),
        "clusters": [{k: _plain(v) for k, v in row.items()} for row in clusters.to_dict("records")],
        "topic_cluster_counts": {
            topic: [int(x) for x in row] for topic, row in topic_cluster_counts(topics, mart_labels, n_clusters).iterrows()
        },
    }


# ---------------------------------------------------------------- write


def write_report(sources: ReportSources, out: Path, *, top_terms: int = 10) -> dict:
    """Read, compute, draw and write; returns what report.json holds."""
    con = connect(sources)
    try:
        inputs = read_inputs(con, sources)
    finally:
        con.close()
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "target": sources.target,
            "local_db": str(sources.db),
            "mart": sources.mart_relation(),
            "run_id": inputs.run["run_id"],
            "fit_id": inputs.fit.fit_id,
            "text_model": inputs.run["text_model"],
            "embedding_key": inputs.run["embedding_key"],
            "settings": inputs.settings.as_dict(),
        },
        **compute_report(inputs, top_terms=top_terms),
    }
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = ["report.json", "report.md", *draw_pictures(inputs, report, out)]
    _write_atomically(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write_atomically(out / "report.md", render_markdown(report))
    log.info("quality report for %d posts written to %s", report["posts"], out)
    return report


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def draw_pictures(inputs: ReportInputs, report: dict, out: Path) -> list[str]:
    """Write the PNGs; returns their file names (no heatmap without topics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    clusters = pd.DataFrame(report["clusters"])
    n_clusters = report["n_clusters"]
    colours = _cluster_colours(n_clusters)

    # ---------- sizes: one bar per cluster, named by its first terms
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.38 * n_clusters + 1.5)))
    names = [
        f"{c}: {', '.join((terms or '').split(', ')[:3])}" for c, terms in zip(clusters["text_cluster"], clusters["top_terms"])
    ]
    ax.barh(range(n_clusters), clusters["n_posts"], color=colours)
    ax.set_yticks(range(n_clusters), labels=names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("posts")
    ax.set_title(f"Posts per cluster ({report['posts']} posts, {n_clusters} clusters)\n"
                 "bar label: dominant topic and its share")
    for cluster, size, topic, share in zip(
        clusters["text_cluster"], clusters["n_posts"], clusters["dominant_topic"], clusters["dominant_topic_share"]
    ):
        if topic:
            ax.annotate(f"{topic} {100 * share:.0f}%", (size, cluster), va="center", fontsize=7,
                        xytext=(3, 0), textcoords="offset points")
    ax.margins(x=0.18)
    written.append(_save(fig, out / PICTURES["cluster_sizes"]))

    # ---------- topic x cluster
    counts = pd.DataFrame(report["topic_cluster_counts"]).T
    if not counts.empty:
        # share of each cluster's labelled posts: a pure cluster is one dark cell in its column
        shares = counts.div(counts.sum(axis=0).replace(0, 1), axis=1)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * n_clusters + 3), max(3.0, 0.5 * len(counts) + 1.5)))
        image = ax.imshow(shares.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(n_clusters), labels=[str(c) for c in range(n_clusters)])
        ax.set_yticks(range(len(counts)), labels=counts.index)
        ax.set_xlabel("cluster")
        ax.set_ylabel("topic")
        ax.set_title("Topics of each cluster's posts (colour: share of the cluster, number: posts)")
        for (row, col), value in np.ndenumerate(counts.to_numpy()):
            if value:
                ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                        color="white" if shares.iat[row, col] > 0.5 else "black")
        fig.colorbar(image, ax=ax, label="share of the cluster's posts with a topic")
        written.append(_save(fig, out / PICTURES["topic_cluster_heatmap"]))

    # ---------- map
    reduced = inputs.fit.features(inputs.vectors, inputs.posts["text"].tolist())
    xy = project_2d(reduced, random_state=inputs.settings.random_state)
    labels = inputs.posts["text_cluster"].to_numpy()
    topics = np.array([str(t).strip() if has else "" for t, has in
                       zip(inputs.posts["topic"], topic_mask(inputs.posts["topic"].tolist()))], dtype=object)
    shown = np.arange(len(xy))
    if len(shown) > MAP_MAX_POINTS:
        rng = np.random.default_rng(inputs.settings.random_state)
        shown = np.sort(rng.choice(len(shown), MAP_MAX_POINTS, replace=False))
    fig, ax = plt.subplots(figsize=(9, 7))
    markers = "os^Dv<>PX*hp8"
    for index, topic in enumerate(report["topics"] + [""]):
        rows = shown[topics[shown] == topic]
        if not len(rows):
            continue
        ax.scatter(xy[rows, 0], xy[rows, 1], c=[colours[c] for c in labels[rows]],
                   marker=markers[index % len(markers)] if topic else ".", s=14, alpha=0.75, linewidths=0,
                   label=topic or "no topic")
    for cluster in range(n_clusters):
        members = shown[labels[shown] == cluster]
        if len(members):
            centre = xy[members].mean(axis=0)
            ax.annotate(str(cluster), centre, ha="center", va="center", fontsize=9, weight="bold",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colours[cluster], "alpha": 0.8})
    legend = ax.legend(title="marker: topic", fontsize=8, markerscale=1.5, loc="best")
    for handle in legend.legend_handles:
        handle.set_color("grey")
    sample_note = f", {len(shown)} of {len(xy)} posts shown" if len(shown) < len(xy) else ""
    ax.set_title(f"Posts on the first two principal components of the clustering space{sample_note}\n"
                 "colour and boxed number: cluster")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    written.append(_save(fig, out / PICTURES["posts_map"]))
    return written


def _cluster_colours(n_clusters: int) -> list:
    import matplotlib

    palette = matplotlib.colormaps["tab20" if n_clusters > 10 else "tab10"]
    if n_clusters <= palette.N:
        return [palette(i) for i in range(n_clusters)]
    wheel = matplotlib.colormaps["hsv"]
    return [wheel(i / n_clusters) for i in range(n_clusters)]


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def render_markdown(report: dict) -> str:
    source = report["source"]
    settings = source["settings"]
    lines = [
        "# Quality report",
        "",
        f"Generated {report['generated_at']} from `{source['mart']}` "
        f"({source['target']} target, local file `{source['local_db']}`), "
        f"run `{source['run_id']}`, fit `{source['fit_id']}`.",
        "",
        f"Model `{source['text_model']}`, pooling `{settings['pooling']}`, max_length "
        f"{settings['max_length']}, long_text `{settings['long_text']}`, normalize "
        f"{str(settings['normalize']).lower()}, tfidf_weight {settings.get('tfidf_weight', 0.0):g}, "
        f"n_components {settings['n_components']}, "
        f"n_clusters {settings['n_clusters']}, random_state {settings['random_state']}.",
        "",
        f"{report['posts']} posts; {report['posts_with_topic']} have a topic "
        f"({report['n_topics']} topics: {', '.join(report['topics']) or 'none'}); "
        f"{report['posts_without_topic']} without a topic are left out of every score.",
        "",
        "## Scores against topic",
        "",
    ]
    if report["scores"]:
        lines += [
            "NMI: normalised mutual information; ARI: adjusted Rand index (about 0 for clusters "
            "that ignore the topics); purity: share of posts in their cluster's most common topic. "
            "1 is a perfect match for all three. The baseline is TF-IDF, TruncatedSVD to "
            "n_components, L2-normalised rows and KMeans with the same seed, on the same posts.",
            "",
            "| k | clusters from | NMI | baseline NMI | ARI | baseline ARI | purity | baseline purity |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for entry in report["scores"]:
            f, b = entry["features"], entry["baseline"]
            lines.append(
                f"| {entry['k']} | {entry['features_from']} | {f['nmi']:.3f} | {b['nmi']:.3f} | "
                f"{f['ari']:.3f} | {b['ari']:.3f} | {f['purity']:.3f} | {b['purity']:.3f} |"
            )
    else:
        lines.append("No post has a topic, so there is nothing to score the clusters against.")
    lines += [
        "",
        f"The stored fit places {100 * report['mart_clusters_reproduced']:.1f}% of the posts in the "
        "cluster the mart gives them (100% unless the mart and the fit drifted apart).",
        "",
        "## Pictures",
        "",
    ]
    for name in report["files"]:
        if name.endswith(".png"):
            lines += [f"![{name[:-4].replace('_', ' ')}]({name})", ""]
    if PICTURES["topic_cluster_heatmap"] not in report["files"]:
        lines += ["(No topic-by-cluster heatmap: no post has a topic.)", ""]
    lines += [
        "## Clusters",
        "",
        "Top terms: class-based TF-IDF over the cluster's posts. Nearest post: the post "
        "closest to the cluster's centre.",
        "",
        "| cluster | posts | dominant topic (share) | top terms | nearest post |",
        "|---|---|---|---|---|",
    ]
    for row in report["clusters"]:
        topic = (
            f"{row['dominant_topic']} ({100 * row['dominant_topic_share']:.0f}%)" if row["dominant_topic"] else "-"
        )
        nearest = "-"
        if row["nearest_post_id"] is not None:
            excerpt = " ".join(str(row["nearest_post_text"]).split())[:100].replace("|", "\\|")
            nearest = f"{row['nearest_post_id']}: {excerpt}"
        lines.append(
            f"| {row['text_cluster']} | {row['n_posts']} | {topic} | {row['top_terms'] or '-'} | {nearest} |"
        )
    return "\n".join(lines) + "\n"
