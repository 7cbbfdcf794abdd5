"""Pure logic behind the scaling work: the CUDA batch size, blockwise reduction,
bounded-memory embedding accumulation and the streaming cache read.

Nothing here times anything; speed is measured by bench/run.py.
"""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from python_udf import embedding
from python_udf.clustering import (
    ClusterFit,
    DataCheckError,
    _count_distinct_rows,
    _has_distinct_rows,
    _prepare,
    check_settings_against_data,
    column_mean,
    euclidean_distances,
    fit_clusters,
    reduce_rows,
)
from python_udf.embedding import (
    DEFAULT_BATCH_SIZE,
    auto_batch_size,
    embed_texts,
    resolve_batch_size,
)
from python_udf.settings import FeatureSettings
from python_udf.state import StateStore

GIB = 2**30


# ---------------------------------------------------------------- batch size


def test_auto_batch_size_matches_its_formula():
    # one 512-token sequence of a 768-wide, 12-head model in fp32:
    # 512 * (16 * 768 + 12 * 512) * 4 bytes = 37,748,736 bytes
    per_sequence = 512 * (16 * 768 + 12 * 512) * 4
    assert auto_batch_size(per_sequence * 2 * 100, 512, 768) == 96  # 100 fit, rounded to 8
    assert auto_batch_size(per_sequence * 2 * 5, 512, 768) == 5  # below 8: not rounded to 0


def test_auto_batch_size_grows_with_free_memory_and_shrinks_with_length():
    sizes = [auto_batch_size(g * GIB, 512, 768) for g in (1, 4, 16, 40, 80)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert auto_batch_size(16 * GIB, 128, 768) > auto_batch_size(16 * GIB, 512, 768)
    assert auto_batch_size(16 * GIB, 512, 384) > auto_batch_size(16 * GIB, 512, 768)
    # half-precision activations take half the bytes, so about twice the rows fit
    assert auto_batch_size(16 * GIB, 512, 768, bytes_per_value=2) >= 2 * auto_batch_size(16 * GIB, 512, 768) - 8


def test_auto_batch_size_bounds():
    assert auto_batch_size(0, 512, 768) == 1
    assert auto_batch_size(-5, 512, 768) == 1
    assert auto_batch_size(10_000 * GIB, 512, 768) == 1024
    assert auto_batch_size(10_000 * GIB, 512, 768, ceiling=256) == 256
    for g in (2, 3, 7, 24, 80, 141):
        size = auto_batch_size(g * GIB, 512, 768)
        assert size % 8 == 0 or size < 8
    with pytest.raises(ValueError):
        auto_batch_size(GIB, 0, 768)


def test_a_80_gib_card_gets_hundreds_of_sequences():
    # the point of the setting: far above the CPU default of 32
    assert auto_batch_size(80 * GIB, 512, 768) >= 512


def test_batch_size_is_used_as_given_on_cpu(tiny_encoder):
    assert tiny_encoder.device.type == "cpu"
    for size in (DEFAULT_BATCH_SIZE, 3, 500):
        settings = FeatureSettings(text_model="unused", batch_size=size)
        assert resolve_batch_size(tiny_encoder, settings) == size


def test_default_batch_size_is_auto_on_cuda_only(tiny_encoder, monkeypatch):
    """With a (pretend) CUDA device and the default, the free memory decides."""
    cuda_encoder = dataclasses.replace(tiny_encoder, device=torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * GIB, 80 * GIB))
    default = FeatureSettings(text_model="unused")
    expected = auto_batch_size(
        40 * GIB, default.max_length, tiny_encoder.width, n_heads=tiny_encoder.model.config.n_heads
    )
    assert resolve_batch_size(cuda_encoder, default) == expected != DEFAULT_BATCH_SIZE
    bf16 = dataclasses.replace(default, precision="bf16")
    assert resolve_batch_size(cuda_encoder, bf16) >= expected
    chosen = dataclasses.replace(default, batch_size=48)
    assert resolve_batch_size(cuda_encoder, chosen) == 48


# ---------------------------------------------------------------- out of memory


def test_out_of_memory_batches_are_split_and_give_the_same_vectors(tiny_encoder, monkeypatch):
    texts = [f"post number {i} " + "word " * (i % 17) for i in range(23)]
    settings = FeatureSettings(text_model="unused", batch_size=16)
    expected, _ = embed_texts(texts, tiny_encoder, settings, progress=False)

    real_forward = embedding._forward
    seen_rows = []

    def forward_with_small_memory(encoder, batch, settings):
        rows = int(batch["input_ids"].shape[0])
        seen_rows.append(rows)
        if rows > 3:
            raise embedding._OUT_OF_MEMORY("pretend the device is full")
        return real_forward(encoder, batch, settings)

    monkeypatch.setattr(embedding, "_forward", forward_with_small_memory)
    got, stats = embed_texts(texts, tiny_encoder, settings, progress=False)
    assert stats.oom_splits > 0
    assert max(r for r in seen_rows) == 16 and min(seen_rows) <= 3
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_out_of_memory_on_a_single_row_is_raised(tiny_encoder, monkeypatch):
    def always_full(encoder, batch, settings):
        raise embedding._OUT_OF_MEMORY("full")

    monkeypatch.setattr(embedding, "_forward", always_full)
    with pytest.raises(embedding._OUT_OF_MEMORY):
        embed_texts(["a", "b"], tiny_encoder, FeatureSettings(text_model="unused", batch_size=2), progress=False)


# ---------------------------------------------------------------- embedding accumulation


def _reference_embedding(texts, encoder, settings):
    """The per-post float64 accumulator of the first implementation (np.add.at)."""
    order = embedding.length_order(texts)
    sums = np.zeros((len(texts), encoder.width))
    weights = np.zeros(len(texts))
    for owners, batch in embedding._window_batches(texts, order, encoder, settings):
        pooled = embedding._forward(encoder, batch, settings)
        counts = batch["attention_mask"].sum(dim=1).numpy()
        np.add.at(sums, owners, pooled * counts[:, None])
        np.add.at(weights, owners, counts)
    return (sums / weights[:, None]).astype(np.float32)


@pytest.mark.parametrize("long_text", ["truncate", "chunk_mean"])
def test_streaming_accumulation_equals_per_post_accumulator(tiny_encoder, long_text):
    texts = [("football politics music " * (5 + 9 * i)).strip() for i in range(9)] + ["", "x"]
    settings = FeatureSettings(
        text_model="unused", max_length=16, chunk_overlap=4, batch_size=3, long_text=long_text
    )
    got, stats = embed_texts(texts, tiny_encoder, settings, progress=False)
    expected = _reference_embedding(texts, tiny_encoder, settings)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    if long_text == "chunk_mean":
        assert stats.windows > len(texts)  # windows of one post crossed batch boundaries


# ---------------------------------------------------------------- blockwise reduction


def _vectors(n=1_000, width=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (4, width))
    return (centres[rng.integers(0, 4, n)] + rng.normal(0, 1, (n, width))).astype(np.float32)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("block_rows", [1, 7, 256, 10_000])
def test_blockwise_reduction_equals_dense(normalize, block_rows):
    vectors = _vectors()
    vectors[5] = 0.0  # a zero row must survive normalisation
    rng = np.random.default_rng(1)
    components = rng.normal(size=(6, vectors.shape[1]))
    dense_prepared = _prepare(vectors, normalize)
    dense_mean = dense_prepared.mean(axis=0)
    mean = column_mean(vectors, normalize, block_rows=block_rows)
    np.testing.assert_allclose(mean, dense_mean, rtol=1e-12, atol=1e-12)

    got = reduce_rows(vectors, dense_mean, components, normalize, block_rows=block_rows)
    dense = (dense_prepared - dense_mean) @ components.T
    assert got.dtype == np.float64 and got.shape == dense.shape
    np.testing.assert_allclose(got, dense, rtol=1e-12, atol=1e-12)


def test_reduction_leaves_its_input_alone():
    for dtype in (np.float32, np.float64):
        vectors = _vectors().astype(dtype)
        before = vectors.copy()
        reduce_rows(vectors, np.ones(vectors.shape[1]), np.eye(3, vectors.shape[1]), True, block_rows=64)
        column_mean(vectors, True, block_rows=64)
        np.testing.assert_array_equal(vectors, before)


@pytest.mark.parametrize("block_elements", [1, 50, 1 << 21])
def test_blockwise_distances_equal_dense(block_elements):
    rng = np.random.default_rng(2)
    points, centroids = rng.normal(size=(301, 5)), rng.normal(size=(7, 5))
    dense = np.sqrt(((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    got = euclidean_distances(points, centroids, block_elements=block_elements)
    np.testing.assert_allclose(got, dense, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("minibatch_threshold", [100_000, 500])
def test_placing_the_fitted_vectors_reproduces_fit_time_features(minibatch_threshold):
    """Fit and placement share one code path: inertia and labels agree to 1e-6."""
    vectors = _vectors(n=2_000, width=32)
    settings = FeatureSettings(
        text_model="unused", n_components=8, n_clusters=4, kmeans_n_init=2,
        minibatch_threshold=minibatch_threshold, svd_sample_size=700,
    )
    fit = fit_clusters(vectors, settings, embedding_key="k")
    labels, distances = fit.place(vectors)
    placed_inertia = float((distances.min(axis=1) ** 2).sum())
    assert abs(placed_inertia - fit.inertia) <= 1e-6 * max(1.0, fit.inertia)
    reduced = fit.reduce(vectors)
    dense = (vectors.astype(np.float64) - fit.mean) @ fit.components.T
    np.testing.assert_allclose(reduced, dense, rtol=1e-9, atol=1e-9)
    # in chunks, as new posts arrive: same features for the same rows
    np.testing.assert_allclose(fit.place(vectors[:333])[1], distances[:333], rtol=0, atol=1e-9)
    again = ClusterFit.from_bytes(fit.to_bytes())
    assert set(again.seconds) >= {"centre", "svd", "kmeans"}
    np.testing.assert_array_equal(again.place(vectors)[0], labels)


def test_distinct_row_check_stops_early_and_still_fails_with_numbers():
    vectors = np.repeat(_vectors(n=3, width=4), 5_000, axis=0)  # 3 distinct rows, 15,000 rows
    assert _has_distinct_rows(vectors, 3)
    assert not _has_distinct_rows(vectors, 4)
    assert _count_distinct_rows(vectors) == 3
    settings = FeatureSettings(text_model="unused", n_components=2, n_clusters=4)
    with pytest.raises(DataCheckError, match=r"n_clusters=4 is more than the 3 distinct posts"):
        check_settings_against_data(vectors, settings)


def test_reduce_rejects_a_different_width():
    fit = fit_clusters(_vectors(n=200, width=8), FeatureSettings(text_model="u", n_components=3, n_clusters=2),
                       embedding_key="k")
    with pytest.raises(DataCheckError, match="width 9"):
        fit.reduce(np.zeros((3, 9), dtype=np.float32))


# ---------------------------------------------------------------- cache read


def test_cached_matrix_is_aligned_with_the_hashes_asked_for():
    con = duckdb.connect()
    store = StateStore(con, "state_test")
    rng = np.random.default_rng(3)
    stored = rng.normal(size=(50, 6)).astype(np.float32)
    hashes = [f"h{i:03d}" for i in range(50)]
    store.store_vectors("key", hashes, stored)
    store.store_vectors("other-key", hashes[:10], stored[:10] + 1)

    asked = ["nope", *hashes[::-3], "also-missing"]
    matrix, found = store.cached_matrix("key", asked, rows_per_batch=4)
    assert found.tolist() == [False] + [True] * len(hashes[::-3]) + [False]
    np.testing.assert_array_equal(matrix[1:-1], stored[::-3])
    assert not matrix[0].any() and not matrix[-1].any()
    as_dict = store.cached_vectors("key", asked)
    for row, h in enumerate(asked):
        if h in as_dict:
            np.testing.assert_array_equal(matrix[row], as_dict[h])

    none, found = store.cached_matrix("unknown-key", hashes)
    assert none is None and not found.any()
    empty, found = store.cached_matrix("key", [])
    assert empty is None and found.shape == (0,)


def test_cached_rebuild_with_duplicate_texts_gives_the_same_features(tiny_model_dir):
    """Vectors read back from the cache land on the right posts, duplicates included."""
    from python_udf.pipeline import build_text_features

    words = ["football", "politics", "music", "shares", "film", "phone", "election"]
    # the tiny vocabulary has no digits: vary the words (base-7 digits of i)
    texts = [" ".join(words[(i // 7**d) % 7] for d in range(3)) + " news" for i in range(60)]
    texts[10] = texts[3]
    texts[40] = texts[3]
    posts = pd.DataFrame({"post_id": np.arange(60), "text": texts})
    settings = FeatureSettings(
        text_model=str(tiny_model_dir), pooling="mean", n_components=4, n_clusters=3, kmeans_n_init=2
    )
    con = duckdb.connect()
    first = build_text_features(con, posts, settings, progress=False)
    # reversed order, stored fit: every vector now comes from the cache
    again = build_text_features(con, posts.iloc[::-1], settings, progress=False)
    again = again.set_index("post_id").loc[first["post_id"]]
    distance_columns = [c for c in first.columns if c.startswith("distance_to_cluster_")]
    np.testing.assert_array_equal(again["text_cluster"].to_numpy(), first["text_cluster"].to_numpy())
    np.testing.assert_allclose(
        again[distance_columns].to_numpy(), first[distance_columns].to_numpy(), rtol=0, atol=1e-9
    )
    assert (first.loc[[3, 10, 40], distance_columns].nunique() == 1).all()
    log = con.execute(
        "select posts_embedded, posts_reused, texts_embedded "
        "from text_features_state.feature_runs_log order by started_at"
    ).fetchall()
    assert log == [(60, 0, 58), (0, 60, 0)]


def test_store_vectors_in_batches_replaces_what_it_stores_again():
    con = duckdb.connect()
    store = StateStore(con, "state_test")
    rng = np.random.default_rng(4)
    first = rng.normal(size=(25, 3)).astype(np.float32)
    hashes = [f"h{i:02d}" for i in range(25)]
    store.store_vectors("key", hashes, first, rows_per_batch=4)
    second = first[:9] + 10
    store.store_vectors("key", hashes[:9], second, rows_per_batch=4)
    matrix, found = store.cached_matrix("key", hashes)
    assert found.all()
    np.testing.assert_array_equal(matrix[:9], second)
    np.testing.assert_array_equal(matrix[9:], first[9:])
    count = con.execute("select count(*) from state_test.embedding_cache").fetchone()[0]
    assert count == 25
    with pytest.raises(ValueError, match="3 hashes but 2 vectors"):
        store.store_vectors("key", hashes[:3], first[:2])


def test_a_failing_batch_is_rolled_back_and_earlier_batches_are_kept():
    con = duckdb.connect()
    store = StateStore(con, "state_test")
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    with pytest.raises(duckdb.Error):
        store.store_vectors("key", ["a", "b", "c", "c"], vectors, rows_per_batch=2)  # "c" twice in one batch
    stored = con.execute("select text_hash from state_test.embedding_cache order by 1").fetchall()
    assert stored == [("a",), ("b",)]
    store.store_vectors("key", ["c"], vectors[2:3])  # the store still works
    assert store.cached_matrix("key", ["c"])[1].all()
