"""How good the clusters are, and what each one is about.

Pure functions over arrays, shared by the quality report
(:mod:`python_udf.report`), the dbt model ``int_cluster_terms`` and the
measurement in ``bench/quality_grid.py``:

* :func:`clustering_scores`: normalised mutual information, adjusted Rand
  index and purity of clusters against known topics;
* :func:`baseline_clusters`: the yardstick the text features have to beat,
  TF-IDF -> TruncatedSVD -> L2-normalised rows -> KMeans;
* :func:`class_tfidf`: the most distinctive terms of each cluster;
* :func:`describe_clusters`: one row per cluster (size, dominant topic and its
  share, terms, the post nearest the centre);
* :func:`project_2d`: coordinates for a map of the posts.

Posts without a topic (``None``, NaN or blank) never count in a score or a
topic share; every function says how many it left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import normalize

# Words of two letters or more, no digits: years and figures say little about
# what a cluster is about.
TERM_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"


# ---------------------------------------------------------------- topics


def topic_mask(topics: Sequence) -> np.ndarray:
    """True where a post has a topic (not None, not NaN, not blank)."""
    return np.array([_has_topic(t) for t in topics], dtype=bool)


def _has_topic(topic: object) -> bool:
    if topic is None or (isinstance(topic, float) and topic != topic):
        return False
    return str(topic).strip() != ""


# ---------------------------------------------------------------- scores


@dataclass(frozen=True)
class ClusterScores:
    """Agreement of a clustering with the topics of the posts that have one.

    ``nmi`` and ``purity`` lie in [0, 1]; ``ari`` in [-0.5, 1], about 0 for
    clusters that ignore the topics. All three are 1 for a clustering that
    matches the topics up to renaming. ``posts_scored`` posts had a topic;
    ``posts_without_topic`` were left out.
    """

    nmi: float
    ari: float
    purity: float
    posts_scored: int
    posts_without_topic: int

    def as_dict(self) -> dict:
        return asdict(self)


def purity(topics: Sequence, clusters: Sequence[int]) -> float:
    """Share of posts whose topic is the most common topic of their cluster."""
    counts = pd.crosstab(np.asarray(clusters), np.asarray(topics, dtype=object))
    return float(counts.max(axis=1).sum() / counts.to_numpy().sum())


def clustering_scores(topics: Sequence, clusters: Sequence[int]) -> ClusterScores:
    """NMI, ARI and purity of ``clusters`` against ``topics``, same order.

    :raises ValueError: the two have different lengths, or no post has a topic.
    """
    topics = np.asarray(topics, dtype=object)
    clusters = np.asarray(clusters)
    if len(topics) != len(clusters):
        raise ValueError(f"{len(topics)} topics but {len(clusters)} cluster labels; they must pair up")
    labelled = topic_mask(topics)
    if not labelled.any():
        raise ValueError(f"none of the {len(topics)} posts has a topic, so there is nothing to score against")
    known = np.array([str(t).strip() for t in topics[labelled]], dtype=object)
    chosen = clusters[labelled]
    return ClusterScores(
        nmi=float(normalized_mutual_info_score(known, chosen)),
        ari=float(adjusted_rand_score(known, chosen)),
        purity=purity(known, chosen),
        posts_scored=int(labelled.sum()),
        posts_without_topic=int((~labelled).sum()),
    )


# ---------------------------------------------------------------- baseline


@dataclass(frozen=True)
class BaselineSettings:
    """The TF-IDF baseline, fixed so that its numbers compare across runs.

    The vectoriser is the strongest of the usual choices on the bundled
    corpus (English stop words, sublinear term frequency, terms in at least
    two posts and at most half of them); see docs/quality.md.
    """

    stop_words: str = "english"
    sublinear_tf: bool = True
    min_df: int = 2
    max_df: float = 0.5


def baseline_clusters(
    texts: Sequence[str],
    *,
    n_components: int,
    n_clusters: int,
    random_state: int,
    n_init: int = 10,
    settings: BaselineSettings = BaselineSettings(),
) -> tuple[np.ndarray, dict]:
    """Cluster ``texts`` the classical way: TF-IDF, SVD, L2 rows, KMeans.

    ``n_components`` is lowered to what the data allows (below the number of
    terms and of posts); the returned dict says what was used.

    :raises ValueError: ``n_clusters`` exceeds the number of posts.
    """
    texts = list(texts)
    if n_clusters > len(texts):
        raise ValueError(f"baseline: n_clusters={n_clusters} is more than the {len(texts)} posts")
    tfidf, min_df = baseline_tfidf(texts, settings)
    labels, info = cluster_tfidf(
        tfidf, n_components=n_components, n_clusters=n_clusters, random_state=random_state, n_init=n_init
    )
    return labels, {"method": "tfidf_svd_l2_kmeans", **asdict(settings), "min_df": min_df, **info}


def baseline_tfidf(texts: Sequence[str], settings: BaselineSettings = BaselineSettings()) -> tuple[sparse.csr_matrix, int]:
    """The TF-IDF matrix of the baseline and the ``min_df`` it used.

    With too few posts for any term to reach ``min_df`` posts, every term is
    kept (``min_df`` 1, no ``max_df``).
    """
    try:
        _, tfidf, min_df = fit_tfidf_vectorizer(texts, settings)
    except ValueError as exc:
        raise ValueError(f"baseline: {exc}") from None
    return tfidf, min_df


def fit_tfidf_vectorizer(
    texts: Sequence[str], settings: BaselineSettings = BaselineSettings(), *, max_features: int | None = None
) -> tuple[TfidfVectorizer, sparse.csr_matrix, int]:
    """:func:`baseline_tfidf`, also returning the fitted vectoriser.

    ``max_features`` keeps only the most frequent terms (None: all).
    """
    texts = list(texts)
    for min_df in (settings.min_df, 1) if settings.min_df > 1 else (1,):
        vectorizer = _tfidf(settings, min_df, max_features)
        try:
            return vectorizer, vectorizer.fit_transform(texts), min_df
        except ValueError:
            continue
    raise ValueError(
        f"none of the {len(texts)} posts has a word TF-IDF can use "
        "(all empty, or only English stop words)"
    )


def cluster_tfidf(
    tfidf: sparse.spmatrix, *, n_components: int, n_clusters: int, random_state: int, n_init: int = 10
) -> tuple[np.ndarray, dict]:
    """TruncatedSVD, L2-normalised rows and KMeans on a TF-IDF matrix."""
    n_posts, n_terms = tfidf.shape
    if n_clusters > n_posts:
        raise ValueError(f"baseline: n_clusters={n_clusters} is more than the {n_posts} posts")
    used_components = min(n_components, n_terms - 1, n_posts - 1)
    if used_components >= 1:
        reduced = TruncatedSVD(n_components=used_components, random_state=random_state).fit_transform(tfidf)
        reduced = normalize(reduced)
    else:
        reduced = tfidf.toarray()
    labels = KMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init).fit_predict(reduced)
    info = {
        "n_terms": int(n_terms),
        "n_components": int(max(used_components, 0)),
        "n_clusters": n_clusters,
        "random_state": random_state,
        "kmeans_n_init": n_init,
    }
    return labels.astype(np.int32), info


def _tfidf(settings: BaselineSettings, min_df: int, max_features: int | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(
        stop_words=settings.stop_words,
        sublinear_tf=settings.sublinear_tf,
        min_df=min_df,
        max_df=settings.max_df if min_df > 1 else 1.0,
        max_features=max_features,
    )


# ---------------------------------------------------------------- terms


def class_tfidf(
    texts: Sequence[str], clusters: Sequence[int], n_clusters: int, *, top_n: int = 10
) -> list[list[tuple[str, float]]]:
    """The ``top_n`` most distinctive terms of each cluster, best first.

    Class-based TF-IDF: the posts of a cluster count as one document. With
    ``tf[t, c]`` the count of term ``t`` in cluster ``c`` divided by all term
    counts of ``c``, ``f[t]`` the count of ``t`` over all clusters and ``A``
    the average number of terms per cluster,
    ``score[t, c] = tf[t, c] * log(1 + A / f[t])``. A term frequent in one
    cluster and rare elsewhere scores high; a term common everywhere scores
    low. Terms are lowercased words of two letters or more without digits,
    English stop words removed. Entry ``c`` is empty for a cluster with no
    terms (no posts, or only stop words).
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    if len(clusters) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(clusters)} cluster labels; they must pair up")
    if len(clusters) and (clusters.min() < 0 or clusters.max() >= n_clusters):
        raise ValueError(f"cluster labels must lie in [0, {n_clusters}); found {clusters.min()}..{clusters.max()}")
    vectorizer = CountVectorizer(stop_words="english", token_pattern=TERM_PATTERN)
    try:
        per_post = vectorizer.fit_transform(texts)
    except ValueError:  # no post has a single term
        return [[] for _ in range(n_clusters)]
    membership = sparse.csr_matrix(
        (np.ones(len(clusters)), (clusters, np.arange(len(clusters)))), shape=(n_clusters, len(clusters))
    )
    counts = np.asarray((membership @ per_post).todense(), dtype=np.float64)
    scores = class_tfidf_scores(counts)
    terms = vectorizer.get_feature_names_out()
    result = []
    for row_counts, row_scores in zip(counts, scores):
        present = np.flatnonzero(row_counts > 0)
        # best score first; ties broken by the term itself, so output is stable
        ranked = sorted(present, key=lambda j: (-row_scores[j], terms[j]))[:top_n]
        result.append([(str(terms[j]), float(row_scores[j])) for j in ranked])
    return result


def class_tfidf_scores(counts: np.ndarray) -> np.ndarray:
    """Class-based TF-IDF of a (clusters x terms) count matrix (see :func:`class_tfidf`)."""
    counts = np.asarray(counts, dtype=np.float64)
    per_class = counts.sum(axis=1, keepdims=True)
    tf = counts / np.where(per_class == 0, 1.0, per_class)
    per_term = counts.sum(axis=0)
    average_terms = per_class.mean()
    idf = np.log1p(average_terms / np.where(per_term == 0, 1.0, per_term))
    return tf * idf


# ---------------------------------------------------------------- clusters


def topic_cluster_counts(topics: Sequence, clusters: Sequence[int], n_clusters: int) -> pd.DataFrame:
    """Posts per (topic, cluster): topics as rows (sorted), clusters 0..k-1 as columns.

    Posts without a topic are left out.
    """
    topics = np.asarray(topics, dtype=object)
    labelled = topic_mask(topics)
    known = pd.Series([str(t).strip() for t in topics[labelled]], name="topic")
    chosen = pd.Series(np.asarray(clusters)[labelled], name="cluster")
    table = pd.crosstab(known, chosen) if len(known) else pd.DataFrame()
    return table.reindex(columns=range(n_clusters), fill_value=0).sort_index().astype(np.int64)


def describe_clusters(
    post_ids: Sequence[int],
    texts: Sequence[str],
    topics: Sequence,
    clusters: Sequence[int],
    distances: np.ndarray,
    *,
    top_n: int = 10,
) -> pd.DataFrame:
    """One row per cluster 0..k-1, k the number of distance columns.

    Columns: ``text_cluster``, ``n_posts``, ``n_posts_with_topic``,
    ``dominant_topic`` (most common topic among the cluster's posts that have
    one; ties go to the first in alphabetical order; NULL when none has),
    ``dominant_topic_share`` (its count over ``n_posts_with_topic``),
    ``top_terms`` (comma-separated, best first), ``nearest_post_id``,
    ``nearest_post_text`` and ``nearest_post_distance`` (the post of the
    cluster with the smallest distance to its centre; ties go to the lowest
    post_id). A cluster without posts has ``n_posts`` 0 and NULLs elsewhere.
    """
    distances = np.asarray(distances, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.int64)
    post_ids = np.asarray(post_ids)
    n = len(clusters)
    if distances.ndim != 2 or distances.shape[0] != n or len(post_ids) != n or len(texts) != n or len(topics) != n:
        raise ValueError(
            f"describe_clusters needs one row per post: {len(post_ids)} ids, {len(texts)} texts, "
            f"{len(topics)} topics, {n} clusters, distances of shape {distances.shape}"
        )
    n_clusters = distances.shape[1]
    terms = class_tfidf(texts, clusters, n_clusters, top_n=top_n)
    counts = topic_cluster_counts(topics, clusters, n_clusters)
    rows = []
    for cluster in range(n_clusters):
        members = np.flatnonzero(clusters == cluster)
        row = {
            "text_cluster": cluster,
            "n_posts": int(len(members)),
            "n_posts_with_topic": int(counts[cluster].sum()) if len(counts) else 0,
            "dominant_topic": None,
            "dominant_topic_share": None,
            "top_terms": ", ".join(term for term, _ in terms[cluster]) or None,
            "nearest_post_id": None,
            "nearest_post_text": None,
            "nearest_post_distance": None,
        }
        if row["n_posts_with_topic"]:
            column = counts[cluster]
            best = column.max()
            row["dominant_topic"] = str(min(column.index[column == best]))
            row["dominant_topic_share"] = float(best / row["n_posts_with_topic"])
        if len(members):
            own = distances[members, cluster]
            closest = members[own == own.min()]
            nearest = closest[np.argmin(post_ids[closest])]
            row["nearest_post_id"] = post_ids[nearest].item()
            row["nearest_post_text"] = texts[nearest]
            row["nearest_post_distance"] = float(distances[nearest, cluster])
        rows.append(row)
    # nullable dtypes, so a missing value is NULL in the warehouse and ids stay exact
    types = {
        "text_cluster": "int32",
        "n_posts": "int64",
        "n_posts_with_topic": "int64",
        "dominant_topic": "object",
        "dominant_topic_share": "Float64",
        "top_terms": "object",
        "nearest_post_id": "Int64",
        "nearest_post_text": "object",
        "nearest_post_distance": "Float64",
    }
    return pd.DataFrame({name: pd.array([row[name] for row in rows], dtype=kind) for name, kind in types.items()})


# ---------------------------------------------------------------- map


def project_2d(reduced: np.ndarray, random_state: int = 0) -> np.ndarray:
    """First two principal components of the reduced vectors (n x 2).

    With fewer than two dimensions or two rows the missing coordinates are 0.
    """
    reduced = np.asarray(reduced, dtype=np.float64)
    out = np.zeros((reduced.shape[0], 2))
    width = min(2, reduced.shape[1], max(reduced.shape[0] - 1, 0))
    if width >= 1:
        out[:, :width] = PCA(n_components=width, random_state=random_state).fit_transform(reduced)
    return out
