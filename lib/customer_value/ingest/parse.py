"""Lines of landing files -> typed rows or quarantined rows with a reason. Pure DataFrame functions.

Files are read as lines (Spark's CSV reader with quoting off and a separator that never occurs, because, unlike
the text reader, it decodes other encodings), then parsed with `from_csv` / `from_json` against the source's
schema from `customer_value.schemas`, every column as text, and only then typed, so that each failure can be
named: `malformed_line`, `missing_required:<column>`, `type_mismatch:<column>`.
"""

from __future__ import annotations

from functools import reduce
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from customer_value.schemas import RawSource

LINE, RAW, REASON, ISSUES = "_line", "_raw", "_reason", "_issues"
REPLACEMENT_CHAR = "\ufffd"
# a comma with an even number of quotes after it: a field separator outside quoted text
SEPARATOR_OUTSIDE_QUOTES = ',(?=(?:[^"]*"[^"]*")*[^"]*$)'
INTEGER = r"^[+-]?[0-9]+$"
DECIMAL = r"^[+-]?[0-9]+(\.[0-9]+)?$"


MAX_LINE_CHARS = 1_000_000          # a longer line is quarantined (line_too_long), not parsed
# A longer number fits none of the numeric types (decimal(18, 2) is at most 20 characters) and is not parsed:
# Java's BigDecimal takes time quadratic in the digits, about a minute for a million of them.
MAX_NUMBER_CHARS = 64
# control characters that have no place in a text export (tab, newline, carriage return aside)
CONTROL = "[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F]"
# a text cell a spreadsheet would run as a formula (=, +, -, @ first): kept as data, flagged formula_like
FORMULA = "^[=@]|^[+-].*[^0-9 ().+-]"     # "+44 20 7946" and "-12.5" are not formulas; "-2+cmd|..." is
SEPARATOR = "\u0001"


def read_lines(spark: SparkSession, paths: Sequence[str], encoding: str) -> DataFrame:
    """One row per non-blank line: _source_file, _line, _encoding. A UTF-8 byte-order mark is dropped; a line
    holding the reader's own separator (a control character) keeps it, so that the line is quarantined whole
    rather than cut."""
    rest = "_rest"
    lines = (
        spark.read.schema(T.StructType([T.StructField(LINE, T.StringType()), T.StructField(rest, T.StringType())]))
        .option("sep", SEPARATOR)
        .option("quote", "")
        .option("header", False)
        .option("encoding", encoding)
        .option("ignoreLeadingWhiteSpace", False)
        .option("ignoreTrailingWhiteSpace", False)
        .option("maxCharsPerColumn", -1)
        .csv(list(paths))
    )
    line = F.regexp_replace(
        F.when(F.col(rest).isNotNull(), F.concat_ws(SEPARATOR, LINE, rest)).otherwise(F.col(LINE)), "^\ufeff", "")
    return lines.select(F.input_file_name().alias("_source_file"), line.alias(LINE), F.lit(encoding.lower()).alias("_encoding"))


def parse_csv(lines: DataFrame, source: RawSource, header: Sequence[str]) -> DataFrame:
    """Lines of files that share `header` -> the source's columns as text, `_raw`, layout `_issues`,
    and `_reason` = malformed_line where the line does not split into as many fields as the header."""
    header = list(header)
    header_line = ",".join(header)
    body = lines.where(F.col(LINE) != F.lit(header_line))
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header])
    parsed = body.withColumn("_fields", F.from_csv(LINE, schema.simpleString(), {"mode": "PERMISSIVE"}))
    n_fields = F.size(F.split(LINE, SEPARATOR_OUTSIDE_QUOTES, -1))
    quotes = F.length(LINE) - F.length(F.regexp_replace(LINE, '"', ""))
    malformed = (n_fields != len(header)) | (quotes % 2 != 0)
    layout = [f"extra_column:{c}" for c in header if c not in source.names]
    layout += [f"missing_column:{c}" for c in source.names if c not in header]
    cols = [
        (F.col(f"_fields.{c}") if c in header else F.lit(None).cast("string")).alias(c) for c in source.names
    ]
    return parsed.select(
        "_source_file",
        "_encoding",
        F.col(LINE).alias(RAW),
        *cols,
        F.array(*[F.lit(i) for i in layout]).cast("array<string>").alias(ISSUES),
        F.when(malformed, F.lit("malformed_line")).alias(REASON),
    )


def parse_jsonl(lines: DataFrame, source: RawSource) -> DataFrame:
    """JSON lines -> the source's columns as text (numbers keep their literal text), `_raw`, `_reason`."""
    schema = source.text_schema(corrupt_column="_corrupt")
    parsed = lines.withColumn(
        "_fields", F.from_json(LINE, schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    )
    return parsed.select(
        "_source_file",
        "_encoding",
        F.col(LINE).alias(RAW),
        *[F.col(f"_fields.{c}").alias(c) for c in source.names],
        F.array().cast("array<string>").alias(ISSUES),
        F.when(duplicate_keys(F.col(LINE)), F.lit("duplicate_key"))
        .when(F.col("_fields._corrupt").isNotNull() | F.col("_fields").isNull(), F.lit("malformed_line")).alias(REASON),
    )


def duplicate_keys(line: Column) -> Column:
    """A JSON object naming a key twice: which value is meant is anyone's guess (readers differ), so the line is
    quarantined instead of silently keeping one."""
    keys = F.json_object_keys(line)
    return keys.isNotNull() & (F.size(keys) != F.size(F.array_distinct(keys)))


def _typed(value: Column, dtype: T.DataType) -> Column:
    """`value` (text) as `dtype`, or null where it does not parse. Integers and decimals must look like numbers:
    Spark's lenient cast would turn '1.5' into 1."""
    if isinstance(dtype, T.IntegerType):
        return F.when(number_sized(value) & value.rlike(INTEGER), value.cast(dtype))
    if isinstance(dtype, T.DecimalType):
        return F.when(number_sized(value) & value.rlike(DECIMAL), value.cast(dtype))
    return value.cast(dtype)


def number_sized(value: Column) -> Column:
    """True for text short enough to be a number of ours (`MAX_NUMBER_CHARS`): checked before any cast, which
    the condition's short circuit then skips for a longer one."""
    return F.length(value) <= MAX_NUMBER_CHARS


def type_columns(parsed: DataFrame, source: RawSource) -> DataFrame:
    """Text columns -> typed columns; the first missing required value or unparseable required value becomes
    `_reason`; an unparseable optional value becomes null and a `type_mismatch:<column>` entry in `_issues`."""
    text = {c.name: F.nullif(F.trim(F.col(c.name)), F.lit("")) for c in source.columns}
    typed = {c.name: _typed(text[c.name], c.type) for c in source.columns}
    missing = [F.when(text[c].isNull(), F.lit(f"missing_required:{c}")) for c in source.required]
    mismatch = {c.name: text[c.name].isNotNull() & typed[c.name].isNull() for c in source.columns}
    required_bad = [F.when(mismatch[c], F.lit(f"type_mismatch:{c}")) for c in source.required]
    optional_bad = [F.when(mismatch[c.name], F.lit(f"type_mismatch:{c.name}")) for c in source.columns if not c.required]
    # a control character in the line, or in a value once JSON escapes (\u0000) are decoded: a value can only
    # hold one the line does not where the line has an escape, so only such lines have their values searched
    # (the same answer for every line, without a regex per column of every row)
    in_values = reduce(lambda a, b: a | b, [F.coalesce(F.col(c.name).rlike(CONTROL), F.lit(False))
                                            for c in source.columns])
    control = F.col(RAW).rlike(CONTROL) | (F.col(RAW).contains("\\") & in_values)
    hostile = (F.when(F.length(RAW) > MAX_LINE_CHARS, F.lit("line_too_long"))
               .when(control, F.lit("control_characters")))
    reason = F.coalesce(hostile, F.col(REASON), *missing, *required_bad)
    formula = [F.when(text[c.name].rlike(FORMULA), F.lit(f"formula_like:{c.name}"))
               for c in source.columns if isinstance(c.type, T.StringType)]
    flagged = F.filter(F.array(*optional_bad, *formula), lambda x: x.isNotNull())
    issues = F.concat(F.col(ISSUES), flagged)
    return parsed.select(
        "_source_file",
        "_encoding",
        RAW,
        *[typed[c.name].alias(c.name) for c in source.columns],
        issues.alias(ISSUES),
        reason.alias(REASON),
    )


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    return reduce(lambda a, b: a.unionByName(b), frames)
