{{
    config(
        alias=var('compat_table_name'),
        database=published_database(),
        schema=published_schema(),
    )
}}

{#-
    The table the original notebook wrote, under its exact column names, for
    recommenders that already read it. Cluster c is "DistanceTo<c+1>thCluster".
-#}

{{ assert_declared_clusters('DistanceTo', 'thCluster') }}

with

features as (

    select * from {{ ref('posts_features') }}

),

renamed as (

    select
        post_id,
        text,
        topic,
        text_cluster as "TextCluster",
        {%- for cluster in range(var('n_clusters') | int) %}
        distance_to_cluster_{{ cluster }} as "DistanceTo{{ cluster + 1 }}thCluster"
        {{- "," if not loop.last }}
        {%- endfor %}

    from features

)

select * from renamed
