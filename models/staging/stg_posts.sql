{{ config(post_hook="{{ assert_unique_post_ids(this) }}") }}

with

source as (

    select * from {{ source('posts', 'post_text_df') }}

),

renamed as (

    select
        ---------- ids
        {{ strict_bigint('post_id') }} as post_id,

        ---------- text
        {{ clean_post_text('text') }} as text,

        ---------- labels
        nullif(trim(cast(topic as varchar)), '') as topic

    from source

),

flagged as (

    select
        *,
        text = '' as is_empty_text

    from renamed

)

select * from flagged
