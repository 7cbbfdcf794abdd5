"""python_udf.pipeline + python_udf.state on a DuckDB file: cache, fit reuse, order, ids.

Each test gets its own DuckDB file under tmp_path. Expected vectors come from
the tiny model run on the texts directly; expected counts from what was added.
"""

from __future__ import annotations

import re
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest

import python_udf.pipeline as pipeline
from python_udf.clustering import DataCheckError, fit_key
from python_udf.embedding import embed_texts, load_encoder
from python_udf.pipeline import DuplicatePostIdError, build_text_features, distance_column, embedding_key
from python_udf.state import DEFAULT_STATE_SCHEMA, StateStore
from python_udf.text import clean_text, text_hash

STATE = DEFAULT_STATE_SCHEMA


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "state.duckdb"))
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def posts(bundled_posts) -> pd.DataFrame:
    """16 real posts with distinct texts and non-monotone ids."""
    frame = bundled_posts.drop_duplicates("text").head(16)[["post_id", "text"]].copy()
    frame["post_id"] = [907, 3, 55, 1200, 14, 8, 600, 41, 2, 999, 77, 31, 450, 5, 18, 260]
    return frame.reset_index(drop=True)


def build(con, posts, settings):
    """Run the step; return the features and the run's log row."""
    features = build_text_features(con, posts, settings, progress=False)
    run_ids = features["run_id"].unique()
    assert len(run_ids) == 1
    log = con.execute(f"select * from {STATE}.feature_runs_log where run_id = ?", [run_ids[0]]).df()
    assert len(log) == 1
    return features, log.iloc[0]


def distances(features) -> np.ndarray:
    columns = [c for c in features.columns if c.startswith("distance_to_cluster_")]
    return features[columns].to_numpy()


def cache_rows(con) -> pd.DataFrame:
    return con.execute(
        f"select embedding_key, text_hash, vector from {STATE}.embedding_cache"
    ).df()


def forbid_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although every vector was cached")

    monkeypatch.setattr(pipeline, "load_encoder", refuse)


def spy_on_embedding(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = pipeline.embed_texts

    def spy(texts, *args, **kwargs):
        calls.append(list(texts))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(pipeline, "embed_texts", spy)
    return calls


# ---------------------------------------------------------------- order and placement


def test_rows_come_out_in_input_order_each_with_its_own_features(con, posts, make_settings, tiny_encoder):
    settings = make_settings()
    features, log = build(con, posts, settings)
    assert features["post_id"].tolist() == posts["post_id"].tolist()
    assert list(features.columns) == (
        ["post_id", "text_cluster"] + [distance_column(c) for c in range(3)] + ["fit_id", "run_id"]
    )
    # independent: embed each text alone, place it with the stored fit
    store = StateStore(con)
    fit = store.latest_fit(fit_key(log["embedding_key"], settings))
    store.close()
    assert fit.fit_id == log["fit_id"]
    for row, text in enumerate(posts["text"]):
        vector, _ = embed_texts([clean_text(text)], tiny_encoder, settings, progress=False)
        label, dist = fit.place(vector)
        assert features["text_cluster"].iloc[row] == label[0]
        np.testing.assert_allclose(distances(features)[row], dist[0], atol=1e-5, rtol=0)
    assert features["text_cluster"].nunique() > 1


def test_null_and_empty_texts_are_the_same_empty_post(con, posts, make_settings):
    frame = pd.concat(
        [posts.head(8), pd.DataFrame({"post_id": [10_001, 10_002, 10_003], "text": [None, "", " \r\n\t "]})],
        ignore_index=True,
    )
    features, log = build(con, frame, make_settings())
    empty = distances(features)[-3:]
    # same vector; the blocked matrix product may round rows differently (~1e-19)
    np.testing.assert_allclose(empty[1:], empty[[0, 0]], atol=1e-12, rtol=0)
    assert features["text_cluster"].iloc[-3:].nunique() == 1
    assert log["texts_embedded"] == 8 + 1


# ---------------------------------------------------------------- input checks


def test_duplicate_post_ids_fail_naming_the_ids(con, posts, make_settings):
    frame = posts.copy()
    frame.loc[3, "post_id"] = 55  # row 2 has 55
    frame.loc[9, "post_id"] = 2  # row 8 has 2
    with pytest.raises(DuplicatePostIdError) as info:
        build_text_features(con, frame, make_settings(), progress=False)
    message = str(info.value)
    listed = re.search(r"\[(.*)\]", message).group(1)
    assert sorted(int(x) for x in listed.split(",")) == [2, 55]
    assert "2 id(s)" in message


def test_null_post_id_fails(con, make_settings):
    frame = pd.DataFrame({"post_id": [1.0, None], "text": ["a", "b"]})
    with pytest.raises(ValueError, match="NULL on 1 row"):
        build_text_features(con, frame, make_settings(), progress=False)


def test_settings_are_checked_against_the_data_before_any_embedding(con, make_settings, monkeypatch):
    texts = ["The striker scored twice.", "Shares fell after the bank reported lower growth.",
             "The new phone has a faster chip."]
    frame = pd.DataFrame({"post_id": range(6), "text": texts * 2})  # 6 posts, 3 distinct texts
    # the check needs only the model's config, so a bad setting costs no embedding pass
    with monkeypatch.context() as patched:
        forbid_model_loading(patched)
        with pytest.raises(DataCheckError) as info:
            build_text_features(con, frame, make_settings(n_components=2, n_clusters=4), progress=False)
        message = str(info.value)
        assert re.search(r"n_clusters=4\b", message) and re.search(r"\b3 distinct\b", message)
        with pytest.raises(DataCheckError, match=r"n_components=6 must be below the number of posts \(6\)"):
            build_text_features(con, frame, make_settings(n_components=6, n_clusters=2), progress=False)
    features, log = build(con, frame, make_settings(n_components=2, n_clusters=3))
    assert log["texts_embedded"] == 3 and log["posts_embedded"] == 6 and len(features) == 6


# ---------------------------------------------------------------- embedding cache


def test_rebuild_with_nothing_changed_embeds_nothing_and_loads_no_model(con, posts, make_settings, monkeypatch):
    settings = make_settings()
    first, log1 = build(con, posts, settings)
    assert log1["posts_embedded"] == len(posts) and log1["fit_action"] == "fitted"

    forbid_model_loading(monkeypatch)
    second, log2 = build(con, posts, settings)
    assert log2["posts_embedded"] == 0
    assert log2["posts_reused"] == len(posts)
    assert log2["texts_embedded"] == 0 and log2["tokens_embedded"] == 0
    assert log2["fit_action"] == "reused" and log2["fit_id"] == log1["fit_id"]
    pd.testing.assert_frame_equal(second.drop(columns="run_id"), first.drop(columns="run_id"))


def test_adding_and_editing_posts_embeds_exactly_those(con, posts, make_settings, monkeypatch):
    settings = make_settings()
    base = posts.head(12).reset_index(drop=True)
    build(con, base, settings)

    changed = base.copy()
    changed.loc[4, "text"] = "An edited post about the league match."
    added = pd.DataFrame({"post_id": [5001, 5002], "text": ["A new post about a film award.",
                                                             "Another new post about taxes."]})
    changed = pd.concat([changed, added], ignore_index=True)
    calls = spy_on_embedding(monkeypatch)
    _, log = build(con, changed, settings)
    assert log["posts_embedded"] == 3 and log["texts_embedded"] == 3
    assert log["posts_reused"] == len(changed) - 3
    assert sorted(sum(calls, [])) == sorted(
        ["An edited post about the league match.", "A new post about a film award.",
         "Another new post about taxes."]
    )
    assert len(cache_rows(con)) == 12 + 3  # the old text of the edited post stays cached


def test_duplicate_texts_are_embedded_once(con, make_settings, monkeypatch):
    texts = ["The film won an award.", "Ministers said the campaign would focus on taxes.",
             "The striker scored twice."]
    frame = pd.DataFrame({"post_id": range(6), "text": texts + texts[::-1]})
    calls = spy_on_embedding(monkeypatch)
    features, log = build(con, frame, make_settings(n_components=2))
    assert sorted(sum(calls, [])) == sorted(texts)
    assert log["texts_embedded"] == 3 and log["posts_embedded"] == 6
    np.testing.assert_allclose(distances(features)[0], distances(features)[5], atol=1e-12, rtol=0)


def _cached_by_key(con) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for row in cache_rows(con).itertuples():
        out.setdefault(row.embedding_key, {})[row.text_hash] = np.asarray(row.vector, dtype=np.float32)
    return out


def _assert_cache_matches(cached: dict[str, np.ndarray], texts, encoder, settings):
    vectors, _ = embed_texts(list(texts), encoder, settings, progress=False)
    assert set(cached) == {text_hash(t) for t in texts}
    for text, vector in zip(texts, vectors):
        np.testing.assert_allclose(cached[text_hash(text)], vector, atol=1e-5, rtol=0)


def test_changing_the_model_embeds_everything_and_never_mixes_models(
    con, posts, make_settings, tiny_encoder, other_tiny_model_dir, other_tiny_encoder, monkeypatch
):
    settings_a = make_settings()
    settings_b = make_settings(text_model=str(other_tiny_model_dir))
    first, log_a = build(con, posts.head(10), settings_a)
    other, log_b = build(con, posts, settings_b)  # 6 more posts than model A saw

    assert log_b["posts_embedded"] == len(posts)  # the 10 cached under A do not count
    assert log_b["fit_action"] == "fitted" and log_b["fit_id"] != log_a["fit_id"]
    assert log_a["embedding_key"] != log_b["embedding_key"]
    cached = _cached_by_key(con)
    assert set(cached) == {log_a["embedding_key"], log_b["embedding_key"]}
    texts = [clean_text(t) for t in posts["text"]]
    _assert_cache_matches(cached[log_a["embedding_key"]], texts[:10], tiny_encoder, settings_a)
    _assert_cache_matches(cached[log_b["embedding_key"]], texts, other_tiny_encoder, settings_b)
    assert not np.allclose(distances(other)[:10], distances(first), atol=1e-3)

    # back to model A: its cache and fit are still there, nothing is embedded
    forbid_model_loading(monkeypatch)
    again, log_a2 = build(con, posts.head(10), settings_a)
    assert log_a2["posts_embedded"] == 0 and log_a2["fit_id"] == log_a["fit_id"]
    pd.testing.assert_frame_equal(again.drop(columns="run_id"), first.drop(columns="run_id"))


def test_replacing_the_model_files_in_place_embeds_everything_again(
    con, posts, make_settings, tiny_model_dir, other_tiny_model_dir, tmp_path
):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    settings = make_settings(text_model=str(model_dir))
    first, log1 = build(con, posts, settings)
    for file in other_tiny_model_dir.iterdir():  # same path, new weights
        shutil.copy(file, model_dir / file.name)
    second, log2 = build(con, posts, settings)
    assert log2["posts_embedded"] == len(posts)
    assert log2["embedding_key"] != log1["embedding_key"]
    assert not np.allclose(distances(first), distances(second), atol=1e-3)


@pytest.mark.parametrize("change", [{"pooling": "mean"}, {"max_length": 32}, {"long_text": "chunk_mean", "chunk_overlap": 8}])
def test_changing_what_decides_a_vector_embeds_everything_again(con, posts, make_settings, change):
    posts = posts.assign(text=posts["text"].str.slice(0, 400))  # a few windows each, not dozens
    _, log1 = build(con, posts, make_settings())
    _, log2 = build(con, posts, make_settings(**change))
    assert log2["posts_embedded"] == len(posts)
    assert log2["embedding_key"] != log1["embedding_key"]
    assert log2["fit_action"] == "fitted"


def test_settings_that_do_not_decide_vectors_keep_the_cache(con, posts, make_settings, monkeypatch):
    build(con, posts, make_settings())
    forbid_model_loading(monkeypatch)
    _, log = build(con, posts, make_settings(batch_size=2, n_clusters=4))
    assert log["posts_embedded"] == 0
    assert log["fit_action"] == "fitted"  # another n_clusters is another fit


def test_embedding_key_names_the_long_text_rule(make_settings):
    truncate = embedding_key("m", make_settings())
    chunk8 = embedding_key("m", make_settings(long_text="chunk_mean", chunk_overlap=8))
    chunk4 = embedding_key("m", make_settings(long_text="chunk_mean", chunk_overlap=4))
    assert len({truncate, chunk8, chunk4}) == 3
    # the overlap only matters when chunking
    assert embedding_key("m", make_settings(chunk_overlap=4)) == truncate


# ---------------------------------------------------------------- fit reuse


def test_second_build_reuses_the_fit_and_old_posts_keep_their_features(con, posts, make_settings):
    settings = make_settings()
    base = posts.head(12).reset_index(drop=True)
    first, log1 = build(con, base, settings)
    second, log2 = build(con, posts, settings)  # 4 posts added

    assert log2["fit_action"] == "reused" and log2["fit_id"] == log1["fit_id"]
    assert (second["fit_id"] == log1["fit_id"]).all()
    old = second.head(12)
    np.testing.assert_array_equal(old["text_cluster"].to_numpy(), first["text_cluster"].to_numpy())
    np.testing.assert_allclose(distances(old), distances(first), atol=1e-12, rtol=0)
    assert con.execute(f"select count(*) from {STATE}.cluster_fits").fetchone()[0] == 1


def test_refit_makes_a_new_fit_that_later_builds_reuse(con, posts, make_settings):
    settings = make_settings()
    _, log1 = build(con, posts.head(12), settings)
    refit, log2 = build(con, posts, make_settings(refit=True))
    assert log2["fit_action"] == "fitted" and log2["fit_id"] != log1["fit_id"]
    _, log3 = build(con, posts, settings)
    assert log3["fit_action"] == "reused" and log3["fit_id"] == log2["fit_id"]
    # same data twice with refit: still a new fit each time
    _, log4 = build(con, posts, make_settings(refit=True))
    assert log4["fit_id"] not in {log1["fit_id"], log2["fit_id"]}
    fits = con.execute(f"select fit_id, n_posts from {STATE}.cluster_fits order by created_at").fetchall()
    assert [f for f, _ in fits] == [log1["fit_id"], log2["fit_id"], log4["fit_id"]]
    assert [n for _, n in fits] == [12, 16, 16]
