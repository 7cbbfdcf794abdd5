"""FeatureSettings.from_mapping: coercion of loosely typed values and errors that name the setting.

Checks of settings against the data (clusters vs distinct posts, components
vs width and rows) live in test_clustering.py and test_pipeline_cache.py;
max_length against the model's positions in test_embedding.py.
"""

from __future__ import annotations

import pytest

from python_udf.settings import DEFAULT_TEXT_MODEL, FeatureSettings, SettingsError


def error_of(values) -> str:
    with pytest.raises(SettingsError) as info:
        FeatureSettings.from_mapping(values)
    return str(info.value)


def test_defaults_and_text_model_from_the_environment(monkeypatch):
    monkeypatch.delenv("TEXT_MODEL", raising=False)
    assert FeatureSettings.from_mapping({}) == FeatureSettings(text_model=DEFAULT_TEXT_MODEL)
    monkeypatch.setenv("TEXT_MODEL", "/models/local-copy")
    assert FeatureSettings.from_mapping(None).text_model == "/models/local-copy"
    # an explicit value wins over the environment
    assert FeatureSettings.from_mapping({"text_model": "other"}).text_model == "other"


def test_values_rendered_as_strings_are_coerced():
    settings = FeatureSettings.from_mapping(
        {
            "text_model": " some/model ",
            "pooling": "mean",
            "max_length": "128",
            "n_clusters": "5.0",
            "normalize": "true",
            "refit": "0",
            "random_state": 3,
        }
    )
    assert settings.text_model == "some/model"
    assert settings.pooling == "mean"
    assert settings.max_length == 128 and isinstance(settings.max_length, int)
    assert settings.n_clusters == 5 and isinstance(settings.n_clusters, int)
    assert settings.normalize is True and settings.refit is False
    assert settings.random_state == 3


def test_none_and_empty_strings_take_the_default():
    settings = FeatureSettings.from_mapping({"text_model": "m", "n_clusters": None, "pooling": "  "})
    assert settings.n_clusters == FeatureSettings.n_clusters
    assert settings.pooling == FeatureSettings.pooling


def test_bad_pooling_names_the_setting_and_the_choices():
    message = error_of({"text_model": "m", "pooling": "max"})
    assert "pooling" in message and "'max'" in message
    assert "cls" in message and "mean" in message


@pytest.mark.parametrize("value", ["abc", "12.5", True, [1]])
def test_non_integer_max_length_names_the_setting(value):
    message = error_of({"text_model": "m", "max_length": value})
    assert "max_length" in message and repr(value) in message


def test_non_boolean_normalize_names_the_setting():
    assert "normalize" in error_of({"text_model": "m", "normalize": "maybe"})


def test_unknown_setting_is_named():
    message = error_of({"text_model": "m", "n_cluster": 3})
    assert "n_cluster" in message
    assert "n_clusters" in message  # the list of known settings helps spot the typo


@pytest.mark.parametrize(
    "values, numbers",
    [
        ({"max_length": 4}, ["max_length", "4", "8"]),
        ({"n_clusters": 0}, ["n_clusters", "0", "1"]),
        ({"batch_size": -1}, ["batch_size", "-1"]),
        ({"svd_sample_size": 1}, ["svd_sample_size", "1", "2"]),
        ({"random_state": -2}, ["random_state", "-2"]),
        ({"long_text": "chunk_mean", "max_length": 64, "chunk_overlap": 32}, ["chunk_overlap=32", "max_length=64"]),
        ({"device": "tpu"}, ["device", "'tpu'"]),
        ({"long_text": "summarise"}, ["long_text", "'summarise'"]),
    ],
)
def test_out_of_range_values_are_named(values, numbers):
    message = error_of({"text_model": "m", **values})
    for piece in numbers:
        assert piece in message, (piece, message)


def test_chunk_overlap_only_matters_when_chunking():
    settings = FeatureSettings.from_mapping({"text_model": "m", "max_length": 64, "chunk_overlap": 32})
    assert settings.long_text == "truncate"
    ok = FeatureSettings.from_mapping(
        {"text_model": "m", "long_text": "chunk_mean", "max_length": 64, "chunk_overlap": 31}
    )
    assert ok.chunk_overlap == 31
