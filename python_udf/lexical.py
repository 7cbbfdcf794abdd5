"""The lexical half of hybrid features: TF-IDF reduced with TruncatedSVD.

With ``tfidf_weight`` w in (0, 1), posts are clustered in a space of two
blocks, each with rows of Euclidean norm 1:

* the embedding block: the post vectors centred and reduced by SVD, as with
  w = 0, then scaled to unit rows (at w = 0 they are not scaled, so a tiny w
  is not the same space as w = 0);
* the lexical block, built here: the TF-IDF vector of the post's text (the
  vectoriser of the quality report's baseline,
  :class:`~python_udf.quality.BaselineSettings`, keeping at most
  ``MAX_TERMS`` terms), reduced by TruncatedSVD.

The blocks sit side by side as ``[sqrt(1 - w) * embedding, sqrt(w) * lexical]``,
so the squared Euclidean distance between two posts is ``(1 - w)`` times their
squared distance in the embedding block plus ``w`` times that in the lexical
block. As w nears 1 the space nears the baseline's (the same TF-IDF, SVD and
unit rows, as long as the corpus has at most ``MAX_TERMS`` terms and is small
enough not to be sampled); w = 1 itself is refused, since the embeddings
would count for nothing.

A post none of whose words are in the vocabulary has a lexical row of zeros.
Placed as it is, it would drift towards the centroids with the shortest
lexical part; instead its lexical part of the squared distance counts as
``w`` (what a unit row scaled by sqrt(w) has from a centroid at the origin)
for every centroid, so it is placed by its embedding alone
(:meth:`python_udf.clustering.ClusterFit.distances`). Such posts are left out
of the KMeans fit, so no centroid is spent on them.

A :class:`LexicalSpace` is fitted once (vocabulary, idf, SVD basis), stored
with the cluster fit and applied to new texts later, like the embedding SVD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from .quality import BaselineSettings, fit_tfidf_vectorizer
from .settings import DataCheckError

# Terms kept at most. The stored SVD basis is n_components x terms float64:
# 100 x 50,000 is 40 MB. The bundled corpus has 17,471 terms, so its
# lexical block is exactly the baseline's.
MAX_TERMS = 50_000
# Texts turned into TF-IDF rows at a time.
BLOCK_TEXTS = 16_384


@dataclass
class LexicalSpace:
    """A fitted TF-IDF vocabulary and idf, and an SVD basis over its terms."""

    terms: list[str]
    idf: np.ndarray
    components: np.ndarray
    min_df: int

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def vectorizer(self) -> TfidfVectorizer:
        """The fitted vectoriser, rebuilt from the stored vocabulary and idf."""
        settings = BaselineSettings()
        vectorizer = TfidfVectorizer(
            stop_words=settings.stop_words, sublinear_tf=settings.sublinear_tf, vocabulary=self.terms
        )
        vectorizer.idf_ = self.idf
        return vectorizer

    def transform_into(self, texts: Sequence[str], out: np.ndarray, *, block_texts: int = BLOCK_TEXTS) -> None:
        """Write the lexical block of ``texts`` into ``out`` (n x n_components), unit rows.

        ``out`` may be a column slice of a larger array; only a block of
        TF-IDF rows is held at a time. Rows of texts with no known term stay 0.
        """
        texts = list(texts)
        if out.shape != (len(texts), self.n_components):
            raise ValueError(f"out has shape {out.shape}; expected {(len(texts), self.n_components)}")
        vectorizer = self.vectorizer()
        basis = np.ascontiguousarray(self.components.T)
        for start in range(0, len(texts), block_texts):
            block = np.asarray(vectorizer.transform(texts[start : start + block_texts]) @ basis)
            out[start : start + block_texts] = unit_rows(block)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Texts to the lexical block (n x n_components, float64, rows of norm 1 or 0)."""
        out = np.empty((len(texts), self.n_components), dtype=np.float64)
        self.transform_into(texts, out)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "lexical_terms": np.frombuffer("\n".join(self.terms).encode(), dtype=np.uint8),
            "lexical_idf": self.idf,
            "lexical_components": self.components,
            "lexical_min_df": np.array(self.min_df),
        }

    @classmethod
    def from_arrays(cls, arrays) -> "LexicalSpace":
        return cls(
            terms=arrays["lexical_terms"].tobytes().decode().split("\n"),
            idf=arrays["lexical_idf"],
            components=arrays["lexical_components"],
            min_df=int(arrays["lexical_min_df"]),
        )


def _vectorize(texts: list[str]):
    try:
        return fit_tfidf_vectorizer(texts, max_features=MAX_TERMS)
    except ValueError as exc:
        raise DataCheckError(f"tfidf_weight > 0: {exc}; set tfidf_weight: 0") from None


def check_texts(texts: Sequence[str], n_clusters: int) -> int:
    """Fail now if ``texts`` cannot give a lexical block for ``n_clusters``.

    Returns the number of texts with at least one term. The pipeline calls it
    on the texts the fit will see, before embedding, so that a corpus without
    usable words costs seconds, not an embedding pass.
    """
    _, tfidf, _ = _vectorize(list(texts))
    _check_shape(*tfidf.shape)
    with_terms = int(np.count_nonzero(tfidf.getnnz(axis=1)))
    check_with_terms(with_terms, tfidf.shape[0], n_clusters)
    return with_terms


def check_with_terms(with_terms: int, n_texts: int, n_clusters: int) -> None:
    if with_terms < n_clusters:
        raise DataCheckError(
            f"tfidf_weight > 0: only {with_terms} of the {n_texts} posts have a word the TF-IDF "
            f"keeps, fewer than n_clusters={n_clusters} (posts without one are placed by their "
            "embedding but cannot shape the clusters); lower n_clusters or set tfidf_weight: 0"
        )


def _check_shape(n_texts: int, n_terms: int) -> None:
    if min(n_terms, n_texts) < 2:
        raise DataCheckError(
            f"tfidf_weight > 0 needs at least 2 distinct terms and 2 posts; the posts have "
            f"{n_terms} term(s) in {n_texts} post(s). Set tfidf_weight: 0"
        )


def fit_lexical(texts: Sequence[str], n_components: int, random_state: int) -> LexicalSpace:
    """Fit the TF-IDF vocabulary, idf and an SVD basis on ``texts``.

    ``n_components`` is lowered to what the data allows (below the number of
    terms and of texts), as the baseline does.

    :raises DataCheckError: no text has a usable word, or only one term exists.
    """
    vectorizer, tfidf, min_df = _vectorize(list(texts))
    n_texts, n_terms = tfidf.shape
    _check_shape(n_texts, n_terms)
    used = min(n_components, n_terms - 1, n_texts - 1)
    svd = TruncatedSVD(n_components=used, random_state=random_state).fit(tfidf)
    terms = [""] * n_terms
    for term, index in vectorizer.vocabulary_.items():
        terms[index] = term
    if any("\n" in term for term in terms):  # the default token pattern never yields one
        raise DataCheckError("a TF-IDF term contains a line break")
    return LexicalSpace(
        terms=terms,
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        components=svd.components_.astype(np.float64),
        min_df=min_df,
    )


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to Euclidean norm 1 in place; rows of zeros stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms == 0, 1.0, norms)
    return matrix
