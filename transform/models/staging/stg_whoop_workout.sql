with live as (
  {{ whoop.live_rows(source('whoop', 'workout'), 'id') }}
)

select
  cast(id as {{ dbt.type_string() }}) as workout_id,
  cast(user_id as {{ dbt.type_bigint() }}) as user_id,
  start as start_at,
  "end" as end_at,
  timezone_offset,
  {{ whoop.local_time('start', 'timezone_offset') }} as local_start_at,
  sport_name,
  cast(sport_id as {{ dbt.type_int() }}) as sport_id,
  score_state,
  {{ whoop.json_number('score', 'strain') }} as strain,
  {{ whoop.json_number('score', 'kilojoule') }} as kilojoules,
  {{ whoop.json_number('score', 'average_heart_rate') }} as average_heart_rate,
  {{ whoop.json_number('score', 'max_heart_rate') }} as max_heart_rate,
  {{ whoop.json_number('score', 'percent_recorded') }} as percent_recorded,
  {{ whoop.json_number('score', 'distance_meter') }} as distance_meter,
  {{ whoop.json_number('score', 'altitude_gain_meter') }} as altitude_gain_meter,
  {{ whoop.json_number('score', 'altitude_change_meter') }} as altitude_change_meter,
  {% for zone in ['zero', 'one', 'two', 'three', 'four', 'five'] -%}
  {{ whoop.json_number('score', 'zone_durations.zone_' ~ zone ~ '_milli') }} as zone_{{ loop.index0 }}_milli,
  {% endfor -%}
  updated_at
from live
