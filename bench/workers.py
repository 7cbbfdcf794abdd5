"""Measurements that bench/run.py runs each in a fresh process.

A fresh process per measurement gives each its own peak memory and keeps one
measurement's caches and allocator state out of the next. Every worker
prints one JSON object on its last line of stdout; run.py reads it.

    python bench/workers.py speed --method ours --model DIR --texts FILE --vectors OUT.npy
    python bench/workers.py tokenise --model DIR --posts-file CSV
    python bench/workers.py stages --rows 100000
    python bench/workers.py build-distilbert --dir DIR --posts-file CSV
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- memory


# Peaks of the stages measured so far: resetting VmHWM also resets what
# getrusage reports, so the process peak is the largest of these.
_STAGE_PEAKS: list[int] = []


class PeakMemory:
    """Peak resident memory of this process over a stretch of code, in bytes.

    Linux lets a process reset its own high-water mark (VmHWM) by writing 5
    to /proc/self/clear_refs; the peak of a stage is then VmHWM at its end.
    Where that is not possible, the process-wide ru_maxrss is reported
    instead and ``exact`` is False.
    """

    def __init__(self) -> None:
        self.exact = _reset_peak()
        self.start_rss = _status_bytes("VmRSS")

    def stop(self) -> dict:
        peak = _status_bytes("VmHWM") if self.exact else _maxrss_bytes()
        _STAGE_PEAKS.append(peak)
        return {
            "peak_rss_bytes": peak,
            "start_rss_bytes": self.start_rss,
            "peak_growth_bytes": max(0, peak - self.start_rss),
            "peak_exact": self.exact,
        }


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _maxrss_bytes()


def _maxrss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(result: dict) -> None:
    result["process_peak_rss_bytes"] = max([_maxrss_bytes(), *_STAGE_PEAKS])
    print(json.dumps(result))


# ----------------------------------------------------------------- models


def build_distilbert(directory: Path, posts_file: Path, seed: int = 0) -> Path:
    """A real-size DistilBERT (distilbert-base-cased shapes) with random weights, offline.

    The tokenizer is a cased WordPiece trained on the bundled corpus with the
    vocabulary size of distilbert-base-cased (28,996), so texts split into
    about as many tokens as with the real model, and the network has the
    real model's 6 layers, 768 width, 12 heads and 3072 feed-forward size:
    the same work per token.
    """
    import pandas as pd

    from python_udf.random_model import build_random_distilbert

    texts = pd.read_csv(posts_file, keep_default_na=False)["text"].tolist()
    # DistilBertConfig() defaults are distilbert-base shapes
    build_random_distilbert(directory, texts, vocab_size=28_996, lowercase=False, seed=seed)
    return directory


# ----------------------------------------------------------------- speed


def notebook_embed(texts: list[str], tokenizer, model, device) -> np.ndarray:
    """The original notebook's method: the whole list tokenised at once, padded
    to its longest post (up to 512 tokens), then 32 rows at a time through the
    model, keeping the [CLS] state."""
    import torch

    tokens = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            outputs = model(
                input_ids=tokens["input_ids"][start : start + 32].to(device),
                attention_mask=tokens["attention_mask"][start : start + 32].to(device),
            )
            embeddings.append(outputs.last_hidden_state[:, 0, :].float().cpu().numpy())
    return np.concatenate(embeddings)


def run_speed(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from python_udf.embedding import embed_texts, load_encoder, use_all_cpu_cores
    from python_udf.settings import FeatureSettings

    texts = json.loads(Path(args.texts).read_text())
    settings = FeatureSettings(text_model=args.model, device=args.device, precision=args.precision)
    if args.method == "ours":
        encoder = load_encoder(args.model, args.device)
        device = encoder.device
        used = {}

        def warm():
            embed_texts(texts[:2], encoder, settings, progress=False)

        def run():
            vectors, stats = embed_texts(texts, encoder, settings, progress=False)
            used["batch_size"] = stats.batch_size
            return vectors
    else:
        device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cpu":
            use_all_cpu_cores()  # the same threads as ours, so only the method differs
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModel.from_pretrained(args.model).eval().to(device)
        used = {"batch_size": 32}

        def warm():
            notebook_embed(texts[:2], tokenizer, model, device)

        def run():
            return notebook_embed(texts, tokenizer, model, device)
    warm()  # first call pays one-off costs (allocator, kernels) in both methods
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    memory = PeakMemory()
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    vectors = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_started
    result = {
        "method": args.method,
        "model": args.model,
        "device": str(device),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "posts": len(texts),
        "seconds": seconds,
        "posts_per_second": len(texts) / seconds,
        "batch_size": used["batch_size"],
        # CPU time of all threads: less disturbed than wall time when other
        # work shares the cores
        "cpu_seconds": cpu_seconds,
        **memory.stop(),
    }
    if device.type == "cuda":
        result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        result["cuda_name"] = torch.cuda.get_device_name(device)
    np.save(args.vectors, vectors.astype(np.float32))
    return result


def run_tokenise(args: argparse.Namespace) -> dict:
    """Memory of tokenising the whole corpus at once (notebook) against one
    padded batch of the longest posts (ours holds one batch at a time)."""
    import pandas as pd
    from transformers import AutoTokenizer

    from python_udf.embedding import length_order
    from python_udf.text import clean_text

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts = [clean_text(t) for t in pd.read_csv(args.posts_file, keep_default_na=False)["text"]]
    tokenizer(texts[:2])  # load lazily built parts before measuring
    memory = PeakMemory()
    everything = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    whole = memory.stop()
    whole_tensor_bytes = sum(t.element_size() * t.nelement() for t in everything.values())
    shape = tuple(everything["input_ids"].shape)
    del everything
    longest = [texts[i] for i in length_order(texts)[:32]]
    memory = PeakMemory()
    batch = tokenizer(longest, padding=True, truncation=True, max_length=512, return_tensors="pt")
    one = memory.stop()
    batch_tensor_bytes = sum(
        batch[k].element_size() * batch[k].nelement() for k in ("input_ids", "attention_mask")
    )
    return {
        "posts": len(texts),
        "notebook_shape": shape,
        "notebook_tensor_bytes": whole_tensor_bytes,
        "notebook_peak_growth_bytes": whole["peak_growth_bytes"],
        "ours_batch_tensor_bytes": batch_tensor_bytes,
        "ours_peak_growth_bytes": one["peak_growth_bytes"],
        "peak_exact": whole["peak_exact"],
    }


# ----------------------------------------------------------------- stages after embedding


def synthetic_vectors(rows: int, width: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A mixture of ``clusters`` Gaussians in ``width`` dimensions, float32, made in blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (clusters, width)).astype(np.float32)
    labels = rng.integers(0, clusters, rows)
    out = np.empty((rows, width), dtype=np.float32)
    block = 65_536
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        noise = rng.standard_normal((stop - start, width), dtype=np.float32)
        out[start:stop] = centres[labels[start:stop]] + 0.5 * noise
    return out, labels


def run_stages(args: argparse.Namespace) -> dict:
    """Everything after embedding, at ``args.rows`` posts with synthetic vectors.

    1. The vectors go into the embedding cache, as a cold build does after
       embedding them.
    2. The pipeline's own ``build_text_features`` runs on the same connection
       with every vector cached and ``refit`` on: it reads the vectors back,
       centres, fits SVD and KMeans, places every post and returns the frame,
       which is then written to a DuckDB table as dbt does with a Python
       model's result.
    3. The connection is closed and a new one opened (as a later dbt process
       would), and ``build_text_features`` runs again with the stored fit:
       read the cache and place every post. Its features must equal those
       of step 2: placement reproduces fit-time features.
    """
    import duckdb
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from python_udf.clustering import fit_key
    from python_udf.embedding import describe_model
    from python_udf.pipeline import build_text_features, embedding_key
    from python_udf.settings import FeatureSettings
    from python_udf.state import StateStore
    from python_udf.text import text_hash

    work = Path(tempfile.mkdtemp(prefix="stages-", dir=args.work_dir))
    # a config only: every vector is cached, so no weights or tokenizer are read
    model_dir = work / "model"
    from transformers import DistilBertConfig

    DistilBertConfig(dim=args.width, hidden_dim=4 * args.width).save_pretrained(model_dir)
    settings = FeatureSettings(
        text_model=str(model_dir), n_components=args.components, n_clusters=args.clusters, refit=True
    )
    database = work / "state.duckdb"

    def connect():
        con = duckdb.connect(str(database))
        if args.duckdb_memory_limit:
            con.execute(f"set memory_limit = '{args.duckdb_memory_limit}'")
        return con

    stages: dict[str, dict] = {}

    memory = PeakMemory()
    started = time.perf_counter()
    vectors, truth = synthetic_vectors(args.rows, args.width, args.clusters, args.seed)
    posts = pd.DataFrame({"post_id": np.arange(args.rows, dtype=np.int64),
                          "text": [f"synthetic post {i}" for i in range(args.rows)]})
    hashes = [text_hash(t) for t in posts["text"]]
    stages["make synthetic vectors"] = {"seconds": time.perf_counter() - started, **memory.stop()}

    con = connect()
    _revision, identity = describe_model(settings.text_model)
    key = embedding_key(identity, settings)
    memory = PeakMemory()
    started = time.perf_counter()
    store = StateStore(con)
    store.store_vectors(key, hashes, vectors)
    store.close()
    stages["write cache"] = {"seconds": time.perf_counter() - started, **memory.stop()}
    del vectors, hashes

    memory = PeakMemory()
    started = time.perf_counter()
    features = build_text_features(con, posts, settings, progress=False)
    stages["fit: read cache, centre, SVD, KMeans, place"] = {
        "seconds": time.perf_counter() - started, **memory.stop()}
    fit_run = _last_run(con)
    fit = StateStore(con).latest_fit(fit_key(key, settings))

    memory = PeakMemory()
    started = time.perf_counter()
    con.register("features_frame", features)
    con.execute("create table features as select * from features_frame")
    con.unregister("features_frame")
    stages["write features table"] = {"seconds": time.perf_counter() - started, **memory.stop()}
    written = con.execute("select count(*), count(distinct text_cluster) from features").fetchone()
    con.close()

    con = connect()
    memory = PeakMemory()
    started = time.perf_counter()
    placed = build_text_features(con, posts, dataclasses.replace(settings, refit=False), progress=False)
    stages["rebuild: read cache, place (new connection)"] = {
        "seconds": time.perf_counter() - started, **memory.stop()}
    place_run = _last_run(con)
    con.close()

    distance_columns = [c for c in features.columns if c.startswith("distance_to_cluster_")]
    distances = features[distance_columns].to_numpy()
    rebuild_difference = float(np.abs(placed[distance_columns].to_numpy() - distances).max())
    checks = {
        "rows_written": int(written[0]) == args.rows,
        "every_post_reused_from_cache": fit_run["posts_reused"] == args.rows == place_run["posts_reused"],
        "distances_finite": bool(np.isfinite(distances).all()),
        "label_is_nearest_centre": bool(
            (distances.argmin(axis=1) == features["text_cluster"].to_numpy()).all()
        ),
        "rebuild_reuses_the_fit": place_run["fit_action"] == "reused",
        "rebuild_reproduces_fit_time_features_1e-6": rebuild_difference <= 1e-6
        and bool((placed["text_cluster"].to_numpy() == features["text_cluster"].to_numpy()).all()),
    }
    result = {
        "rows": args.rows,
        "width": args.width,
        "n_components": args.components,
        "n_clusters": args.clusters,
        "duckdb_memory_limit": args.duckdb_memory_limit,
        "algorithm": fit.algorithm,
        "fit_seconds": fit.seconds,
        "seconds_fit": fit_run["seconds_fit"],
        "seconds_place": fit_run["seconds_place"],
        "seconds_pipeline_total": fit_run["seconds_total"],
        "seconds_read_and_frame": fit_run["seconds_total"] - fit_run["seconds_fit"] - fit_run["seconds_place"],
        "rebuild_seconds_place": place_run["seconds_place"],
        "rebuild_max_distance_difference": rebuild_difference,
        "clusters_used": int(written[1]),
        "adjusted_rand_index": float(adjusted_rand_score(truth, features["text_cluster"].to_numpy())),
        "stages": stages,
        "checks": checks,
        "vector_bytes": args.rows * args.width * 4,
        "state_file_bytes": database.stat().st_size,
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


def _last_run(con) -> dict:
    cur = con.execute(
        "select rows_read, posts_reused, fit_action, seconds_fit, seconds_place, seconds_total "
        "from text_features_state.feature_runs_log order by started_at desc limit 1"
    )
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone()))


# ----------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    speed = sub.add_parser("speed")
    speed.add_argument("--method", choices=["notebook", "ours"], required=True)
    speed.add_argument("--model", required=True)
    speed.add_argument("--texts", required=True, help="JSON list of texts")
    speed.add_argument("--vectors", required=True, help="where to save the vectors (.npy)")
    speed.add_argument("--device", default="auto")
    speed.add_argument("--precision", default="fp32")

    tok = sub.add_parser("tokenise")
    tok.add_argument("--model", required=True)
    tok.add_argument("--posts-file", required=True)

    stages = sub.add_parser("stages")
    stages.add_argument("--rows", type=int, required=True)
    stages.add_argument("--width", type=int, default=768)
    stages.add_argument("--components", type=int, default=100)
    stages.add_argument("--clusters", type=int, default=15)
    stages.add_argument("--seed", type=int, default=0)
    stages.add_argument("--work-dir", default=None)
    stages.add_argument("--duckdb-memory-limit", default=None,
                        help="DuckDB memory_limit for the state connection (default: DuckDB's, 80%% of RAM)")

    build = sub.add_parser("build-distilbert")
    build.add_argument("--dir", required=True)
    build.add_argument("--posts-file", required=True)

    args = parser.parse_args(argv)
    if args.command == "speed":
        emit(run_speed(args))
    elif args.command == "tokenise":
        emit(run_tokenise(args))
    elif args.command == "stages":
        emit(run_stages(args))
    else:
        build_distilbert(Path(args.dir), Path(args.posts_file))
        emit({"built": args.dir})
    return 0


if __name__ == "__main__":
    sys.exit(main())
