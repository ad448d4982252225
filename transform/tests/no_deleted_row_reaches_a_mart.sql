{#- A record WHOOP deleted (its row has `_sdc_deleted_at`) appears in no mart: not as a workout,
    not as a day's cycle, recovery or sleep, not as a sleep's heart rate. -#}
with deleted as (
  select 'workout' as stream, cast(id as {{ dbt.type_string() }}) as record_key
  from {{ source('whoop', 'workout') }} where _sdc_deleted_at is not null
  union all
  select 'cycle', cast(id as {{ dbt.type_string() }})
  from {{ source('whoop', 'cycles') }} where _sdc_deleted_at is not null
  union all
  select 'recovery', cast(cycle_id as {{ dbt.type_string() }})
  from {{ source('whoop', 'recovery') }} where _sdc_deleted_at is not null
  union all
  select 'sleep', cast(id as {{ dbt.type_string() }})
  from {{ source('whoop', 'sleep') }} where _sdc_deleted_at is not null
),

in_marts as (
  select 'workout' as stream, workout_id as record_key from {{ ref('whoop_workouts') }}
  union all
  select 'cycle', cast(cycle_id as {{ dbt.type_string() }}) from {{ ref('whoop_daily') }}
  union all
  select 'recovery', cast(cycle_id as {{ dbt.type_string() }})
  from {{ ref('whoop_daily') }} where recovery_state is not null
  union all
  select 'sleep', sleep_id from {{ ref('whoop_daily') }} where sleep_id is not null
  union all
  select distinct 'sleep', sleep_id from {{ ref('whoop_sleep_heart_rate') }}
)

select in_marts.stream, in_marts.record_key
from in_marts
inner join deleted
  on deleted.stream = in_marts.stream and deleted.record_key = in_marts.record_key
