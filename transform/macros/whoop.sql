{#- The few expressions that differ between DuckDB and PostgreSQL, each written once per
    warehouse (adapter.dispatch), so that every model has one definition for both. -#}

{% macro json_text(column, path) -%}
  {{ return(adapter.dispatch('json_text', 'whoop')(column, path)) }}
{%- endmacro %}

{#- `path`: keys separated by dots, e.g. 'stage_summary.total_rem_sleep_time_milli'. -#}
{% macro default__json_text(column, path) -%}
  ({{ column }} #>> '{ {{- path.split('.') | join(',') -}} }')
{%- endmacro %}

{% macro duckdb__json_text(column, path) -%}
  json_extract_string({{ column }}, '$.{{ path }}')
{%- endmacro %}

{% macro json_number(column, path) -%}
  cast({{ whoop.json_text(column, path) }} as double precision)
{%- endmacro %}

{#- WHOOP's `timezone_offset` ('-05:00', '+01:00') in minutes; 0 when missing. -#}
{% macro offset_minutes(offset) -%}
  (case when {{ offset }} is null or length({{ offset }}) < 6 then 0
        else (case when substring({{ offset }}, 1, 1) = '-' then -1 else 1 end)
             * (cast(substring({{ offset }}, 2, 2) as integer) * 60
                + cast(substring({{ offset }}, 5, 2) as integer))
   end)
{%- endmacro %}

{#- A UTC timestamp (as both loaders store them, without time zone) at the member's local time. -#}
{% macro local_time(moment, offset) -%}
  {{ dbt.dateadd('minute', whoop.offset_minutes(offset), moment) }}
{%- endmacro %}

{#- The local day a cycle belongs to: the calendar day of its local start plus 12 hours. A cycle
    starts when the member falls asleep, so one that starts at 23:00 on Monday (or 01:00 on
    Tuesday) is Tuesday's: the day its waking hours fall on, as WHOOP's app shows it. -#}
{% macro local_day(start, offset) -%}
  cast({{ dbt.dateadd('minute', whoop.offset_minutes(offset) ~ ' + 720', start) }} as date)
{%- endmacro %}

{#- The newest version of each record (by `order_by`), and only if it is not a deletion: the
    loaders upsert by key, this keeps "one row per key" true even for an append-only load. -#}
{% macro live_rows(relation, key, order_by='_sdc_batched_at desc') -%}
  select ranked.*
  from (
    select
      source_rows.*,
      row_number() over (partition by {{ key }} order by {{ order_by }}) as _whoop_version
    from {{ relation }} as source_rows
  ) as ranked
  where ranked._whoop_version = 1 and ranked._sdc_deleted_at is null
{%- endmacro %}

{#- One row per element of a JSON array column, as `point` (JSON); `relation` has the column. -#}
{% macro json_array_rows(relation, column) -%}
  {{ return(adapter.dispatch('json_array_rows', 'whoop')(relation, column)) }}
{%- endmacro %}

{#- to_jsonb: target-postgres writes an array of objects as jsonb[], other loaders as json(b). -#}
{% macro default__json_array_rows(relation, column) -%}
  select source_rows.*, points.point
  from {{ relation }} as source_rows
  cross join lateral jsonb_array_elements(to_jsonb(source_rows.{{ column }})) as points(point)
{%- endmacro %}

{% macro duckdb__json_array_rows(relation, column) -%}
  select source_rows.*, unnest(cast(source_rows.{{ column }} as json[])) as point
  from {{ relation }} as source_rows
{%- endmacro %}

{#- Whether the loader has written `table` (an optional stream, such as sleep_signals): known
    only when dbt runs, so models use it to build empty rather than fail. -#}
{% macro source_exists(table) -%}
  {% if not execute %}{{ return(false) }}{% endif %}
  {% set declared = source('whoop', table) %}
  {% set found = adapter.get_relation(
      database=declared.database, schema=declared.schema, identifier=declared.identifier) %}
  {{ return(found is not none) }}
{%- endmacro %}

{#- ISO 8601 text with an offset ('2026-11-20T03:00:00.000Z') as a UTC timestamp without time
    zone, as the loaders store WHOOP's timestamps. -#}
{% macro utc_timestamp(text) -%}
  (cast({{ text }} as {{ dbt.type_timestamp() }} with time zone) at time zone 'UTC')
{%- endmacro %}
