"""End to end: ``dbt build`` of the whole project with the tiny model, into a
temporary DuckDB file, and checks on what it wrote, made here independently
of the project's own dbt tests.

One module-scoped chain of builds is shared by most tests (each dbt call
costs 15-25 s):

1. build on 124 posts (120 from the bundled corpus + 4 crafted rows);
2. ``dbt docs generate`` (lineage and catalog);
3. build again on the same input (everything from the cache, fit reused);
4. build after appending 3 new posts (3 embedded, fit reused);
5. build with ``refit: true`` (a new fit).

Two more calls stand alone: a build of an input with a duplicate post_id on a
copy of the DuckDB file taken after step 1, and ``dbt compile`` with a var
n_clusters that disagrees with the YAML.

Every dbt call runs in a subprocess, from a temporary directory, with its
own DuckDB file, target path and log path, so nothing is written into the
checkout and runs of other people in the same checkout are not disturbed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from posts_files import REMOVED_CONTROL, untouched_by_text_rule, write_posts_csv

pytestmark = pytest.mark.dbt

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "post_text_features"

# The published YAML (models/marts/_marts.yml) declares 15 distance columns;
# building with the default n_clusters keeps the project untouched.
N_CLUSTERS = 15
N_COMPONENTS = 8
N_CORPUS_POSTS = 120
N_APPENDED = 3
BASE_VARS = {"n_components": N_COMPONENTS, "max_length": 128}

# ---------- crafted rows (expected values written by hand from the text rule
# in models/staging/_stg_models.yml: control characters but \n and \t go,
# outer whitespace is trimmed, NULL becomes '')
CONTROL_ID = 900_001
CONTROL_RAW = "\x00Breaking:\x07 markets\r\nrally\x1b today\x7f  \t"
CONTROL_CLEAN = "Breaking: markets\nrally today"
NULL_TEXT_ID = 900_002          # text field empty in the CSV -> NULL
BLANK_TEXT_ID = 900_003         # whitespace only -> ''
BLANK_RAW = " \t\n  "
BIG_ID = 2**53 + 1              # 9007199254740993: not representable as a double
BIG_TEXT = "A post whose id is beyond 2^53 must keep every digit."

CRAFTED_ROWS = [
    (CONTROL_ID, CONTROL_RAW, "business"),
    (NULL_TEXT_ID, None, None),
    (BLANK_TEXT_ID, BLANK_RAW, "tech"),
    (BIG_ID, BIG_TEXT, "tech"),
]
N_INPUT = N_CORPUS_POSTS + len(CRAFTED_ROWS)

DISTANCE_COLUMNS = [f"distance_to_cluster_{c}" for c in range(N_CLUSTERS)]
COMPAT_COLUMNS = (
    ["post_id", "text", "topic", "TextCluster"]
    + [f"DistanceTo{c}thCluster" for c in range(1, N_CLUSTERS + 1)]
)
MART_COLUMNS = ["post_id", "text", "topic", "text_cluster", *DISTANCE_COLUMNS, "fit_id"]

NODE = {
    "source": f"source.{PROJECT}.posts.post_text_df",
    "stg": f"model.{PROJECT}.stg_posts",
    "int": f"model.{PROJECT}.int_post_text_features",
    "mart": f"model.{PROJECT}.posts_features",
    "compat": f"model.{PROJECT}.posts_info_deep_features",
}


# ---------------------------------------------------------------- helpers


def dbt_executable() -> list[str]:
    """dbt of this interpreter's environment."""
    return [sys.executable, "-m", "dbt.cli.main"]


def is_clean(text: str) -> bool:
    """Text the storage rule leaves as it is: no control characters, no outer blanks."""
    return untouched_by_text_rule(text) and text != ""


@dataclass
class Warehouse:
    """A temporary DuckDB file plus the target/log paths of the dbt calls on it."""

    root: Path
    model_dir: Path
    db_path: Path = field(init=False)
    target: Path = field(init=False)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "warehouse.duckdb"
        self.target = self.root / "target"
        self.logs = self.root / "logs"

    def dbt(self, *args: str, vars: dict | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.update(
            POSTS_DUCKDB_PATH=str(self.db_path),
            TEXT_MODEL=str(self.model_dir),
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            DBT_USE_COLORS="false",
            TOKENIZERS_PARALLELISM="false",
        )
        # These would redirect dbt's artifacts regardless of our flags.
        for name in ("DBT_TARGET_PATH", "DBT_LOG_PATH", "DBT_PROFILES_DIR", "DBT_PROJECT_DIR"):
            env.pop(name, None)
        command = [
            *dbt_executable(), *args,
            "--project-dir", str(REPO_ROOT),
            "--profiles-dir", str(REPO_ROOT / "profiles"),
            "--target-path", str(self.target),
            "--log-path", str(self.logs),
            "--vars", json.dumps({**BASE_VARS, **(vars or {})}),
        ]
        return subprocess.run(
            command, cwd=self.root, env=env, capture_output=True, text=True, timeout=900
        )

    def dbt_ok(self, *args: str, vars: dict | None = None) -> subprocess.CompletedProcess:
        result = self.dbt(*args, vars=vars)
        assert result.returncode == 0, (
            f"dbt {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )
        return result

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with duckdb.connect(str(self.db_path), read_only=True) as con:
            return con.execute(sql, params or []).df()

    def artifact(self, name: str) -> dict:
        return json.loads((self.target / name).read_text(encoding="utf-8"))


@dataclass
class Snapshot:
    """What one build left behind, read right after it."""

    mart: pd.DataFrame
    runs: pd.DataFrame
    fits: pd.DataFrame


def snapshot(wh: Warehouse) -> Snapshot:
    return Snapshot(
        mart=wh.query("select * from main.posts_features order by post_id"),
        runs=wh.query(
            "select * from main.text_feature_runs order by started_at, run_id"
        ),
        fits=wh.query(
            "select fit_id, n_posts from text_features_state.cluster_fits order by created_at"
        ),
    )


def assert_features_unchanged(before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Same posts, clusters, fit and distances. The distances are recomputed by
    every build from cached float32 vectors and the stored fit; a different
    number of rows may change BLAS blocking, hence a tolerance far below any
    meaningful change (distances here are of order 1)."""
    before = before.set_index("post_id").sort_index()
    after = after.set_index("post_id").loc[before.index]
    assert (after["fit_id"] == before["fit_id"]).all()
    assert (after["text_cluster"] == before["text_cluster"]).all()
    assert after["text"].tolist() == before["text"].tolist()
    np.testing.assert_allclose(
        after[DISTANCE_COLUMNS].to_numpy(), before[DISTANCE_COLUMNS].to_numpy(),
        rtol=1e-12, atol=1e-12,
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="dbt-e2e-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def corpus_rows(bundled_posts) -> list[tuple]:
    """Clean, distinct corpus posts: the first N for the first build, then N_APPENDED more."""
    clean = bundled_posts[bundled_posts["text"].map(is_clean)]
    clean = clean.drop_duplicates("text")
    rows = list(clean[["post_id", "text", "topic"]].itertuples(index=False, name=None))
    wanted = N_CORPUS_POSTS + N_APPENDED
    assert len(rows) >= wanted
    rows = [(int(p), t, tp) for p, t, tp in rows[:wanted]]
    crafted_ids = {r[0] for r in CRAFTED_ROWS}
    assert not crafted_ids & {r[0] for r in rows}
    return rows


@pytest.fixture(scope="module")
def input_rows(corpus_rows) -> list[tuple]:
    return corpus_rows[:N_CORPUS_POSTS] + CRAFTED_ROWS


@pytest.fixture(scope="module")
def appended_rows(corpus_rows) -> list[tuple]:
    return corpus_rows[N_CORPUS_POSTS:]


@pytest.fixture(scope="module")
def main_wh(workdir, tiny_model_dir) -> Warehouse:
    return Warehouse(workdir / "main", Path(tiny_model_dir))


@pytest.fixture(scope="module")
def first_build(main_wh, input_rows, workdir):
    """Build 1 on the input; returns its snapshot, run_results and the stg table.

    A copy of the DuckDB file is kept for the bad-input test."""
    posts_file = main_wh.root / "posts.csv"
    write_posts_csv(posts_file, input_rows)
    result = main_wh.dbt_ok("build", vars={"posts_file": str(posts_file)})
    snap = snapshot(main_wh)
    built = {
        "snapshot": snap,
        "stg": main_wh.query("select * from main.stg_posts order by post_id"),
        "compat": main_wh.query("select * from main.posts_info_deep_features"),
        "run_results": main_wh.artifact("run_results.json"),
        # the big id as SQL itself prints it, not only through pandas
        "big_id_text": main_wh.query(
            "select post_id::varchar as v from main.posts_info_deep_features where post_id = ?",
            [BIG_ID],
        )["v"].tolist(),
        "stdout": result.stdout,
        "posts_file": posts_file,
        "copy": workdir / "after_first_build",
    }
    built["copy"].mkdir()
    shutil.copy2(main_wh.db_path, built["copy"] / main_wh.db_path.name)
    return built


@pytest.fixture(scope="module")
def docs(main_wh, first_build):
    main_wh.dbt_ok("docs", "generate", vars={"posts_file": str(first_build["posts_file"])})
    return {"manifest": main_wh.artifact("manifest.json"), "catalog": main_wh.artifact("catalog.json")}


@pytest.fixture(scope="module")
def rebuilds(main_wh, first_build, docs, input_rows, appended_rows):
    """Builds 2 (same input), 3 (N_APPENDED posts appended) and 4 (refit)."""
    posts_file = first_build["posts_file"]
    vars = {"posts_file": str(posts_file)}
    main_wh.dbt_ok("build", vars=vars)
    same = snapshot(main_wh)

    write_posts_csv(posts_file, input_rows + appended_rows)
    main_wh.dbt_ok("build", vars=vars)
    appended = snapshot(main_wh)

    main_wh.dbt_ok("build", vars={**vars, "refit": True})
    refit = snapshot(main_wh)
    return {"same": same, "appended": appended, "refit": refit}


# ---------------------------------------------------------------- build 1


def test_mart_has_one_row_per_staged_and_input_post(first_build, input_rows):
    mart = first_build["snapshot"].mart
    stg = first_build["stg"]
    assert list(mart.columns) == MART_COLUMNS
    assert len(stg) == N_INPUT
    assert len(mart) == N_INPUT
    assert mart["post_id"].is_unique
    assert sorted(mart["post_id"].tolist()) == sorted(stg["post_id"].tolist())
    assert sorted(mart["post_id"].tolist()) == sorted(r[0] for r in input_rows)


def test_clusters_and_distances_are_consistent(first_build):
    mart = first_build["snapshot"].mart
    distances = mart[DISTANCE_COLUMNS].to_numpy(dtype=np.float64)
    clusters = mart["text_cluster"].to_numpy()
    assert np.isfinite(distances).all()
    assert (distances >= 0).all()
    assert ((clusters >= 0) & (clusters < N_CLUSTERS)).all()
    np.testing.assert_array_equal(clusters, distances.argmin(axis=1))
    # a fit of 15 clusters on 123 distinct texts uses more than one cluster
    assert len(set(clusters.tolist())) > 1
    runs = first_build["snapshot"].runs
    assert set(mart["fit_id"]) == {runs["fit_id"].iloc[0]}


def test_corpus_text_and_topic_pass_through(first_build, input_rows):
    mart = first_build["snapshot"].mart.set_index("post_id")
    for post_id, text, topic in input_rows[:N_CORPUS_POSTS]:
        assert mart.at[post_id, "text"] == text
        assert mart.at[post_id, "topic"] == topic
    for text in mart["text"]:
        assert text is not None
        assert not set(text) & REMOVED_CONTROL


def test_control_characters_are_removed(first_build):
    mart = first_build["snapshot"].mart.set_index("post_id")
    assert mart.at[CONTROL_ID, "text"] == CONTROL_CLEAN
    assert mart.at[CONTROL_ID, "topic"] == "business"


def test_null_and_blank_posts_are_kept_as_empty_text(first_build):
    mart = first_build["snapshot"].mart.set_index("post_id")
    stg = first_build["stg"].set_index("post_id")
    for post_id in (NULL_TEXT_ID, BLANK_TEXT_ID):
        assert mart.at[post_id, "text"] == ""
        assert bool(stg.at[post_id, "is_empty_text"]) is True
    assert pd.isna(mart.at[NULL_TEXT_ID, "topic"])
    # both are the same (empty) text, hence the same vector and features
    # (tolerance: BLAS may round two equal rows of one product differently)
    assert mart.at[NULL_TEXT_ID, "text_cluster"] == mart.at[BLANK_TEXT_ID, "text_cluster"]
    np.testing.assert_allclose(
        mart.loc[NULL_TEXT_ID, DISTANCE_COLUMNS].to_numpy(dtype=float),
        mart.loc[BLANK_TEXT_ID, DISTANCE_COLUMNS].to_numpy(dtype=float),
        rtol=1e-12, atol=1e-12,
    )
    assert int((stg["is_empty_text"]).sum()) == 2


def test_id_beyond_2_pow_53_survives_exactly(first_build):
    mart = first_build["snapshot"].mart
    ids = [int(i) for i in mart["post_id"]]
    assert BIG_ID in ids
    assert BIG_ID - 1 not in ids  # what a round trip through a double gives
    assert mart.set_index("post_id").at[BIG_ID, "text"] == BIG_TEXT
    assert first_build["big_id_text"] == [str(BIG_ID)]


def test_compat_table_has_notebook_columns_and_mart_values(first_build):
    compat = first_build["compat"]
    mart = first_build["snapshot"].mart
    assert list(compat.columns) == COMPAT_COLUMNS
    assert len(compat) == len(mart)
    joined = compat.merge(mart, on="post_id", how="outer", indicator=True, validate="1:1")
    assert (joined["_merge"] == "both").all()
    assert (joined["text_x"] == joined["text_y"]).all()
    assert joined["topic_x"].fillna("<null>").equals(joined["topic_y"].fillna("<null>"))
    assert (joined["TextCluster"] == joined["text_cluster"]).all()
    for c in range(N_CLUSTERS):
        # exact: the compat table renames the mart's columns, it computes nothing
        assert (joined[f"DistanceTo{c + 1}thCluster"] == joined[f"distance_to_cluster_{c}"]).all()


def test_first_run_is_logged(first_build):
    runs = first_build["snapshot"].runs
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["rows_read"] == N_INPUT
    assert run["posts_embedded"] == N_INPUT
    assert run["posts_reused"] == 0
    # the NULL and the blank post are the same text ''
    assert run["texts_embedded"] == N_INPUT - 1
    assert run["fit_action"] == "fitted"
    assert bool(run["is_new_fit"]) is True
    assert run["n_clusters"] == N_CLUSTERS
    assert run["n_components"] == N_COMPONENTS
    assert len(first_build["snapshot"].fits) == 1


def test_every_dbt_test_and_unit_test_passed(first_build):
    results = first_build["run_results"]["results"]
    by_kind: dict[str, list[str]] = {}
    for result in results:
        by_kind.setdefault(result["unique_id"].split(".")[0], []).append(result["status"])
    # the on-run-start hook (n_clusters against the published YAML) is an operation
    assert set(by_kind) == {"model", "test", "unit_test", "operation"}
    assert set(by_kind["model"]) == {"success"} and set(by_kind["operation"]) == {"success"}
    statuses = {r["unique_id"]: r["status"] for r in results}
    for node in ("stg", "int", "mart", "compat"):
        assert statuses[NODE[node]] == "success"
    assert statuses[f"model.{PROJECT}.text_feature_runs"] == "success"
    assert by_kind["test"] and set(by_kind["test"]) == {"pass"}
    assert by_kind["unit_test"] and set(by_kind["unit_test"]) == {"pass"}
    ids = {r["unique_id"] for r in results}
    assert f"unit_test.{PROJECT}.stg_posts.stg_posts_cleans_text_for_storage" in ids
    assert f"unit_test.{PROJECT}.posts_info_deep_features.posts_info_deep_features_uses_the_notebook_names" in ids
    assert any(i.startswith(f"test.{PROJECT}.unique_stg_posts_post_id") for i in ids)
    assert any(i.startswith(f"test.{PROJECT}.matches_model_posts_info_deep_features") for i in ids)


# ---------------------------------------------------------------- docs


def test_lineage_runs_from_source_through_python_model_to_published_tables(docs):
    manifest = docs["manifest"]
    parents, children = manifest["parent_map"], manifest["child_map"]
    assert NODE["source"] in parents[NODE["stg"]]
    assert NODE["stg"] in children[NODE["source"]]
    assert NODE["stg"] in parents[NODE["int"]]
    assert NODE["int"] in children[NODE["stg"]]
    assert NODE["int"] in parents[NODE["mart"]]
    assert NODE["mart"] in parents[NODE["compat"]]
    assert {NODE["mart"]} <= set(children[NODE["int"]])
    assert NODE["compat"] in children[NODE["mart"]]
    assert manifest["nodes"][NODE["int"]]["language"] == "python"
    assert manifest["nodes"][NODE["stg"]]["language"] == "sql"
    # the published tables are where the build put them
    assert manifest["nodes"][NODE["mart"]]["relation_name"].endswith('"main"."posts_features"')
    assert manifest["nodes"][NODE["compat"]]["relation_name"].endswith(
        '"main"."posts_info_deep_features"'
    )


def test_catalog_has_the_mart_columns(docs):
    catalog = docs["catalog"]["nodes"]
    mart_columns = catalog[NODE["mart"]]["columns"]
    assert set(mart_columns) == set(MART_COLUMNS)
    assert mart_columns["post_id"]["type"].upper() == "BIGINT"
    assert mart_columns["distance_to_cluster_0"]["type"].upper() == "DOUBLE"
    assert set(catalog[NODE["compat"]]["columns"]) == set(COMPAT_COLUMNS)


# ---------------------------------------------------------------- builds 2-4


def test_second_build_embeds_nothing_and_keeps_features(first_build, rebuilds):
    first = first_build["snapshot"]
    same = rebuilds["same"]
    assert len(same.runs) == 2
    run = same.runs.iloc[1]
    assert run["rows_read"] == N_INPUT
    assert run["posts_embedded"] == 0
    assert run["posts_reused"] == N_INPUT
    assert run["fit_action"] == "reused"
    assert run["fit_id"] == first.runs["fit_id"].iloc[0]
    assert len(same.fits) == 1
    assert len(same.mart) == len(first.mart)
    assert_features_unchanged(first.mart, same.mart)


def test_appended_posts_are_embedded_and_placed_with_the_same_fit(
    first_build, rebuilds, appended_rows
):
    first = first_build["snapshot"]
    appended = rebuilds["appended"]
    run = appended.runs.iloc[2]
    assert len(appended.runs) == 3
    assert run["rows_read"] == N_INPUT + N_APPENDED
    assert run["posts_embedded"] == N_APPENDED
    assert run["fit_action"] == "reused"
    assert run["fit_id"] == first.runs["fit_id"].iloc[0]
    assert len(appended.fits) == 1

    mart = appended.mart
    assert len(mart) == N_INPUT + N_APPENDED
    assert mart["post_id"].is_unique
    old = mart[mart["post_id"].isin(first.mart["post_id"])]
    assert_features_unchanged(first.mart, old)

    new = mart.set_index("post_id").loc[[r[0] for r in appended_rows]]
    assert new["text"].tolist() == [r[1] for r in appended_rows]
    assert (new["fit_id"] == first.runs["fit_id"].iloc[0]).all()
    distances = new[DISTANCE_COLUMNS].to_numpy(dtype=float)
    assert np.isfinite(distances).all() and (distances >= 0).all()
    np.testing.assert_array_equal(new["text_cluster"].to_numpy(), distances.argmin(axis=1))


def test_refit_var_makes_a_new_fit(first_build, rebuilds):
    old_fit = first_build["snapshot"].runs["fit_id"].iloc[0]
    refit = rebuilds["refit"]
    assert len(refit.runs) == 4
    run = refit.runs.iloc[3]
    assert run["fit_action"] == "fitted"
    assert run["fit_id"] != old_fit
    assert run["posts_embedded"] == 0  # vectors still come from the cache
    assert run["rows_read"] == N_INPUT + N_APPENDED
    assert len(refit.fits) == 2
    assert set(refit.fits["fit_id"]) == {old_fit, run["fit_id"]}
    assert set(refit.mart["fit_id"]) == {run["fit_id"]}
    assert len(refit.mart) == N_INPUT + N_APPENDED
    clusters = refit.mart["text_cluster"].to_numpy()
    np.testing.assert_array_equal(
        clusters, refit.mart[DISTANCE_COLUMNS].to_numpy(dtype=float).argmin(axis=1)
    )


# ---------------------------------------------------------------- failures


def test_duplicate_post_id_fails_at_staging_naming_the_id_and_keeps_old_mart(
    first_build, input_rows, workdir, tiny_model_dir
):
    wh = Warehouse(first_build["copy"], Path(tiny_model_dir))
    duplicate_id = input_rows[5][0]
    bad_file = wh.root / "posts_with_duplicate.csv"
    write_posts_csv(bad_file, input_rows + [(duplicate_id, "A second post under a used id.", "tech")])

    result = wh.dbt("build", vars={"posts_file": str(bad_file)})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    # the error names the duplicated id and how often it occurs
    assert f"duplicated post_id (first 20): {duplicate_id} (2 rows)" in output, output[-4000:]

    statuses = {r["unique_id"]: r["status"] for r in wh.artifact("run_results.json")["results"]}
    assert statuses[f"model.{PROJECT}.stg_posts"] == "error"
    # nothing downstream of staging ran
    for node in ("int", "mart", "compat"):
        assert statuses[NODE[node]] == "skipped"
    failed = [i for i, s in statuses.items() if s in ("fail", "error")]
    assert failed == [f"model.{PROJECT}.stg_posts"]

    # the staging table of the good build survived the failed replacement
    assert len(wh.query("select * from main.stg_posts")) == N_INPUT

    # the mart of the earlier good build is untouched
    mart = wh.query("select * from main.posts_features order by post_id")
    assert len(mart) == N_INPUT
    pd.testing.assert_frame_equal(mart, first_build["snapshot"].mart)
    assert len(wh.query("select * from text_features_state.feature_runs_log")) == 1


def test_n_clusters_var_not_matching_yaml_fails_naming_both_and_the_fix(workdir, tiny_model_dir):
    wh = Warehouse(workdir / "mismatch", Path(tiny_model_dir))
    result = wh.dbt(
        "compile", "--select", "posts_features",
        vars={"n_clusters": 4, "posts_file": str(workdir / "never-read.csv")},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "var n_clusters=4" in output
    assert f"declares {N_CLUSTERS} distance columns" in output
    assert "text-features schema --n-clusters 4" in output
