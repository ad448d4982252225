with live as (
  {{ whoop.live_rows(source('whoop', 'sleep'), 'id') }}
),

typed as (
  select
    cast(id as {{ dbt.type_string() }}) as sleep_id,
    cast(cycle_id as {{ dbt.type_bigint() }}) as cycle_id,
    cast(user_id as {{ dbt.type_bigint() }}) as user_id,
    start as start_at,
    "end" as end_at,
    timezone_offset,
    {{ whoop.local_time('start', 'timezone_offset') }} as local_start_at,
    coalesce(nap, false) as is_nap,
    score_state,
    {% for stage in ['in_bed', 'awake', 'no_data', 'light_sleep', 'slow_wave_sleep', 'rem_sleep'] -%}
    {{ whoop.json_number('score', 'stage_summary.total_' ~ stage ~ '_time_milli') }} as {{ stage }}_milli,
    {% endfor -%}
    {{ whoop.json_number('score', 'stage_summary.sleep_cycle_count') }} as sleep_cycle_count,
    {{ whoop.json_number('score', 'stage_summary.disturbance_count') }} as disturbance_count,
    {% for need in ['baseline', 'need_from_sleep_debt', 'need_from_recent_strain', 'need_from_recent_nap'] -%}
    {{ whoop.json_number('score', 'sleep_needed.' ~ need ~ '_milli') }} as sleep_{{ need }}_milli,
    {% endfor -%}
    {{ whoop.json_number('score', 'respiratory_rate') }} as respiratory_rate,
    {{ whoop.json_number('score', 'sleep_performance_percentage') }} as sleep_performance_percentage,
    {{ whoop.json_number('score', 'sleep_consistency_percentage') }} as sleep_consistency_percentage,
    {{ whoop.json_number('score', 'sleep_efficiency_percentage') }} as sleep_efficiency_percentage,
    updated_at
  from live
)

select
  *,
  light_sleep_milli + slow_wave_sleep_milli + rem_sleep_milli as asleep_milli,
  sleep_baseline_milli + coalesce(sleep_need_from_sleep_debt_milli, 0)
    + coalesce(sleep_need_from_recent_strain_milli, 0)
    + coalesce(sleep_need_from_recent_nap_milli, 0) as sleep_need_milli
from typed
