"""Small, pure cleaning steps, `DataFrame -> DataFrame`, each tested on tiny inline frames."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

REJECT = "_reject_reason"
FLAGS = "dq_flags"


@dataclass(frozen=True)
class Rule:
    """A row for which `condition` is true is rejected with `reason` (the first matching rule wins)."""

    reason: str
    condition: Column


def drop_exact_duplicates(df: DataFrame, columns: Sequence[str]) -> DataFrame:
    """One row per distinct value of `columns` (the business content, not ingest metadata)."""
    return df.dropDuplicates(list(columns))


def apply_rules(df: DataFrame, rules: Sequence[Rule]) -> DataFrame:
    """Adds `_reject_reason`: the reason of the first rule a row breaks, or null."""
    reason = F.lit(None).cast("string")
    for rule in reversed(rules):
        reason = F.when(rule.condition, F.lit(rule.reason)).otherwise(reason)
    return df.withColumn(REJECT, reason)


def accepted(df: DataFrame) -> DataFrame:
    return df.where(F.col(REJECT).isNull()).drop(REJECT)


def timestamp_rules(column: str, opened: date, today: date) -> list[Rule]:
    """A timestamp must fall between the shop's opening and the end of today."""
    col = F.col(column)
    return [
        Rule(f"future_timestamp:{column}", col >= F.lit(today).cast("timestamp") + F.expr("INTERVAL 1 DAY")),
        Rule(f"before_opening:{column}", col < F.lit(opened).cast("timestamp")),
    ]


def amount_rules(column: str, maximum: float) -> list[Rule]:
    col = F.col(column)
    return [Rule(f"negative_amount:{column}", col < 0), Rule(f"absurd_amount:{column}", col > maximum)]


def with_flag(df: DataFrame, flag: str, condition: Column) -> DataFrame:
    """Appends `flag` to the row's `dq_flags` where `condition` holds (rows are kept)."""
    current = F.col(FLAGS) if FLAGS in df.columns else F.array().cast("array<string>")
    return df.withColumn(FLAGS, F.when(condition, F.array_union(current, F.array(F.lit(flag)))).otherwise(current))


def flag_orphans(df: DataFrame, key: str, known: DataFrame, known_key: str) -> DataFrame:
    """Flags rows whose `key` has no match in `known` (e.g. orders of unknown users): kept, never dropped."""
    keys = known.select(F.col(known_key).alias("_known")).distinct().withColumn("_present", F.lit(True))
    joined = df.join(keys, df[key] == keys["_known"], "left")
    return with_flag(joined, "orphan", F.col("_present").isNull()).drop("_known", "_present")


def fill_missing(df: DataFrame, fills: Mapping[str, str]) -> DataFrame:
    """Nulls and blanks in the listed columns become the configured value."""
    for column, value in fills.items():
        if column in df.columns:
            df = df.withColumn(column, F.coalesce(F.nullif(F.trim(F.col(column)), F.lit("")), F.lit(value)))
    return df


def flag_above(df: DataFrame, column: str, cap: float | None, flag: str) -> DataFrame:
    """Rows whose `column` is above `cap` flagged `flag` (kept, values unchanged); no cap, no flag."""
    return df if cap is None else with_flag(df, flag, F.col(column) > F.lit(cap))
