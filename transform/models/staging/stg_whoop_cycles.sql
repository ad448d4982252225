with live as (
  {{ whoop.live_rows(source('whoop', 'cycles'), 'id') }}
)

select
  cast(id as {{ dbt.type_bigint() }}) as cycle_id,
  cast(user_id as {{ dbt.type_bigint() }}) as user_id,
  start as start_at,
  "end" as end_at,
  timezone_offset,
  {{ whoop.local_time('start', 'timezone_offset') }} as local_start_at,
  {{ whoop.local_day('start', 'timezone_offset') }} as day,
  score_state,
  {{ whoop.json_number('score', 'strain') }} as strain,
  {{ whoop.json_number('score', 'kilojoule') }} as kilojoules,
  {{ whoop.json_number('score', 'average_heart_rate') }} as average_heart_rate,
  {{ whoop.json_number('score', 'max_heart_rate') }} as max_heart_rate,
  updated_at
from live
