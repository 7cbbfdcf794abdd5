"""``text-features load-posts``: put a posts file into Postgres as ``post_text_df``.

The ``postgres`` dbt target reads its source from that table (schema var
``postgres_source_schema``). The file is read and checked whole before
Postgres is touched; the table is then written in one transaction, so a
failed load leaves the previous rows as they were, and a replacement becomes
visible all at once.

A new table is created as::

    post_id bigint primary key, text text, topic text

An existing one (with ``--replace``) keeps its definition, owner and grants;
only its rows are replaced.

Postgres cannot store NUL bytes in text, so they are removed here (the count
is reported); stg_posts removes them on every target, so a post gets the same
features either way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from .logs import get_logger
from .pg_connection import PostgresSettings

log = get_logger()

SOURCE_TABLE = "post_text_df"
# The corpus ships in the checkout beside the package (editable install), not in the wheel.
BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "data" / "bbc_posts.csv.gz"
_COPY_BATCH = 10_000


class LoadPostsError(ValueError):
    """The file cannot be loaded as posts; the message names the row or column."""


class TableExistsError(LoadPostsError):
    """The target table exists and replacing it was not asked for."""


class PostgresUnavailableError(RuntimeError):
    """The server could not be reached or refused the load (no password in the message)."""


@dataclass(frozen=True)
class LoadResult:
    """What a load did, with numbers a person can check."""

    rows: int
    schema: str
    table: str
    replaced_rows: int | None
    nul_bytes_removed_rows: int


def read_posts_file(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Read ``path`` into the temporary table ``posts_to_load`` and check it.

    CSV (optionally gzipped) is read as text, so ids beyond 2^53 stay exact;
    Parquet ids must be an integer type.

    :raises FileNotFoundError: ``path`` does not exist.
    :raises LoadPostsError: a column is missing, a post_id is NULL, not an
        integer, or repeated (the message names the row or the ids).
    """
    if not path.is_file():
        raise FileNotFoundError(f"posts file {path} does not exist")
    if path.name.endswith(".parquet"):
        reader = "read_parquet(?)"
    else:
        reader = "read_csv(?, header = true, all_varchar = true)"
    try:
        con.execute(f"create or replace temporary table raw_posts as select * from {reader}", [str(path)])
    except duckdb.Error as exc:
        raise LoadPostsError(f"could not read {path} as CSV or Parquet: {exc}") from None
    described = con.execute("describe raw_posts").fetchall()
    types = {name: kind for name, kind, *_ in described}
    missing = [c for c in ("post_id", "text") if c not in types]
    if missing:
        raise LoadPostsError(f"{path} lacks column(s) {missing}; it has {sorted(types)}")
    if types["post_id"] in ("FLOAT", "DOUBLE") or types["post_id"].startswith("DECIMAL"):
        raise LoadPostsError(
            f"post_id in {path} is {types['post_id']}; store ids as integers so that ids "
            "beyond 2^53 survive exactly"
        )
    topic = "cast(topic as varchar)" if "topic" in types else "cast(null as varchar)"
    con.execute(
        f"""
        create or replace temporary table posts_to_load as
        select
            row_number() over () as file_row,
            cast(post_id as varchar) as raw_post_id,
            -- a cast alone would round '2.5' to 3; only whole numbers are ids
            case
                when regexp_full_match(trim(cast(post_id as varchar)), '[+-]?[0-9]+')
                    then try_cast(trim(cast(post_id as varchar)) as bigint)
            end as post_id,
            cast(text as varchar) as text,
            {topic} as topic
        from raw_posts"""
    )
    bad = con.execute(
        """
        select file_row, raw_post_id from posts_to_load
        where post_id is null order by file_row limit 1"""
    ).fetchone()
    if bad is not None:
        what = "NULL" if bad[1] is None else f"{bad[1]!r}, not a 64-bit integer"
        raise LoadPostsError(f"{path}: post_id on data row {bad[0]} is {what}")
    duplicated = [
        row[0]
        for row in con.execute(
            """
            select post_id from posts_to_load
            group by post_id having count(*) > 1 order by post_id limit 21"""
        ).fetchall()
    ]
    if duplicated:
        raise LoadPostsError(
            f"{path}: post_id must be unique; repeated ids include "
            f"{duplicated[:20]}{' ...' if len(duplicated) > 20 else ''}"
        )


def load_posts(
    path: Path,
    settings: PostgresSettings,
    *,
    schema: str = "public",
    replace: bool = False,
) -> LoadResult:
    """Load the posts in ``path`` into ``schema.post_text_df``, in one transaction.

    The schema and the table are created when missing. With ``replace``, the
    rows of an existing table are deleted and the new ones copied in; readers
    see the old rows until the load commits.

    :raises LoadPostsError: the file is not valid posts (see read_posts_file).
    :raises TableExistsError: the table exists and ``replace`` is false.
    :raises PostgresUnavailableError: connecting or writing failed.
    """
    with duckdb.connect() as con:
        read_posts_file(con, path)
        (rows,) = con.execute("select count(*) from posts_to_load").fetchone()
        if rows == 0:
            raise LoadPostsError(f"{path} holds no posts")
        try:
            with psycopg.connect(**settings.psycopg_kwargs(), application_name="text-features load-posts") as pg:
                return _write(con, pg, rows, schema, replace)
        except psycopg.Error as exc:
            raise PostgresUnavailableError(
                f"loading into {schema}.{SOURCE_TABLE} on {settings.describe()} failed: "
                f"{str(exc).strip()}"
            ) from None


def _write(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection, rows: int, schema: str, replace: bool
) -> LoadResult:
    target = sql.Identifier(schema, SOURCE_TABLE)
    with pg.transaction():
        cur = pg.cursor()
        if cur.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone() is None:
            cur.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
            log.info("created schema %s", schema)
        existing = cur.execute("select to_regclass(%s)", [target.as_string(pg)]).fetchone()[0]
        replaced_rows = None
        if existing is None:
            cur.execute(
                sql.SQL("create table {} (post_id bigint primary key, text text, topic text)").format(target)
            )
        else:
            (replaced_rows,) = cur.execute(sql.SQL("select count(*) from {}").format(target)).fetchone()
            if not replace:
                raise TableExistsError(
                    f"{schema}.{SOURCE_TABLE} already exists ({replaced_rows} rows); "
                    "pass --replace to replace its rows"
                )
            # delete, not drop or truncate: grants, owner and dependent views
            # stay, and readers keep seeing the old rows until the commit.
            cur.execute(sql.SQL("delete from {}").format(target))
        nul_rows = 0
        source = con.execute("select post_id, text, topic from posts_to_load order by file_row")
        with cur.copy(sql.SQL("copy {} (post_id, text, topic) from stdin").format(target)) as copy:
            while batch := source.fetchmany(_COPY_BATCH):
                for post_id, text, topic in batch:
                    if text is not None and "\x00" in text:
                        text = text.replace("\x00", "")
                        nul_rows += 1
                    copy.write_row((post_id, text, topic))
    return LoadResult(rows, schema, SOURCE_TABLE, replaced_rows, nul_rows)


def add_command(subparsers) -> None:
    """Register ``load-posts`` on the ``text-features`` command line."""
    parser = subparsers.add_parser(
        "load-posts",
        help="load a posts file into Postgres as post_text_df",
        description=(
            "Load a CSV, CSV.gz or Parquet file with columns post_id, text and "
            "optionally topic into the Postgres table <schema>.post_text_df, the "
            "source of `dbt build --target postgres`. The connection comes from "
            "POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD and "
            "POSTGRES_DATABASE (environment or a .env file)."
        ),
    )
    parser.add_argument("--target", choices=["postgres"], default="postgres",
                        help="where to load the posts (only postgres has a table source)")
    parser.add_argument("--file", type=Path, default=BUNDLED_CORPUS,
                        help="posts file (default: the bundled BBC corpus, %(default)s)")
    parser.add_argument("--schema", default="public",
                        help="Postgres schema of the table, created when missing; the dbt var "
                             "postgres_source_schema must name the same one (default: %(default)s)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the rows of an existing post_text_df (refused otherwise)")
    parser.set_defaults(handler=_load_posts_command)


def _load_posts_command(args: argparse.Namespace) -> int:
    settings = PostgresSettings.from_env()
    result = load_posts(args.file, settings, schema=args.schema, replace=args.replace)
    replaced = (
        f"; replaced a table of {result.replaced_rows} rows" if result.replaced_rows is not None else ""
    )
    nul = (
        f"; removed NUL bytes from {result.nul_bytes_removed_rows} texts"
        if result.nul_bytes_removed_rows else ""
    )
    print(
        f"loaded {result.rows} posts from {args.file} into {result.schema}.{result.table} "
        f"on {settings.describe()}{replaced}{nul}"
    )
    return 0
