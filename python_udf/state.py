"""What the text-feature step keeps between runs, in the local DuckDB file.

Three tables in one schema (``text_features_state`` by default):

``embedding_cache``
    one row per (embedding_key, text_hash): the vector of a cleaned text under
    one model, pooling, ``max_length`` and long-text rule.
``cluster_fits``
    one row per fit: the settings it was made with and its arrays (centring
    mean, SVD basis, centroids) as an ``.npz`` blob.
``feature_runs_log``
    one row per run of the step, read by the dbt model ``text_feature_runs``.

Writes go through their own cursor, which commits at once: vectors computed
before a later failure are kept, so the next run does not pay for them again.

DuckDB keeps table blocks it has written or read in its buffer pool, up to
its ``memory_limit`` (80% of RAM unless the profile sets one); with a large
cache that pool, not this module, is most of the process's memory.
"""

from __future__ import annotations

from typing import Any, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from .clustering import ClusterFit

DEFAULT_STATE_SCHEMA = "text_features_state"


class StateStore:
    """Embedding cache, stored fits and the run log for one DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, schema: str = DEFAULT_STATE_SCHEMA):
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"state schema {schema!r} must be a plain identifier")
        self._con = con.cursor()
        # Qualify with the catalog: a DuckDB file named like the schema
        # (text_features_state.duckdb) would otherwise make every name ambiguous.
        catalog = self._con.execute("select current_database()").fetchone()[0].replace('"', '""')
        self.schema = f'"{catalog}".{schema}'
        self._ensure()

    def _ensure(self) -> None:
        s = self.schema
        self._con.execute(f"create schema if not exists {s}")
        self._con.execute(
            f"""
            create table if not exists {s}.embedding_cache (
                embedding_key varchar not null,
                text_hash varchar not null,
                vector float[] not null,
                n_tokens integer,
                created_at timestamp default current_timestamp,
                primary key (embedding_key, text_hash)
            )"""
        )
        self._con.execute(
            f"""
            create table if not exists {s}.cluster_fits (
                fit_id varchar primary key,
                fit_key varchar not null,
                embedding_key varchar not null,
                settings_json varchar not null,
                n_posts bigint not null,
                algorithm varchar not null,
                explained_variance_ratio double,
                inertia double,
                payload blob not null,
                created_at timestamp default current_timestamp
            )"""
        )
        self._con.execute(
            f"""
            create table if not exists {s}.feature_runs_log (
                run_id varchar primary key,
                started_at timestamp,
                finished_at timestamp,
                text_model varchar,
                model_revision varchar,
                embedding_key varchar,
                settings_json varchar,
                pooling varchar,
                max_length integer,
                long_text varchar,
                normalize boolean,
                batch_size integer,
                n_components integer,
                n_clusters integer,
                random_state integer,
                device varchar,
                precision varchar,
                rows_read bigint,
                posts_embedded bigint,
                posts_reused bigint,
                texts_embedded bigint,
                tokens_embedded bigint,
                seconds_load_model double,
                seconds_embed double,
                seconds_fit double,
                seconds_place double,
                seconds_total double,
                posts_per_second double,
                fit_id varchar,
                fit_action varchar,
                svd_explained_variance double,
                kmeans_inertia double
            )"""
        )
        # columns added after the first release: logs made before gain them (NULL in old rows)
        for column, kind in (("tfidf_weight", "double"), ("posts_without_known_terms", "bigint")):
            self._con.execute(f"alter table {s}.feature_runs_log add column if not exists {column} {kind}")

    # ---------- embedding cache

    def cached_vectors(self, embedding_key: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already stored for ``hashes`` under ``embedding_key``, by hash."""
        distinct = list(dict.fromkeys(hashes))
        matrix, found = self.cached_matrix(embedding_key, distinct)
        return {h: matrix[i] for i, h in enumerate(distinct) if found[i]}

    def cached_matrix(
        self, embedding_key: str, hashes: Sequence[str], *, rows_per_batch: int = 65_536
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """Stored vectors as one float32 matrix aligned with ``hashes`` (which must be distinct).

        Returns ``(matrix, found)``: row ``i`` of ``matrix`` is the vector of
        ``hashes[i]`` where ``found[i]``, zeros elsewhere; ``matrix`` is ``None``
        when nothing is stored. The rows stream from DuckDB ``rows_per_batch``
        at a time straight into the matrix, so memory is the matrix plus one
        batch (not a second copy of every vector, nor a dict of them).
        """
        found = np.zeros(len(hashes), dtype=bool)
        if len(hashes) == 0:
            return None, found
        wanted = pa.table(
            {
                "position": pa.array(np.arange(len(hashes), dtype=np.int64)),
                "text_hash": pa.array(list(hashes), pa.string()),
            }
        )
        cur = self._con.cursor()
        cur.register("wanted_positions", wanted)
        result = cur.execute(
            f"""
            select w.position, c.vector
            from {self.schema}.embedding_cache as c
            join wanted_positions as w using (text_hash)
            where c.embedding_key = ?""",
            [embedding_key],
        )
        reader_of = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
        matrix: np.ndarray | None = None
        try:
            for batch in reader_of(rows_per_batch):
                if batch.num_rows == 0:
                    continue
                positions = batch.column(0).to_numpy()
                values = _list_column_to_matrix(batch.column(1))
                if matrix is None:
                    matrix = np.zeros((len(hashes), values.shape[1]), dtype=np.float32)
                elif values.shape[1] != matrix.shape[1]:
                    raise ValueError(
                        f"embedding_cache holds vectors of widths {matrix.shape[1]} and "
                        f"{values.shape[1]} under one key {embedding_key!r}"
                    )
                matrix[positions] = values
                found[positions] = True
        finally:
            cur.close()
        return matrix, found

    def store_vectors(
        self,
        embedding_key: str,
        hashes: Sequence[str],
        vectors: np.ndarray,
        n_tokens: Sequence[int] | None = None,
        *,
        rows_per_batch: int = 65_536,
    ) -> None:
        """Store (or replace) the vectors of ``hashes`` under ``embedding_key``.

        Rows go in ``rows_per_batch`` at a time, each batch in its own
        transaction (delete the rows it replaces, then a plain insert): a
        single ``insert or replace`` of a million vectors held several times
        their size in DuckDB's working memory, and was slower.
        """
        if len(hashes) == 0:
            return
        if len(hashes) != len(vectors):
            raise ValueError(f"{len(hashes)} hashes but {len(vectors)} vectors")
        width = vectors.shape[1]
        cur = self._con.cursor()
        try:
            for start in range(0, len(hashes), rows_per_batch):
                stop = min(len(hashes), start + rows_per_batch)
                count = stop - start
                flat = pa.array(np.ascontiguousarray(vectors[start:stop], dtype=np.float32).reshape(-1))
                offsets = pa.array(np.arange(0, (count + 1) * width, width, dtype=np.int32))
                tokens = list(n_tokens[start:stop]) if n_tokens is not None else [None] * count
                rows = pa.table(
                    {
                        "embedding_key": pa.array([embedding_key] * count, pa.string()),
                        "text_hash": pa.array(list(hashes[start:stop]), pa.string()),
                        "vector": pa.ListArray.from_arrays(offsets, flat),
                        "n_tokens": pa.array(tokens, pa.int32()),
                    }
                )
                cur.register("new_vectors", rows)
                cur.execute("begin transaction")
                try:
                    cur.execute(
                        f"""
                        delete from {self.schema}.embedding_cache as c
                        using new_vectors as n
                        where c.embedding_key = n.embedding_key and c.text_hash = n.text_hash"""
                    )
                    cur.execute(
                        f"""
                        insert into {self.schema}.embedding_cache
                            (embedding_key, text_hash, vector, n_tokens)
                        select embedding_key, text_hash, vector, n_tokens from new_vectors"""
                    )
                    cur.execute("commit")
                except BaseException:
                    cur.execute("rollback")
                    raise
                finally:
                    cur.unregister("new_vectors")
        finally:
            cur.close()

    # ---------- fits

    def latest_fit(self, fit_key: str) -> ClusterFit | None:
        row = self._con.execute(
            f"""
            select payload from {self.schema}.cluster_fits
            where fit_key = ? order by created_at desc, fit_id desc limit 1""",
            [fit_key],
        ).fetchone()
        return ClusterFit.from_bytes(bytes(row[0])) if row else None

    def store_fit(self, fit: ClusterFit, embedding_key: str, settings_json: str) -> None:
        self._con.execute(
            f"""
            insert into {self.schema}.cluster_fits
                (fit_id, fit_key, embedding_key, settings_json, n_posts, algorithm,
                 explained_variance_ratio, inertia, payload)
            values (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                fit.fit_id, fit.fit_key, embedding_key, settings_json, fit.n_posts,
                fit.algorithm, fit.explained_variance_ratio, fit.inertia, fit.to_bytes(),
            ],
        )

    # ---------- run log

    def log_run(self, record: dict[str, Any]) -> None:
        frame = pd.DataFrame([record])
        cur = self._con.cursor()
        cur.register("run_record", frame)
        columns = ", ".join(record)
        cur.execute(
            f"insert into {self.schema}.feature_runs_log ({columns}) select {columns} from run_record"
        )
        cur.close()

    def close(self) -> None:
        self._con.close()


def _list_column_to_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    combined = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = combined.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(combined), -1)
