"""Bad input found by trying the tool as a new user: each gives a clear error."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from python_udf.embedding import ModelLoadError, describe_model
from python_udf.pipeline import check_posts
from python_udf.state import StateStore


@pytest.mark.parametrize("bad", ["12.7", "1e3", "0x10", "abc", ""])
def test_non_integer_post_ids_are_refused_with_the_row_named(bad):
    frame = pd.DataFrame({"post_id": ["5", bad, "7"], "text": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=rf"post_id must be an integer; row 1 has '{bad}'"):
        check_posts(frame)


def test_integer_ids_written_as_text_are_read_exactly():
    big = 2**63 - 1  # would lose its last digits through a float
    frame = pd.DataFrame({"post_id": [" 77 ", "+3", str(big)], "text": ["a", "b", "c"]})
    assert check_posts(frame)["post_id"].tolist() == [77, 3, big]


def test_state_store_works_in_a_file_named_like_its_schema(tmp_path):
    # DuckDB names the catalog after the file; unqualified names would be ambiguous
    with duckdb.connect(str(tmp_path / "text_features_state.duckdb")) as con:
        store = StateStore(con)
        assert store.latest_fit("no-such-fit") is None
        tables = con.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'text_features_state' order by 1"
        ).fetchall()
    assert [t for (t,) in tables] == ["cluster_fits", "embedding_cache", "feature_runs_log"]


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory") as info:
        describe_model(str(tmp_path / "typo"))
    assert "TEXT_MODEL" in str(info.value)


def test_directory_without_a_model_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json in"):
        describe_model(str(tmp_path))


def test_cache_records_each_texts_token_count(tiny_model_dir, tiny_encoder):
    from python_udf.pipeline import build_text_features
    from python_udf.settings import FeatureSettings
    from python_udf.text import text_hash

    texts = ["shares fell", "the club won the league match today", "a film award", "taxes"]
    frame = pd.DataFrame({"post_id": range(4), "text": texts})
    settings = FeatureSettings.from_mapping(
        {"text_model": str(tiny_model_dir), "n_components": 2, "n_clusters": 2}
    )
    with duckdb.connect() as con:
        build_text_features(con, frame, settings, progress=False)
        stored = dict(con.execute(
            "select text_hash, n_tokens from text_features_state.embedding_cache"
        ).fetchall())
    # independent count: the tokenizer's own ids, special tokens included
    expected = {text_hash(t): len(tiny_encoder.tokenizer(t)["input_ids"]) for t in texts}
    assert stored == expected
