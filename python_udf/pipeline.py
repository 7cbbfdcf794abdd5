"""The text-feature step from posts to clusters, in the order data flows.

load posts -> look up cached vectors -> embed the missing texts -> fit (or
reuse a stored fit) -> place every post -> log the run.

:func:`build_text_features` is what the dbt Python model
``int_post_text_features`` calls; the command line calls it too.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import duckdb
import numpy as np
import pandas as pd

from .clustering import ClusterFit, check_sizes, fit_and_place, fit_key
from .embedding import describe_model, embed_texts, embedding_width, load_config, load_encoder
from .lexical import check_texts
from .logs import get_logger
from .settings import FeatureSettings
from .state import DEFAULT_STATE_SCHEMA, StateStore
from .text import clean_text, text_hash

log = get_logger()


class DuplicatePostIdError(ValueError):
    """The same post_id occurs on more than one row (the message lists them)."""


def distance_column(cluster: int) -> str:
    return f"distance_to_cluster_{cluster}"


def embedding_key(model_identity: str, settings: FeatureSettings) -> str:
    """Everything that decides a text's vector; the embedding cache is keyed on it."""
    key = f"{model_identity}|pooling={settings.pooling}|max_length={settings.max_length}|long_text={settings.long_text}"
    if settings.long_text == "chunk_mean":
        key += f"|overlap={settings.chunk_overlap}"
    return key


def check_posts(posts: pd.DataFrame) -> pd.DataFrame:
    """Validate the input frame and apply the text rule; returns (post_id, text)."""
    missing = [c for c in ("post_id", "text") if c not in posts.columns]
    if missing:
        raise ValueError(f"posts need columns post_id and text; missing {missing}")
    if len(posts) == 0:
        raise ValueError("there are no posts to build features for (0 rows read)")
    ids = posts["post_id"]
    null_rows = np.flatnonzero(ids.isna().to_numpy())
    if len(null_rows):
        raise ValueError(f"post_id is NULL on {len(null_rows)} row(s), first at row {int(null_rows[0])}")
    ids = _integer_ids(ids)
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        shown = sorted(set(duplicated.tolist()))
        raise DuplicatePostIdError(
            f"post_id must be unique; {len(shown)} id(s) occur more than once: "
            f"{shown[:20]}{' ...' if len(shown) > 20 else ''}"
        )
    return pd.DataFrame(
        {"post_id": ids.to_numpy(), "text": [clean_text(t) for t in posts["text"].tolist()]}
    )


def _integer_ids(ids: pd.Series) -> pd.Series:
    """Ids as int64, refusing anything that is not a whole number written as one.

    :raises ValueError: naming the first offending row and value (``12.7``,
        ``1e3``, ``abc`` and the like are refused rather than rounded).
    """
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.astype("int64")
    texts = ids.astype(str).str.strip()
    bad = np.flatnonzero(~texts.str.fullmatch(r"[+-]?[0-9]+").to_numpy(dtype=bool))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"post_id must be an integer; row {row} has {ids.iloc[row]!r} "
            f"({len(bad)} row(s) in all)"
        )
    try:
        return pd.Series([int(t) for t in texts], dtype="int64", index=ids.index)
    except OverflowError as exc:
        raise ValueError(f"post_id does not fit in 64 bits: {exc}") from None


def build_text_features(
    con: duckdb.DuckDBPyConnection,
    posts: pd.DataFrame,
    settings: FeatureSettings,
    *,
    state_schema: str = DEFAULT_STATE_SCHEMA,
    progress: bool = True,
) -> pd.DataFrame:
    """Per post, in input order: ``text_cluster``, one distance per centroid, fit and run ids."""
    started_at = datetime.now(timezone.utc).replace(tzinfo=None)
    clock = time.perf_counter()
    run_id = uuid.uuid4().hex
    posts = check_posts(posts)
    store = StateStore(con, state_schema)
    seconds = {"load_model": 0.0, "embed": 0.0, "fit": 0.0, "place": 0.0}

    # ---------- vectors: cached where possible, embedded where not
    revision, identity = describe_model(settings.text_model)
    key = embedding_key(identity, settings)
    texts = posts["text"].tolist()
    # one row per distinct text, in order of first occurrence; codes maps posts to them
    codes, unique_hashes = pd.factorize(np.array([text_hash(t) for t in texts], dtype=object))
    first_post = np.unique(codes, return_index=True)[1]
    fit_k = fit_key(key, settings)
    fit: ClusterFit | None = None if settings.refit else store.latest_fit(fit_k)
    if fit is None:
        # a fit will be made: check the settings against the data before paying for embeddings
        width = embedding_width(load_config(settings.text_model))
        check_sizes(len(posts), width, settings, distinct=len(unique_hashes))
        if settings.tfidf_weight > 0:
            check_texts(texts, settings.n_clusters)  # the texts the fit will see
    unique_matrix, found = store.cached_matrix(key, list(unique_hashes))
    missing = np.flatnonzero(~found)
    device, tokens, batch_size = "none (all vectors cached)", 0, settings.batch_size
    if len(missing):
        started = time.perf_counter()
        encoder = load_encoder(settings.text_model, settings.device)
        seconds["load_model"] = time.perf_counter() - started
        device = str(encoder.device)
        vectors, stats = embed_texts([texts[first_post[i]] for i in missing], encoder, settings, progress=progress)
        del encoder
        seconds["embed"] = stats.seconds
        tokens, batch_size = stats.tokens, stats.batch_size
        store.store_vectors(key, [unique_hashes[i] for i in missing], vectors, stats.tokens_per_text)
        if unique_matrix is None and len(missing) == len(unique_hashes):
            unique_matrix = vectors  # nothing was cached: the new vectors are the matrix
        else:
            if unique_matrix is None:
                unique_matrix = np.zeros((len(unique_hashes), vectors.shape[1]), dtype=np.float32)
            unique_matrix[missing] = vectors
        del vectors
        log.info(
            "embedded %d texts (%d tokens) in %.1fs on %s with %s: %.1f posts/s",
            stats.posts, stats.tokens, stats.seconds, device, settings.text_model, stats.posts_per_second,
        )
    posts_embedded = int(np.count_nonzero(~found[codes]))
    log.info(
        "%d posts read: %d embedded now, %d reused from the cache (key %s)",
        len(posts), posts_embedded, len(posts) - posts_embedded, key,
    )
    # posts with distinct texts (the usual case) use the matrix as it is; either
    # way its rows are the posts in input order, paired with ``texts``
    matrix = unique_matrix if len(unique_hashes) == len(posts) else unique_matrix[codes]
    del unique_matrix

    # ---------- fit once, then place posts with the stored fit
    started = time.perf_counter()
    fit_action = "reused"
    placed = None
    if fit is None:
        # the fit places the posts it was fitted on as it goes
        fit, placed = fit_and_place(matrix, settings, embedding_key=key, texts=texts)
        store.store_fit(fit, key, json.dumps(settings.as_dict(), sort_keys=True))
        fit_action = "fitted"
    else:
        log.info("placing posts with stored fit %s (fitted on %d posts)", fit.fit_id, fit.n_posts)
        if len(unique_hashes) < fit.n_clusters:
            log.warning(
                "only %d distinct texts for the %d clusters of stored fit %s: some clusters "
                "stay empty; set refit: true (and fewer clusters) if the corpus changed",
                len(unique_hashes), fit.n_clusters, fit.fit_id,
            )
    if fit_action == "fitted":
        log.info("fit stages (s): %s", ", ".join(f"{k} {v:.2f}" for k, v in fit.seconds.items()))
    seconds["fit"] = time.perf_counter() - started

    started = time.perf_counter()
    if placed is None:
        placed = fit.placement(matrix, texts)
    labels, distances = placed.labels, placed.distances
    without_terms = int(placed.without_terms.sum())
    if without_terms:
        log.info("%d posts have no word the stored TF-IDF knows: placed by their embedding", without_terms)
    del placed
    seconds["place"] = time.perf_counter() - started
    inertia = float((distances.min(axis=1) ** 2).sum())

    features = pd.DataFrame({"post_id": posts["post_id"].to_numpy(), "text_cluster": labels})
    for cluster in range(fit.n_clusters):
        features[distance_column(cluster)] = distances[:, cluster]
    features["fit_id"] = fit.fit_id
    features["run_id"] = run_id

    seconds_total = time.perf_counter() - clock
    store.log_run(
        {
            "run_id": run_id,
            "started_at": started_at,
            "finished_at": datetime.now(timezone.utc).replace(tzinfo=None),
            "text_model": settings.text_model,
            "model_revision": revision,
            "embedding_key": key,
            "settings_json": json.dumps(settings.as_dict(), sort_keys=True),
            "pooling": settings.pooling,
            "max_length": settings.max_length,
            "long_text": settings.long_text,
            "normalize": settings.normalize,
            "tfidf_weight": settings.tfidf_weight,
            "posts_without_known_terms": without_terms if fit.lexical is not None else None,
            "batch_size": batch_size,
            "n_components": settings.n_components,
            "n_clusters": settings.n_clusters,
            "random_state": settings.random_state,
            "device": device,
            "precision": settings.precision,
            "rows_read": len(posts),
            "posts_embedded": posts_embedded,
            "posts_reused": len(posts) - posts_embedded,
            "texts_embedded": int(len(missing)),
            "tokens_embedded": tokens,
            "seconds_load_model": seconds["load_model"],
            "seconds_embed": seconds["embed"],
            "seconds_fit": seconds["fit"],
            "seconds_place": seconds["place"],
            "seconds_total": seconds_total,
            "posts_per_second": len(missing) / seconds["embed"] if seconds["embed"] > 0 else None,
            "fit_id": fit.fit_id,
            "fit_action": fit_action,
            "svd_explained_variance": fit.explained_variance_ratio,
            "kmeans_inertia": inertia,
        }
    )
    store.close()
    log.info(
        "run %s: %d posts in %d clusters (fit %s, %s) in %.1fs",
        run_id, len(features), fit.n_clusters, fit.fit_id, fit_action, seconds_total,
    )
    return features
