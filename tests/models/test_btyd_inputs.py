"""BG/NBD + Gamma-Gamma as inputs: each snapshot's inputs come from a fit on that snapshot alone (a later
snapshot's rows change nothing earlier), customers without a purchase get nulls, and the spec keeps the horizon
through the statistics' fit."""

from __future__ import annotations

from datetime import date

import numpy as np
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from customer_value.baselines.btyd import BgNbd, simulate_bgnbd
from customer_value.models.btyd_inputs import (BTYD_INPUTS, HORIZON_KEY, in_batch, uses_btyd, with_btyd_inputs,
                                               with_btyd_inputs_per_snapshot, with_btyd_spec)
from customer_value.models.spec import NUMERIC, FeatureColumn, FeatureSpec, fit_stats, model_inputs, transformed

A, B = date(2024, 1, 1), date(2024, 4, 1)
COLS = ["customer_id", "snapshot_date", "frequency_days", "bgnbd_x", "bgnbd_t_x", "bgnbd_T", "monetary_total",
        "monetary_first"]


def shop(spark, snapshot: date, seed: int, n: int = 1000):
    """Buyers drawn from a BG/NBD process, and every tenth customer without a purchase."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(100, 400, n)
    xs, txs = simulate_bgnbd(BgNbd(r=0.6, alpha=40.0, a=0.7, b=3.0), T, rng)
    rows = []
    for c in range(n):
        if c % 10 == 0:
            rows.append((f"c{c}", snapshot, 0, None, None, None, None, None))
            continue
        x, first = int(xs[c]), float(rng.gamma(4, 15))
        rows.append((f"c{c}", snapshot, x + 1, float(x), float(txs[c]), float(T[c]),
                     first + x * float(rng.gamma(4, 15)), first))
    return spark.createDataFrame(rows, "customer_id string, snapshot_date date, frequency_days bigint, bgnbd_x double, "
                                       "bgnbd_t_x double, bgnbd_T double, monetary_total double, monetary_first double")


def ordered(df):
    return df.orderBy("snapshot_date", "customer_id")


def test_each_snapshot_gets_the_inputs_of_its_own_fit(spark):
    a, b = shop(spark, A, 1), shop(spark, B, 2)
    both = with_btyd_inputs_per_snapshot(a.unionByName(b), [A, B], 90, 10_000)
    alone = with_btyd_inputs(a, 90, 10_000)
    assert_approx_df_equality(ordered(both.where(F.col("snapshot_date") == A)), ordered(alone), 1e-9,
                              ignore_nullable=True)
    # a different later snapshot changes nothing at A (no fit pooled across snapshots)
    other = with_btyd_inputs_per_snapshot(a.unionByName(shop(spark, B, 99)), [A, B], 90, 10_000)
    assert_approx_df_equality(ordered(other.where(F.col("snapshot_date") == A)), ordered(alone), 1e-9,
                              ignore_nullable=True)
    # ... while B's own inputs do change with B's rows
    changed = ordered(other.where(F.col("snapshot_date") == B)).select("btyd_expected_orders").collect()
    before = ordered(both.where(F.col("snapshot_date") == B)).select("btyd_expected_orders").collect()
    assert changed != before


def test_customers_without_a_purchase_have_no_btyd_inputs(spark):
    out = with_btyd_inputs(shop(spark, A, 3), 90, 10_000).toPandas()
    never = out["frequency_days"] == 0
    assert never.sum() == 100
    assert out.loc[never, list(BTYD_INPUTS)].isna().all().all()
    assert out.loc[~never, list(BTYD_INPUTS)].notna().all().all()
    assert ((out.loc[~never, "btyd_probability_alive"] > 0) & (out.loc[~never, "btyd_probability_alive"] <= 1)).all()
    assert (out.loc[~never, "btyd_expected_spend"] > 0).all()


def test_the_spec_keeps_the_horizon_through_the_statistics(spark):
    spec = with_btyd_spec(FeatureSpec([FeatureColumn("frequency_days", NUMERIC, "bigint", "zero")], 1), 90)
    assert uses_btyd(spec) and spec.numeric_inputs[:5] == ["frequency_days", *BTYD_INPUTS]
    rows = with_btyd_inputs(shop(spark, A, 4), 90, 10_000).select(
        "*", *(F.array(F.lit(1.0)).alias(n) for n in ("seq_days_before", "seq_amount", "seq_items")))
    fitted = fit_stats(transformed(rows, spec), spec)
    assert fitted.stats[HORIZON_KEY] == 90 and len(fitted.stats["numeric_mean"]) == len(spec.numeric_inputs)


def test_the_inputs_are_the_baselines_own_predictions(spark):
    """The column-wise UDF gives exactly what the BG/NBD baseline's predict_clv gives each buyer."""
    from customer_value.baselines.clv import fit_clv, predict_clv

    a = shop(spark, A, 5)
    got = with_btyd_inputs(a, 90, 10_000)
    preds = predict_clv(fit_clv(a, 10_000), a, 90).select(
        "customer_id", *(F.col(src).alias(name) for name, src in BTYD_INPUTS.items()))
    assert_approx_df_equality(ordered(got), ordered(a.join(preds, "customer_id", "left")), 1e-9, ignore_nullable=True,
                              ignore_column_order=True)


def _with_sequences(rows):
    return rows.select("*", *(F.array(F.lit(1.0)).alias(n) for n in ("seq_days_before", "seq_amount", "seq_items")))


def _btyd_spec():
    return with_btyd_spec(FeatureSpec([FeatureColumn("frequency_days", NUMERIC, "bigint", "zero")], 1), 90)


def test_the_scorers_in_batch_inputs_equal_the_udfs(spark):
    """Scoring fills the four inputs inside its own batches (`in_batch`): the same model inputs, to float32
    rounding, as `model_inputs` over `with_btyd_inputs` (the training path), for buyers and non-buyers alike."""
    spec = _btyd_spec()
    rows = _with_sequences(shop(spark, A, 5))
    expected = model_inputs(with_btyd_inputs(rows, 90, 10_000), spec).toPandas().sort_values("customer_id")
    features, filler = in_batch(rows, spec, 10_000)
    got = filler.fill(model_inputs(features, spec, carry=filler.carried()).toPandas()).sort_values("customer_id")
    inputs = spec.numeric_inputs
    assert {f"{n}__missing" for n in BTYD_INPUTS} <= set(inputs)
    np.testing.assert_allclose(got[inputs].to_numpy(np.float64), expected[inputs].to_numpy(np.float64),
                               rtol=1e-6, atol=1e-6)
    assert got["btyd_expected_orders__missing"].sum() == 100      # the tenth without a purchase


def test_in_batch_inputs_of_a_shop_without_buyers_are_missing(spark):
    spec = _btyd_spec()
    rows = _with_sequences(shop(spark, A, 6).where(F.col("frequency_days") == 0))
    features, filler = in_batch(rows, spec, 10_000)
    assert filler.fitted is None
    got = filler.fill(model_inputs(features, spec, carry=filler.carried()).toPandas())
    assert (got[list(BTYD_INPUTS)] == 0).all().all()
    assert (got[[f"{n}__missing" for n in BTYD_INPUTS]] == 1).all().all()
