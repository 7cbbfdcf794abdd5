-- depends_on: {{ ref('int_post_text_features') }}
-- The run log stays in the local DuckDB file on every target.

with

runs as (

    select * from {{ source('text_features_state', 'feature_runs_log') }}

),

final as (

    select
        *,
        fit_action = 'fitted' as is_new_fit

    from runs

)

select * from final
