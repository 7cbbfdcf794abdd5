"""The ``postgres`` target against a real PostgreSQL server.

What is checked, reading Postgres with psycopg (never through DuckDB):

* ``text-features load-posts`` loads a slice of the bundled corpus (plus a
  post with a NUL byte and two ids beyond 2^53) into ``post_text_df``;
* ``dbt build --target postgres`` publishes ``posts_features`` and
  ``posts_info_deep_features`` there as tables, with their exact column names
  and types, every dbt test passing;
* the features equal those of the DuckDB (dev) target on the same file;
* a failed Python step, and a build killed in the middle of its swap, leave
  the previous tables in place and readable;
* a second build replaces the tables under the same names;
* the password is in no file dbt writes and in none of its output;
* python_udf.reader reads in chunks through a server-side cursor.

The builds run as a throwaway login role with a random password and only the
privileges docs/postgres.md asks for (read on the source table, usage and
create on the target schema), when the connecting user may create roles;
otherwise as that user. Source and published tables live in two random
schemas, dropped afterwards, so runs do not collide with each other or with
anybody's data.

Connection: POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD,
POSTGRES_DATABASE (a .env at the repo root is read too), defaulting to
postgres@127.0.0.1:5432/postgres. Without a reachable server every test is
skipped with a reason that says how to point them at one.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from python_udf.pg_connection import PostgresSettings, load_dotenv_file  # noqa: E402
from posts_files import untouched_by_text_rule, write_posts_csv  # noqa: E402

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "post_text_features"

N_CLUSTERS = 15  # what models/marts/_marts.yml declares
N_COMPONENTS = 8
BUILD_VARS = {"n_components": N_COMPONENTS, "max_length": 128}
N_CORPUS_POSTS = 150

BIG_ID = 2**53 + 1        # the first integer a double cannot hold
MAX_ID = 2**63 - 1        # the largest bigint
NUL_ID = 900_001
NUL_RAW = "Markets\x00 rallied today"
NUL_CLEAN = "Markets rallied today"  # the NUL goes, nothing else changes
CRAFTED_ROWS = [
    (BIG_ID, "A post whose id needs all 64 bits of a bigint.", "tech"),
    (MAX_ID, "The largest id Postgres can store as bigint.", "business"),
    (NUL_ID, NUL_RAW, "business"),
]

DISTANCE_COLUMNS = [f"distance_to_cluster_{c}" for c in range(N_CLUSTERS)]
MART_COLUMNS = ["post_id", "text", "topic", "text_cluster", *DISTANCE_COLUMNS, "fit_id"]
# The notebook's names: cluster c is "DistanceTo<c+1>thCluster".
COMPAT_DISTANCES = [f"DistanceTo{c + 1}thCluster" for c in range(N_CLUSTERS)]
COMPAT_COLUMNS = ["post_id", "text", "topic", "TextCluster", *COMPAT_DISTANCES]
MART_TYPES = {
    "post_id": "bigint", "text": "character varying", "topic": "character varying",
    "text_cluster": "integer", "fit_id": "character varying",
    **{name: "double precision" for name in DISTANCE_COLUMNS},
}

TEST_DEFAULTS = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432",
                 "POSTGRES_USER": "postgres", "POSTGRES_DATABASE": "postgres"}
HOW_TO_RUN = (
    "set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD and "
    "POSTGRES_DATABASE (or a .env at the repo root) to a server where that user "
    "may create schemas, e.g. `docker run -e POSTGRES_HOST_AUTH_METHOD=trust "
    "-p 5432:5432 postgres:16`, then run `pytest -m postgres`"
)


# ---------------------------------------------------------------- helpers


def admin_settings() -> PostgresSettings:
    """The connecting user, from the environment (and .env), with test defaults."""
    load_dotenv_file(REPO_ROOT / ".env")
    env = {**TEST_DEFAULTS, **{k: v for k, v in os.environ.items() if k.startswith("POSTGRES_") and v}}
    return PostgresSettings.from_env(env, dotenv=False)


def connect(settings: PostgresSettings, **kwargs) -> "psycopg.Connection":
    return psycopg.connect(**settings.psycopg_kwargs(), connect_timeout=5, **kwargs)


def text_features_command() -> list[str]:
    script = Path(sys.executable).with_name("text-features")
    return [str(script)] if script.exists() else [sys.executable, "-m", "python_udf"]


@dataclass
class Published:
    """Both published tables as Postgres holds them, read with psycopg."""

    mart: pd.DataFrame
    compat: pd.DataFrame
    oids: dict[str, int]


@dataclass
class Env:
    """Everything a dbt call on the postgres target needs."""

    admin: PostgresSettings
    builder: PostgresSettings
    source_schema: str
    target_schema: str
    root: Path
    model_dir: Path

    @property
    def duckdb_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    def subprocess_env(self, settings: PostgresSettings | None = None) -> dict[str, str]:
        settings = settings or self.builder
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "DBT_", "PG"))}
        env.update(
            POSTGRES_HOST=settings.host, POSTGRES_PORT=str(settings.port),
            POSTGRES_USER=settings.user, POSTGRES_DATABASE=settings.database,
            POSTS_DUCKDB_PATH=str(self.duckdb_path), TEXT_MODEL=str(self.model_dir),
            DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_USE_COLORS="false",
            TOKENIZERS_PARALLELISM="false",
        )
        if settings.password:
            env["POSTGRES_PASSWORD"] = settings.password
        return env

    def dbt_command(self, *args: str, run: str, target: str = "postgres", vars: dict | None = None) -> list[str]:
        all_vars = {**BUILD_VARS, "postgres_schema": self.target_schema,
                    "postgres_source_schema": self.source_schema, **(vars or {})}
        return [
            sys.executable, "-m", "dbt.cli.main", *args, "--target", target,
            "--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT / "profiles"),
            "--target-path", str(self.root / run / "target"), "--log-path", str(self.root / run / "logs"),
            "--vars", json.dumps(all_vars),
        ]

    def dbt(self, *args: str, run: str, vars: dict | None = None) -> subprocess.CompletedProcess:
        """Run dbt; artifacts of this call go to root/<run>/target and root/<run>/logs."""
        result = subprocess.run(
            self.dbt_command(*args, run=run, vars=vars), cwd=self.root, env=self.subprocess_env(),
            capture_output=True, text=True, timeout=900,
        )
        (self.root / run).mkdir(exist_ok=True)
        (self.root / run / "output.txt").write_text(result.stdout + result.stderr, encoding="utf-8")
        return result

    def dbt_ok(self, *args: str, run: str, vars: dict | None = None) -> subprocess.CompletedProcess:
        result = self.dbt(*args, run=run, vars=vars)
        assert result.returncode == 0, f"dbt {args} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        return result

    def run_results(self, run: str) -> dict[str, dict]:
        data = json.loads((self.root / run / "target" / "run_results.json").read_text(encoding="utf-8"))
        return {r["unique_id"]: r for r in data["results"]}

    def load_posts(self, path: Path, *extra: str) -> subprocess.CompletedProcess:
        """`text-features load-posts` as the admin user (the owner of the source table)."""
        return subprocess.run(
            [*text_features_command(), "load-posts", "--target", "postgres", "--file", str(path),
             "--schema", self.source_schema, *extra],
            cwd=self.root, env=self.subprocess_env(self.admin), capture_output=True, text=True, timeout=300,
        )

    def read_published(self) -> Published:
        with connect(self.admin) as con:
            return Published(
                mart=read_table(con, self.target_schema, "posts_features"),
                compat=read_table(con, self.target_schema, "posts_info_deep_features"),
                oids=table_oids(con, self.target_schema),
            )

    def tables(self) -> dict[str, str]:
        """table name -> table_type of everything in the target schema."""
        with connect(self.admin) as con:
            return dict(con.execute(
                "select table_name, table_type from information_schema.tables where table_schema = %s",
                [self.target_schema],
            ).fetchall())


def read_table(con, schema: str, table: str) -> pd.DataFrame:
    cur = con.execute(sql.SQL("select * from {} order by post_id").format(sql.Identifier(schema, table)))
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description], dtype=object)


def table_oids(con, schema: str) -> dict[str, int]:
    return dict(con.execute(
        "select c.relname, c.oid::int from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind = 'r'", [schema],
    ).fetchall())


def assert_same_tables(before: Published, after: Published) -> None:
    """The very same tables (same oids) with the same rows, value for value."""
    assert after.oids["posts_features"] == before.oids["posts_features"]
    assert after.oids["posts_info_deep_features"] == before.oids["posts_info_deep_features"]
    pd.testing.assert_frame_equal(after.mart, before.mart)
    pd.testing.assert_frame_equal(after.compat, before.compat)


def assert_no_leftovers(env: Env) -> None:
    """Both published tables are tables; no __dbt_tmp or __dbt_backup is left over.

    Other published models may sit beside them, so only these names are pinned.
    """
    tables = env.tables()
    assert tables["posts_features"] == "BASE TABLE"
    assert tables["posts_info_deep_features"] == "BASE TABLE"
    assert [name for name in tables if name.endswith(("__dbt_tmp", "__dbt_backup"))] == []
    assert set(tables.values()) == {"BASE TABLE"}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def admin() -> PostgresSettings:
    settings = admin_settings()
    try:
        with connect(settings) as con:
            con.execute("select 1")
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL reachable as {settings.describe()} ({str(exc).strip()[:200]}); {HOW_TO_RUN}")
    return settings


@pytest.fixture(scope="module")
def env(admin, tiny_model_dir):
    """Two fresh schemas and, where allowed, a login role with the documented privileges."""
    suffix = secrets.token_hex(4)
    source_schema, target_schema = f"tf_test_src_{suffix}", f"tf_test_pub_{suffix}"
    role = f"tf_test_builder_{suffix}"
    password = "pw-" + secrets.token_urlsafe(18)
    with connect(admin, autocommit=True) as con:
        con.execute(sql.SQL("create schema {}").format(sql.Identifier(target_schema)))
        try:
            con.execute(sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)))
            con.execute(sql.SQL("grant usage, create on schema {} to {}").format(
                sql.Identifier(target_schema), sql.Identifier(role)))
            builder = PostgresSettings(admin.host, admin.port, role, admin.database, password)
        except psycopg.errors.InsufficientPrivilege:
            role = None
            builder = admin
    with tempfile.TemporaryDirectory(prefix="tf-postgres-") as directory:
        yield Env(admin, builder, source_schema, target_schema, Path(directory), Path(tiny_model_dir))
    with connect(admin, autocommit=True) as con:
        for schema in (source_schema, target_schema):
            con.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        if role is not None:
            con.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            con.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def input_rows(bundled_posts) -> list[tuple]:
    corpus = bundled_posts.head(N_CORPUS_POSTS)
    rows = [(int(p), t, tp) for p, t, tp in corpus[["post_id", "text", "topic"]].itertuples(index=False)]
    assert not {r[0] for r in CRAFTED_ROWS} & {r[0] for r in rows}
    return rows + CRAFTED_ROWS


@pytest.fixture(scope="module")
def posts_csv(env, input_rows) -> Path:
    path = env.root / "posts.csv"
    write_posts_csv(path, input_rows)
    return path


@pytest.fixture(scope="module")
def first_build(env, posts_csv):
    """Load the posts, grant the builder read on them, build once; snapshot what Postgres holds."""
    loaded = env.load_posts(posts_csv)
    assert loaded.returncode == 0, loaded.stderr
    if env.builder is not env.admin:
        with connect(env.admin, autocommit=True) as con:
            con.execute(sql.SQL("grant usage on schema {} to {}").format(
                sql.Identifier(env.source_schema), sql.Identifier(env.builder.user)))
            con.execute(sql.SQL("grant select on {} to {}").format(
                sql.Identifier(env.source_schema, "post_text_df"), sql.Identifier(env.builder.user)))
    result = env.dbt_ok("build", run="first")
    return {"published": env.read_published(), "results": env.run_results("first"),
            "load_output": loaded.stdout, "stdout": result.stdout}


@pytest.fixture(scope="module")
def dev_build(env, posts_csv) -> dict[str, pd.DataFrame]:
    """The same file and settings on the dev target, in a DuckDB file of its own."""
    dev_root = env.root / "dev"
    dev_root.mkdir()
    db_path = dev_root / "dev.duckdb"
    process_env = {**env.subprocess_env(), "POSTS_DUCKDB_PATH": str(db_path)}
    command = env.dbt_command("build", run="dev", target="dev", vars={"posts_file": str(posts_csv)})
    result = subprocess.run(command, cwd=dev_root, env=process_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"dev build failed:\n{result.stdout[-6000:]}"
    with duckdb.connect(str(db_path), read_only=True) as con:
        return {
            "mart": con.execute("select * from main.posts_features order by post_id").df(),
            "compat": con.execute("select * from main.posts_info_deep_features order by post_id").df(),
        }


# ---------------------------------------------------------------- the first build


def test_loader_reports_what_it_loaded(first_build, input_rows, env):
    out = first_build["load_output"]
    assert f"loaded {len(input_rows)} posts" in out
    assert f"{env.source_schema}.post_text_df" in out
    assert "removed NUL bytes from 1 texts" in out
    with connect(env.admin) as con:
        stored = dict(con.execute(sql.SQL("select post_id, text from {}").format(
            sql.Identifier(env.source_schema, "post_text_df"))).fetchall())
    assert set(stored) == {r[0] for r in input_rows}
    assert stored[NUL_ID] == NUL_CLEAN
    assert stored[BIG_ID] == CRAFTED_ROWS[0][1]


def test_published_tables_are_tables_with_exact_columns(first_build, env):
    assert_no_leftovers(env)
    with connect(env.admin) as con:
        columns = con.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = %s order by table_name, ordinal_position", [env.target_schema],
        ).fetchall()
    mart = [(c, t) for table, c, t in columns if table == "posts_features"]
    compat = [(c, t) for table, c, t in columns if table == "posts_info_deep_features"]
    assert [c for c, _ in mart] == MART_COLUMNS
    assert dict(mart) == MART_TYPES
    assert [c for c, _ in compat] == COMPAT_COLUMNS  # case kept: "TextCluster", not textcluster
    assert dict(compat)["TextCluster"] == "integer"
    assert {dict(compat)[name] for name in COMPAT_DISTANCES} == {"double precision"}
    published = first_build["published"]
    assert list(published.mart.columns) == MART_COLUMNS
    assert list(published.compat.columns) == COMPAT_COLUMNS


def test_published_rows_match_the_input(first_build, input_rows):
    mart = first_build["published"].mart.set_index("post_id")
    assert sorted(mart.index) == sorted(r[0] for r in input_rows)
    assert mart.at[NUL_ID, "text"] == NUL_CLEAN
    for post_id, text, topic in input_rows:
        assert mart.at[post_id, "topic"] == topic
        if untouched_by_text_rule(text):
            assert mart.at[post_id, "text"] == text
    distances = mart[DISTANCE_COLUMNS].to_numpy(dtype=float)
    assert np.isfinite(distances).all() and (distances >= 0).all()
    np.testing.assert_array_equal(mart["text_cluster"].to_numpy(dtype=int), distances.argmin(axis=1))


def test_compat_table_renames_the_mart_exactly(first_build):
    published = first_build["published"]
    mart, compat = published.mart, published.compat
    assert compat["post_id"].tolist() == mart["post_id"].tolist()
    assert compat["text"].tolist() == mart["text"].tolist()
    assert compat["TextCluster"].tolist() == mart["text_cluster"].tolist()
    for c in range(N_CLUSTERS):
        assert compat[f"DistanceTo{c + 1}thCluster"].tolist() == mart[f"distance_to_cluster_{c}"].tolist()


def test_every_dbt_test_passed_and_published_models_went_to_postgres(first_build, env):
    results = first_build["results"]
    statuses = {uid: r["status"] for uid, r in results.items()}
    assert all(s in ("success", "pass") for s in statuses.values()), statuses
    models = {uid for uid in results if uid.startswith("model.")}
    assert {f"model.{PROJECT}.{name}" for name in (
        "stg_posts", "int_post_text_features", "posts_features", "posts_info_deep_features")} <= models
    for name in ("posts_features", "posts_info_deep_features"):
        tests = [uid for uid in results if uid.startswith("test.") and f"_{name}_" in uid]
        assert tests, f"no dbt test ran on {name}"
        relation = results[f"model.{PROJECT}.{name}"]["relation_name"]
        assert relation == f'"pg"."{env.target_schema}"."{name}"'
    stdout = first_build["stdout"]
    assert f"pg.{env.target_schema}.posts_features" in stdout


def test_ids_beyond_2_pow_53_survive_exactly(first_build, env):
    mart_ids = [int(i) for i in first_build["published"].mart["post_id"]]
    compat_ids = [int(i) for i in first_build["published"].compat["post_id"]]
    for post_id in (BIG_ID, MAX_ID):
        assert post_id in mart_ids and post_id in compat_ids
    assert BIG_ID - 1 not in mart_ids  # what a trip through a double would give
    with connect(env.admin) as con:
        as_text = con.execute(sql.SQL("select post_id::text from {} where post_id > %s order by 1").format(
            sql.Identifier(env.target_schema, "posts_info_deep_features")), [2**53]).fetchall()
    assert sorted(r[0] for r in as_text) == sorted([str(BIG_ID), str(MAX_ID)])


def test_features_equal_the_duckdb_target(first_build, dev_build):
    pg = first_build["published"].mart
    dev = dev_build["mart"]
    assert list(dev.columns) == MART_COLUMNS
    assert [int(i) for i in pg["post_id"]] == [int(i) for i in dev["post_id"]]
    assert pg["text"].tolist() == dev["text"].tolist()
    assert [int(c) for c in pg["text_cluster"]] == dev["text_cluster"].astype(int).tolist()
    np.testing.assert_allclose(
        pg[DISTANCE_COLUMNS].to_numpy(dtype=float), dev[DISTANCE_COLUMNS].to_numpy(dtype=float),
        rtol=0, atol=1e-6,
    )
    compat_pg = first_build["published"].compat
    np.testing.assert_allclose(
        compat_pg[COMPAT_DISTANCES].to_numpy(dtype=float),
        dev_build["compat"][COMPAT_DISTANCES].to_numpy(dtype=float), rtol=0, atol=1e-6,
    )


def test_password_is_in_no_output_or_artifact(first_build, env):
    password = env.builder.password
    if not password:
        pytest.skip("the builds ran without a password: the connecting user may not create roles "
                    "and POSTGRES_PASSWORD is unset")
    run_dir = env.root / "first"
    files = [p for p in run_dir.rglob("*") if p.is_file()] + [env.duckdb_path]
    assert any(p.name == "dbt.log" for p in files) and any(p.name == "manifest.json" for p in files)
    leaking = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert leaking == []
    assert password not in first_build["stdout"]


# ---------------------------------------------------------------- the service-side reader


def test_reader_reads_in_chunks_through_a_server_side_cursor(first_build, env):
    from python_udf.reader import iter_feature_chunks, read_features

    expected = first_build["published"].compat
    chunk_size = 40
    with connect(env.admin) as con:
        cursors_seen = []
        sizes = []
        for chunk in iter_feature_chunks("posts_info_deep_features", schema=env.target_schema,
                                         order_by=["post_id"], chunk_size=chunk_size, connection=con):
            sizes.append(len(chunk))
            cursors_seen.append([r[0] for r in con.execute("select name from pg_cursors").fetchall()])
    assert sizes == [chunk_size] * (len(expected) // chunk_size) + (
        [len(expected) % chunk_size] if len(expected) % chunk_size else [])
    assert all("text_features_reader" in names for names in cursors_seen)

    frame = read_features("posts_info_deep_features", schema=env.target_schema, order_by=["post_id"],
                          chunk_size=chunk_size, settings=env.admin)
    assert list(frame.columns) == COMPAT_COLUMNS
    assert frame["post_id"].dtype == np.int64
    assert frame["post_id"].tolist() == [int(i) for i in expected["post_id"]]
    assert BIG_ID in frame["post_id"].tolist() and MAX_ID in frame["post_id"].tolist()
    np.testing.assert_array_equal(frame[COMPAT_DISTANCES].to_numpy(), expected[COMPAT_DISTANCES].to_numpy(dtype=float))


# ---------------------------------------------------------------- failures keep the old tables


def test_failed_python_step_keeps_the_previous_tables(first_build, env):
    before = env.read_published()
    # n_components=0 is refused by the Python step's settings check: the step
    # fails and everything downstream of it is skipped.
    result = env.dbt("build", "--select", "int_post_text_features+", run="failed", vars={"n_components": 0})
    assert result.returncode != 0
    results = env.run_results("failed")
    assert results[f"model.{PROJECT}.int_post_text_features"]["status"] == "error"
    assert "n_components=0" in results[f"model.{PROJECT}.int_post_text_features"]["message"]
    assert results[f"model.{PROJECT}.posts_features"]["status"] == "skipped"
    assert_same_tables(before, env.read_published())
    assert_no_leftovers(env)


def test_build_killed_during_the_swap_keeps_the_previous_table(first_build, env):
    """A reader holds the old table; the build waits on it at the rename, is killed there."""
    before = env.read_published()
    with connect(env.admin) as reader:
        # an open read keeps an ACCESS SHARE lock, which the rename must wait for
        reader.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(env.target_schema, "posts_features"))).fetchone()
        reader_pid = reader.info.backend_pid
        process = subprocess.Popen(
            env.dbt_command("run", "--select", "posts_features", run="killed"), cwd=env.root,
            env=env.subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            blocked = None
            with connect(env.admin, autocommit=True) as watcher:
                deadline = time.monotonic() + 180
                while blocked is None and time.monotonic() < deadline and process.poll() is None:
                    blocked = watcher.execute(
                        "select pid, query from pg_stat_activity where %s = any(pg_blocking_pids(pid))",
                        [reader_pid],
                    ).fetchone()
                    time.sleep(0.2)
                assert blocked is not None, f"the build never waited on the reader (exit {process.poll()})"
                # (a user without pg_read_all_stats sees no query text of other roles)
                assert "rename" in blocked[1].lower() or blocked[1] == "<insufficient privilege>"
                # the new rows exist only inside the build's open transaction
                assert watcher.execute("select to_regclass(%s)", [
                    f'"{env.target_schema}"."posts_features__dbt_tmp"']).fetchone()[0] is None
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                # the reader still reads the old version while the build is gone
                again = read_table(reader, env.target_schema, "posts_features")
                pd.testing.assert_frame_equal(again, before.mart)
                reader.commit()
                deadline = time.monotonic() + 60
                while watcher.execute("select 1 from pg_stat_activity where pid = %s",
                                      [blocked[0]]).fetchone() and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    assert_same_tables(before, env.read_published())
    assert_no_leftovers(env)


# ---------------------------------------------------------------- a second build


def test_loader_refuses_to_replace_without_replace(first_build, env, posts_csv):
    result = env.load_posts(posts_csv)
    assert result.returncode != 0
    assert "already exists" in result.stderr and "--replace" in result.stderr


def test_second_build_replaces_the_tables_in_place(first_build, env, input_rows):
    before = env.read_published()
    # drop 10 posts and add one, so that the new version is told apart by its rows
    new_post = (900_002, "A brand new post about football and music.", "sport")
    rows = input_rows[10:] + [new_post]
    path = env.root / "posts_v2.csv"
    write_posts_csv(path, rows)
    loaded = env.load_posts(path, "--replace")
    assert loaded.returncode == 0, loaded.stderr
    assert f"replaced a table of {len(input_rows)} rows" in loaded.stdout

    env.dbt_ok("build", run="second")
    results = env.run_results("second")
    assert all(r["status"] in ("success", "pass") for r in results.values())
    after = env.read_published()
    assert_no_leftovers(env)
    assert sorted(after.mart["post_id"]) == sorted(r[0] for r in rows)
    assert sorted(after.compat["post_id"]) == sorted(r[0] for r in rows)
    # new tables under the same names (the swap), not rows edited in the old ones
    assert after.oids["posts_features"] != before.oids["posts_features"]
    assert after.oids["posts_info_deep_features"] != before.oids["posts_info_deep_features"]
    # posts kept from the first build keep their features: the stored fit is reused
    kept = before.mart.set_index("post_id").loc[[r[0] for r in input_rows[10:]]]
    now = after.mart.set_index("post_id").loc[kept.index]
    assert now["text_cluster"].tolist() == kept["text_cluster"].tolist()
    np.testing.assert_allclose(now[DISTANCE_COLUMNS].to_numpy(dtype=float),
                               kept[DISTANCE_COLUMNS].to_numpy(dtype=float), rtol=0, atol=1e-6)
