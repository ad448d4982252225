"""JSON schemas of WHOOP v2 records, built from fragments that are named once.

Every field WHOOP may omit (the current cycle's `end`, `score` unless `SCORED`, optional score
fields) is nullable, so that targets create nullable columns. In the collections every field
but the keys is: a deletion record (`_sdc_deleted_at` set) carries nothing else.
"""

from __future__ import annotations

from singer_sdk import typing as th

Int64 = th.IntegerType
Float = th.NumberType


def _timestamps() -> list[th.Property]:
    return [
        th.Property("user_id", Int64, required=True),
        th.Property("created_at", th.DateTimeType),
        th.Property("updated_at", th.DateTimeType),
    ]


def _period() -> list[th.Property]:
    return [
        th.Property("start", th.DateTimeType),
        th.Property("end", th.DateTimeType),
        th.Property("timezone_offset", th.StringType),
    ]


SCORE_STATE = th.Property(
    "score_state",
    # null: a deletion record's (an enum must list null for a nullable property to allow it)
    th.StringType(allowed_values=["SCORED", "PENDING_SCORE", "UNSCORABLE", None]),
)

DELETED_AT = th.Property(
    "_sdc_deleted_at",
    th.DateTimeType,
    description=(
        "When the tap learnt that WHOOP deleted the record; null on live records. A deletion "
        "record carries only this, the record's key and `user_id`."
    ),
)

CYCLE_SCORE = th.ObjectType(
    th.Property("strain", Float),
    th.Property("kilojoule", Float),
    th.Property("average_heart_rate", th.IntegerType),
    th.Property("max_heart_rate", th.IntegerType),
)

SLEEP_SCORE = th.ObjectType(
    th.Property(
        "stage_summary",
        th.ObjectType(
            th.Property("total_in_bed_time_milli", th.IntegerType),
            th.Property("total_awake_time_milli", th.IntegerType),
            th.Property("total_no_data_time_milli", th.IntegerType),
            th.Property("total_light_sleep_time_milli", th.IntegerType),
            th.Property("total_slow_wave_sleep_time_milli", th.IntegerType),
            th.Property("total_rem_sleep_time_milli", th.IntegerType),
            th.Property("sleep_cycle_count", th.IntegerType),
            th.Property("disturbance_count", th.IntegerType),
        ),
    ),
    th.Property(
        "sleep_needed",
        th.ObjectType(
            th.Property("baseline_milli", Int64),
            th.Property("need_from_sleep_debt_milli", Int64),
            th.Property("need_from_recent_strain_milli", Int64),
            th.Property("need_from_recent_nap_milli", Int64),
        ),
    ),
    th.Property("respiratory_rate", Float),
    th.Property("sleep_performance_percentage", Float),
    th.Property("sleep_consistency_percentage", Float),
    th.Property("sleep_efficiency_percentage", Float),
)

RECOVERY_SCORE = th.ObjectType(
    th.Property("user_calibrating", th.BooleanType),
    th.Property("recovery_score", Float),
    th.Property("resting_heart_rate", Float),
    th.Property("hrv_rmssd_milli", Float),
    th.Property("spo2_percentage", Float),
    th.Property("skin_temp_celsius", Float),
)

WORKOUT_SCORE = th.ObjectType(
    th.Property("strain", Float),
    th.Property("average_heart_rate", th.IntegerType),
    th.Property("max_heart_rate", th.IntegerType),
    th.Property("kilojoule", Float),
    th.Property("percent_recorded", Float),
    th.Property("distance_meter", Float),
    th.Property("altitude_gain_meter", Float),
    th.Property("altitude_change_meter", Float),
    th.Property(
        "zone_durations",
        th.ObjectType(
            *(
                th.Property(f"zone_{zone}_milli", Int64)
                for zone in ("zero", "one", "two", "three", "four", "five")
            )
        ),
    ),
)

PROFILE = th.PropertiesList(
    th.Property("user_id", Int64, required=True),
    th.Property(
        "member",
        th.StringType,
        description="The member's key in the `users` setting ('default' for `refresh_token`).",
    ),
    th.Property("email", th.StringType),
    th.Property("first_name", th.StringType),
    th.Property("last_name", th.StringType),
).to_dict()

BODY_MEASUREMENT = th.PropertiesList(
    th.Property("user_id", Int64, required=True, description="From the member's profile."),
    th.Property("height_meter", Float),
    th.Property("weight_kilogram", Float),
    th.Property("max_heart_rate", th.IntegerType),
).to_dict()

CYCLE = th.PropertiesList(
    th.Property("id", Int64, required=True),
    *_timestamps(),
    *_period(),
    SCORE_STATE,
    th.Property("score", CYCLE_SCORE),
    th.Property("step_count", th.IntegerType),
    DELETED_AT,
).to_dict()

SLEEP = th.PropertiesList(
    th.Property("id", th.UUIDType, required=True),
    th.Property("cycle_id", Int64),
    th.Property("v1_id", Int64),
    *_timestamps(),
    *_period(),
    th.Property("nap", th.BooleanType),
    SCORE_STATE,
    th.Property("score", SLEEP_SCORE),
    DELETED_AT,
).to_dict()

RECOVERY = th.PropertiesList(
    th.Property("cycle_id", Int64, required=True),
    th.Property("sleep_id", th.UUIDType),
    *_timestamps(),
    SCORE_STATE,
    th.Property("score", RECOVERY_SCORE),
    DELETED_AT,
).to_dict()

WORKOUT = th.PropertiesList(
    th.Property("id", th.UUIDType, required=True),
    th.Property("v1_id", Int64),
    *_timestamps(),
    *_period(),
    th.Property("sport_name", th.StringType),
    th.Property("sport_id", th.IntegerType),
    SCORE_STATE,
    th.Property("score", WORKOUT_SCORE),
    DELETED_AT,
).to_dict()

SLEEP_STREAM_POINT = th.ObjectType(
    th.Property("timestamp", th.DateTimeType),
    th.Property("hr", th.IntegerType),
    th.Property("skin_temp", Float),
    th.Property("board_temp", Float),
    th.Property("battery_temp", Float),
    th.Property("is_sleeping", th.BooleanType),
    th.Property("is_charging", th.BooleanType),
)

SLEEP_SIGNALS = th.PropertiesList(
    th.Property("sleep_id", th.UUIDType, required=True),
    th.Property("user_id", Int64, required=True),
    th.Property(
        "updated_at",
        th.DateTimeType,
        description="The `updated_at` of the sleep whose signals these are.",
    ),
    th.Property("algorithm_version", th.StringType),
    th.Property(
        "types",
        th.ArrayType(th.StringType),
        description="The signal types asked for (`sleep_signal_types`): the points carry those.",
    ),
    th.Property(
        "stream",
        th.ArrayType(SLEEP_STREAM_POINT),
        description="The points as WHOOP sends them, in its order: one record per sleep, so that a "
        "re-scored sleep replaces its points and a deleted one takes them with it.",
    ),
    DELETED_AT,
).to_dict()
