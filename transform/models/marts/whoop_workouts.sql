{#- One row per live workout, with the cycle it happened in: the cycle whose span holds the
    workout's start, as WHOOP counts a workout's strain into that cycle's day strain. -#}
with workouts as (
  select * from {{ ref('stg_whoop_workout') }}
),

cycles as (
  select * from {{ ref('stg_whoop_cycles') }}
)

select
  workouts.workout_id,
  workouts.user_id,
  cycles.cycle_id,
  cycles.day,
  workouts.start_at,
  workouts.end_at,
  workouts.local_start_at,
  {{ dbt.datediff('workouts.start_at', 'workouts.end_at', 'second') }} / 60.0 as minutes,
  workouts.sport_name,
  workouts.sport_id,
  workouts.score_state,
  workouts.strain,
  workouts.kilojoules,
  workouts.average_heart_rate,
  workouts.max_heart_rate,
  workouts.percent_recorded,
  workouts.distance_meter,
  workouts.altitude_gain_meter,
  workouts.altitude_change_meter,
  {% for zone in range(6) -%}
  workouts.zone_{{ zone }}_milli / 60000.0 as zone_{{ zone }}_minutes{{ ',' if not loop.last }}
  {% endfor %}
from workouts
left join cycles
  on cycles.user_id = workouts.user_id
  and workouts.start_at >= cycles.start_at
  and (cycles.end_at is null or workouts.start_at < cycles.end_at)
