{{
    config(
        database=published_database(),
        schema=published_schema(),
    )
}}

{#-
    One row per text cluster, published beside posts_features so that a
    person can read what a cluster is about without opening the posts.
-#}

with

cluster_terms as (

    select * from {{ ref('int_cluster_terms') }}

),

final as (

    select
        ---------- ids
        cast(text_cluster as integer) as text_cluster,

        ---------- size
        cast(n_posts as bigint) as n_posts,
        cast(n_posts_with_topic as bigint) as n_posts_with_topic,

        ---------- topic
        cast(dominant_topic as varchar) as dominant_topic,
        cast(dominant_topic_share as double) as dominant_topic_share,

        ---------- terms
        cast(top_terms as varchar) as top_terms,

        ---------- the post nearest the centre
        cast(nearest_post_id as bigint) as nearest_post_id,
        cast(nearest_post_text as varchar) as nearest_post_text,
        cast(nearest_post_distance as double) as nearest_post_distance

    from cluster_terms

)

select * from final
