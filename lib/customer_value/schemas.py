"""Every table's schema, in one module: ingest enforces these, tests build inputs from them."""

from __future__ import annotations

from pyspark.sql import types as T

SMOKE_CUSTOMERS = T.StructType(
    [
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("tier", T.StringType(), True),
        T.StructField("spend", T.DoubleType(), True),
    ]
)

SMOKE_FEATURES = [f"f{i}" for i in range(8)]

SMOKE_TRAINING = T.StructType(
    [T.StructField("row_id", T.LongType(), False)]
    + [T.StructField(name, T.FloatType(), False) for name in SMOKE_FEATURES]
    + [T.StructField("label", T.FloatType(), False)]
)

SMOKE_SCORES = T.StructType(
    [
        T.StructField("row_id", T.LongType(), False),
        T.StructField("label", T.FloatType(), False),
        T.StructField("prediction", T.FloatType(), False),
    ]
)
