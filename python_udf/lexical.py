"""The lexical half of hybrid features: TF-IDF reduced with TruncatedSVD.

With ``tfidf_weight`` above 0, the space the posts are clustered in joins two
blocks, each with L2-normalised rows:

* the embedding block, the post vectors centred and reduced by SVD, as
  without the setting;
* the lexical block, built here: the TF-IDF vector of the post's text (the
  vectoriser of the quality report's baseline, :class:`~python_udf.quality.
  BaselineSettings`), reduced by TruncatedSVD.

They are concatenated as ``[sqrt(1 - w) * embedding, sqrt(w) * lexical]``, so
the squared Euclidean distance between two posts is ``(1 - w)`` times their
squared distance in the embedding block plus ``w`` times that in the lexical
block. ``w = 0`` is the embeddings alone; ``w = 1`` is the baseline's space.

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

# Terms kept at most. The stored SVD basis is n_components x terms float64:
# 100 x 50,000 is 40 MB. The bundled corpus has about 15,000 terms, so its
# lexical block is exactly the baseline's.
MAX_TERMS = 50_000
# Texts turned into TF-IDF rows at a time when placing posts.
BLOCK_TEXTS = 16_384


class LexicalError(ValueError):
    """The texts cannot give a lexical block (the message says why)."""


@dataclass
class LexicalSpace:
    """A fitted TF-IDF vocabulary and idf, and an SVD basis over its terms."""

    terms: list[str]
    idf: np.ndarray
    components: np.ndarray
    min_df: int
    settings: BaselineSettings

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def vectorizer(self) -> TfidfVectorizer:
        """The fitted vectoriser, rebuilt from the stored vocabulary and idf."""
        vectorizer = TfidfVectorizer(
            stop_words=self.settings.stop_words,
            sublinear_tf=self.settings.sublinear_tf,
            vocabulary=self.terms,
        )
        vectorizer.idf_ = self.idf
        return vectorizer

    def transform(self, texts: Sequence[str], *, block_texts: int = BLOCK_TEXTS) -> np.ndarray:
        """Texts to the lexical block (n x n_components, float64, rows of norm 1 or 0).

        A text with none of the fitted terms gets a row of zeros: it sits at
        the same distance from every centroid in this block.
        """
        texts = list(texts)
        vectorizer = self.vectorizer()
        basis = np.ascontiguousarray(self.components.T)
        out = np.empty((len(texts), self.n_components), dtype=np.float64)
        for start in range(0, len(texts), block_texts):
            tfidf = vectorizer.transform(texts[start : start + block_texts])
            out[start : start + block_texts] = tfidf @ basis
        return unit_rows(out)

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
            settings=BaselineSettings(),
        )


def fit_lexical(texts: Sequence[str], n_components: int, random_state: int) -> LexicalSpace:
    """Fit the TF-IDF vocabulary, idf and an SVD basis on ``texts``.

    ``n_components`` is lowered to what the data allows (below the number of
    terms and of texts), as the baseline does.

    :raises LexicalError: no text has a usable word, or only one term exists.
    """
    texts = list(texts)
    settings = BaselineSettings(max_features=MAX_TERMS)
    try:
        vectorizer, tfidf, min_df = fit_tfidf_vectorizer(texts, settings)
    except ValueError as exc:
        raise LexicalError(f"tfidf_weight > 0: {exc}") from None
    n_texts, n_terms = tfidf.shape
    used = min(n_components, n_terms - 1, n_texts - 1)
    if used < 1:
        raise LexicalError(
            f"tfidf_weight > 0 needs at least 2 distinct terms and 2 posts; the posts have "
            f"{n_terms} term(s) in {n_texts} post(s). Set tfidf_weight: 0"
        )
    svd = TruncatedSVD(n_components=used, random_state=random_state).fit(tfidf)
    terms = [None] * n_terms
    for term, index in vectorizer.vocabulary_.items():
        terms[index] = term
    if any("\n" in term for term in terms):  # the default token pattern never yields one
        raise LexicalError("a TF-IDF term contains a line break")
    return LexicalSpace(
        terms=terms,
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        components=svd.components_.astype(np.float64),
        min_df=min_df,
        settings=BaselineSettings(),
    )


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to Euclidean norm 1 in place; rows of zeros stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms == 0, 1.0, norms)
    return matrix
