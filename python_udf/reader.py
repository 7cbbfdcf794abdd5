"""Read the published features out of Postgres for a service, chunk by chunk.

The service side of the ``postgres`` target: rows come through a server-side
(named) cursor ``chunk_size`` at a time, and each chunk becomes a small
DataFrame before the next is fetched, so the client never holds the whole
result as Python tuples; the peak is the frames read so far plus one chunk,
and twice the final frame for a moment while the chunks are concatenated.

The cursor reads one snapshot and holds a share lock on the table until it is
done, so a dbt build that swaps in a new version of the table waits for the
read to finish rather than changing the rows under it.

Example::

    from python_udf.reader import read_features
    features = read_features("posts_info_deep_features", schema="public")
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from .pg_connection import PostgresSettings

DEFAULT_CHUNK_SIZE = 50_000

# Postgres type oids read into typed columns (pandas' own dtypes); others stay objects.
_INT_OIDS = {20: "int64", 21: "int16", 23: "int32"}
_FLOAT_OIDS = {700: "float32", 701: "float64"}
_TEXT_OIDS = {25, 1042, 1043}  # text, char, varchar


class FeatureReadError(RuntimeError):
    """The table could not be read; the message names the table and server, never the password."""


def iter_feature_chunks(
    table: str = "posts_features",
    *,
    schema: str = "public",
    columns: Sequence[str] | None = None,
    order_by: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    settings: PostgresSettings | None = None,
    connection: psycopg.Connection | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield ``schema.table`` as DataFrames of at most ``chunk_size`` rows.

    An empty table yields one empty frame that still has the columns.

    Column names are kept exactly (``"TextCluster"`` stays mixed-case).
    bigint columns arrive as int64, so ids beyond 2^53 stay exact; integer
    columns holding NULLs use pandas' nullable integer dtypes.

    :param columns: columns to read, default all, in table order.
    :param order_by: columns to sort on, default none (server order).
    :param settings: where to connect; default ``PostgresSettings.from_env()``.
    :param connection: an open connection to use instead of ``settings``;
        it is left open, and the read runs in its own transaction block.
    :raises ValueError: ``chunk_size`` is below 1.
    :raises FeatureReadError: connecting or reading failed.
    :raises PostgresSettingsError: no connection given and POSTGRES_* incomplete.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    query = _select(table, schema, columns, order_by)
    where = f"{schema}.{table}"
    owned = connection is None
    try:
        if owned:
            settings = settings or PostgresSettings.from_env()
            where += f" on {settings.describe()}"
            connection = psycopg.connect(**settings.psycopg_kwargs(), application_name="text-features reader")
        try:
            with connection.transaction():
                with connection.cursor(name="text_features_reader") as cursor:
                    cursor.itersize = chunk_size
                    cursor.execute(query)
                    names = [d.name for d in cursor.description]
                    oids = [d.type_code for d in cursor.description]
                    empty = True
                    while rows := cursor.fetchmany(chunk_size):
                        empty = False
                        yield _frame(rows, names, oids)
                    if empty:
                        yield _frame([], names, oids)
        finally:
            if owned:
                connection.close()
    except psycopg.Error as exc:
        raise FeatureReadError(f"reading {where} failed: {str(exc).strip()}") from None


def read_features(
    table: str = "posts_features",
    *,
    schema: str = "public",
    columns: Sequence[str] | None = None,
    order_by: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    settings: PostgresSettings | None = None,
    connection: psycopg.Connection | None = None,
) -> pd.DataFrame:
    """All of ``schema.table`` as one DataFrame, read in chunks (see iter_feature_chunks).

    :raises FeatureReadError: connecting or reading failed.
    """
    chunks = list(
        iter_feature_chunks(
            table, schema=schema, columns=columns, order_by=order_by, chunk_size=chunk_size,
            settings=settings, connection=connection,
        )
    )
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks, ignore_index=True)


def _select(table: str, schema: str, columns: Sequence[str] | None, order_by: Sequence[str] | None) -> sql.Composed:
    selected = sql.SQL(", ").join(map(sql.Identifier, columns)) if columns else sql.SQL("*")
    query = sql.SQL("select {} from {}").format(selected, sql.Identifier(schema, table))
    if order_by:
        query += sql.SQL(" order by {}").format(sql.SQL(", ").join(map(sql.Identifier, order_by)))
    return query


def _frame(rows: list[tuple], names: list[str], oids: list[int]) -> pd.DataFrame:
    data = {}
    for index, (name, oid) in enumerate(zip(names, oids)):
        values = [row[index] for row in rows]
        data[name] = _column(values, oid)
    return pd.DataFrame(data, columns=names)


def _column(values: list, oid: int):
    if oid in _INT_OIDS:
        if any(v is None for v in values):
            return pd.array(values, dtype=_INT_OIDS[oid].capitalize())
        return np.array(values, dtype=_INT_OIDS[oid])
    if oid in _FLOAT_OIDS:
        return np.array([np.nan if v is None else v for v in values], dtype=_FLOAT_OIDS[oid])
    if oid in _TEXT_OIDS:
        return pd.array(values, dtype="str")
    return pd.array(values, dtype=object)
