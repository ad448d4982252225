{#- Heart rate through each live sleep, a row per minute (`minute_at`, UTC), with the sleep's
    lowest and average heart rate while asleep on every row. Needs the `sleep_signals` stream;
    without it the table is empty. -#}
with points as (
  select points.*
  from {{ ref('stg_whoop_sleep_signal_points') }} as points
  inner join {{ ref('stg_whoop_sleep') }} as sleeps on sleeps.sleep_id = points.sleep_id
  where points.heart_rate is not null
),

asleep as (
  select
    sleep_id,
    min(heart_rate) as min_heart_rate_asleep,
    avg(heart_rate) as avg_heart_rate_asleep
  from points
  where is_sleeping
  group by sleep_id
),

minutes as (
  select
    sleep_id,
    user_id,
    {{ dbt.date_trunc('minute', 'measured_at') }} as minute_at,
    avg(heart_rate) as heart_rate,
    min(heart_rate) as min_heart_rate,
    max(heart_rate) as max_heart_rate,
    sum(case when is_sleeping then 1 else 0 end) as points_asleep,
    count(*) as points
  from points
  group by sleep_id, user_id, {{ dbt.date_trunc('minute', 'measured_at') }}
)

select
  minutes.sleep_id,
  minutes.user_id,
  minutes.minute_at,
  minutes.heart_rate,
  minutes.min_heart_rate,
  minutes.max_heart_rate,
  minutes.points_asleep * 2 > minutes.points as is_sleeping,
  minutes.points,
  asleep.min_heart_rate_asleep,
  asleep.avg_heart_rate_asleep
from minutes
left join asleep on asleep.sleep_id = minutes.sleep_id
