with live as (
  {{ whoop.live_rows(source('whoop', 'recovery'), 'cycle_id') }}
)

select
  cast(cycle_id as {{ dbt.type_bigint() }}) as cycle_id,
  cast(sleep_id as {{ dbt.type_string() }}) as sleep_id,
  cast(user_id as {{ dbt.type_bigint() }}) as user_id,
  score_state,
  cast({{ whoop.json_text('score', 'user_calibrating') }} as {{ dbt.type_boolean() }}) as user_calibrating,
  {{ whoop.json_number('score', 'recovery_score') }} as recovery_score,
  {{ whoop.json_number('score', 'hrv_rmssd_milli') }} as hrv_rmssd_milli,
  {{ whoop.json_number('score', 'resting_heart_rate') }} as resting_heart_rate,
  {{ whoop.json_number('score', 'spo2_percentage') }} as spo2_percentage,
  {{ whoop.json_number('score', 'skin_temp_celsius') }} as skin_temp_celsius,
  updated_at
from live
