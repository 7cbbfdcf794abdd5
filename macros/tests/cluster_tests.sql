{#-
    Generic data tests of posts_clusters (one row per text cluster). Each
    returns the failing rows.
-#}

{#- The model has exactly `expected` rows. -#}
{% test row_count_is(model, expected) %}

with

counts as (

    select count(*) as model_rows
    from {{ model }}

)

select
    model_rows,
    {{ expected }} as expected_rows

from counts
where model_rows != {{ expected }}

{% endtest %}


{#- The values of `column` add up to the number of rows of compare_model. -#}
{% test column_sum_matches_row_count(model, column, compare_model) %}

with

totals as (

    select
        (select coalesce(sum({{ column }}), 0) from {{ model }}) as column_sum,
        (select count(*) from {{ compare_model }}) as compare_rows

)

select * from totals
where column_sum != compare_rows

{% endtest %}


{#-
    nearest_post_id is, among the posts of compare_model in the row's cluster,
    one with the smallest distance to that cluster (column prefix<cluster>),
    and nearest_post_distance is that distance. A cluster without posts names
    no post.
-#}
{% test nearest_post_is_nearest(model, compare_model, prefix) %}

{%- set columns = [] %}
{%- for index in range(columns_with_prefix(compare_model, prefix) | length) %}
    {%- do columns.append(adapter.quote(prefix ~ index)) %}
{%- endfor %}

with

posts as (

    select
        post_id,
        text_cluster,
        case text_cluster
        {%- for column in columns %}
            when {{ loop.index0 }} then {{ column }}
        {%- endfor %}
        end as own_distance

    from {{ compare_model }}

),

smallest as (

    select
        text_cluster,
        min(own_distance) as smallest_distance

    from posts
    group by text_cluster

),

clusters as (

    select * from {{ model }}

),

checked as (

    select
        clusters.text_cluster,
        clusters.nearest_post_id,
        clusters.nearest_post_distance,
        smallest.smallest_distance,
        posts.text_cluster as post_cluster,
        posts.own_distance as post_distance

    from clusters
    left join smallest
        on clusters.text_cluster = smallest.text_cluster
    left join posts
        on clusters.nearest_post_id = posts.post_id

)

select * from checked
where (smallest_distance is null) != (nearest_post_id is null)
   or post_cluster != text_cluster
   or abs(post_distance - smallest_distance) > 1e-9
   or abs(nearest_post_distance - post_distance) > 1e-9

{% endtest %}
