{#-
    Generic data tests used by this project (no hub packages: dbt deps cannot
    reach the hub here). Each returns the failing rows.
-#}

{#- The model has exactly as many rows as compare_model. -#}
{% test row_count_matches(model, compare_model) %}

with

counts as (

    select
        (select count(*) from {{ model }}) as model_rows,
        (select count(*) from {{ compare_model }}) as compare_rows

)

select * from counts
where model_rows != compare_rows

{% endtest %}


{#- min_value <= column < max_value, when the column is not null. -#}
{% test in_half_open_range(model, column_name, min_value, max_value) %}

select {{ column_name }} as failing_value
from {{ model }}
where {{ column_name }} < {{ min_value }}
   or {{ column_name }} >= {{ max_value }}

{% endtest %}


{#- Every column whose name starts with prefix holds a finite, non-negative number. -#}
{% test columns_finite_nonnegative(model, prefix) %}

{%- set columns = columns_with_prefix(model, prefix) %}

select *
from {{ model }}
where false
{%- for column in columns %}
    or {{ column }} is null
    or not isfinite({{ column }})
    or {{ column }} < 0
{%- endfor %}

{% endtest %}


{#- cluster_column names the column among the prefixed ones with the smallest value. -#}
{% test is_argmin_of(model, column_name, prefix, suffix='', index_offset=0) %}

{#- Build the names by index so that physical column order does not matter. -#}
{%- set columns = [] %}
{%- for index in range(columns_with_prefix(model, prefix, suffix) | length) %}
    {%- do columns.append(adapter.quote(prefix ~ (index + index_offset) ~ suffix)) %}
{%- endfor %}

with

scored as (

    select
        {{ column_name }} as chosen,
        least({{ columns | join(', ') }}) as smallest,
        case {{ column_name }}
        {%- for column in columns %}
            when {{ loop.index0 }} then {{ column }}
        {%- endfor %}
        end as chosen_distance

    from {{ model }}

)

select *
from scored
where chosen_distance is null
   or chosen_distance > smallest + 1e-9

{% endtest %}


{#-
    The model holds the same rows as compare_model, value for value, after
    renaming: column_map maps a column of model to a column of compare_model.
-#}
{% test matches_model(model, compare_model, column_map) %}

with

left_rows as (

    select
    {%- for mine, theirs in column_map.items() %}
        {{ mine }} as c{{ loop.index }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ model }}

),

right_rows as (

    select
    {%- for mine, theirs in column_map.items() %}
        {{ theirs }} as c{{ loop.index }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ compare_model }}

),

only_left as (select * from left_rows except all select * from right_rows),

only_right as (select * from right_rows except all select * from left_rows)

select 'only in {{ model.identifier }}' as side, * from only_left
union all
select 'only in {{ compare_model.identifier }}' as side, * from only_right

{% endtest %}


{% macro columns_with_prefix(relation, prefix, suffix='') -%}
    {%- set found = [] -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- if column.name.startswith(prefix) and column.name.endswith(suffix) -%}
                {%- do found.append(adapter.quote(column.name)) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if found | length == 0 -%}
            {{ exceptions.raise_compiler_error("no column of " ~ relation ~ " starts with " ~ prefix) }}
        {%- endif -%}
    {%- endif -%}
    {{ return(found) }}
{%- endmacro %}
