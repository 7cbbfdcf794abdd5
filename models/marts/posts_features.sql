{{
    config(
        database=published_database(),
        schema=published_schema(),
    )
}}

{{ assert_declared_clusters('distance_to_cluster_') }}

with

posts as (

    select * from {{ ref('stg_posts') }}

),

text_features as (

    select * from {{ ref('int_post_text_features') }}

),

joined as (

    select
        ---------- ids
        posts.post_id,

        ---------- post
        posts.text,
        posts.topic,

        ---------- text features
        cast(text_features.text_cluster as integer) as text_cluster,
        {%- for cluster in range(var('n_clusters') | int) %}
        cast(text_features.distance_to_cluster_{{ cluster }} as double)
            as distance_to_cluster_{{ cluster }},
        {%- endfor %}

        ---------- lineage
        text_features.fit_id

    from posts
    inner join text_features
        on posts.post_id = text_features.post_id

)

select * from joined
