{#-
    Post-hook of stg_posts: stop the build, naming the offending ids, when
    post_text_df is empty, or holds a post_id more than once or a NULL
    post_id. The hook
    runs inside the model's transaction, so the previous stg_posts (and
    everything downstream) stays as it was.
-#}
{% macro assert_unique_post_ids(relation) -%}
    {%- if execute -%}
        {%- set total = run_query("select count(*) from " ~ relation) -%}
        {%- if total.rows[0][0] == 0 -%}
            {{ exceptions.raise_compiler_error(
                "post_text_df has no rows: there are no posts to build features for"
            ) }}
        {%- endif -%}
        {%- set duplicates = run_query(
            "select post_id, count(*) as n from " ~ relation
            ~ " where post_id is not null group by post_id having count(*) > 1"
            ~ " order by post_id limit 20"
        ) -%}
        {%- if duplicates.rows | length > 0 -%}
            {%- set shown = [] -%}
            {%- for row in duplicates.rows -%}
                {%- do shown.append(row[0] ~ " (" ~ row[1] ~ " rows)") -%}
            {%- endfor -%}
            {{ exceptions.raise_compiler_error(
                "post_text_df must hold each post_id once; duplicated post_id (first 20): "
                ~ shown | join(", ")
            ) }}
        {%- endif -%}
        {%- set nulls = run_query("select count(*) from " ~ relation ~ " where post_id is null") -%}
        {%- if nulls.rows[0][0] > 0 -%}
            {{ exceptions.raise_compiler_error(
                "post_text_df has " ~ nulls.rows[0][0] ~ " row(s) with a NULL post_id"
            ) }}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}
