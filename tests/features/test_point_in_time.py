"""Leakage, as a property: rows planted the day before S, exactly at S, after S, at S + H and beyond.

No feature may change when rows at or after S are added; no label may change when rows before S or at/after
S + H are added, and labels must equal what a plain count of the horizon's rows says.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_value.config import load_config
from customer_value.features.build import customer_features
from customer_value.labels.build import customer_labels
from tests.conftest import ROOT
from tests.features.tiny import customer, event, frames, item, order, review

S = date(2024, 6, 1)
H = 30
MIDNIGHT_S = datetime(2024, 6, 1)
# offsets in seconds from S 00:00: the edges themselves, and around them
EDGES = [-86400, -1, 0, 1, 86400, H * 86400 - 1, H * 86400, H * 86400 + 1]
offsets = st.one_of(st.sampled_from(EDGES), st.integers(-400 * 86400, 2 * H * 86400))
planted = st.lists(st.tuples(st.sampled_from(["c1", "c2"]), offsets, st.sampled_from(["completed", "cancelled", "returned"]),
                             st.integers(1, 500), st.sampled_from(["page_view", "cart_add", "search"])),
                   min_size=1, max_size=12)
CFG = load_config(ROOT / "conf" / "local.yaml", ["features.windows=[7, 30]", "features.sequence_length=3"]).features


def _build(spark, rows):
    orders, items, events, reviews = [], [], [], []
    for i, (cid, off, status, amount, kind) in enumerate(rows):
        ts = MIDNIGHT_S + timedelta(seconds=off)
        orders.append(order(f"o{i}", cid, ts, float(amount), status=status, items=1 + i % 3))
        items.append(item(f"o{i}", ["home", "toys"][i % 2], 1 + i % 3))
        events.append(event(cid, ts, kind, f"s{i}"))
        reviews.append(review(f"r{i}", cid, ts, 1 + amount % 5, "Excellent" if amount % 2 else "Terrible"))
    customers = [customer("c1", date(2023, 1, 1)), customer("c2", date(2023, 6, 1))]
    return frames(spark, customers, orders, items, events, reviews)


def _table(df) -> pd.DataFrame:
    pdf = df.toPandas()
    pdf = pdf.map(lambda v: tuple(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)
    return pdf.sort_values("customer_id").reset_index(drop=True)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=planted, after=planted)
def test_no_feature_reads_at_or_after_the_snapshot(spark, before, after):
    before = [(c, -abs(o) - 1 if o >= 0 else o, *rest) for c, o, *rest in before]  # strictly before S
    after = [(c, abs(o), *rest) for c, o, *rest in after]                            # at S or later
    only_before = _table(customer_features(*_build(spark, before), S, CFG))
    with_after = _table(customer_features(*_build(spark, before + after), S, CFG))
    pd.testing.assert_frame_equal(with_after, only_before)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=planted)
def test_labels_read_only_the_horizon(spark, rows):
    customers, orders, _, events, _ = _build(spark, rows)
    got = _table(customer_labels(customers, orders, events, S, H)).set_index("customer_id")
    horizon = [(c, a) for c, o, status, a, _ in rows if 0 <= o < H * 86400 and status == "completed"]
    for cid in ("c1", "c2"):
        mine = [a for c, a in horizon if c == cid]
        assert got.loc[cid, "future_orders"] == len(mine)
        assert got.loc[cid, "future_spend"] == float(sum(mine))
        assert bool(got.loc[cid, "churned"]) == (not mine)
    # and rows outside [S, S + H) can be dropped without changing a label
    inside = [r for r in rows if 0 <= r[1] < H * 86400]
    customers, orders, _, events, _ = _build(spark, inside)
    again = _table(customer_labels(customers, orders, events, S, H)).set_index("customer_id")
    pd.testing.assert_frame_equal(again, got)
