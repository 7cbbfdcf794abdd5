"""python_udf.embedding on the tiny random DistilBERT: pooling, order, long texts, chunks.

Reference vectors come from the model run on one unpadded sequence at a time
(fixture ``reference_vector``) or from ``embed_texts`` on one text alone, never
from numbers pasted from an earlier run.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from python_udf.embedding import (
    ModelLoadError,
    chunk_token_windows,
    describe_model,
    embed_texts,
    load_encoder,
    pool,
    special_token_frame,
)
from python_udf.settings import SettingsError

POOLINGS = ["cls", "mean"]
ATOL = 1e-5


def embed_alone(text, encoder, settings):
    vectors, _ = embed_texts([text], encoder, settings, progress=False)
    return vectors[0]


def content_ids(encoder, text):
    return encoder.tokenizer(text, add_special_tokens=False)["input_ids"]


def framed(encoder, ids):
    tok = encoder.tokenizer
    return [tok.cls_token_id, *ids, tok.sep_token_id]


# ---------------------------------------------------------------- pool()


def test_pool_mean_averages_only_masked_positions():
    big = 1e6  # padded positions hold huge values: reading any of them shows
    hidden = torch.tensor(
        [
            [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [big, big, big], [big, -big, big]],
            [[0.0, 0.0, 3.0], [3.0, 3.0, 3.0], [6.0, 0.0, 0.0], [big, big, big]],
        ]
    )
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    # by hand: row 0 = ([1,2,3] + [3,4,5]) / 2, row 1 = ([0,0,3] + [3,3,3] + [6,0,0]) / 3
    expected = torch.tensor([[2.0, 3.0, 4.0], [3.0, 1.0, 2.0]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), expected)


def test_pool_cls_takes_first_position():
    hidden = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "cls"), torch.stack([hidden[0, 0], hidden[1, 0]]))


def test_pool_mean_of_fully_masked_row_is_zero_not_nan():
    hidden = torch.ones(1, 3, 2)
    mask = torch.zeros(1, 3, dtype=torch.long)
    out = pool(hidden, mask, "mean")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.zeros(1, 2))


def test_pool_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="max"):
        pool(torch.ones(1, 2, 2), torch.ones(1, 2), "max")


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("pooling", POOLINGS)
def test_vector_is_the_same_alone_and_next_to_a_much_longer_post(
    pooling, tiny_encoder, make_settings, words_text, reference_vector
):
    settings = make_settings(pooling=pooling, max_length=512, batch_size=8)
    short = "The film won an award."
    long = words_text(300, seed=1)
    n_short = len(content_ids(tiny_encoder, short))
    assert n_short + 2 < 300  # the short post is padded by hundreds of positions in the batch

    alone = embed_alone(short, tiny_encoder, settings)
    for texts, row in (([short, long], 0), ([long, short], 1)):
        together, stats = embed_texts(texts, tiny_encoder, settings, progress=False)
        assert stats.windows == 2  # one batch, one row each: the short row was padded
        np.testing.assert_allclose(together[row], alone, atol=ATOL, rtol=0)
    # and "alone" is the model on the unpadded sequence, pooled by hand
    ids = framed(tiny_encoder, content_ids(tiny_encoder, short))
    np.testing.assert_allclose(alone, reference_vector(tiny_encoder, ids, pooling), atol=ATOL, rtol=0)


def test_padding_would_be_visible_at_this_tolerance(tiny_encoder, words_text, reference_vector):
    """Guard against a vacuous padding test: averaging padded positions changes the vector."""
    short_ids = framed(tiny_encoder, content_ids(tiny_encoder, "The film won an award."))
    long_ids = framed(tiny_encoder, content_ids(tiny_encoder, words_text(300, seed=1)))
    pad = tiny_encoder.tokenizer.pad_token_id
    padded = short_ids + [pad] * (len(long_ids) - len(short_ids))
    mask = [1] * len(short_ids) + [0] * (len(padded) - len(short_ids))
    with torch.inference_mode():
        hidden = tiny_encoder.model(
            input_ids=torch.tensor([padded]), attention_mask=torch.tensor([mask])
        ).last_hidden_state[0].double()
    unmasked_mean = hidden.mean(dim=0).numpy()
    true_mean = reference_vector(tiny_encoder, short_ids, "mean")
    assert np.abs(unmasked_mean - true_mean).max() > 100 * ATOL


# ---------------------------------------------------------------- order


@pytest.mark.parametrize("pooling", POOLINGS)
def test_rows_come_back_in_input_order_after_length_sorting(pooling, tiny_encoder, make_settings, words_text):
    settings = make_settings(pooling=pooling, batch_size=3)
    texts = [words_text(n, seed=n) for n in (2, 5, 9, 14, 20, 27, 35, 44, 54)] + ["", "film"]
    random.Random(0).shuffle(texts)
    lengths = [len(t) for t in texts]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)

    vectors, stats = embed_texts(texts, tiny_encoder, settings, progress=False)
    assert vectors.shape == (len(texts), tiny_encoder.width)
    assert vectors.dtype == np.float32
    assert stats.posts == len(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(
            vectors[i], embed_alone(text, tiny_encoder, settings), atol=ATOL, rtol=0,
            err_msg=f"row {i} is not the vector of text {i}",
        )
    # the texts differ, so a row mix-up could not hide behind equal vectors
    assert len({v.tobytes() for v in vectors}) == len(texts)


def test_no_texts_gives_an_empty_matrix(tiny_encoder, make_settings):
    vectors, stats = embed_texts([], tiny_encoder, make_settings(), progress=False)
    assert vectors.shape == (0, tiny_encoder.width)
    assert stats.posts == 0


def test_non_string_text_is_rejected_with_its_position(tiny_encoder, make_settings):
    with pytest.raises(TypeError, match="position 1"):
        embed_texts(["ok", None], tiny_encoder, make_settings(), progress=False)


# ---------------------------------------------------------------- long texts


@pytest.mark.parametrize("pooling", POOLINGS)
def test_text_longer_than_max_length_is_truncated_not_fatal(
    pooling, tiny_encoder, make_settings, words_text, reference_vector
):
    settings = make_settings(pooling=pooling, max_length=16)
    text = words_text(2000, seed=3)
    ids = content_ids(tiny_encoder, text)
    assert len(ids) == 2000  # one token per word, far past max_length (and past 512 positions)

    vectors, stats = embed_texts([text, "film"], tiny_encoder, settings, progress=False)
    assert np.isfinite(vectors).all()
    # the head that fits: [CLS] + first 14 tokens + [SEP] = 16
    expected = reference_vector(tiny_encoder, framed(tiny_encoder, ids[:14]), pooling)
    np.testing.assert_allclose(vectors[0], expected, atol=ATOL, rtol=0)
    assert stats.tokens == 16 + 3  # 16 for the long text, [CLS] film [SEP] for the other


def test_chunk_mean_embeds_a_2000_word_text(tiny_encoder, make_settings, words_text):
    settings = make_settings(
        pooling="mean", max_length=64, long_text="chunk_mean", chunk_overlap=16, batch_size=16
    )
    text = words_text(2000, seed=4)
    vectors, stats = embed_texts([text], tiny_encoder, settings, progress=False)
    assert np.isfinite(vectors).all()
    # windows of 62 content tokens advancing by 62 - 16 = 46: starts 0, 46, ..., until
    # one reaches the end; the last start s satisfies s + 62 >= 2000 > s - 46 + 62
    content, step = 62, 46
    expected_windows = 1 + -(-(2000 - content) // step)
    assert stats.windows == expected_windows
    # every token is read, overlaps twice, plus [CLS]/[SEP] per window
    assert stats.tokens == 2000 + 16 * (expected_windows - 1) + 2 * expected_windows


@pytest.mark.parametrize("pooling", POOLINGS)
def test_chunk_mean_equals_plain_pooling_for_posts_shorter_than_max_length(
    pooling, tiny_encoder, make_settings, words_text
):
    texts = ["", "film", words_text(10, seed=5), words_text(40, seed=6), words_text(62, seed=7)]
    truncated, _ = embed_texts(texts, tiny_encoder, make_settings(pooling=pooling), progress=False)
    chunked, stats = embed_texts(
        texts,
        tiny_encoder,
        make_settings(pooling=pooling, long_text="chunk_mean", chunk_overlap=8),
        progress=False,
    )
    assert stats.windows == len(texts)  # 62 content tokens + 2 = 64 still fit one window
    np.testing.assert_allclose(chunked, truncated, atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_chunk_mean_is_the_token_weighted_average_of_its_windows(
    pooling, tiny_encoder, make_settings, words_text, reference_vector
):
    max_length, overlap = 32, 6
    settings = make_settings(
        pooling=pooling, max_length=max_length, long_text="chunk_mean",
        chunk_overlap=overlap, batch_size=4,
    )
    long = words_text(137, seed=8)
    others = [words_text(50, seed=9), "film"]
    vectors, _ = embed_texts([others[0], long, others[1]], tiny_encoder, settings, progress=False)

    # independent: windows of 30 content tokens starting every 24, each framed by
    # [CLS]/[SEP] and run alone; weights are the tokens the model read per window
    ids = content_ids(tiny_encoder, long)
    content, step = max_length - 2, max_length - 2 - overlap
    starts = list(range(0, len(ids) - content + step, step))
    assert starts[-1] + content >= len(ids) > starts[-1] - step + content
    windows = [framed(tiny_encoder, ids[s : s + content]) for s in starts]
    assert len(windows) > 3 and len(windows[-1]) < max_length  # last one gets padded in a batch
    pooled = np.stack([reference_vector(tiny_encoder, w, pooling) for w in windows])
    weights = np.array([len(w) for w in windows], dtype=np.float64)
    expected = (pooled * weights[:, None]).sum(axis=0) / weights.sum()

    np.testing.assert_allclose(vectors[1], expected, atol=ATOL, rtol=0)
    # the neighbours are untouched by the long post's windows
    np.testing.assert_allclose(
        vectors[2], reference_vector(tiny_encoder, framed(tiny_encoder, content_ids(tiny_encoder, "film")), pooling),
        atol=ATOL, rtol=0,
    )


@pytest.mark.parametrize(
    "n, window, overlap",
    [(n, w, o) for n in (0, 1, 7, 8, 9, 30, 31, 100, 101) for w, o in ((8, 0), (8, 3), (8, 7), (10, 2), (1, 0))],
)
def test_chunk_token_windows_cover_every_token(n, window, overlap):
    tokens = list(range(n))  # ids equal positions
    windows = chunk_token_windows(tokens, window, overlap)
    assert windows, "at least one window"
    assert all(len(w) <= window for w in windows)
    # each window is a contiguous run of positions
    assert all(w == list(range(w[0], w[0] + len(w))) for w in windows if w)
    covered = set().union(*map(set, windows))
    assert covered == set(tokens)
    assert windows[0][:1] == tokens[:1] and windows[-1][-1:] == tokens[-1:]
    for left, right in zip(windows, windows[1:]):
        assert len(left) == window  # only the last window may be short
        assert len(set(left) & set(right)) == overlap
        assert right[0] == left[0] + window - overlap
        assert right[-1] > left[-1]  # every window adds tokens: none is redundant
    if n <= window:
        assert windows == [tokens]


def test_chunk_token_windows_needs_window_above_overlap():
    with pytest.raises(ValueError, match="window=4"):
        chunk_token_windows(list(range(10)), 4, 4)


def test_special_token_frame_is_cls_and_sep(tiny_encoder):
    tok = tiny_encoder.tokenizer
    assert special_token_frame(tok) == ([tok.cls_token_id], [tok.sep_token_id])


# ---------------------------------------------------------------- model loading


@pytest.mark.parametrize("name", ["/nonexistent/text-model-dir", "nobody-here/not-a-model"])
def test_unloadable_model_says_how_to_point_text_model_at_a_directory(name):
    for attempt in (lambda: load_encoder(name, device="cpu"), lambda: describe_model(name)):
        with pytest.raises(ModelLoadError) as info:
            attempt()
        message = str(info.value)
        assert repr(name) in message
        assert "TEXT_MODEL" in message
        assert "local directory" in message


def test_local_model_identity_follows_the_weights(tiny_model_dir, other_tiny_model_dir):
    _, identity = describe_model(str(tiny_model_dir))
    _, other = describe_model(str(other_tiny_model_dir))
    assert identity != other
    assert identity == describe_model(str(tiny_model_dir))[1]


def test_max_length_above_the_models_positions_is_refused(tiny_encoder, make_settings):
    positions = tiny_encoder.model.config.max_position_embeddings
    assert positions == 512
    with pytest.raises(SettingsError) as info:
        embed_texts(["film"], tiny_encoder, make_settings(max_length=1024), progress=False)
    assert "1024" in str(info.value) and "512" in str(info.value)
    # exactly the model's positions is fine
    vectors, _ = embed_texts(["film"], tiny_encoder, make_settings(max_length=512), progress=False)
    assert np.isfinite(vectors).all()
