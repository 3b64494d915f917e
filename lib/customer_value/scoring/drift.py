"""Population stability index (PSI): how far a scored snapshot's distributions moved from the model's training
reference, per feature and for the value score and churn probability.

    PSI = Σ_bins (cur − ref) · ln(cur / ref)

over the reference's quantile bins (so every bin holds about 1/bins of the reference), with missing values a bin
of their own. Quantile bins make PSI invariant to any monotone transform of a column, so the features are
compared as stored, not as the network sees them. The value score is a percentile within each snapshot and so
uniform by construction; its drift is measured on the expected spend against the reference's quantiles, which
is the value score the reference snapshot's customers would have been measured against.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

FLOOR = 1e-4     # a bin's share never counts below this (an empty bin would make PSI infinite)
NULL_BIN = -1


def bucket(col: F.Column, edges: Sequence[float]) -> F.Column:
    """The bin index of each value: the number of edges below it (0 .. len(edges)), NULL_BIN when missing."""
    count = F.lit(0)
    for e in edges:
        count = count + F.when(col > F.lit(float(e)), 1).otherwise(0)
    return F.when(col.isNull() | F.isnan(col), F.lit(NULL_BIN)).otherwise(count)


def bin_shares(df: DataFrame, edges: dict[str, list[float]]) -> dict[str, dict[int, float]]:
    """Share of rows per bin of every column, in one Spark pass (rows → (column, bin) pairs, counted)."""
    if not edges:
        return {}
    pairs = F.explode(F.array(*(F.struct(F.lit(c).alias("column"),
                                         bucket(F.col(c).cast("double"), e).alias("bin")) for c, e in edges.items())))
    counts = df.select(pairs.alias("p")).groupBy("p.column", "p.bin").count().collect()
    totals: dict[str, int] = {}
    for r in counts:
        totals[r["column"]] = totals.get(r["column"], 0) + r["count"]
    out: dict[str, dict[int, float]] = {c: {} for c in edges}
    for r in counts:
        out[r["column"]][int(r["bin"])] = r["count"] / totals[r["column"]]
    return out


def reference_edges(df: DataFrame, columns: Sequence[str], bins: int, relative_error: float = 1e-3) -> dict[str, list[float]]:
    """Inner quantile edges (bins − 1 of them, duplicates merged) of every column on the reference rows."""
    probs = [i / bins for i in range(1, bins)]
    cast = df.select(*(F.col(c).cast("double").alias(c) for c in columns))
    qs = cast.approxQuantile(list(columns), probs, relative_error)
    return {c: sorted(set(q)) for c, q in zip(columns, qs)}


def outside_range(df: DataFrame, ranges: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Rows of `df` whose value of each column lies outside its (min, max), in one Spark pass: customers the
    model scores from inputs it never saw. The network clips them to the range (`models.network`): bounded,
    but extrapolated all the same, so the monitor counts them."""
    if not ranges:
        return {}
    margin = 1e-6      # the range went through float32 and a log: a training value on its edge is not outside
    row = df.agg(*(F.sum(F.when((F.col(c) < lo - margin * (1 + abs(lo))) | (F.col(c) > hi + margin * (1 + abs(hi))),
                                1).otherwise(0)).alias(c) for c, (lo, hi) in ranges.items())).collect()[0]
    return {c: int(row[c] or 0) for c in ranges}


def psi(reference: dict[int, float], current: dict[int, float]) -> float:
    keys = set(reference) | set(current)
    r = np.array([max(reference.get(k, 0.0), FLOOR) for k in keys])
    c = np.array([max(current.get(k, 0.0), FLOOR) for k in keys])
    return float(np.sum((c - r) * np.log(c / r)))


def status(value: float, watch: float, retrain: float) -> str:
    return "retrain" if value > retrain else "watch" if value >= watch else "stable"


def save_reference(path: Path, edges: dict[str, list[float]], shares: dict[str, dict[int, float]], meta: dict) -> None:
    """Written whole or not at all (a temporary file renamed over it): its presence tells the scorer the version's
    reference is complete, so a scorer killed while writing it must not leave half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "columns": {c: {"edges": edges[c],
                                                             "shares": {str(k): v for k, v in shares[c].items()}}
                                                         for c in edges}}, indent=1))
    os.replace(tmp, path)


def load_reference(path: Path) -> tuple[dict[str, list[float]], dict[str, dict[int, float]], dict]:
    raw = json.loads(path.read_text())
    cols = raw["columns"]
    return ({c: v["edges"] for c, v in cols.items()},
            {c: {int(k): s for k, s in v["shares"].items()} for c, v in cols.items()}, raw["meta"])
