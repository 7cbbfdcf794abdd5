"""Embed, reduce and cluster every staged post (dbt Python model).

A thin shell: the work is done by python_udf.pipeline.build_text_features,
which is importable and tested on its own. Settings arrive as model config
(see _int_models.yml), each rendered from the dbt var of the same name.
"""


def model(dbt, session):
    from python_udf.pipeline import build_text_features
    from python_udf.settings import FeatureSettings

    dbt.config(materialized="table")
    # dbt passes to a Python model only the config keys it reads literally.
    settings = FeatureSettings.from_mapping(
        {
            "text_model": dbt.config.get("text_model"),
            "pooling": dbt.config.get("pooling"),
            "max_length": dbt.config.get("max_length"),
            "batch_size": dbt.config.get("batch_size"),
            "long_text": dbt.config.get("long_text"),
            "chunk_overlap": dbt.config.get("chunk_overlap"),
            "normalize": dbt.config.get("normalize"),
            "tfidf_weight": dbt.config.get("tfidf_weight"),
            "n_components": dbt.config.get("n_components"),
            "n_clusters": dbt.config.get("n_clusters"),
            "random_state": dbt.config.get("random_state"),
            "kmeans_n_init": dbt.config.get("kmeans_n_init"),
            "device": dbt.config.get("device"),
            "precision": dbt.config.get("precision"),
            "refit": dbt.config.get("refit"),
            "minibatch_threshold": dbt.config.get("minibatch_threshold"),
            "svd_sample_size": dbt.config.get("svd_sample_size"),
        }
    )
    posts = dbt.ref("stg_posts").select("post_id, text").order("post_id").df()
    return build_text_features(
        session, posts, settings, state_schema=dbt.config.get("state_schema")
    )
