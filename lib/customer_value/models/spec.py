"""The feature spec: which feature enters the network how, derived from the feature catalogue.

Why one place: training (Spark → Parquet → Petastorm) and scoring (Spark → pandas UDF) must build exactly the
same inputs. The spec says each column's role (numeric, categorical, sequence, id), dtype and null policy; the
statistics (normalisation means and deviations, categorical vocabularies) are computed once, in Spark, on the
training split, and stored beside the model, so a customer scored next year is normalised as in training.

Every numeric feature is transformed the same way, sign(x)·log1p(|x|): monotone, defined for the trends'
negative values, and it tames the heavy tails of spend and counts that otherwise dominate a standardised input.

The network then clips each input to the range the training split held and standardises it with a scale no
smaller than a tenth of that range (`MAX_SD`): no customer sits further than 10 deviations from the mean. Without
the floor a rare event (`returns_7d` = 1 on 14 of 167,652 demo training rows: deviation 0.006 after the log)
put its few holders 110 deviations out, where the network extrapolated its spend distribution to a 90-day
expectation of 8 million; 3 % of training rows hold some input beyond 8 deviations anyway, so 10 keeps what the
network learned from in range.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from customer_value.config import FeaturesConfig
from customer_value.features.catalogue import catalogue
from customer_value.spark import session_conf

NUMERIC, CATEGORICAL, SEQUENCE, ID = "numeric", "categorical", "sequence", "id"
# Channels of the order-sequence input, in order; each is log1p of the catalogue's array, plus a presence flag.
SEQUENCE_CHANNELS = ("seq_days_before", "seq_amount", "seq_items")
UNKNOWN = "<unknown>"
# The largest |standardised input| the network sees: the scale of an input is at least its training range / MAX_SD.
MAX_SD = 10.0
# The training set's two array columns: every numeric input, and the flattened sequence, in the spec's order.
NUMERIC_BLOCK, SEQUENCE_BLOCK = "numeric", "sequence"


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    role: str                   # numeric | categorical | sequence | id
    dtype: str                  # what the features table holds
    null_policy: str            # numeric: zero | indicator; categorical: unknown; sequence: pad; id: never


@dataclass
class FeatureSpec:
    """The inputs of one model version; `stats` is filled by `fit_stats` on the training split."""

    columns: list[FeatureColumn]
    sequence_length: int
    stats: dict = field(default_factory=dict)

    def of(self, role: str) -> list[FeatureColumn]:
        return [c for c in self.columns if c.role == role]

    @property
    def numeric_inputs(self) -> list[str]:
        """The numeric input columns after transformation, in the order the network stacks them."""
        names = [c.name for c in self.of(NUMERIC)]
        names += [f"{c.name}__missing" for c in self.of(NUMERIC) if c.null_policy == "indicator"]
        return names

    @property
    def sequence_inputs(self) -> list[str]:
        """Flattened sequence columns, position-major: seq_p00_c0, seq_p00_c1, ..., presence last per position."""
        return [f"seq_p{p:02d}_c{c}" for p in range(self.sequence_length) for c in range(len(SEQUENCE_CHANNELS) + 1)]

    @property
    def categorical_inputs(self) -> list[str]:
        return [c.name for c in self.of(CATEGORICAL)]

    def vocabulary(self, name: str) -> list[str]:
        return self.stats["vocabularies"][name]

    def to_json(self) -> str:
        return json.dumps({"columns": [asdict(c) for c in self.columns], "sequence_length": self.sequence_length,
                           "stats": self.stats}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        raw = json.loads(text)
        return cls([FeatureColumn(**c) for c in raw["columns"]], raw["sequence_length"], raw["stats"])


# Catalogue groups whose features are categorical or sequences; every other group is numeric.
_ROLE_OF_GROUP = {"static": CATEGORICAL, "sequence": SEQUENCE}


def feature_spec(features_cfg: FeaturesConfig, dtypes: dict[str, str]) -> FeatureSpec:
    """The spec for a features table with these column types (`DataFrame.dtypes`), from the catalogue.

    Null policy of numeric features: integer counts are zero when absent (no order → 0 orders); anything else
    that can be null (a recency without an order, a mean over nothing) gets a 0/1 `__missing` indicator beside
    its zero fill, so "never bought" is not confused with "bought today"."""
    cols = [FeatureColumn("customer_id", ID, "string", "never")]
    for d in catalogue(features_cfg):
        role = _ROLE_OF_GROUP.get(d.group, NUMERIC)
        dtype = dtypes.get(d.name)
        if dtype is None:
            raise ValueError(f"feature {d.name!r} of the catalogue is not in the features table")
        if role == NUMERIC:
            policy = "zero" if dtype in ("bigint", "int") and not _may_be_null(d.name) else "indicator"
        else:
            policy = {CATEGORICAL: "unknown", SEQUENCE: "pad"}[role]
        cols.append(FeatureColumn(d.name, role, dtype, policy))
    return FeatureSpec(cols, features_cfg.sequence_length)


# Catalogue groups that only a shop recording behaviour (events) and reviews can fill.
BEHAVIOURAL_GROUPS = ("behaviour", "reviews")


def behavioural_inputs(features_cfg: FeaturesConfig, spec: FeatureSpec) -> list[str]:
    """The numeric inputs (missing flags included) of the behaviour and review features."""
    group = {d.name: d.group for d in catalogue(features_cfg)}
    return [n for n in spec.numeric_inputs if group.get(n.removesuffix("__missing")) in BEHAVIOURAL_GROUPS]


def resolved_network(settings: dict, spec: FeatureSpec) -> dict:
    """The network settings with `wide: auto` decided by the training split (`fit_stats`): on where every
    behavioural input is constant there, i.e. the shop recorded no events and no reviews.

    Why: with only transactions, what predicts is recency, frequency and money, and BG/NBD's predictions among
    the inputs carry most of it linearly; a wide path lets the heads use them directly (on a transactions-only
    file it ties BG/NBD, without it the network trails by about 0.01 Gini). Where behaviour carries signal the
    trunk's nonlinear use of it is what wins, and the wide path pulled the shop's Gini down to BG/NBD's level."""
    if settings.get("wide") != "auto":
        return settings
    behavioural = spec.stats.get("behaviour_inputs", [])
    constant = set(spec.stats.get("constant_numeric", []))
    return {**settings, "wide": bool(behavioural) and all(n in constant for n in behavioural)}


def _may_be_null(name: str) -> bool:
    """Integer features that are null when the thing they measure never happened."""
    return name in ("recency_days", "last_active_days", "bgnbd_t_x", "bgnbd_T", "tenure_days")


def slog(col: Column) -> Column:
    return F.signum(col) * F.log1p(F.abs(col))


def _sequence_columns(spec: FeatureSpec) -> list[Column]:
    """Each position p and channel c as its own float column: log1p(value), 0 where the customer has fewer
    than p + 1 orders; the last channel is 1 where the position holds an order."""
    out = []
    for p in range(spec.sequence_length):
        present = F.size(F.col(SEQUENCE_CHANNELS[0])) > p
        for c, name in enumerate(SEQUENCE_CHANNELS):
            value = F.when(present, F.log1p(F.greatest(F.element_at(name, p + 1).cast("double"), F.lit(0.0))))
            out.append(F.coalesce(value, F.lit(0.0)).cast("float").alias(f"seq_p{p:02d}_c{c}"))
        out.append(F.coalesce(present, F.lit(False)).cast("float").alias(f"seq_p{p:02d}_c{len(SEQUENCE_CHANNELS)}"))
    return out


def transformed(features: DataFrame, spec: FeatureSpec, carry: Sequence[str] = ()) -> DataFrame:
    """Model inputs before normalisation and vocabulary lookup: numeric features transformed and null-filled,
    missing indicators, flattened sequences; categoricals as strings, null → unknown. Keeps
    customer_id, snapshot_date and the `carry` columns as they are."""
    num = spec.of(NUMERIC)
    cols: list[Column] = [F.col("customer_id"), F.col("snapshot_date"), *(F.col(c) for c in carry)]
    cols += [F.coalesce(slog(F.col(c.name).cast("double")), F.lit(0.0)).cast("float").alias(c.name) for c in num]
    cols += [F.col(c.name).isNull().cast("float").alias(f"{c.name}__missing") for c in num if c.null_policy == "indicator"]
    cols += [F.coalesce(F.col(c.name).cast("string"), F.lit(UNKNOWN)).alias(c.name) for c in spec.of(CATEGORICAL)]
    cols += _sequence_columns(spec)
    return features.select(*cols)


def fit_stats(train: DataFrame, spec: FeatureSpec, min_count: int = 5, max_vocabulary: int = 200) -> FeatureSpec:
    """Means, scales and ranges of the numeric inputs (the scale: the deviation, at least the range / `MAX_SD`),
    per-channel moments of the sequence, the categorical vocabularies (values seen at least `min_count` times,
    most frequent first) and, where the rows carry `future_spend`, the range of the spend labels, from
    `transformed` rows of the training split only: one Spark pass for the moments, one for every categorical's
    value counts."""
    numeric = spec.numeric_inputs
    aggs = []
    for n in numeric:
        aggs += [F.avg(n).alias(f"m:{n}"), F.stddev_pop(n).alias(f"s:{n}"), F.min(n).alias(f"lo:{n}"),
                 F.max(n).alias(f"hi:{n}")]
    if "future_spend" in train.columns:     # the labels the rows carry: the range the spend head is bounded to
        spend = F.col("future_spend").cast("double")
        log_spend = F.when(spend > 0, F.log(spend))
        aggs += [F.min(log_spend).alias("y:log_min"), F.max(log_spend).alias("y:log_max"),
                 F.max(spend).alias("y:max"), F.count(log_spend).alias("y:buyers")]
    nch = len(SEQUENCE_CHANNELS)
    presence = [F.col(f"seq_p{p:02d}_c{nch}") for p in range(spec.sequence_length)]
    present_n = sum(presence[1:], presence[0])
    aggs.append(F.sum(present_n).alias("seq:n"))
    for c in range(nch):
        vals = [F.col(f"seq_p{p:02d}_c{c}").cast("double") for p in range(spec.sequence_length)]
        aggs.append(F.sum(sum(vals[1:], vals[0])).alias(f"seq:s{c}"))
        aggs.append(F.sum(sum([v * v for v in vals[1:]], vals[0] * vals[0])).alias(f"seq:q{c}"))
    # some 250 aggregates: past the 100 fields at which Spark gives up whole-stage code generation, the update
    # of every buffer becomes one generated projection whose compilation alone took ~6 s of a 13 s job
    with session_conf(train.sparkSession, {"spark.sql.codegen.maxFields": str(max(100, 4 * len(aggs)))}):
        row = train.agg(*aggs).collect()[0].asDict()
    mean = [float(row[f"m:{n}"] or 0.0) for n in numeric]
    low = [float(row[f"lo:{n}"] or 0.0) for n in numeric]
    high = [float(row[f"hi:{n}"] or 0.0) for n in numeric]
    std = [max(float(row[f"s:{n}"] or 0.0), (hi - lo) / MAX_SD) or 1.0 for n, lo, hi in zip(numeric, low, high)]
    constant = [n for n in numeric if not float(row[f"s:{n}"] or 0.0) > 1e-12]
    n = float(row["seq:n"] or 0.0) or 1.0
    seq_mean, seq_std = [], []
    for c in range(nch):
        m = float(row[f"seq:s{c}"] or 0.0) / n
        v = float(row[f"seq:q{c}"] or 0.0) / n - m * m
        seq_mean.append(m)
        seq_std.append(math.sqrt(v) if v > 1e-12 else 1.0)
    vocab: dict[str, list[str]] = {name: [] for name in spec.categorical_inputs}
    if spec.categorical_inputs:         # every categorical's value counts in one job (a job costs seconds)
        values = F.explode(F.array(*[F.struct(F.lit(n).alias("input"), F.col(n).cast("string").alias("value"))
                                     for n in spec.categorical_inputs])).alias("v")
        counts = (train.select(values).select("v.input", "v.value").groupBy("input", "value").count()
                  .where(F.col("count") >= min_count).collect())
        for name in spec.categorical_inputs:
            ordered = sorted(((r["count"], r["value"]) for r in counts if r["input"] == name and r["value"] != UNKNOWN),
                             key=lambda t: (-t[0], t[1]))
            vocab[name] = [v for _, v in ordered[:max_vocabulary]]
    spec.stats = {**spec.stats, "numeric_mean": mean, "numeric_std": std, "numeric_min": low, "numeric_max": high,
                  "sequence_mean": seq_mean, "sequence_std": seq_std, "constant_numeric": constant,
                  "vocabularies": vocab}
    if "y:buyers" in row:
        spec.stats["spend_labels"] = {"buyers": int(row["y:buyers"] or 0), "max": float(row["y:max"] or 0.0),
                                      "log_min": row["y:log_min"], "log_max": row["y:log_max"]}
    return spec


def input_arrays(features: "pd.DataFrame", spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The network's input arrays from gold.customer_features rows in pandas: `transformed` then `encoded`
    without Spark, for a model served outside it (`models.pyfunc`: MLflow's `load_model` and `spark_udf`).

    The same arithmetic as the Spark path (sign(x)·log1p(|x|) in double, then float32; the sequence's
    log1p(max(v, 0)) and presence; the vocabulary's 1-based index, 0 for unknown), checked against it column by
    column in tests/models/test_pyfunc.py; the product's own scorer keeps the Spark path, the one training used.
    NaN reads as missing: pandas holds Spark's nulls as NaN (the features tables hold no NaN of their own)."""
    n = len(features)
    numeric = []
    for c in spec.of(NUMERIC):
        x = pd.to_numeric(features[c.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan) \
            if c.name in features else np.full(n, np.nan)
        numeric.append(np.where(np.isnan(x), 0.0, np.sign(x) * np.log1p(np.abs(x))).astype(np.float32))
    for c in spec.of(NUMERIC):
        if c.null_policy == "indicator":
            missing = features[c.name].isna().to_numpy() if c.name in features else np.ones(n, dtype=bool)
            numeric.append(missing.astype(np.float32))
    channels = [features[name].tolist() if name in features else [None] * n for name in SEQUENCE_CHANNELS]
    seq = np.zeros((n, spec.sequence_length, len(SEQUENCE_CHANNELS) + 1), dtype=np.float64)
    for i in range(n):
        first = channels[0][i]
        length = min(len(first) if first is not None else 0, spec.sequence_length)
        for c, values in enumerate(channels):
            v = values[i]
            for p in range(min(length, len(v) if v is not None else 0)):
                if v[p] is not None and not np.isnan(v[p]):
                    seq[i, p, c] = np.log1p(max(float(v[p]), 0.0))
        seq[i, :length, -1] = 1.0
    out = {"numeric": np.stack(numeric, axis=1) if numeric else np.zeros((n, 0), np.float32),
           "sequence": seq.reshape(n, -1).astype(np.float32)}
    for name in spec.categorical_inputs:
        index = {v: i + 1 for i, v in enumerate(spec.vocabulary(name))}
        values = features[name].tolist() if name in features else [None] * n
        out[f"cat_{name}"] = np.array([0 if v is None or (isinstance(v, float) and np.isnan(v))
                                       else index.get(str(v), 0) for v in values], dtype=np.int32)
    return out


def encoded(transformed_rows: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Categoricals as vocabulary indices (0 = unknown or unseen in training), everything else as is."""
    out = transformed_rows
    for name in spec.categorical_inputs:
        vocab = spec.vocabulary(name)
        mapping = F.create_map(*[x for i, v in enumerate(vocab) for x in (F.lit(v), F.lit(i + 1))]) if vocab else None
        idx = F.coalesce(mapping[F.col(name)], F.lit(0)) if mapping is not None else F.lit(0)
        out = out.withColumn(name, idx.cast("int"))
    return out


def model_inputs(features: DataFrame, spec: FeatureSpec, carry: Sequence[str] = ()) -> DataFrame:
    """The columns the network reads, from gold.customer_features rows: used by training and scoring alike
    (`carry`: more columns kept as they are, e.g. what the scorer computes in its own batches)."""
    return encoded(transformed(features, spec, carry), spec)



def packed(encoded_rows: DataFrame, spec: FeatureSpec) -> DataFrame:
    """The numeric and the sequence inputs of `encoded` rows as two fixed-length float arrays (`numeric`,
    `sequence`, in the order of `numeric_inputs` and `sequence_inputs`); every other column kept.

    Why: a reader then gets one matrix per input and row group instead of hundreds of column vectors to stack
    for every batch (the training loader's main cost)."""
    blocks = {NUMERIC_BLOCK: spec.numeric_inputs, SEQUENCE_BLOCK: spec.sequence_inputs}
    inside = {n for names in blocks.values() for n in names}
    keep = [c for c in encoded_rows.columns if c not in inside and c not in blocks]
    return encoded_rows.select(*keep, *(F.array(*(F.col(n).cast("float") for n in names)).alias(block)
                                        for block, names in blocks.items()))
