"""Describe every cluster of the text-feature step (dbt Python model).

One row per cluster: its size, the dominant topic and its share, the most
distinctive terms (class-based TF-IDF) and the post nearest its centre. The
work is done by python_udf.quality.describe_clusters, which the quality
report (text-features report) uses too, so both always agree.
"""


def model(dbt, session):
    from python_udf.quality import describe_clusters

    dbt.config(materialized="table")
    top_terms = int(dbt.config.get("top_terms"))
    posts = dbt.ref("stg_posts").select("post_id, text, topic").df()
    features = dbt.ref("int_post_text_features").df()
    distance_columns = sorted(
        (c for c in features.columns if c.startswith("distance_to_cluster_")),
        key=lambda c: int(c.rsplit("_", 1)[1]),
    )
    joined = (
        posts.merge(features, on="post_id", how="inner", validate="one_to_one")
        .sort_values("post_id", kind="stable")
        .reset_index(drop=True)
    )
    return describe_clusters(
        joined["post_id"].to_numpy(),
        joined["text"].tolist(),
        joined["topic"].tolist(),
        joined["text_cluster"].to_numpy(),
        joined[distance_columns].to_numpy(),
        top_n=top_terms,
    )
