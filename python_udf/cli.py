"""text-features: the command line of the post text-feature package.

Subcommands live in their own modules and register here:

* ``run``     build features for a CSV/Parquet file without dbt;
* ``schema``  rewrite the published models' YAML for a number of clusters;
* ``load-posts`` load a posts file into Postgres (python_udf.loader);
* ``report``  the quality report (python_udf.report).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable, Sequence

# (module, function that adds the subcommand to the parser); imported lazily
# so that `text-features schema` does not pay for importing torch.
_SUBCOMMANDS: list[tuple[str, str]] = [
    ("python_udf.cli", "add_run_command"),
    ("python_udf.cli", "add_schema_command"),
    ("python_udf.loader", "add_command"),
    ("python_udf.report", "add_command"),
]


def add_run_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="build text features for a posts file without dbt",
        description=(
            "Read a CSV/Parquet file with columns post_id and text, embed, reduce "
            "and cluster the posts, and write one row per post. The embedding "
            "cache and stored fits are kept in --state-db."
        ),
    )
    parser.add_argument("input", type=Path, help="CSV, CSV.gz or Parquet file of posts")
    parser.add_argument("output", type=Path, help="where to write the features (.parquet or .csv)")
    parser.add_argument("--state-db", type=Path, default=Path("features_state.duckdb"),
                        help="DuckDB file holding the embedding cache and fits (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting, e.g. --set n_clusters=5 (repeatable; see README)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import duckdb

    from .pipeline import build_text_features
    from .settings import FeatureSettings, SettingsError

    values = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SettingsError(f"--set {item!r} must look like NAME=VALUE")
        values[name.strip()] = value
    settings = FeatureSettings.from_mapping(values)
    if not args.input.is_file():
        raise FileNotFoundError(f"no posts file at {args.input}")
    # CSV as text, like the dbt source: ids are checked, never guessed or rounded
    reader = "read_parquet(?)" if args.input.suffix.lower() == ".parquet" else "read_csv(?, header = true, all_varchar = true)"
    with duckdb.connect(str(args.state_db)) as con:
        posts = con.execute(f"select * from {reader}", [str(args.input)]).df()
        features = build_text_features(con, posts, settings, progress=not args.no_progress)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    if args.output.suffix == ".parquet":
        features.to_parquet(partial, index=False)
    else:
        features.to_csv(partial, index=False)
    partial.replace(args.output)  # never leave a half-written output behind
    print(f"wrote {len(features)} rows to {args.output}")
    return 0


def add_schema_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="rewrite models/marts/_marts.yml for a number of clusters",
        description="Write the contract, descriptions and tests of the published models for K clusters.",
    )
    parser.add_argument("--n-clusters", type=int, required=True)
    parser.add_argument("--project-dir", type=Path, default=Path("."))
    parser.set_defaults(handler=_schema)


def _schema(args: argparse.Namespace) -> int:
    from .schema_yaml import write_marts_yaml

    path = write_marts_yaml(args.project_dir, args.n_clusters)
    print(f"wrote {path} for n_clusters={args.n_clusters}; build with --vars '{{n_clusters: {args.n_clusters}}}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="text-features", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name, function_name in _SUBCOMMANDS:
        register: Callable = getattr(importlib.import_module(module_name), function_name)
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import duckdb

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, RuntimeError, FileNotFoundError, duckdb.Error) as exc:
        print(f"text-features {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
