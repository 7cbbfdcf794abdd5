"""Reduce post vectors with TruncatedSVD and cluster them with KMeans.

Fitting and placing are separate steps, as in scikit-learn: :func:`fit_clusters`
learns the centring, the SVD basis and the centroids once; :meth:`ClusterFit.place`
applies them to any vectors later, so new posts land in existing clusters and
the features of old posts do not move between runs. A fit serialises to bytes
(``to_bytes``/``from_bytes``) so it can be kept in the warehouse.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD

from .logs import get_logger
from .settings import FeatureSettings

log = get_logger()


class DataCheckError(ValueError):
    """Settings do not fit the data (the message names both numbers)."""


@dataclass
class ClusterFit:
    """A fitted centring + SVD + KMeans, applicable to new vectors.

    ``mean`` is the per-column mean that was subtracted, ``components`` the
    SVD basis (n_components x width) and ``centroids`` the KMeans centres in
    the reduced space (n_clusters x n_components).
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

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def width(self) -> int:
        return int(self.mean.shape[0])

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors (n x width) to the reduced space (n x n_components), float64."""
        vectors = _prepare(vectors, self.normalize)
        if vectors.shape[1] != self.width:
            raise DataCheckError(
                f"vectors have width {vectors.shape[1]} but fit {self.fit_id} "
                f"was made on width {self.width}"
            )
        return (vectors - self.mean) @ self.components.T

    def place(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster per row, Euclidean distance of each row to every centroid)."""
        reduced = self.reduce(vectors)
        distances = euclidean_distances(reduced, self.centroids)
        return distances.argmin(axis=1).astype(np.int32), distances

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
        }
        np.savez(
            buffer,
            mean=self.mean,
            components=self.components,
            centroids=self.centroids,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> "ClusterFit":
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes().decode())
            return cls(
                mean=arrays["mean"],
                components=arrays["components"],
                centroids=arrays["centroids"],
                **meta,
            )


def euclidean_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Exact pairwise Euclidean distances, computed row block by row block."""
    out = np.empty((points.shape[0], centroids.shape[0]), dtype=np.float64)
    block = 65_536
    for start in range(0, points.shape[0], block):
        chunk = points[start : start + block]
        diff = chunk[:, None, :] - centroids[None, :, :]
        out[start : start + block] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
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
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def check_settings_against_data(vectors: np.ndarray, settings: FeatureSettings) -> None:
    """Fail early, naming both numbers, when the settings cannot fit these vectors."""
    n_rows, width = vectors.shape
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
    distinct = _count_distinct_rows(vectors)
    if settings.n_clusters > distinct:
        raise DataCheckError(
            f"n_clusters={settings.n_clusters} is more than the {distinct} distinct posts "
            f"(of {n_rows} rows); lower n_clusters or add posts"
        )


def fit_clusters(vectors: np.ndarray, settings: FeatureSettings, *, embedding_key: str) -> ClusterFit:
    """Fit centring, SVD and KMeans on ``vectors`` (n x width).

    Above ``settings.minibatch_threshold`` rows, the SVD is fitted on a seeded
    sample of ``svd_sample_size`` rows and clustering uses MiniBatchKMeans, so a
    million posts fit in memory and in minutes.
    """
    check_settings_against_data(vectors, settings)
    seconds: dict[str, float] = {}
    large = vectors.shape[0] > settings.minibatch_threshold
    rng = np.random.default_rng(settings.random_state)

    started = time.perf_counter()
    prepared = _prepare(vectors, settings.normalize)
    mean = prepared.mean(axis=0)
    seconds["centre"] = time.perf_counter() - started

    started = time.perf_counter()
    sample = prepared
    if large and prepared.shape[0] > settings.svd_sample_size:
        rows = np.sort(rng.choice(prepared.shape[0], settings.svd_sample_size, replace=False))
        sample = prepared[rows]
    svd = TruncatedSVD(n_components=settings.n_components, random_state=settings.random_state)
    svd.fit(sample - mean)
    components = svd.components_.astype(np.float64)
    reduced = (prepared - mean) @ components.T
    explained = float(svd.explained_variance_ratio_.sum())
    seconds["svd"] = time.perf_counter() - started
    del prepared, sample

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
    kmeans.fit(reduced)
    centroids = kmeans.cluster_centers_.astype(np.float64)
    seconds["kmeans"] = time.perf_counter() - started

    key = fit_key(embedding_key, settings)
    fit = ClusterFit(
        fit_id=f"{key}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{vectors.shape[0]}",
        fit_key=key,
        normalize=settings.normalize,
        mean=mean,
        components=components,
        centroids=centroids,
        explained_variance_ratio=explained,
        inertia=0.0,
        n_posts=int(vectors.shape[0]),
        algorithm=algorithm,
        seconds=seconds,
    )
    # inertia of the stored fit, measured with the same code that places posts
    _, distances = fit.place(vectors)
    fit.inertia = float((distances.min(axis=1) ** 2).sum())
    log.info(
        "fitted %s on %d posts: SVD %d->%d explains %.1f%% of variance, %d clusters, inertia %.4g",
        algorithm, vectors.shape[0], fit.width, settings.n_components,
        100 * explained, settings.n_clusters, fit.inertia,
    )
    return fit


def _prepare(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    prepared = np.asarray(vectors, dtype=np.float64)
    if normalize:
        norms = np.linalg.norm(prepared, axis=1, keepdims=True)
        prepared = prepared / np.where(norms == 0, 1.0, norms)
    return prepared


def _count_distinct_rows(vectors: np.ndarray) -> int:
    contiguous = np.ascontiguousarray(vectors, dtype=np.float32)
    row_bytes = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * contiguous.shape[1])))
    return int(np.unique(row_bytes).shape[0])
