{#-
    The storage rule for post text, applied in stg_posts (python_udf.text has
    its twin for runs outside dbt; both are tested on the same cases):
    control characters other than newline and tab are removed (NUL included,
    which Postgres cannot store), outer whitespace is trimmed, and NULL
    becomes the empty string.
-#}
{% macro clean_post_text(column) -%}
    coalesce(
        regexp_replace(
            regexp_replace(
                cast({{ column }} as varchar),
                '[\x00-\x08\x0B\x0C\x0D\x0E-\x1F\x7F]', '', 'g'
            ),
            '^[\t\n\f\r ]+|[\t\n\f\r ]+$', '', 'g'
        ),
        ''
    )
{%- endmacro %}
