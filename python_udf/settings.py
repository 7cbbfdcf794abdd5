"""Settings of the text-feature step, validated once at the edge.

The dbt Python model, the command line and the tests all build a
:class:`FeatureSettings` from plain data (a mapping of strings, numbers or
booleans).  Every value is checked here, with an error that names the
setting, so that code further down can trust it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

DEFAULT_TEXT_MODEL = "distilbert-base-cased"

POOLINGS = ("cls", "mean")
LONG_TEXT_MODES = ("truncate", "chunk_mean")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names it."""


class DataCheckError(ValueError):
    """Settings do not fit the data (the message names both numbers)."""


def default_text_model() -> str:
    """The model used when none is configured: ``$TEXT_MODEL`` or DistilBERT."""
    return os.environ.get("TEXT_MODEL") or DEFAULT_TEXT_MODEL


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that decides the features a post gets.

    Attributes mirror the dbt vars of the same name (see README, "Settings").
    """

    text_model: str = DEFAULT_TEXT_MODEL
    pooling: str = "cls"
    max_length: int = 512
    batch_size: int = 32
    long_text: str = "truncate"
    chunk_overlap: int = 64
    normalize: bool = False
    tfidf_weight: float = 0.0
    n_components: int = 100
    n_clusters: int = 15
    random_state: int = 42
    kmeans_n_init: int = 10
    device: str = "auto"
    precision: str = "fp32"
    refit: bool = False
    minibatch_threshold: int = 100_000
    svd_sample_size: int = 50_000

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> "FeatureSettings":
        """Build settings from loosely typed values (dbt renders vars as strings).

        Keys whose value is ``None`` or ``""`` take the default. Unknown keys
        are an error, so a typo in a var name does not pass silently.
        """
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {unknown}; known settings are {sorted(known)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if value is None or (isinstance(value, str) and value.strip() == ""):
                continue
            default = known[name].default
            kwargs[name] = _coerce(name, value, type(default))
        if "text_model" not in kwargs:
            kwargs["text_model"] = default_text_model()
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check each value on its own; checks against the data live in the steps."""
        _choice("pooling", self.pooling, POOLINGS)
        _choice("long_text", self.long_text, LONG_TEXT_MODES)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        if not self.text_model:
            raise SettingsError("text_model is empty: give a hub id or a local directory")
        _at_least("max_length", self.max_length, 8)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("n_components", self.n_components, 1)
        _at_least("n_clusters", self.n_clusters, 1)
        _at_least("kmeans_n_init", self.kmeans_n_init, 1)
        _at_least("minibatch_threshold", self.minibatch_threshold, 1)
        _at_least("svd_sample_size", self.svd_sample_size, 2)
        _at_least("chunk_overlap", self.chunk_overlap, 0)
        if self.long_text == "chunk_mean" and self.chunk_overlap >= self.max_length // 2:
            raise SettingsError(
                f"chunk_overlap={self.chunk_overlap} must be below half of "
                f"max_length={self.max_length} so that windows advance"
            )
        if not 0.0 <= self.tfidf_weight < 1.0:
            raise SettingsError(
                f"setting tfidf_weight={self.tfidf_weight} must be at least 0 (embeddings only) "
                "and below 1 (at 1 the embeddings would count for nothing: that is the quality "
                "report's TF-IDF baseline)"
            )
        if self.random_state < 0:
            raise SettingsError(f"random_state must be >= 0, got {self.random_state}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off", "none"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(value)
            return number
        return str(value).strip()
    except (TypeError, ValueError):
        raise SettingsError(
            f"setting {name}={value!r} is not a valid {kind.__name__}"
        ) from None


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SettingsError(f"setting {name}={value!r} must be one of {list(allowed)}")


def _at_least(name: str, value: int, lowest: int) -> None:
    if value < lowest:
        raise SettingsError(f"setting {name}={value} must be at least {lowest}")
