"""python_udf.clustering: the fit against scikit-learn fitted independently, placement, bytes.

Expected values come from TruncatedSVD + KMeans fitted here with the same
seed on the same centred vectors, or from plain numpy.
"""

from __future__ import annotations

import re
from dataclasses import fields

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD

from python_udf.clustering import (
    ClusterFit,
    DataCheckError,
    check_settings_against_data,
    euclidean_distances,
    fit_clusters,
    fit_key,
)
from python_udf.embedding import embed_texts
from python_udf.settings import FeatureSettings


def fast_settings(**overrides) -> FeatureSettings:
    values = dict(text_model="unused", n_components=5, n_clusters=4, random_state=7, kmeans_n_init=3)
    values.update(overrides)
    return FeatureSettings(**values)


@pytest.fixture(scope="module")
def post_vectors(tiny_encoder, bundled_posts) -> np.ndarray:
    """Tiny-model vectors of 60 real posts (float32, as the pipeline stores them)."""
    settings = FeatureSettings(text_model="unused", max_length=48, batch_size=32, pooling="mean")
    texts = bundled_posts["text"].head(60).tolist()
    vectors, _ = embed_texts(texts, tiny_encoder, settings, progress=False)
    return vectors


def independent_fit(vectors: np.ndarray, settings: FeatureSettings, normalize: bool = False):
    x = np.asarray(vectors, dtype=np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = x - x.mean(axis=0)
    svd = TruncatedSVD(n_components=settings.n_components, random_state=settings.random_state).fit(centred)
    reduced = svd.transform(centred)
    kmeans = KMeans(
        n_clusters=settings.n_clusters, random_state=settings.random_state, n_init=settings.kmeans_n_init
    ).fit(reduced)
    return svd, kmeans, reduced


@pytest.mark.parametrize("normalize", [False, True])
def test_fit_places_its_own_posts_as_sklearn_does(post_vectors, normalize):
    settings = fast_settings(normalize=normalize)
    fit = fit_clusters(post_vectors, settings, embedding_key="k")
    svd, kmeans, reduced = independent_fit(post_vectors, settings, normalize=normalize)

    labels, distances = fit.place(post_vectors)
    np.testing.assert_array_equal(labels, kmeans.labels_)
    np.testing.assert_allclose(distances, kmeans.transform(reduced), atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.reduce(post_vectors), reduced, atol=1e-6, rtol=0)
    assert fit.algorithm == "kmeans"
    assert fit.n_posts == len(post_vectors) and fit.n_clusters == 4 and fit.width == post_vectors.shape[1]
    assert fit.explained_variance_ratio == pytest.approx(svd.explained_variance_ratio_.sum(), rel=1e-9)
    assert fit.inertia == pytest.approx(kmeans.inertia_, rel=1e-6)
    assert len(set(labels.tolist())) == 4  # all clusters used: the comparison is not trivial


def test_placing_one_post_alone_equals_its_place_in_the_fit(post_vectors):
    fit = fit_clusters(post_vectors, fast_settings(), embedding_key="k")
    labels, distances = fit.place(post_vectors)
    for row in (0, 17, len(post_vectors) - 1):
        one_label, one_distances = fit.place(post_vectors[row : row + 1])
        assert one_label[0] == labels[row]
        np.testing.assert_allclose(one_distances[0], distances[row], atol=1e-9, rtol=0)


def test_distances_are_euclidean_and_label_is_their_argmin(post_vectors):
    fit = fit_clusters(post_vectors, fast_settings(), embedding_key="k")
    labels, distances = fit.place(post_vectors)
    # by hand: centre with the stored mean, project on the stored basis, measure
    reduced = (post_vectors.astype(np.float64) - fit.mean) @ fit.components.T
    by_hand = np.linalg.norm(reduced[:, None, :] - fit.centroids[None, :, :], axis=2)
    np.testing.assert_allclose(distances, by_hand, atol=1e-9, rtol=0)
    np.testing.assert_array_equal(labels, by_hand.argmin(axis=1))
    assert labels.dtype == np.int32 and (distances >= 0).all()


def test_euclidean_distances_against_numpy():
    rng = np.random.default_rng(0)
    points, centroids = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    expected = np.array([[np.sqrt(((p - c) ** 2).sum()) for c in centroids] for p in points])
    np.testing.assert_allclose(euclidean_distances(points, centroids), expected, atol=1e-12, rtol=0)


def test_cluster_fit_round_trips_through_bytes_exactly(post_vectors):
    fit = fit_clusters(post_vectors, fast_settings(), embedding_key="k")
    restored = ClusterFit.from_bytes(fit.to_bytes())
    for field in fields(ClusterFit):
        original, copy = getattr(fit, field.name), getattr(restored, field.name)
        if field.name == "seconds":
            continue  # timings of the fitting run, not part of the stored fit
        if isinstance(original, np.ndarray):
            assert copy.dtype == original.dtype and copy.shape == original.shape
            np.testing.assert_array_equal(copy, original)
        else:
            assert copy == original and type(copy) is type(original), field.name
    labels, distances = fit.place(post_vectors)
    labels2, distances2 = restored.place(post_vectors)
    np.testing.assert_array_equal(labels2, labels)
    np.testing.assert_array_equal(distances2, distances)


def test_place_refuses_vectors_of_another_width(post_vectors):
    fit = fit_clusters(post_vectors, fast_settings(), embedding_key="k")
    with pytest.raises(DataCheckError) as info:
        fit.place(np.zeros((2, 48), dtype=np.float32))
    assert "48" in str(info.value) and str(post_vectors.shape[1]) in str(info.value)


def test_fit_key_follows_fit_settings_only():
    base = fast_settings()
    assert fit_key("e", base) == fit_key("e", fast_settings(batch_size=1, refit=True))
    assert fit_key("e", base) != fit_key("other", base)
    for change in ({"n_clusters": 5}, {"n_components": 6}, {"random_state": 8}, {"normalize": True}):
        assert fit_key("e", base) != fit_key("e", fast_settings(**change)), change


# ---------------------------------------------------------------- data checks


def _names(message: str, *numbers: int) -> bool:
    return all(re.search(rf"(?<!\d){n}(?!\d)", message) for n in numbers)


def test_more_clusters_than_distinct_posts_names_both_numbers():
    rng = np.random.default_rng(1)
    distinct = rng.normal(size=(3, 32)).astype(np.float32)
    vectors = np.concatenate([distinct, distinct])  # 6 rows, 3 distinct
    with pytest.raises(DataCheckError) as info:
        fit_clusters(vectors, fast_settings(n_components=2, n_clusters=4), embedding_key="k")
    assert _names(str(info.value), 4, 3)
    # as many clusters as distinct posts is allowed
    fit = fit_clusters(vectors, fast_settings(n_components=2, n_clusters=3), embedding_key="k")
    assert fit.n_clusters == 3


def test_n_components_must_be_below_the_embedding_width():
    vectors = np.random.default_rng(2).normal(size=(50, 32))
    for n_components in (32, 40):
        with pytest.raises(DataCheckError) as info:
            check_settings_against_data(vectors, fast_settings(n_components=n_components))
        assert _names(str(info.value), n_components, 32)
        assert "width" in str(info.value)
    check_settings_against_data(vectors, fast_settings(n_components=31))


def test_n_components_must_be_below_the_row_count():
    vectors = np.random.default_rng(3).normal(size=(8, 32))
    with pytest.raises(DataCheckError) as info:
        check_settings_against_data(vectors, fast_settings(n_components=12, n_clusters=2))
    assert _names(str(info.value), 12, 8)
    check_settings_against_data(vectors, fast_settings(n_components=7, n_clusters=2))


# ---------------------------------------------------------------- large-data path


def blobs(n_per_blob: int, centres: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centres)), n_per_blob)
    vectors = centres[truth] + rng.normal(scale=0.05, size=(len(truth), centres.shape[1]))
    return vectors.astype(np.float32), truth


def test_large_data_path_uses_minibatch_kmeans_and_still_fits():
    centres = np.zeros((4, 16))
    for i in range(4):
        centres[i, i] = 10.0  # four blobs, far apart
    vectors, truth = blobs(50, centres, seed=4)  # 200 rows > threshold 50
    settings = fast_settings(
        n_components=4, n_clusters=4, minibatch_threshold=50, svd_sample_size=60
    )
    fit = fit_clusters(vectors, settings, embedding_key="k")

    assert fit.algorithm == "minibatch_kmeans"
    assert fit.components.shape == (4, 16) and fit.centroids.shape == (4, 4)
    # centring uses every row, not only the SVD sample
    np.testing.assert_allclose(fit.mean, vectors.astype(np.float64).mean(axis=0), atol=1e-12)
    labels, distances = fit.place(vectors)
    assert labels.min() >= 0 and labels.max() < 4
    reduced = (vectors.astype(np.float64) - fit.mean) @ fit.components.T
    by_hand = np.linalg.norm(reduced[:, None, :] - fit.centroids[None, :, :], axis=2)
    np.testing.assert_allclose(distances, by_hand, atol=1e-9)
    np.testing.assert_array_equal(labels, by_hand.argmin(axis=1))
    # the blobs are recovered: one cluster per blob, a bijection
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4
    # and the run is reproducible with the same seed
    again = fit_clusters(vectors, settings, embedding_key="k")
    np.testing.assert_array_equal(again.centroids, fit.centroids)


def test_below_the_threshold_plain_kmeans_is_used():
    centres = np.eye(4, 16) * 10
    vectors, _ = blobs(10, centres, seed=5)
    fit = fit_clusters(vectors, fast_settings(n_components=4, minibatch_threshold=40), embedding_key="k")
    assert fit.algorithm == "kmeans"  # 40 rows is not above 40
