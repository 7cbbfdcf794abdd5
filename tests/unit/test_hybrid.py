"""Hybrid features (tfidf_weight): the lexical block against scikit-learn fitted independently.

Expected values come from TfidfVectorizer + TruncatedSVD (the baseline's
recipe) and from the centred-SVD embedding fit, both computed here with the
same seeds, combined by the formula in python_udf.lexical:
squared distance = (1 - w) * embedding part + w * lexical part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import normalize

from python_udf.clustering import ClusterFit, DataCheckError, fit_clusters, fit_key
from python_udf.embedding import embed_texts
from python_udf.lexical import MAX_TERMS, fit_lexical
from python_udf.pipeline import build_text_features
from python_udf.quality import baseline_clusters
from python_udf.settings import FeatureSettings, SettingsError
from python_udf.state import StateStore


def settings_with(**overrides) -> FeatureSettings:
    values = dict(text_model="unused", n_components=5, n_clusters=4, random_state=7, kmeans_n_init=3)
    values.update(overrides)
    return FeatureSettings(**values)


@pytest.fixture(scope="module")
def texts(bundled_posts) -> list[str]:
    return bundled_posts["text"].head(60).tolist()


@pytest.fixture(scope="module")
def vectors(tiny_encoder, texts) -> np.ndarray:
    settings = FeatureSettings(text_model="unused", max_length=48, batch_size=32, pooling="mean")
    out, _ = embed_texts(texts, tiny_encoder, settings, progress=False)
    return out


def independent_blocks(vectors: np.ndarray, texts: list[str], settings: FeatureSettings):
    """(embedding block, lexical block), unit rows, unweighted, computed without the package."""
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(axis=0)
    embedding = TruncatedSVD(settings.n_components, random_state=settings.random_state).fit_transform(centred)
    tfidf = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=2, max_df=0.5).fit_transform(texts)
    lexical = TruncatedSVD(settings.n_components, random_state=settings.random_state).fit_transform(tfidf)
    return normalize(embedding), normalize(lexical)


def squared_pairwise(matrix: np.ndarray) -> np.ndarray:
    return ((matrix[:, None, :] - matrix[None, :, :]) ** 2).sum(axis=2)


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.8])
def test_squared_distances_mix_the_two_blocks_by_weight(vectors, texts, weight):
    settings = settings_with(tfidf_weight=weight)
    fit = fit_clusters(vectors, settings, embedding_key="k", texts=texts)
    features = fit.features(vectors, texts)
    embedding, lexical = independent_blocks(vectors, texts, settings)
    expected = (1 - weight) * squared_pairwise(embedding) + weight * squared_pairwise(lexical)
    np.testing.assert_allclose(squared_pairwise(features), expected, atol=1e-8, rtol=0)
    # and the blocks carry the weight in their norms
    assert features.shape == (len(texts), 2 * settings.n_components)
    np.testing.assert_allclose(np.linalg.norm(features[:, :5], axis=1), np.sqrt(1 - weight), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(features[:, 5:], axis=1), np.sqrt(weight), rtol=1e-12)


def test_label_is_the_nearest_centroid_in_the_mixed_space(vectors, texts):
    fit = fit_clusters(vectors, settings_with(tfidf_weight=0.5), embedding_key="k", texts=texts)
    labels, distances = fit.place(vectors, texts)
    features = fit.features(vectors, texts)
    by_hand = np.linalg.norm(features[:, None, :] - fit.centroids[None, :, :], axis=2)
    np.testing.assert_allclose(distances, by_hand, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(labels, by_hand.argmin(axis=1))
    assert fit.centroids.shape == (4, 10) and len(set(labels.tolist())) > 1
    assert fit.inertia == pytest.approx(float((by_hand.min(axis=1) ** 2).sum()), rel=1e-9)


def test_a_weight_near_one_clusters_exactly_like_the_tfidf_baseline(vectors, texts):
    # the embedding block's squared distances count 1e-9 of the whole
    settings = settings_with(tfidf_weight=1 - 1e-9, n_clusters=3, kmeans_n_init=10)
    fit = fit_clusters(vectors, settings, embedding_key="k", texts=texts)
    labels, _ = fit.place(vectors, texts)
    expected, _ = baseline_clusters(texts, n_components=5, n_clusters=3, random_state=7, n_init=10)
    assert adjusted_rand_score(expected, labels) == pytest.approx(1.0)
    assert len(set(labels.tolist())) == 3


def test_weight_zero_is_the_embedding_fit_with_the_same_key(vectors, texts):
    plain = fit_clusters(vectors, settings_with(), embedding_key="k")
    zero = fit_clusters(vectors, settings_with(tfidf_weight=0.0), embedding_key="k", texts=texts)
    assert zero.lexical is None and zero.fit_key == plain.fit_key
    np.testing.assert_array_equal(zero.place(vectors)[1], plain.place(vectors)[1])
    assert fit_key("k", settings_with(tfidf_weight=0.5)) not in {
        plain.fit_key, fit_key("k", settings_with(tfidf_weight=0.6))
    }


def test_hybrid_fit_round_trips_through_bytes(vectors, texts):
    fit = fit_clusters(vectors, settings_with(tfidf_weight=0.4), embedding_key="k", texts=texts)
    restored = ClusterFit.from_bytes(fit.to_bytes())
    assert restored.tfidf_weight == 0.4 and restored.lexical.terms == fit.lexical.terms
    np.testing.assert_array_equal(restored.lexical.idf, fit.lexical.idf)
    np.testing.assert_array_equal(restored.lexical.components, fit.lexical.components)
    # placing new posts (texts the fit never saw) gives the same answer either way
    new_vectors, new_texts = vectors[::-1][:7], [t.upper() + " extra words" for t in texts[:7]]
    for got, want in zip(restored.place(new_vectors, new_texts), fit.place(new_vectors, new_texts)):
        np.testing.assert_array_equal(got, want)


def test_a_post_with_no_known_word_is_placed_by_its_embedding_alone(vectors, texts):
    weight = 0.5
    fit = fit_clusters(vectors, settings_with(tfidf_weight=weight), embedding_key="k", texts=texts)
    new_texts = ["zzqx qqzv", "", "the and of"]  # unseen words, empty, stop words only
    rows = vectors[[3, 20, 41]]
    features = fit.features(rows, new_texts)
    np.testing.assert_array_equal(features[:, 5:], 0.0)
    labels, distances = fit.place(rows, new_texts)
    # independent: the embedding part of the squared distance, plus w for every centroid
    embedding_part = ((features[:, None, :5] - fit.centroids[None, :, :5]) ** 2).sum(axis=2)
    np.testing.assert_allclose(distances, np.sqrt(embedding_part + weight), atol=1e-12, rtol=0)
    np.testing.assert_array_equal(labels, embedding_part.argmin(axis=1))
    # the centroids' lexical parts differ, so leaving the zero rows as they are would not be the same
    lexical_norms = np.linalg.norm(fit.centroids[:, 5:], axis=1)
    assert lexical_norms.max() - lexical_norms.min() > 1e-3


def test_features_are_the_same_whatever_the_block_size(vectors, texts, monkeypatch):
    import python_udf.clustering as clustering
    import python_udf.lexical as lexical

    fit = fit_clusters(vectors, settings_with(tfidf_weight=0.3), embedding_key="k", texts=texts)
    whole = fit.features(vectors, texts)
    monkeypatch.setattr(clustering, "BLOCK_ROWS", 7)
    monkeypatch.setattr(lexical, "BLOCK_TEXTS", 5)
    np.testing.assert_allclose(fit.features(vectors, texts), whole, atol=1e-12, rtol=0)


def test_a_fit_stored_before_the_setting_existed_still_loads(vectors):
    import io
    import json

    fit = fit_clusters(vectors, settings_with(), embedding_key="k")
    # the payload layout of earlier versions: no tfidf_weight in meta, no lexical arrays
    meta = {key: getattr(fit, key) for key in
            ("fit_id", "fit_key", "normalize", "explained_variance_ratio", "inertia", "n_posts", "algorithm")}
    meta["seconds"] = {}
    buffer = io.BytesIO()
    np.savez(buffer, mean=fit.mean, components=fit.components, centroids=fit.centroids,
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    old = ClusterFit.from_bytes(buffer.getvalue())
    assert old.tfidf_weight == 0.0 and old.lexical is None
    for got, want in zip(old.place(vectors), fit.place(vectors)):
        np.testing.assert_array_equal(got, want)


def test_texts_are_required_and_must_pair_up(vectors, texts):
    with pytest.raises(DataCheckError, match="tfidf_weight=0.5 needs the posts' texts"):
        fit_clusters(vectors, settings_with(tfidf_weight=0.5), embedding_key="k")
    with pytest.raises(DataCheckError, match="59 texts for 60 vectors"):
        fit_clusters(vectors, settings_with(tfidf_weight=0.5), embedding_key="k", texts=texts[:-1])
    fit = fit_clusters(vectors, settings_with(tfidf_weight=0.5), embedding_key="k", texts=texts)
    with pytest.raises(DataCheckError, match=r"tfidf_weight=0.5\); placing posts needs their texts"):
        fit.place(vectors)


def test_posts_without_usable_words_fail_naming_the_setting(vectors):
    stop_words_only = ["the and of", "it is the", "and the of it"] * 20
    with pytest.raises(DataCheckError, match="tfidf_weight > 0"):
        fit_clusters(vectors, settings_with(tfidf_weight=0.5), embedding_key="k", texts=stop_words_only)


@pytest.mark.parametrize(
    "texts, message",
    [
        (["the and of", "it is the", "of it", "and the"] * 2, "none of the 8 posts has a word"),
        # distinct texts have 3 terms, but across all posts (what the fit sees) "apple"
        # and "banana" are in more than half of them and drop out: 1 term is left
        (["apple banana"] * 6 + ["banana cherry", "cherry apple"], "needs at least 2 distinct terms"),
        (["goal striker", "striker goal keeper", "the and of", "it is the", "of it", "and the", "is it", "the of"],
         "only 2 of the 8 posts have a word the TF-IDF keeps"),
    ],
)
def test_pipeline_checks_the_words_before_embedding(tmp_path, make_settings, monkeypatch, texts, message):
    import duckdb

    import python_udf.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("embedded although the settings cannot work on these posts")

    monkeypatch.setattr(pipeline, "embed_texts", refuse)
    posts = pd.DataFrame({"post_id": range(1, 9), "text": texts})
    con = duckdb.connect(str(tmp_path / "state.duckdb"))
    with pytest.raises(DataCheckError, match=message) as info:
        build_text_features(con, posts, make_settings(tfidf_weight=0.5, n_components=2, n_clusters=3),
                            progress=False)
    assert "tfidf_weight" in str(info.value)
    con.close()


def test_large_inputs_fit_the_lexical_block_on_the_svd_sample(vectors, texts):
    settings = settings_with(tfidf_weight=0.5, minibatch_threshold=40, svd_sample_size=30)
    fit = fit_clusters(vectors, settings, embedding_key="k", texts=texts)
    assert fit.algorithm == "minibatch_kmeans"
    rows = np.sort(np.random.default_rng(7).choice(60, 30, replace=False))
    expected = fit_lexical([texts[i] for i in rows], 5, 7)
    assert fit.lexical.terms == expected.terms
    np.testing.assert_allclose(fit.lexical.components, expected.components, atol=1e-12, rtol=0)
    labels, distances = fit.place(vectors, texts)
    np.testing.assert_array_equal(labels, distances.argmin(axis=1))


def test_vocabulary_is_capped():
    words = [f"w{a}{b}" for a in "abcdefghij" for b in "abcdefghij"]  # 100 distinct terms
    texts = [" ".join(words[i : i + 20]) for i in range(0, 80, 2)]
    assert len(fit_lexical(texts, 3, 0).terms) <= MAX_TERMS  # the constant is a real bound
    import python_udf.lexical as lexical

    original = lexical.MAX_TERMS
    try:
        lexical.MAX_TERMS = 10
        assert len(fit_lexical(texts, 3, 0).terms) == 10
    finally:
        lexical.MAX_TERMS = original


@pytest.mark.parametrize("value, expected", [("0.5", 0.5), ("0.99", 0.99), ("0", 0.0), (0.25, 0.25), (0, 0.0)])
def test_weight_setting_is_read_as_a_number(value, expected):
    assert FeatureSettings.from_mapping({"text_model": "m", "tfidf_weight": value}).tfidf_weight == expected


@pytest.mark.parametrize("value", ["1.5", -0.1, "half", "nan", True, 1, "1.0"])
def test_bad_weight_fails_naming_the_setting(value):
    with pytest.raises(SettingsError, match="tfidf_weight"):
        FeatureSettings.from_mapping({"text_model": "m", "tfidf_weight": value})


def test_pipeline_reuses_a_stored_hybrid_fit_for_new_posts(tmp_path, bundled_posts, make_settings):
    import duckdb

    posts = bundled_posts.drop_duplicates("text").head(20)[["post_id", "text"]].reset_index(drop=True)
    settings = make_settings(tfidf_weight=0.5)
    con = duckdb.connect(str(tmp_path / "state.duckdb"))
    first = build_text_features(con, posts.head(16), settings, progress=False)
    # two of the new posts have no word the fit's TF-IDF knows
    posts.loc[16, "text"], posts.loc[17, "text"] = "zzqx qqzv", ""
    second = build_text_features(con, posts, settings, progress=False)
    assert first["fit_id"].iloc[0] == second["fit_id"].iloc[0]  # placed, not refitted
    columns = [c for c in first.columns if c.startswith("distance_to_cluster_")]
    # the first 16 posts keep their features exactly when 4 are added
    np.testing.assert_array_equal(second[columns].head(16).to_numpy(), first[columns].to_numpy())
    store = StateStore(con)
    (payload,) = con.execute(
        f"select payload from {store.schema}.cluster_fits where fit_id = ?", [first["fit_id"].iloc[0]]
    ).fetchone()
    logged = con.execute(
        f"select tfidf_weight, posts_without_known_terms from {store.schema}.feature_runs_log "
        "where run_id = ?", [second["run_id"].iloc[0]]
    ).fetchone()
    store.close()
    assert logged == (0.5, 2)
    fit = ClusterFit.from_bytes(bytes(payload))
    con.close()
    assert fit.tfidf_weight == 0.5 and fit.lexical is not None
    # the lexical block was fitted on the 16 first posts, with n_components=4
    assert fit.lexical.n_components == 4 and fit.centroids.shape == (3, 4 + 4)
    labels, distances = fit.place(np.zeros((0, fit.width), dtype=np.float32), [])
    assert labels.shape == (0,) and distances.shape == (0, 3)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")
def test_mixing_recovers_topics_that_neither_block_separates_alone():
    """Three topics: A and B share an embedding region, A and C share a vocabulary.

    Embeddings alone cannot tell A from B, TF-IDF alone cannot tell A from C;
    each pair (region, vocabulary) is distinct, so the mixed space separates
    all three and the clustering matches the topics exactly (NMI 1).
    """
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(3)
    words = {"x": ["goal", "striker", "penalty", "referee", "keeper", "league", "stadium", "midfield"],
             "y": ["ballot", "minister", "parliament", "voters", "senate", "candidate", "polling", "campaign"]}
    region = {"p": np.r_[10.0, np.zeros(7)], "q": np.r_[np.zeros(7), 10.0]}
    spec = {"A": ("p", "x"), "B": ("p", "y"), "C": ("q", "x")}
    topics, texts, rows = [], [], []
    for topic, (where, vocab) in spec.items():
        for _ in range(10):
            topics.append(topic)
            texts.append(" ".join(rng.choice(words[vocab], size=12)))
            rows.append(region[where] + rng.normal(scale=0.3, size=8))
    vectors = np.array(rows, dtype=np.float32)

    def nmi(weight):
        settings = settings_with(n_components=2, n_clusters=3, kmeans_n_init=10, tfidf_weight=weight)
        fit = fit_clusters(vectors, settings, embedding_key="k", texts=texts)
        return normalized_mutual_info_score(topics, fit.place(vectors, texts)[0])

    assert nmi(0.5) == pytest.approx(1.0)
    # each alone merges two topics (or splits one at random): below 1
    tfidf_alone, _ = baseline_clusters(texts, n_components=2, n_clusters=3, random_state=7)
    assert nmi(0.0) < 0.8 and normalized_mutual_info_score(topics, tfidf_alone) < 0.8


def test_posts_with_no_known_word_are_left_out_of_the_kmeans_fit(vectors, texts):
    """A third of the posts lose their words: KMeans is fitted on the rest, and no cluster empties."""
    from sklearn.cluster import KMeans

    settings = settings_with(tfidf_weight=0.5, n_clusters=4, kmeans_n_init=5)
    mixed = [text if row % 3 else "" for row, text in enumerate(texts)]
    fit = fit_clusters(vectors, settings, embedding_key="k", texts=mixed)
    features = fit.features(vectors, mixed)
    has_terms = np.array([bool(t) for t in mixed])
    assert not features[~has_terms, 5:].any() and features[has_terms, 5:].any(axis=1).all()
    # independent: KMeans with the same seed on the rows that have words only
    expected = KMeans(n_clusters=4, random_state=7, n_init=5).fit(features[has_terms])
    np.testing.assert_allclose(fit.centroids, expected.cluster_centers_, atol=1e-10, rtol=0)
    labels, _ = fit.place(vectors, mixed)
    np.testing.assert_array_equal(labels[has_terms], expected.labels_)
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_too_few_posts_with_words_for_the_clusters_fail_naming_both_settings(vectors, texts):
    few = [text if row < 3 else "" for row, text in enumerate(texts)]
    with pytest.raises(DataCheckError, match=r"only 3 of the 60 posts .* n_clusters=4.*tfidf_weight: 0"):
        fit_clusters(vectors, settings_with(tfidf_weight=0.5), embedding_key="k", texts=few)


def test_a_run_log_from_before_the_setting_gains_its_columns(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("create schema text_features_state")
    con.execute("create table text_features_state.feature_runs_log (run_id varchar primary key, normalize boolean)")
    con.execute("insert into text_features_state.feature_runs_log values ('old-run', false)")
    StateStore(con)  # opening the store brings the table up to date
    rows = con.execute(
        "select run_id, tfidf_weight, posts_without_known_terms from text_features_state.feature_runs_log"
    ).fetchall()
    assert rows == [("old-run", None, None)]
    con.close()


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_the_placement_made_while_fitting_is_the_one_the_stored_fit_gives(vectors, texts, weight):
    from python_udf.clustering import fit_and_place

    mixed = [text if row % 5 else "" for row, text in enumerate(texts)]  # some posts without words
    fit, placed = fit_and_place(vectors, settings_with(tfidf_weight=weight), embedding_key="k", texts=mixed)
    again = ClusterFit.from_bytes(fit.to_bytes()).placement(vectors, mixed)
    np.testing.assert_array_equal(placed.labels, again.labels)
    np.testing.assert_allclose(placed.distances, again.distances, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(placed.without_terms, again.without_terms)
    assert placed.without_terms.sum() == (12 if weight else 0)
    assert fit.inertia == pytest.approx(float((again.distances.min(axis=1) ** 2).sum()), rel=1e-12)
