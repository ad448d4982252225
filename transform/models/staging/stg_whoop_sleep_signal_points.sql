{#- One row per point of a sleep's signals: WHOOP's `stream`, typed. Empty (with these columns)
    while the `sleep_signals` table does not exist: the tap's stream is optional. -#}
{% if whoop.source_exists('sleep_signals') %}

with live as (
  {{ whoop.live_rows(source('whoop', 'sleep_signals'), 'sleep_id') }}
),

points as (
  {{ whoop.json_array_rows('live', 'stream') }}
)

select
  cast(sleep_id as {{ dbt.type_string() }}) as sleep_id,
  cast(user_id as {{ dbt.type_bigint() }}) as user_id,
  {{ whoop.utc_timestamp(whoop.json_text('point', 'timestamp')) }} as measured_at,
  {{ whoop.json_number('point', 'hr') }} as heart_rate,
  cast({{ whoop.json_text('point', 'is_sleeping') }} as {{ dbt.type_boolean() }}) as is_sleeping
from points

{% else %}

select
  cast(null as {{ dbt.type_string() }}) as sleep_id,
  cast(null as {{ dbt.type_bigint() }}) as user_id,
  cast(null as {{ dbt.type_timestamp() }}) as measured_at,
  cast(null as double precision) as heart_rate,
  cast(null as {{ dbt.type_boolean() }}) as is_sleeping
where 1 = 0

{% endif %}
