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


{#-
    A post id as bigint, refusing rather than rounding: '12.7', '1e3' or
    '0x10' stop the build with the value named (a plain cast would turn them
    into 13, 1000 and 16).
-#}
{% macro strict_bigint(column) -%}
    case
        when {{ column }} is null then null
        when regexp_full_match(trim(cast({{ column }} as varchar)), '[+-]?[0-9]+')
            then cast(trim(cast({{ column }} as varchar)) as bigint)
        else error(
            'post_id must be an integer; got "' || cast({{ column }} as varchar) || '"'
        )
    end
{%- endmacro %}
