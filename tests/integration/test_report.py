"""``text-features report`` and the ``posts_clusters`` model, end to end, offline.

One ``dbt build`` of a slice of the bundled corpus with the tiny random model
and ``tfidf_weight`` 0.5 (about half a minute), then the report command on the DuckDB file it wrote.
Checked: every file is written and the PNGs are real images; the scores of
the mart's own clusters equal scores computed here straight from the mart
with scikit-learn; posts without a topic are left out and counted; the
per-cluster rows of the report and of the dbt model ``posts_clusters`` agree;
errors name what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from python_udf.cli import main

pytestmark = pytest.mark.dbt

REPO_ROOT = Path(__file__).resolve().parents[2]
N_CLUSTERS = 15  # what models/marts/_marts.yml declares
N_COMPONENTS = 16
# the build mixes in TF-IDF, so the report's placing, refitting and map go
# through the hybrid path (the plain path is what test_dbt_build.py builds)
TFIDF_WEIGHT = 0.5
PER_TOPIC = 12
N_UNLABELLED = 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_FILES = {"report.json", "report.md", "cluster_sizes.png", "topic_cluster_heatmap.png", "posts_map.png"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, bundled_posts, tiny_model_dir) -> Path:
    """A DuckDB file after `dbt build` on 12 posts per topic, 3 of them with no topic."""
    root = tmp_path_factory.mktemp("report-build")
    posts = bundled_posts.groupby("topic", sort=True).head(PER_TOPIC).copy()
    posts.loc[posts.index[:N_UNLABELLED], "topic"] = ""
    posts.to_csv(root / "posts.csv", index=False)
    db = root / "warehouse.duckdb"
    env = {
        **os.environ,
        "POSTS_DUCKDB_PATH": str(db),
        "TEXT_MODEL": str(tiny_model_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
        "HF_HUB_OFFLINE": "1",
    }
    variables = json.dumps(
        {"posts_file": str(root / "posts.csv"), "n_components": N_COMPONENTS, "tfidf_weight": TFIDF_WEIGHT}
    )
    command = [
        str(Path(sys.executable).with_name("dbt")), "build", "--profiles-dir", "profiles",
        "--target-path", str(root / "target"), "--log-path", str(root / "logs"), "--vars", variables,
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return db


@pytest.fixture(scope="module")
def report(built, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report") / "quality"
    assert main(["report", "--db", str(built), "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mart(built) -> pd.DataFrame:
    with duckdb.connect(str(built), read_only=True) as con:
        return con.execute("select * from main.posts_features order by post_id").df()


def test_report_writes_every_file(report):
    out, content = report
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert set(content["files"]) == EXPECTED_FILES
    import matplotlib.image

    for name in EXPECTED_FILES - {"report.json", "report.md"}:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
        height, width = matplotlib.image.imread(out / name).shape[:2]
        assert height > 200 and width > 200, name
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for name in EXPECTED_FILES - {"report.json", "report.md"}:
        assert f"]({name})" in markdown


def test_report_counts_posts_and_topics(report):
    _, content = report
    assert content["posts"] == 5 * PER_TOPIC
    assert content["posts_without_topic"] == N_UNLABELLED
    assert content["posts_with_topic"] == 5 * PER_TOPIC - N_UNLABELLED
    assert content["n_topics"] == 5
    assert content["topics"] == ["business", "entertainment", "politics", "sport", "tech"]
    assert content["n_clusters"] == N_CLUSTERS


def test_scores_of_the_mart_match_scikit_learn_on_the_mart(report, mart):
    _, content = report
    at_configured = next(s for s in content["scores"] if s["k"] == N_CLUSTERS)
    labelled = mart[mart["topic"].notna()]
    assert at_configured["features"]["posts_scored"] == len(labelled)
    assert at_configured["features"]["nmi"] == pytest.approx(
        normalized_mutual_info_score(labelled["topic"], labelled["text_cluster"])
    )
    assert at_configured["features"]["ari"] == pytest.approx(
        adjusted_rand_score(labelled["topic"], labelled["text_cluster"])
    )
    majority = labelled.groupby("text_cluster")["topic"].agg(lambda t: t.value_counts().iloc[0]).sum()
    assert at_configured["features"]["purity"] == pytest.approx(majority / len(labelled))
    assert content["mart_clusters_reproduced"] == 1.0


def test_headline_keys_are_the_scores_at_k_equal_to_topics(report):
    _, content = report
    ks = [s["k"] for s in content["scores"]]
    assert ks == [N_CLUSTERS, 5]
    at_topics = content["scores"][1]
    assert at_topics["features_from"].startswith("fit_clusters")
    for key in ("nmi", "ari", "purity"):
        assert content[key] == at_topics["features"][key]
        assert content[f"baseline_{key}"] == at_topics["baseline"][key]
    assert at_topics["baseline_settings"]["n_components"] == N_COMPONENTS
    assert at_topics["baseline_settings"]["random_state"] == content["source"]["settings"]["random_state"]
    # the dbt var reached the Python model and the stored fit
    assert content["source"]["settings"]["tfidf_weight"] == TFIDF_WEIGHT


def test_cluster_rows_agree_with_the_mart_and_posts_clusters(report, mart, built):
    _, content = report
    clusters = pd.DataFrame(content["clusters"])
    assert clusters["text_cluster"].tolist() == list(range(N_CLUSTERS))
    sizes = mart["text_cluster"].value_counts().reindex(range(N_CLUSTERS), fill_value=0)
    assert clusters["n_posts"].tolist() == sizes.tolist()
    for row in content["clusters"]:
        if row["n_posts"]:
            members = mart[mart["text_cluster"] == row["text_cluster"]]
            own = members[f"distance_to_cluster_{row['text_cluster']}"]
            assert row["nearest_post_distance"] == pytest.approx(own.min())
            assert row["nearest_post_id"] in set(members.loc[own == own.min(), "post_id"])
    with duckdb.connect(str(built), read_only=True) as con:
        published = con.execute("select * from main.posts_clusters order by text_cluster").df()
    for column in ("n_posts", "dominant_topic", "top_terms", "nearest_post_id"):
        assert published[column].tolist() == clusters[column].tolist(), column
    assert published["dominant_topic_share"].to_numpy() == pytest.approx(
        clusters["dominant_topic_share"].astype(float).to_numpy(), nan_ok=True
    )


def test_report_without_a_build_names_what_is_missing(tmp_path, capsys):
    missing = tmp_path / "nothing.duckdb"
    assert main(["report", "--db", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert main(["report", "--db", str(empty), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "posts_features" in error and "dbt build" in error
    assert not (tmp_path / "out").exists()


def test_report_refuses_a_mart_that_disagrees_with_the_staged_posts(built, tmp_path, capsys):
    copy = tmp_path / "stale.duckdb"
    copy.write_bytes(built.read_bytes())
    with duckdb.connect(str(copy)) as con:
        dropped = con.execute("select min(post_id) from main.posts_features").fetchone()[0]
        con.execute("delete from main.posts_features where post_id = ?", [dropped])
    assert main(["report", "--db", str(copy), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"({5 * PER_TOPIC - 1} posts)" in error and "1 only staged" in error


def test_report_without_topics_writes_no_scores_and_no_heatmap(built, tmp_path):
    copy = tmp_path / "untopical.duckdb"
    copy.write_bytes(built.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute("update main.stg_posts set topic = null")
    out = tmp_path / "out"
    assert main(["report", "--db", str(copy), "--out", str(out)]) == 0
    content = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert content["scores"] == [] and content["nmi"] is None and content["baseline_nmi"] is None
    assert content["posts_without_topic"] == 5 * PER_TOPIC
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES - {"topic_cluster_heatmap.png"}
    assert all(row["dominant_topic"] is None for row in content["clusters"])
    assert np.isfinite([row["nearest_post_distance"] for row in content["clusters"] if row["n_posts"]]).all()
