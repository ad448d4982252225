{#- One row per member per local day (the `local_day` rule, macros/whoop.sql): the day's
    recovery, strain, sleep, naps and workouts. A day with two cycles (a time-zone change) takes
    recovery, strain and sleep from its later cycle, naps and workouts from both. -#}
with cycles as (
  select
    *,
    row_number() over (partition by user_id, day order by start_at desc) as nth_of_day
  from {{ ref('stg_whoop_cycles') }}
),

day_cycles as (
  select * from cycles where nth_of_day = 1
),

recovery as (
  select * from {{ ref('stg_whoop_recovery') }}
),

sleeps as (
  select * from {{ ref('stg_whoop_sleep') }}
),

{#- The cycle's sleep: the one its recovery was scored from, else its latest main sleep. -#}
main_sleep as (
  select
    sleeps.*,
    row_number() over (
      partition by sleeps.cycle_id
      order by case when sleeps.sleep_id = recovery.sleep_id then 0 else 1 end, sleeps.start_at desc
    ) as nth_of_cycle
  from sleeps
  left join recovery on recovery.cycle_id = sleeps.cycle_id
  where not sleeps.is_nap
),

naps as (
  select
    cycles.user_id,
    cycles.day,
    count(*) as naps,
    sum(sleeps.asleep_milli) / 3600000.0 as nap_hours_asleep
  from sleeps
  inner join cycles on cycles.cycle_id = sleeps.cycle_id
  where sleeps.is_nap
  group by cycles.user_id, cycles.day
),

workouts as (
  select
    user_id,
    day,
    count(*) as workouts,
    max(strain) as workout_strain_max,
    sum(kilojoules) as workout_kilojoules,
    {% for zone in range(6) -%}
    sum(zone_{{ zone }}_minutes) as workout_zone_{{ zone }}_minutes{{ ',' if not loop.last }}
    {% endfor %}
  from {{ ref('whoop_workouts') }}
  where day is not null
  group by user_id, day
),

profile as (
  select * from {{ ref('stg_whoop_profile') }}
)

select
  day_cycles.user_id,
  profile.member,
  day_cycles.day,
  day_cycles.cycle_id,
  day_cycles.start_at as cycle_start_at,
  day_cycles.end_at as cycle_end_at,
  day_cycles.timezone_offset,
  recovery.score_state as recovery_state,
  recovery.recovery_score as recovery_percent,
  recovery.hrv_rmssd_milli as hrv_ms,
  recovery.resting_heart_rate,
  recovery.spo2_percentage as spo2_percent,
  recovery.skin_temp_celsius,
  day_cycles.score_state as cycle_state,
  day_cycles.strain as day_strain,
  day_cycles.kilojoules,
  day_cycles.average_heart_rate,
  day_cycles.max_heart_rate,
  main_sleep.sleep_id,
  main_sleep.score_state as sleep_state,
  main_sleep.asleep_milli / 3600000.0 as hours_asleep,
  main_sleep.light_sleep_milli / 3600000.0 as hours_light_sleep,
  main_sleep.slow_wave_sleep_milli / 3600000.0 as hours_slow_wave_sleep,
  main_sleep.rem_sleep_milli / 3600000.0 as hours_rem_sleep,
  main_sleep.awake_milli / 3600000.0 as hours_awake,
  main_sleep.in_bed_milli / 3600000.0 as hours_in_bed,
  main_sleep.sleep_need_milli / 3600000.0 as hours_sleep_needed,
  main_sleep.sleep_performance_percentage as sleep_performance_percent,
  main_sleep.sleep_efficiency_percentage as sleep_efficiency_percent,
  main_sleep.sleep_consistency_percentage as sleep_consistency_percent,
  main_sleep.respiratory_rate,
  coalesce(naps.naps, 0) as naps,
  naps.nap_hours_asleep,
  coalesce(workouts.workouts, 0) as workouts,
  workouts.workout_strain_max,
  workouts.workout_kilojoules,
  {% for zone in range(6) -%}
  workouts.workout_zone_{{ zone }}_minutes{{ ',' if not loop.last }}
  {% endfor %}
from day_cycles
left join recovery on recovery.cycle_id = day_cycles.cycle_id
left join main_sleep on main_sleep.cycle_id = day_cycles.cycle_id and main_sleep.nth_of_cycle = 1
left join naps on naps.user_id = day_cycles.user_id and naps.day = day_cycles.day
left join workouts on workouts.user_id = day_cycles.user_id and workouts.day = day_cycles.day
left join profile on profile.user_id = day_cycles.user_id
