with live as (
  {{ whoop.live_rows(source('whoop', 'profile'), 'user_id') }}
)

select
  cast(user_id as {{ dbt.type_bigint() }}) as user_id,
  member,
  first_name,
  last_name,
  email
from live
