"""Fixtures and reference helpers for the unit tests (offline, tiny model).

Kept here rather than in tests/conftest.py so the shared file only grows by
what every suite needs.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """Never touch the network: a hub lookup without this retries for ~45 s.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so the constant is
    patched as well as the environment.
    """
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def other_tiny_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Same tokenizer and architecture as ``tiny_model_dir``, other random weights (seed 1)."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    target = tmp_path_factory.mktemp("tiny-distilbert-seed1")
    for file in Path(tiny_model_dir).iterdir():
        if file.is_file():
            shutil.copy2(file, target / file.name)
    config = DistilBertConfig.from_pretrained(tiny_model_dir)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        DistilBertModel(config).eval().save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def other_tiny_encoder(other_tiny_model_dir):
    from python_udf.embedding import load_encoder

    return load_encoder(str(other_tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def words_text(tiny_encoder):
    """``words_text(n, seed)``: n words that are each one token of the tiny vocabulary.

    Every word is a whole-word vocabulary entry, so the text tokenises to
    exactly ``n`` tokens (plus [CLS] and [SEP]).
    """
    vocab = tiny_encoder.tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.islower() and len(w) >= 3)
    assert len(words) >= 20, words

    def make(n_words: int, seed: int = 0) -> str:
        rng = random.Random(seed)
        return " ".join(rng.choice(words) for _ in range(n_words))

    return make


@pytest.fixture(scope="session")
def reference_vector():
    """``reference_vector(encoder, ids, pooling)``: the model on one unpadded sequence.

    Independent of python_udf's batching, padding and ``pool()``: with no
    padding, ``mean`` is the plain mean over all positions.
    """
    import torch

    def run(encoder, ids: list[int], pooling: str) -> np.ndarray:
        input_ids = torch.tensor([ids], dtype=torch.long)
        with torch.inference_mode():
            hidden = encoder.model(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids)
            ).last_hidden_state[0].double()
        vector = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
        return vector.numpy()

    return run


@pytest.fixture
def make_settings(tiny_model_dir):
    """FeatureSettings on the tiny model with small, fast defaults."""
    from python_udf.settings import FeatureSettings

    def make(**overrides):
        values = dict(
            text_model=str(tiny_model_dir),
            max_length=64,
            batch_size=4,
            n_components=4,
            n_clusters=3,
            kmeans_n_init=2,
            random_state=0,
            device="cpu",
        )
        values.update(overrides)
        settings = FeatureSettings(**values)
        settings.validate()
        return settings

    return make
