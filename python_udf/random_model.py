"""A DistilBERT with random weights and a WordPiece tokenizer trained here, offline.

Stand-ins for real weights where none can be downloaded: the tests build a
tiny one (a few dimensions, a vocabulary from a few sentences), the benchmark
a real-size one (``DistilBertConfig()`` shapes), which costs the same per
token as the real model. Both are saved to a directory and loaded back with
``from_pretrained``, as a real model would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_random_distilbert(
    directory: Path, texts: Iterable[str], *, vocab_size: int, lowercase: bool, seed: int = 0, **config
) -> Path:
    """Train a BERT-style WordPiece tokenizer on ``texts``, save it and a random DistilBERT.

    ``vocab_size`` is the tokenizer's target size; the model's vocabulary is
    the size actually reached. ``config`` goes to ``DistilBertConfig`` (its
    defaults are distilbert-base shapes). Weights are drawn after
    ``torch.manual_seed(seed)``. The WordPiece trainer may break ties between
    merges differently from run to run (a tiny vocabulary came out 237 or 238
    tokens), so nothing should depend on the exact vocabulary.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    model_config = DistilBertConfig(**{"vocab_size": fast.vocab_size, "pad_token_id": fast.pad_token_id, **config})
    DistilBertModel(model_config).eval().save_pretrained(directory)
    return directory
