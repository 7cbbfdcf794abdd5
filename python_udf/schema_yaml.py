"""Write the YAML of the published models for a number of clusters.

dbt contracts need every column declared in YAML, and YAML has no loops,
while the number of distance columns follows the var ``n_clusters``. This
module writes ``models/marts/_marts.yml`` for a given count, so the contract,
the descriptions and the tests always match the SQL. ``dbt build`` stops with
a message naming this command when they do not
(macro ``assert_declared_clusters``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HEADER = (
    "# Written by `text-features schema --n-clusters {k}`; edit the generator\n"
    "# (python_udf/schema_yaml.py), not this file, so the columns stay in step\n"
    "# with var n_clusters.\n"
)


def distance_description(cluster: int) -> str:
    return (
        f"Euclidean distance from the post to the centre of cluster {cluster}, "
        "measured in the space the posts were clustered in (the SVD-reduced "
        "embeddings; with var tfidf_weight above 0, beside the reduced TF-IDF); "
        "never negative, and the smallest "
        "of the row's distances is the one to its text_cluster."
    )


def marts_yaml(n_clusters: int) -> str:
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
    distance_columns = [
        {
            "name": f"distance_to_cluster_{c}",
            "data_type": "double",
            "description": distance_description(c),
            "constraints": [{"type": "not_null"}],
        }
        for c in range(n_clusters)
    ]
    posts_features = {
        "name": "posts_features",
        "description": (
            "The published posts feature mart: one row per staged post, with the "
            "text cluster the post falls in and its distance to every cluster "
            "centre. Written into Postgres (schema var postgres_schema) on the "
            "postgres target, into the local DuckDB file elsewhere."
        ),
        "config": {"contract": {"enforced": True}},
        "data_tests": [
            {"row_count_matches": {"arguments": {"compare_model": "ref('stg_posts')"}}},
            {"columns_finite_nonnegative": {"arguments": {"prefix": "distance_to_cluster_"}}},
        ],
        "columns": [
            {
                "name": "post_id",
                "data_type": "bigint",
                "description": "Identifier of the post, as in post_text_df.",
                "constraints": [{"type": "not_null"}],
                "data_tests": ["unique", "not_null"],
            },
            {
                "name": "text",
                "data_type": "varchar",
                "description": (
                    "The post's text after the storage rule of stg_posts (control "
                    "characters but newline and tab removed, outer whitespace "
                    "trimmed, NULL as empty string)."
                ),
            },
            {
                "name": "topic",
                "data_type": "varchar",
                "description": "The post's topic label from post_text_df, NULL where none is known.",
            },
            {
                "name": "text_cluster",
                "data_type": "integer",
                "description": (
                    f"Index of the nearest cluster centre, in [0, n_clusters) "
                    f"(0..{n_clusters - 1} with n_clusters={n_clusters})."
                ),
                "constraints": [{"type": "not_null"}],
                "data_tests": [
                    "not_null",
                    {
                        "in_half_open_range": {
                            "arguments": {"min_value": 0, "max_value": n_clusters}
                        }
                    },
                    {
                        "is_argmin_of": {
                            "arguments": {"prefix": "distance_to_cluster_"}
                        }
                    },
                ],
            },
            *distance_columns,
            {
                "name": "fit_id",
                "data_type": "varchar",
                "description": (
                    "The stored fit (centring, SVD basis, centroids) the post was "
                    "placed with; one of text_feature_runs.fit_id."
                ),
                "constraints": [{"type": "not_null"}],
            },
        ],
    }
    compat_columns = {
        "post_id": "post_id",
        "text": "text",
        "topic": "topic",
        '"TextCluster"': "text_cluster",
        **{f'"DistanceTo{c + 1}thCluster"': f"distance_to_cluster_{c}" for c in range(n_clusters)},
    }
    compat = {
        "name": "posts_info_deep_features",
        "description": (
            "The same features under the exact column names the original notebook "
            "wrote and downstream recommenders read (case preserved). Its table "
            "name is var compat_table_name."
        ),
        "data_tests": [
            {
                "matches_model": {
                    "arguments": {
                        "compare_model": "ref('posts_features')",
                        "column_map": compat_columns,
                    }
                }
            },
            {"row_count_matches": {"arguments": {"compare_model": "ref('posts_features')"}}},
        ],
        "columns": [
            {"name": "post_id", "description": "Identifier of the post.", "data_tests": ["unique", "not_null"]},
            {"name": "text", "description": "The post's cleaned text (posts_features.text)."},
            {"name": "topic", "description": "The post's topic (posts_features.topic)."},
            {
                "name": "TextCluster",
                "quote": True,
                "description": "Nearest cluster, 0-based (posts_features.text_cluster).",
                "data_tests": [
                    {
                        "is_argmin_of": {
                            "arguments": {
                                "prefix": "DistanceTo",
                                "suffix": "thCluster",
                                "index_offset": 1,
                            }
                        }
                    }
                ],
            },
            *[
                {
                    "name": f"DistanceTo{c + 1}thCluster",
                    "quote": True,
                    "description": (
                        f"Distance to cluster {c} (1-based name, 0-based cluster): "
                        f"posts_features.distance_to_cluster_{c}."
                    ),
                }
                for c in range(n_clusters)
            ],
        ],
    }
    document = {"version": 2, "models": [posts_features, compat]}
    return HEADER.format(k=n_clusters) + yaml.safe_dump(document, sort_keys=False, width=88)


def write_marts_yaml(project_dir: Path, n_clusters: int) -> Path:
    path = Path(project_dir) / "models" / "marts" / "_marts.yml"
    path.write_text(marts_yaml(n_clusters), encoding="utf-8")
    return path
