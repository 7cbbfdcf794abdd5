"""Scores, baseline, cluster terms and cluster descriptions on hand-made posts.

Every expected number below follows from the definition (worked out in the
comments), never from a run of the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from python_udf.quality import (
    baseline_clusters,
    class_tfidf,
    class_tfidf_scores,
    clustering_scores,
    describe_clusters,
    project_2d,
    purity,
    topic_cluster_counts,
    topic_mask,
)

VOCABULARIES = {
    "football": ["goal", "striker", "penalty", "referee", "midfield", "keeper", "league", "stadium"],
    "elections": ["ballot", "minister", "parliament", "voters", "campaign", "senate", "candidate", "polling"],
    "chips": ["processor", "silicon", "transistor", "wafer", "semiconductor", "foundry", "nanometre", "lithography"],
}


def three_vocabulary_posts(per_topic: int = 8, seed: int = 0) -> tuple[list[str], list[str]]:
    """Posts of 12 words drawn from one of three disjoint vocabularies."""
    rng = np.random.default_rng(seed)
    texts, topics = [], []
    for topic, words in VOCABULARIES.items():
        for _ in range(per_topic):
            texts.append(" ".join(rng.choice(words, size=12)))
            topics.append(topic)
    return texts, topics


# ---------------------------------------------------------------- scores


def test_clusters_equal_to_topics_up_to_renaming_score_one():
    topics = ["a", "a", "b", "b", "c", "c"]
    scores = clustering_scores(topics, [7, 7, 3, 3, 0, 0])
    assert scores.nmi == pytest.approx(1.0)
    assert scores.ari == pytest.approx(1.0)
    assert scores.purity == pytest.approx(1.0)
    assert scores.posts_scored == 6
    assert scores.posts_without_topic == 0


def test_three_separate_vocabularies_give_nmi_one():
    # Posts of different topics share no term, so their TF-IDF rows are
    # orthogonal and the baseline must recover the topics exactly.
    texts, topics = three_vocabulary_posts()
    labels, info = baseline_clusters(texts, n_components=10, n_clusters=3, random_state=42)
    scores = clustering_scores(topics, labels)
    assert scores.nmi == pytest.approx(1.0)
    assert scores.ari == pytest.approx(1.0)
    assert scores.purity == pytest.approx(1.0)
    assert info["n_clusters"] == 3


def test_clusters_that_ignore_topics_score_zero():
    # 30 posts per topic; cluster = position mod 3 puts exactly 10 posts of
    # every topic in every cluster, so cluster and topic are independent:
    # mutual information 0, and every cluster's majority is a third.
    topics = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    clusters = [i % 3 for i in range(90)]
    scores = clustering_scores(topics, clusters)
    assert scores.nmi == pytest.approx(0.0, abs=1e-12)
    assert scores.ari == pytest.approx(0.0, abs=0.03)
    assert scores.purity == pytest.approx(1 / 3)


def test_random_clusters_score_about_zero():
    rng = np.random.default_rng(7)
    topics = rng.choice(["a", "b", "c", "d", "e"], size=5000)
    clusters = rng.integers(0, 5, size=5000)
    scores = clustering_scores(topics, clusters)
    assert scores.nmi < 0.01
    assert abs(scores.ari) < 0.01


def test_purity_counts_each_clusters_majority():
    # cluster 0 holds a, a -> majority 2; cluster 1 holds a, b, b, c -> 2.
    assert purity(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 1]) == pytest.approx(4 / 6)


def test_posts_without_topic_are_left_out_of_scores():
    # Labelled posts alone match perfectly; the unlabelled ones sit in the
    # "wrong" clusters and would lower every score if they counted.
    topics = ["a", "a", "b", "b", None, float("nan"), "  ", ""]
    clusters = [0, 0, 1, 1, 1, 0, 1, 0]
    scores = clustering_scores(topics, clusters)
    assert scores.posts_scored == 4
    assert scores.posts_without_topic == 4
    assert scores.nmi == pytest.approx(1.0)
    assert scores.purity == pytest.approx(1.0)
    assert topic_mask(topics).tolist() == [True] * 4 + [False] * 4


def test_scores_need_a_topic_and_matching_lengths():
    with pytest.raises(ValueError, match="none of the 2 posts has a topic"):
        clustering_scores([None, ""], [0, 1])
    with pytest.raises(ValueError, match="3 topics but 2 cluster labels"):
        clustering_scores(["a", "b", "c"], [0, 1])


def test_baseline_lowers_n_components_to_what_the_data_allows():
    texts, _ = three_vocabulary_posts(per_topic=3)
    _, info = baseline_clusters(texts, n_components=100, n_clusters=3, random_state=0)
    # 9 posts: at most 8 components
    assert info["n_components"] == 8


def test_baseline_refuses_more_clusters_than_posts():
    with pytest.raises(ValueError, match="n_clusters=5 is more than the 3 posts"):
        baseline_clusters(["goal kick", "vote count", "chip fab"], n_components=2, n_clusters=5, random_state=0)


def test_baseline_names_posts_without_usable_words():
    with pytest.raises(ValueError, match="none of the 3 posts has a word"):
        baseline_clusters(["", "the and", "of it"], n_components=2, n_clusters=2, random_state=0)


# ---------------------------------------------------------------- class-based TF-IDF


def test_class_tfidf_matches_the_formula_by_hand():
    # cluster 0: apple apple banana (3 terms); cluster 1: banana cherry (2).
    # A = (3 + 2) / 2 = 2.5; counts over clusters: apple 2, banana 2, cherry 1.
    # score = tf * log(1 + A / f):
    #   0/apple  = 2/3 * log(1 + 2.5/2)   0/banana = 1/3 * log(1 + 2.5/2)
    #   1/banana = 1/2 * log(1 + 2.5/2)   1/cherry = 1/2 * log(1 + 2.5/1)
    terms = class_tfidf(["apple apple", "banana", "banana cherry"], [0, 0, 1], 2)
    assert [t for t, _ in terms[0]] == ["apple", "banana"]
    assert [s for _, s in terms[0]] == pytest.approx([2 / 3 * math.log(2.25), 1 / 3 * math.log(2.25)])
    assert [t for t, _ in terms[1]] == ["cherry", "banana"]
    assert [s for _, s in terms[1]] == pytest.approx([0.5 * math.log(3.5), 0.5 * math.log(2.25)])


def test_class_tfidf_ranks_the_distinctive_term_first():
    # "said" is as frequent as "goal" in cluster 0 but occurs everywhere;
    # "goal" occurs only in cluster 0. Stop words and numbers never appear.
    texts = [
        "The striker said the goal came late, goal 2004",
        "He said it was a goal from the penalty spot",
        "The minister said the vote was close",
        "Voters said the vote went to the minister",
    ]
    terms = class_tfidf(texts, [0, 0, 1, 1], 2, top_n=10)
    names_0 = [t for t, _ in terms[0]]
    names_1 = [t for t, _ in terms[1]]
    assert names_0[0] == "goal"
    assert names_0.index("said") > names_0.index("goal")
    assert names_1[0] in ("minister", "vote")
    everything = set(names_0) | set(names_1)
    assert not everything & {"the", "was", "it", "he", "2004"}


def test_class_tfidf_gives_empty_clusters_no_terms():
    terms = class_tfidf(["goal goal", "vote"], [0, 2], 3)
    assert terms[1] == []
    assert [t for t, _ in terms[0]] == ["goal"]
    assert class_tfidf(["the and", "of"], [0, 1], 2) == [[], []]


def test_class_tfidf_scores_are_zero_for_absent_terms():
    scores = class_tfidf_scores(np.array([[2.0, 0.0], [0.0, 0.0]]))
    # cluster 1 has no terms at all: every score 0, no division by zero
    assert scores[1].tolist() == [0.0, 0.0]
    assert scores[0, 1] == 0.0


def test_class_tfidf_rejects_labels_outside_the_clusters():
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        class_tfidf(["a b", "c d"], [0, 2], 2)


# ---------------------------------------------------------------- describe clusters


def test_describe_clusters_by_hand():
    big_id = 2**53 + 1  # not representable as a float64
    post_ids = [10, 11, 12, big_id, 14, 15]
    texts = [
        "goal goal striker",
        "goal penalty",
        "goal referee",
        "minister vote",
        "minister ballot",
        "minister senate",
    ]
    topics = ["sport", "sport", "politics", "politics", "politics", None]
    clusters = [0, 0, 0, 1, 1, 1]
    # distances to centres 0, 1 and 2 (cluster 2 gets no post)
    distances = np.array(
        [
            [0.5, 3.0, 9.0],
            [0.2, 3.0, 9.0],
            [0.2, 3.0, 9.0],  # ties with post 11: the lower post_id wins
            [3.0, 0.1, 9.0],
            [3.0, 0.4, 9.0],
            [3.0, 0.3, 9.0],
        ]
    )
    table = describe_clusters(post_ids, texts, topics, clusters, distances, top_n=2)
    assert table["text_cluster"].tolist() == [0, 1, 2]
    assert table["n_posts"].tolist() == [3, 3, 0]
    assert table["n_posts_with_topic"].tolist() == [3, 2, 0]

    first, second, empty = (table.iloc[i] for i in range(3))
    assert first["dominant_topic"] == "sport"
    assert first["dominant_topic_share"] == pytest.approx(2 / 3)
    assert first["nearest_post_id"] == 11
    assert first["nearest_post_distance"] == pytest.approx(0.2)
    assert first["top_terms"].split(", ")[0] == "goal"

    assert second["dominant_topic"] == "politics"
    assert second["dominant_topic_share"] == pytest.approx(1.0)
    assert second["nearest_post_id"] == big_id
    assert second["nearest_post_text"] == "minister vote"
    assert second["top_terms"].split(", ")[0] == "minister"

    assert empty["n_posts"] == 0
    for column in ("dominant_topic", "dominant_topic_share", "top_terms", "nearest_post_id", "nearest_post_text"):
        assert pd.isna(empty[column]), column


def test_dominant_topic_ties_go_to_the_first_alphabetically():
    table = describe_clusters(
        [1, 2, 3, 4], ["x y", "x y", "x y", "x y"], ["tech", "business", "tech", "business"],
        [0, 0, 0, 0], np.zeros((4, 1)),
    )
    assert table.loc[0, "dominant_topic"] == "business"
    assert table.loc[0, "dominant_topic_share"] == pytest.approx(0.5)


def test_describe_clusters_needs_one_row_per_post():
    with pytest.raises(ValueError, match="2 ids, 2 texts, 2 topics, 2 clusters, distances of shape \\(3, 2\\)"):
        describe_clusters([1, 2], ["a", "b"], ["x", "y"], [0, 1], np.zeros((3, 2)))


def test_topic_cluster_counts_keeps_every_cluster_and_drops_unlabelled_posts():
    counts = topic_cluster_counts(["b", "a", "a", None], [0, 2, 2, 1], 4)
    assert counts.index.tolist() == ["a", "b"]
    assert counts.columns.tolist() == [0, 1, 2, 3]
    assert counts.loc["a"].tolist() == [0, 0, 2, 0]
    assert counts.loc["b"].tolist() == [1, 0, 0, 0]


# ---------------------------------------------------------------- map


def test_project_2d_finds_the_direction_of_largest_spread():
    # points on the line y = 2x (plus a tiny third coordinate): all the spread
    # is along one direction, so PC 1 carries it and PC 2 is about 0
    t = np.linspace(-1, 1, 21)
    points = np.column_stack([t, 2 * t, 1e-6 * t**2])
    xy = project_2d(points)
    assert xy.shape == (21, 2)
    assert np.abs(xy[:, 0]).max() == pytest.approx(math.sqrt(5))
    assert np.abs(xy[:, 1]).max() < 1e-5


def test_project_2d_pads_a_single_dimension_with_zeros():
    xy = project_2d(np.array([[1.0], [2.0], [4.0]]))
    assert xy[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert np.abs(xy[:, 0]).tolist() == pytest.approx([4 / 3, 1 / 3, 5 / 3])
