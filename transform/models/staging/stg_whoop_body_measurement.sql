with live as (
  {{ whoop.live_rows(source('whoop', 'body_measurement'), 'user_id') }}
)

select
  cast(user_id as {{ dbt.type_bigint() }}) as user_id,
  height_meter,
  weight_kilogram,
  cast(max_heart_rate as {{ dbt.type_int() }}) as max_heart_rate
from live
