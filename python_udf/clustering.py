"""Reduce post vectors with TruncatedSVD and cluster them with KMeans.

Fitting and placing are separate steps, as in scikit-learn: :func:`fit_clusters`
learns the centring, the SVD basis and the centroids once; :meth:`ClusterFit.place`
applies them to any vectors later, so new posts land in existing clusters and
the features of old posts do not move between runs. A fit serialises to bytes
(``to_bytes``/``from_bytes``) so it can be kept in the warehouse.

Memory: the input vectors stay float32 and are never copied whole. Centring,
reduction and distances run over row blocks in float64, so the extra memory
is the reduced matrix (n x n_components, float64) plus one block, whatever
the number of posts. Fit-time features and later placements go through the
same :meth:`ClusterFit.reduce` and :func:`euclidean_distances`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD

from .lexical import LexicalSpace, check_with_terms, fit_lexical, unit_rows
from .logs import get_logger
from .settings import DataCheckError, FeatureSettings

log = get_logger()

# Rows of the input prepared (float64, centred) at a time: 16,384 x 768 x 8
# bytes is 100 MB.
BLOCK_ROWS = 16_384
# Elements of the (rows x clusters x components) difference array that
# euclidean_distances holds at a time: 2**21 float64 values is 16 MB.
DISTANCE_BLOCK_ELEMENTS = 1 << 21
# Rows checked for distinctness before looking further (check_settings_against_data).
_DISTINCT_BLOCK_ROWS = 4_096


@dataclass
class ClusterFit:
    """A fitted centring + SVD + KMeans, applicable to new vectors.

    ``mean`` is the per-column mean that was subtracted, ``components`` the
    SVD basis (n_components x width) and ``centroids`` the KMeans centres in
    the space the posts were clustered in (n_clusters x features). Without a
    lexical block that space is the reduced one (n_components); with one
    (``tfidf_weight`` > 0, see :mod:`python_udf.lexical`) it is the weighted
    embedding and lexical blocks side by side, and placing posts needs their
    texts.
    """

    fit_id: str
    fit_key: str
    normalize: bool
    mean: np.ndarray
    components: np.ndarray
    centroids: np.ndarray
    explained_variance_ratio: float
    inertia: float
    n_posts: int
    algorithm: str
    seconds: dict = field(default_factory=dict)
    tfidf_weight: float = 0.0
    lexical: LexicalSpace | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def width(self) -> int:
        return int(self.mean.shape[0])

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors (n x width) to the reduced space (n x n_components), float64.

        Computed block by block (:func:`reduce_rows`), so the input is never
        copied whole; fitting uses this same method for the features KMeans sees.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.width:
            raise DataCheckError(
                f"vectors have width {vectors.shape[-1]} but fit {self.fit_id} "
                f"was made on width {self.width}"
            )
        return reduce_rows(vectors, self.mean, self.components, self.normalize)

    def features(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """What KMeans saw for these posts: the reduced vectors, or the hybrid blocks.

        ``texts`` (one per row of ``vectors``) is needed only by a fit with a
        lexical block, and is an error to leave out there.
        """
        if self.lexical is None:
            return self.reduce(vectors)
        if texts is None:
            raise DataCheckError(
                f"fit {self.fit_id} mixes in TF-IDF (tfidf_weight={self.tfidf_weight:g}); "
                "placing posts needs their texts"
            )
        texts = list(texts)
        vectors = np.asarray(vectors)
        if len(texts) != vectors.shape[0]:
            raise DataCheckError(f"{len(texts)} texts for {vectors.shape[0]} vectors; they must pair up")
        if vectors.ndim != 2 or vectors.shape[1] != self.width:
            self.reduce(vectors)  # raises, naming both widths
        # one output array, filled block by block: no full-size temporaries
        k = self.components.shape[0]
        out = np.empty((len(texts), k + self.lexical.n_components), dtype=np.float64)
        for start in range(0, len(texts), BLOCK_ROWS):
            block = reduce_rows(vectors[start : start + BLOCK_ROWS], self.mean, self.components, self.normalize)
            out[start : start + BLOCK_ROWS, :k] = unit_rows(block)
        out[:, :k] *= np.sqrt(1.0 - self.tfidf_weight)
        self.lexical.transform_into(texts, out[:, k:])
        out[:, k:] *= np.sqrt(self.tfidf_weight)
        return out

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Euclidean distance of each row of ``features`` to every centroid.

        With a lexical block, a post with no known term (lexical row of zeros)
        counts ``tfidf_weight`` as the lexical part of its squared distance to
        every centroid, so its embedding alone places it
        (:mod:`python_udf.lexical`).
        """
        distances = euclidean_distances(features, self.centroids)
        no_terms = self.without_terms(features)
        if no_terms.any():
            width = self.lexical.n_components
            embedding_part = euclidean_distances(features[no_terms, :-width], self.centroids[:, :-width])
            distances[no_terms] = np.sqrt(embedding_part**2 + self.tfidf_weight)
        return distances

    def without_terms(self, features: np.ndarray) -> np.ndarray:
        """Rows whose lexical block is zero (no word the TF-IDF keeps); all False without one."""
        if self.lexical is None:
            return np.zeros(features.shape[0], dtype=bool)
        return ~features[:, -self.lexical.n_components :].any(axis=1)

    def placement(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> "Placement":
        """:meth:`place`, also saying which rows had no known word."""
        return self.place_features(self.features(vectors, texts))

    def place_features(self, features: np.ndarray) -> "Placement":
        """Place rows already in the clustering space (see :meth:`features`)."""
        distances = self.distances(features)
        return Placement(distances.argmin(axis=1).astype(np.int32), distances, self.without_terms(features))

    def place(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(cluster per row, distance of each row to every centroid; see :meth:`distances`)."""
        placed = self.placement(vectors, texts)
        return placed.labels, placed.distances

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = {
            "fit_id": self.fit_id,
            "fit_key": self.fit_key,
            "normalize": self.normalize,
            "explained_variance_ratio": self.explained_variance_ratio,
            "inertia": self.inertia,
            "n_posts": self.n_posts,
            "algorithm": self.algorithm,
            "seconds": {k: float(v) for k, v in self.seconds.items()},
            "tfidf_weight": self.tfidf_weight,
        }
        np.savez(
            buffer,
            mean=self.mean,
            components=self.components,
            centroids=self.centroids,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            **(self.lexical.to_arrays() if self.lexical is not None else {}),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> "ClusterFit":
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes().decode())
            lexical = LexicalSpace.from_arrays(arrays) if "lexical_terms" in arrays.files else None
            return cls(
                mean=arrays["mean"],
                components=arrays["components"],
                centroids=arrays["centroids"],
                lexical=lexical,
                **meta,
            )


@dataclass
class Placement:
    """Posts placed with a fit: cluster, distances, and which had no known word."""

    labels: np.ndarray
    distances: np.ndarray
    without_terms: np.ndarray


def euclidean_distances(
    points: np.ndarray, centroids: np.ndarray, *, block_elements: int = DISTANCE_BLOCK_ELEMENTS
) -> np.ndarray:
    """Exact pairwise Euclidean distances, computed row block by row block.

    Differences are taken directly (no ``|x|^2 - 2x.c + |c|^2`` shortcut, which
    loses precision); a block holds at most ``block_elements`` of them, so the
    extra memory does not grow with the number of points.
    """
    n_clusters = max(1, centroids.shape[0])
    width = max(1, centroids.shape[1] if centroids.ndim == 2 else 1)
    block = max(1, block_elements // (n_clusters * width))
    out = np.empty((points.shape[0], centroids.shape[0]), dtype=np.float64)
    for start in range(0, points.shape[0], block):
        chunk = points[start : start + block]
        diff = chunk[:, None, :] - centroids[None, :, :]
        out[start : start + block] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out


def column_mean(vectors: np.ndarray, normalize: bool, *, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Per-column mean (float64) of the prepared vectors, summed block by block."""
    n_rows = vectors.shape[0]
    if n_rows == 0:
        raise DataCheckError("cannot centre zero vectors")
    total = np.zeros(vectors.shape[1], dtype=np.float64)
    for start in range(0, n_rows, block_rows):
        total += _prepare_block(vectors[start : start + block_rows], normalize).sum(axis=0)
    return total / n_rows


def reduce_rows(
    vectors: np.ndarray,
    mean: np.ndarray,
    components: np.ndarray,
    normalize: bool,
    *,
    block_rows: int = BLOCK_ROWS,
) -> np.ndarray:
    """``(prepare(vectors) - mean) @ components.T`` in float64, ``block_rows`` rows at a time.

    Equal (to rounding) to the dense expression; the input stays in its own
    dtype and only one block is ever held as float64.
    """
    basis = np.ascontiguousarray(np.asarray(components, dtype=np.float64).T)
    mean = np.asarray(mean, dtype=np.float64)
    out = np.empty((vectors.shape[0], basis.shape[1]), dtype=np.float64)
    for start in range(0, vectors.shape[0], block_rows):
        block = _prepare_block(vectors[start : start + block_rows], normalize)
        block -= mean
        np.matmul(block, basis, out=out[start : start + block_rows])
    return out


def fit_key(embedding_key: str, settings: FeatureSettings) -> str:
    """What a fit depends on: the vectors' key and the reduction/cluster settings."""
    parts = {
        "embedding_key": embedding_key,
        "normalize": settings.normalize,
        "n_components": settings.n_components,
        "n_clusters": settings.n_clusters,
        "random_state": settings.random_state,
        "kmeans_n_init": settings.kmeans_n_init,
    }
    if settings.tfidf_weight > 0:  # absent otherwise, so fits made before the setting keep their key
        parts["tfidf_weight"] = settings.tfidf_weight
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def check_sizes(n_rows: int, width: int, settings: FeatureSettings, *, distinct: int | None = None) -> None:
    """Fail, naming both numbers, when the settings cannot fit data of this size.

    The pipeline calls it before embedding (with the count of distinct texts),
    so a bad setting costs seconds, not an embedding pass.
    """
    if settings.n_components >= width:
        raise DataCheckError(
            f"n_components={settings.n_components} must be below the embedding width "
            f"({width}) of the text model"
        )
    if settings.n_components >= n_rows:
        raise DataCheckError(
            f"n_components={settings.n_components} must be below the number of posts "
            f"({n_rows}); lower n_components or add posts"
        )
    if distinct is not None and settings.n_clusters > distinct:
        raise DataCheckError(
            f"n_clusters={settings.n_clusters} is more than the {distinct} distinct posts "
            f"(of {n_rows} rows); lower n_clusters or add posts"
        )


def check_settings_against_data(vectors: np.ndarray, settings: FeatureSettings) -> None:
    """Fail early, naming both numbers, when the settings cannot fit these vectors."""
    n_rows, width = vectors.shape
    check_sizes(n_rows, width, settings)
    if not _has_distinct_rows(vectors, settings.n_clusters):
        # distinct texts can still share a vector (e.g. equal heads, truncated)
        check_sizes(n_rows, width, settings, distinct=_count_distinct_rows(vectors))


def fit_clusters(
    vectors: np.ndarray,
    settings: FeatureSettings,
    *,
    embedding_key: str,
    texts: Sequence[str] | None = None,
) -> ClusterFit:
    """:func:`fit_and_place` without the placement."""
    return fit_and_place(vectors, settings, embedding_key=embedding_key, texts=texts)[0]


def fit_and_place(
    vectors: np.ndarray,
    settings: FeatureSettings,
    *,
    embedding_key: str,
    texts: Sequence[str] | None = None,
) -> tuple[ClusterFit, Placement]:
    """Fit centring, SVD and KMeans on ``vectors`` (n x width), and place those rows.

    The placement is what ``fit.placement(vectors, texts)`` returns, computed
    from the features the fit already holds, so a fitting build does not
    reduce the vectors (nor transform the texts) a second time.

    Above ``settings.minibatch_threshold`` rows, the SVD is fitted on a seeded
    sample of ``svd_sample_size`` rows and clustering uses MiniBatchKMeans, so a
    million posts fit in memory and in minutes. With ``settings.tfidf_weight``
    above 0, ``texts`` (one per row) are required and a lexical block is
    fitted on them (on the same sample when large) and clustered with the
    embeddings (:mod:`python_udf.lexical`).
    """
    hybrid = settings.tfidf_weight > 0
    if hybrid:
        if texts is None:
            raise DataCheckError(f"tfidf_weight={settings.tfidf_weight:g} needs the posts' texts to fit on")
        texts = list(texts)
        if len(texts) != vectors.shape[0]:
            raise DataCheckError(f"{len(texts)} texts for {vectors.shape[0]} vectors; they must pair up")
    check_settings_against_data(vectors, settings)
    seconds: dict[str, float] = {}
    large = vectors.shape[0] > settings.minibatch_threshold
    rng = np.random.default_rng(settings.random_state)

    started = time.perf_counter()
    mean = column_mean(vectors, settings.normalize)
    seconds["centre"] = time.perf_counter() - started

    started = time.perf_counter()
    rows = None
    if large and vectors.shape[0] > settings.svd_sample_size:
        rows = np.sort(rng.choice(vectors.shape[0], settings.svd_sample_size, replace=False))
        sample = _prepare_block(vectors[rows], settings.normalize)
    else:
        sample = _prepare_block(vectors, settings.normalize)
    sample -= mean
    svd = TruncatedSVD(n_components=settings.n_components, random_state=settings.random_state)
    svd.fit(sample)
    del sample
    components = svd.components_.astype(np.float64)
    explained = float(svd.explained_variance_ratio_.sum())
    key = fit_key(embedding_key, settings)
    fit = ClusterFit(
        # the random tail keeps ids unique when two fits of one key and size
        # land in the same second (refit=True twice in a row)
        fit_id=f"{key}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{vectors.shape[0]}-{uuid.uuid4().hex[:8]}",
        fit_key=key,
        normalize=settings.normalize,
        mean=mean,
        components=components,
        centroids=np.empty((0, settings.n_components), dtype=np.float64),
        explained_variance_ratio=explained,
        inertia=0.0,
        n_posts=int(vectors.shape[0]),
        algorithm="",
        seconds=seconds,
    )
    seconds["svd"] = time.perf_counter() - started
    if hybrid:
        started = time.perf_counter()
        fit.lexical = fit_lexical(
            texts if rows is None else [texts[i] for i in rows], settings.n_components, settings.random_state
        )
        fit.tfidf_weight = settings.tfidf_weight
        seconds["tfidf"] = time.perf_counter() - started
        log.info(
            "lexical block: %d TF-IDF terms -> %d components, weight %g",
            len(fit.lexical.terms), fit.lexical.n_components, settings.tfidf_weight,
        )
    # the features KMeans sees come from the method that places posts later
    started = time.perf_counter()
    reduced = fit.features(vectors, texts)
    seconds["features"] = time.perf_counter() - started

    # Posts with no known word (a lexical row of zeros) are placed by their
    # embedding alone (ClusterFit.distances); they are left out of the KMeans
    # fit, so that no centroid is spent on them and the fit and the placement
    # agree on every post that shaped the clusters.
    fit_rows = reduced
    if hybrid:
        has_terms = ~fit.without_terms(reduced)
        check_with_terms(int(has_terms.sum()), len(has_terms), settings.n_clusters)
        if not has_terms.all():
            fit_rows = reduced[has_terms]
            log.info(
                "%d of %d posts have no word the TF-IDF keeps: left out of the KMeans fit, "
                "placed by their embedding", len(has_terms) - len(fit_rows), len(has_terms),
            )

    started = time.perf_counter()
    if large:
        kmeans = MiniBatchKMeans(
            n_clusters=settings.n_clusters,
            random_state=settings.random_state,
            n_init=3,
            batch_size=4096,
        )
        algorithm = "minibatch_kmeans"
    else:
        kmeans = KMeans(
            n_clusters=settings.n_clusters,
            random_state=settings.random_state,
            n_init=settings.kmeans_n_init,
        )
        algorithm = "kmeans"
    kmeans.fit(fit_rows)
    del fit_rows
    fit.centroids = kmeans.cluster_centers_.astype(np.float64)
    fit.algorithm = algorithm
    del kmeans
    seconds["kmeans"] = time.perf_counter() - started

    # the placement of the fitted rows and the inertia of the stored fit, with
    # the code that places posts later (reduced is what fit.features returns)
    started = time.perf_counter()
    placed = fit.place_features(reduced)
    fit.inertia = float((placed.distances.min(axis=1) ** 2).sum())
    del reduced
    seconds["place"] = time.perf_counter() - started
    log.info(
        "fitted %s on %d posts: SVD %d->%d explains %.1f%% of variance, %d clusters, inertia %.4g",
        algorithm, vectors.shape[0], fit.width, settings.n_components,
        100 * explained, settings.n_clusters, fit.inertia,
    )
    return fit, placed


def _prepare(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    prepared = np.asarray(vectors, dtype=np.float64)
    if normalize:
        norms = np.linalg.norm(prepared, axis=1, keepdims=True)
        prepared = prepared / np.where(norms == 0, 1.0, norms)
    return prepared


def _prepare_block(block: np.ndarray, normalize: bool) -> np.ndarray:
    """:func:`_prepare` on a block, always as a fresh float64 array (safe to modify)."""
    prepared = np.array(block, dtype=np.float64, copy=True)
    if normalize:
        norms = np.linalg.norm(prepared, axis=1, keepdims=True)
        prepared /= np.where(norms == 0, 1.0, norms)
    return prepared


def _has_distinct_rows(vectors: np.ndarray, needed: int) -> bool:
    """Whether ``vectors`` holds at least ``needed`` distinct rows (as float32).

    Looks block by block and stops as soon as it has seen enough, so the usual
    case reads a few thousand rows instead of sorting a copy of all of them.
    """
    seen: set[bytes] = set()
    for start in range(0, vectors.shape[0], _DISTINCT_BLOCK_ROWS):
        block = np.ascontiguousarray(vectors[start : start + _DISTINCT_BLOCK_ROWS], dtype=np.float32)
        seen.update(row.tobytes() for row in block)
        if len(seen) >= needed:
            return True
    return False


def _count_distinct_rows(vectors: np.ndarray) -> int:
    contiguous = np.ascontiguousarray(vectors, dtype=np.float32)
    row_bytes = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * contiguous.shape[1])))
    return int(np.unique(row_bytes).shape[0])
