"""Postgres settings, the attach, the dbt plugin and the loader's file checks.

None of these needs a server: the attach is pointed at a closed port, and
the loader's checks run on DuckDB alone. The server tests are in
tests/integration/test_postgres.py.
"""

from __future__ import annotations

import duckdb
import pytest

from python_udf.loader import LoadPostsError, read_posts_file
from python_udf.pg_connection import (
    ENV_VARS,
    PostgresAttachError,
    PostgresSettings,
    PostgresSettingsError,
    attach_postgres,
)

PASSWORD = "s3cr'et-canary-4417"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No POSTGRES_* in the environment, and a working directory without a .env.

    Each variable is set then deleted, so that monkeypatch also removes what
    a .env loaded during the test put there.
    """
    for name in ENV_VARS:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- settings


def test_settings_default_host_and_port(clean_env):
    settings = PostgresSettings.from_env({"POSTGRES_USER": "app", "POSTGRES_DATABASE": "posts"})
    assert (settings.host, settings.port, settings.user, settings.database) == ("127.0.0.1", 5432, "app", "posts")
    assert settings.password is None
    assert "password" not in settings.psycopg_kwargs()


@pytest.mark.parametrize("missing", ["POSTGRES_USER", "POSTGRES_DATABASE"])
def test_missing_user_or_database_is_named(clean_env, missing):
    env = {"POSTGRES_USER": "app", "POSTGRES_DATABASE": "posts"}
    del env[missing]
    with pytest.raises(PostgresSettingsError, match=missing):
        PostgresSettings.from_env(env)


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_bad_port_is_named(clean_env, port):
    with pytest.raises(PostgresSettingsError, match=f"POSTGRES_PORT='{port}'"):
        PostgresSettings.from_env({"POSTGRES_USER": "a", "POSTGRES_DATABASE": "b", "POSTGRES_PORT": port})


def test_password_is_not_in_repr_or_description(clean_env):
    settings = PostgresSettings("db.example", 6543, "app", "posts", PASSWORD)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert settings.describe() == "app@db.example:6543/posts"
    assert settings.psycopg_kwargs()["password"] == PASSWORD


def test_dotenv_fills_in_but_never_overrides(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "POSTGRES_USER=from_file\nPOSTGRES_DATABASE=file_db\nPOSTGRES_PORT=6000\n", encoding="utf-8"
    )
    monkeypatch.setenv("POSTGRES_USER", "from_environment")
    settings = PostgresSettings.from_env()
    assert settings.user == "from_environment"
    assert settings.database == "file_db"
    assert settings.port == 6000


def test_dotenv_is_found_above_the_working_directory(clean_env, monkeypatch):
    (clean_env / ".env").write_text("POSTGRES_USER=u\nPOSTGRES_DATABASE=d\n", encoding="utf-8")
    nested = clean_env / "models" / "marts"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert PostgresSettings.from_env().describe() == "u@127.0.0.1:5432/d"


# ---------------------------------------------------------------- attach


def test_failed_attach_names_the_server_but_not_the_password():
    # port 1 on localhost: nothing listens there, so the attach fails at once
    settings = PostgresSettings("127.0.0.1", 1, "app", "posts", PASSWORD)
    with duckdb.connect() as con:
        with pytest.raises(PostgresAttachError) as caught:
            attach_postgres(con, settings, "pg")
        secrets = con.execute("select secret_string from duckdb_secrets()").fetchall()
    message = str(caught.value)
    assert "app@127.0.0.1:1/posts" in message
    assert PASSWORD not in message and PASSWORD.replace("'", "''") not in message
    # the secret that carried the password is listed redacted
    assert secrets and all(PASSWORD not in s[0] for s in secrets)


def test_attach_refuses_a_name_the_local_file_already_has(tmp_path):
    # a local file called pg.duckdb is the catalog "pg": attaching Postgres as pg
    # must say so instead of silently reading the local file
    settings = PostgresSettings("127.0.0.1", 1, "app", "posts")
    with duckdb.connect(str(tmp_path / "pg.duckdb")) as con:
        with pytest.raises(PostgresAttachError, match=r"name is already taken .*pg\.duckdb.*POSTS_DUCKDB_PATH"):
            attach_postgres(con, settings, "pg")


def test_attach_alias_must_be_an_identifier():
    settings = PostgresSettings("127.0.0.1", 1, "app", "posts")
    with duckdb.connect() as con, pytest.raises(PostgresSettingsError, match="attach_as"):
        attach_postgres(con, settings, "pg; drop table x")


def test_dbt_plugin_reads_settings_from_the_environment(clean_env, monkeypatch):
    from python_udf.dbt_postgres import Plugin

    monkeypatch.setenv("POSTGRES_USER", "app")
    monkeypatch.setenv("POSTGRES_DATABASE", "posts")
    monkeypatch.setenv("POSTGRES_PASSWORD", PASSWORD)
    plugin = Plugin("postgres_attach", {"attach_as": "pg"})
    assert plugin.attach_as == "pg"
    assert plugin.settings.describe() == "app@127.0.0.1:5432/posts"
    assert plugin.settings.password == PASSWORD
    with pytest.raises(PostgresSettingsError, match="attach_as"):
        Plugin("postgres_attach", {"attach_as": "1pg"})


def test_dbt_plugin_without_user_says_which_variables_to_set(clean_env):
    from python_udf.dbt_postgres import Plugin

    with pytest.raises(PostgresSettingsError, match="POSTGRES_USER and POSTGRES_DATABASE not set"):
        Plugin("postgres_attach", {"attach_as": "pg"})


# ---------------------------------------------------------------- loader checks


def _read(tmp_path, content: str):
    path = tmp_path / "posts.csv"
    path.write_text(content, encoding="utf-8")
    con = duckdb.connect()
    read_posts_file(con, path)
    return con


def test_loader_keeps_ids_beyond_2_pow_53_and_nul_bytes_until_the_write(tmp_path):
    con = _read(tmp_path, f'post_id,text,topic\n{2**53 + 1},"a\x00b",x\n{2**63 - 1},big,\n')
    rows = con.execute("select post_id, text, topic from posts_to_load order by file_row").fetchall()
    assert rows == [(2**53 + 1, "a\x00b", "x"), (2**63 - 1, "big", None)]


def test_loader_without_topic_column_loads_null_topics(tmp_path):
    con = _read(tmp_path, "post_id,text\n1,a\n")
    assert con.execute("select post_id, text, topic from posts_to_load").fetchall() == [(1, "a", None)]


@pytest.mark.parametrize(
    "content, message",
    [
        ("post_id,text\n1,a\n2.5,b\n", r"data row 2 is '2\.5', not a 64-bit integer"),
        ("post_id,text\n1,a\n,b\n", "data row 2 is NULL"),
        ("post_id,text\n1,a\n99999999999999999999,b\n", "data row 2 is '99999999999999999999'"),
        ("post_id,text\n7,a\n8,b\n7,c\n", r"repeated ids include \[7\]"),
        ("id,text\n1,a\n", r"lacks column\(s\) \['post_id'\]"),
    ],
)
def test_loader_rejects_bad_files_naming_the_row(tmp_path, content, message):
    with pytest.raises(LoadPostsError, match=message):
        _read(tmp_path, content)


def test_loader_rejects_floating_point_ids_in_parquet(tmp_path):
    path = tmp_path / "posts.parquet"
    duckdb.execute(f"copy (select 1.0::double as post_id, 'a' as text) to '{path}'")
    with pytest.raises(LoadPostsError, match="post_id .* is DOUBLE"):
        read_posts_file(duckdb.connect(), path)


def test_loader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        read_posts_file(duckdb.connect(), tmp_path / "nothere.csv")


def test_load_posts_command_is_registered():
    from python_udf.cli import build_parser

    args = build_parser().parse_args(
        ["load-posts", "--target", "postgres", "--file", "x.csv", "--schema", "raw", "--replace"]
    )
    assert (args.target, str(args.file), args.schema, args.replace) == ("postgres", "x.csv", "raw", True)
    assert callable(args.handler)
    defaults = build_parser().parse_args(["load-posts"])
    assert defaults.file.name == "bbc_posts.csv.gz" and defaults.schema == "public" and not defaults.replace
