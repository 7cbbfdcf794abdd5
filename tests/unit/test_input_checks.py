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
