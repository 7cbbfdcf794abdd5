"""The ``text-features`` command line: ``schema`` and ``run`` through python_udf.cli.main."""

from __future__ import annotations

import csv

import duckdb
import pandas as pd
import pytest
import yaml

from python_udf.cli import main


def marts_dir(root):
    directory = root / "models" / "marts"
    directory.mkdir(parents=True)
    return directory


def load_models(path) -> dict:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {model["name"]: model for model in document["models"]}


@pytest.mark.parametrize("k", [3, 5])
def test_schema_writes_k_distance_columns_for_both_models(tmp_path, capsys, k):
    marts_dir(tmp_path)
    assert main(["schema", "--n-clusters", str(k), "--project-dir", str(tmp_path)]) == 0
    path = tmp_path / "models" / "marts" / "_marts.yml"
    assert str(path) in capsys.readouterr().out
    models = load_models(path)
    assert set(models) == {"posts_features", "posts_info_deep_features"}

    features = [c["name"] for c in models["posts_features"]["columns"]]
    assert [c for c in features if c.startswith("distance_to_cluster_")] == [
        f"distance_to_cluster_{c}" for c in range(k)
    ]
    compat = [c["name"] for c in models["posts_info_deep_features"]["columns"]]
    assert [c for c in compat if c.startswith("DistanceTo")] == [f"DistanceTo{c}thCluster" for c in range(1, k + 1)]
    # the compatibility test maps each quoted column to its source, k of them
    (matches,) = [t["matches_model"] for t in models["posts_info_deep_features"]["data_tests"] if "matches_model" in t]
    column_map = matches["arguments"]["column_map"]
    assert sorted(v for v in column_map.values() if v.startswith("distance_to_cluster_")) == sorted(
        f"distance_to_cluster_{c}" for c in range(k)
    )
    # the cluster index is tested against [0, k)
    (cluster,) = [c for c in models["posts_features"]["columns"] if c["name"] == "text_cluster"]
    ranges = [t["in_half_open_range"] for t in cluster["data_tests"] if isinstance(t, dict) and "in_half_open_range" in t]
    assert ranges == [{"arguments": {"min_value": 0, "max_value": k}}]


def test_schema_rejects_zero_clusters(tmp_path, capsys):
    marts_dir(tmp_path)
    assert main(["schema", "--n-clusters", "0", "--project-dir", str(tmp_path)]) == 2
    assert "n_clusters" in capsys.readouterr().err
    assert not (tmp_path / "models" / "marts" / "_marts.yml").exists()


POSTS = [
    (11, "The striker scored twice as the club won the league match."),
    (3, 'A post with "quotes", commas, and\na newline.'),
    (27, "Shares fell after the bank reported lower growth."),
    (5, "The new phone has a faster chip and a better camera."),
    (8, "Ministers said the election campaign would focus on taxes."),
    (19, "The film won an award for best actor at the festival."),
    (2, ""),
]


@pytest.fixture
def posts_csv(tmp_path):
    path = tmp_path / "posts.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["post_id", "text"])
        writer.writerows(POSTS)
    return path


def run_args(posts_csv, output, state_db, model_dir, *extra):
    return [
        "run", str(posts_csv), str(output), "--state-db", str(state_db),
        "--set", f"text_model={model_dir}", "--set", "n_components=3", "--set", "n_clusters=2",
        "--set", "max_length=32", "--set", "kmeans_n_init=2", "--set", "device=cpu",
        "--no-progress", *extra,
    ]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_run_writes_one_row_per_post(tmp_path, posts_csv, tiny_model_dir, capsys, suffix):
    output, state_db = tmp_path / "out" / f"features.{suffix}", tmp_path / "state.duckdb"
    assert main(run_args(posts_csv, output, state_db, tiny_model_dir)) == 0
    assert f"wrote {len(POSTS)} rows" in capsys.readouterr().out
    features = pd.read_csv(output) if suffix == "csv" else pd.read_parquet(output)
    assert len(features) == len(POSTS)
    assert features["post_id"].tolist() == [post_id for post_id, _ in POSTS]
    assert set(features["text_cluster"]) <= {0, 1}
    assert {"distance_to_cluster_0", "distance_to_cluster_1"} <= set(features.columns)
    assert "distance_to_cluster_2" not in features.columns
    assert not list(output.parent.glob("*.partial"))

    # a second run reads the cache kept in --state-db
    assert main(run_args(posts_csv, output, state_db, tiny_model_dir)) == 0
    with duckdb.connect(str(state_db)) as con:
        embedded = con.execute(
            "select posts_embedded from text_features_state.feature_runs_log order by started_at"
        ).fetchall()
    assert embedded == [(len(POSTS),), (0,)]


def test_run_reports_a_bad_setting(tmp_path, posts_csv, tiny_model_dir, capsys):
    output = tmp_path / "features.csv"
    args = run_args(posts_csv, output, tmp_path / "state.duckdb", tiny_model_dir, "--set", "pooling=max")
    assert main(args) == 2
    assert "pooling" in capsys.readouterr().err
    assert not output.exists()
