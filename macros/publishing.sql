{#-
    Where the published tables go. On the postgres target they are written
    into the attached Postgres database (alias pg), schema var postgres_schema;
    elsewhere they stay in the local DuckDB file beside everything else.
-#}
{% macro published_database() -%}
    {{ return('pg' if target.name == 'postgres' else target.database) }}
{%- endmacro %}

{% macro published_schema() -%}
    {{ return(var('postgres_schema') if target.name == 'postgres' else target.schema) }}
{%- endmacro %}


{#- A custom schema is used as given, not prefixed with the target schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}


{#-
    The distance columns of a published table are declared in its YAML (the
    contract needs them there) and generated from var n_clusters in its SQL.
    Stop when the two disagree, naming both numbers: once per run before any
    model is built (on-run-start, so the Python step does not refit for
    nothing), and again in each model (for dbt compile and --select).
-#}
{% macro assert_declared_clusters(prefix, suffix='', node=none) -%}
    {%- set node = node if node is not none else model -%}
    {#- a unit test renders the model with its own node, which declares no columns -#}
    {%- if execute and node.resource_type != 'unit_test' -%}
        {%- set declared = [] -%}
        {%- for name in node.columns -%}
            {%- if name.startswith(prefix) and name.endswith(suffix) -%}
                {%- do declared.append(name) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if declared | length != var('n_clusters') | int -%}
            {{ exceptions.raise_compiler_error(
                node.name ~ ": var n_clusters=" ~ var('n_clusters') ~ " but its YAML declares "
                ~ (declared | length) ~ " distance columns (" ~ prefix ~ "*). Regenerate the "
                ~ "published models' YAML with: text-features schema --n-clusters "
                ~ var('n_clusters')
            ) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{% macro check_published_columns() -%}
    {%- if execute -%}
        {%- set prefixes = {
            'posts_features': ('distance_to_cluster_', ''),
            'posts_info_deep_features': ('DistanceTo', 'thCluster'),
        } -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.package_name == project_name
                  and node.name in prefixes -%}
                {{ assert_declared_clusters(prefixes[node.name][0], prefixes[node.name][1], node=node) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
