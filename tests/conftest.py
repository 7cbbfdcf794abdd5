"""Shared fixtures: a tiny random DistilBERT built offline, and small corpora."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CORPUS = REPO_ROOT / "data" / "bbc_posts.csv.gz"

TOKENIZER_SENTENCES = [
    "Quarterly profits at the media giant jumped on advert sales.",
    "The striker scored twice as the club won the league match.",
    "Ministers said the election campaign would focus on taxes.",
    "The new phone has a faster chip and a better camera.",
    "The film won an award for best actor at the festival.",
    "Shares fell after the bank reported lower growth.",
    "A long post about football, music, politics and technology.",
]


def build_tiny_model(directory: Path) -> Path:
    """Save a random 2-layer DistilBERT and a WordPiece tokenizer trained on the sentences above."""
    from python_udf.random_model import build_random_distilbert

    return build_random_distilbert(
        directory, TOKENIZER_SENTENCES, vocab_size=300, lowercase=True, seed=0,
        dim=32, hidden_dim=64, n_layers=2, n_heads=2, max_position_embeddings=512,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from python_udf.embedding import load_encoder

    return load_encoder(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def bundled_posts() -> pd.DataFrame:
    with gzip.open(BUNDLED_CORPUS, "rt", encoding="utf-8") as handle:
        return pd.read_csv(io.StringIO(handle.read()), dtype={"post_id": "int64"}, keep_default_na=False)
