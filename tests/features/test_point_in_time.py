"""Point in time, as properties of the real clean -> features path.

Raw rows (as bronze holds them: real user ids, `updated_at` apart from the event time) go through the cleaning
functions (pseudonyms, rules, versions) and the feature and label builders. For generated data D and changes that
happen at or after S (new orders, events and reviews; status changes and amount corrections of orders placed
before S; profile edits; review edits; late rows whose event is before S but whose `updated_at` is at or after
S), the features at S of D and of D + changes must be identical. Labels: the same with S + H. The counter-test
runs the same property through the old read path (each key's latest version, whatever its time) and must fail.

Size and time (2 cores, alone): 4 examples of 16 independent shops each (disjoint ids, computed in one Spark run),
so 64 shops with 1-6 changes each, in about 100 s; the counter-test about 55 s; the label properties 35 s.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from chispa.dataframe_comparer import DataFramesNotEqualError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F
from pyspark.sql import types as T

from customer_value.cleaning import tables as clean
from customer_value.cleaning.pseudonymise import DEMO_KEY, hmac_hex
from customer_value.config import load_config
from customer_value.features.build import customer_features
from customer_value.labels.build import customer_labels
from customer_value.schemas import RAW_SOURCES
from tests.conftest import ROOT

S = date(2024, 6, 1)
H = 30
AT_S = datetime(2024, 6, 1)
HORIZON_END = AT_S + timedelta(days=H)
SHOPS_PER_EXAMPLE = 16  # independent shops (disjoint customers) per Spark run: 16 examples for the price of one
STATUSES = ["completed", "cancelled", "returned"]
CONF = load_config(ROOT / "conf" / "local.yaml", ["features.windows=[7, 30]", "features.sequence_length=3",
                                                  "cleaning.as_of=2025-12-31"])
CFG = CONF.features
INGESTED = datetime(2026, 1, 1)
EXAMPLES = 4      # hypothesis examples, each of SHOPS_PER_EXAMPLE shops


# --- raw rows, as bronze has them ---------------------------------------------------------------------------
def _bronze(spark, source: str, rows: list[dict]):
    src = RAW_SOURCES[source]
    schema = src.typed_schema()
    money = {f.name for f in schema.fields if isinstance(f.dataType, T.DecimalType)}
    data = [(*[Decimal(r[c]) if c in money and r.get(c) is not None else r.get(c) for c in src.names],
             "file:/landing/" + source, "utf-8", [], "b1", INGESTED) for r in rows]
    for name, dtype in (("_source_file", T.StringType()), ("_encoding", T.StringType()),
                        ("_issues", T.ArrayType(T.StringType())), ("_batch_id", T.StringType()),
                        ("_ingested_at", T.TimestampType())):
        schema = schema.add(name, dtype)
    return spark.createDataFrame(data, schema)


def silver(spark, raw: dict[str, list[dict]]):
    """The real cleaning functions on raw rows: the stages per source."""
    ctx = clean.Context(CONF.cleaning, DEMO_KEY, CONF.cleaning.today())
    return clean.silver_stages({s: _bronze(spark, s, raw[s]) for s in RAW_SOURCES}, ctx)


def _stored(df):
    """Materialised, as the job reads silver from Delta (else every feature group would recompute the cleaning)."""
    return df.localCheckpoint(eager=True)


def versioned(stages):
    """What the features job reads: the histories of keyed tables, the others as they are."""
    return tuple(_stored(df) for df in (stages["users"].history, stages["orders"].history, stages["order_items"].silver,
                                        stages["events"].silver, stages["reviews"].history))


def latest_versions(stages):
    """The old read path: each key's latest version, as if it had always been so."""
    def forever(df):
        return df.withColumn("valid_from", F.lit(datetime(1970, 1, 1))).withColumn("valid_to", F.lit(None).cast("timestamp"))
    return tuple(_stored(df) for df in (forever(stages["users"].silver), forever(stages["orders"].silver),
                                        stages["order_items"].silver, stages["events"].silver,
                                        forever(stages["reviews"].silver)))


# --- strategies -----------------------------------------------------------------------------------------------
seconds = st.integers(1, 3 * 86400)
before_s = st.one_of(st.just(-1), st.just(-86400), st.integers(-300 * 86400, -1))      # seconds from S
at_or_after = st.one_of(st.just(0), st.just(1), st.just(86400), st.integers(0, 120 * 86400))
money = st.integers(100, 50_000).map(lambda c: f"{c / 100:.2f}")


def users_of(k: int) -> list[str]:
    return [f"u{k:03d}{i:04d}" for i in range(3)]


@st.composite
def shops(draw, k: int = 0):
    """D: three customers, orders around S (some recorded days after they were placed), items, events, reviews.
    Every id carries `k`, so shops with different `k` share nothing and can be computed together."""
    ids = users_of(k)
    users = [{"user_id": u, "birth_date": date(1960 + 10 * i, 1 + 5 * i, 15), "gender": "f", "city": "Berlin",
              "signup_date": date(2023, 1 + 3 * i, 10), "acquisition_channel": "email",
              "updated_at": datetime(2023, 1 + 3 * i, 10, 12)} for i, u in enumerate(ids)]
    orders, items, events, reviews = [], [], [], []
    for i in range(draw(st.integers(1, 8))):
        placed = AT_S + timedelta(seconds=draw(st.one_of(before_s, at_or_after)))
        orders.append({"order_id": f"o{k}-{i}", "user_id": draw(st.sampled_from(ids)), "order_ts": placed,
                       "updated_at": placed + timedelta(seconds=draw(seconds)), "status": draw(st.sampled_from(STATUSES)),
                       "payment_method": "card", "discount": "0.00", "total": draw(money)})
        items.append({"order_id": f"o{k}-{i}", "product_id": "p1", "category": draw(st.sampled_from(["home", "toys"])),
                      "quantity": 1 + i % 3, "unit_price": "10.00"})
    for i in range(draw(st.integers(0, 6))):
        events.append({"user_id": draw(st.sampled_from(ids)), "event_ts": AT_S + timedelta(seconds=draw(before_s)),
                       "event_type": draw(st.sampled_from(["page_view", "cart_add", "search"])), "session_id": f"s{k}-{i}"})
    for i in range(draw(st.integers(0, 3))):
        written = AT_S + timedelta(seconds=draw(before_s))
        reviews.append({"review_id": f"r{k}-{i}", "user_id": draw(st.sampled_from(ids)), "review_ts": written,
                        "rating": draw(st.integers(1, 5)), "body": draw(st.sampled_from(["Excellent", "Terrible"])),
                        "updated_at": written + timedelta(seconds=draw(seconds))})
    return {"users": users, "orders": orders, "order_items": items, "events": events, "reviews": reviews}


@st.composite
def changes(draw, shop: dict, since: datetime, min_size: int = 1):
    """Rows recorded at or after `since`: every kind of change a later export can bring."""
    ids = [u["user_id"] for u in shop["users"]]
    tag = ids[0]
    out = {k: [] for k in shop}
    later = lambda: since + timedelta(seconds=draw(at_or_after))  # noqa: E731
    for n in range(draw(st.integers(min_size, 6))):
        kind = draw(st.sampled_from(["new_order", "status", "amount", "late_order", "profile", "event", "review",
                                     "review_edit"]))
        if kind in ("status", "amount") and shop["orders"]:
            old = draw(st.sampled_from(shop["orders"]))
            new = {**old, "updated_at": max(later(), old["updated_at"] + timedelta(seconds=1))}
            if kind == "status":
                new["status"] = draw(st.sampled_from([s for s in STATUSES if s != old["status"]]))
            else:
                new["total"] = draw(money.filter(lambda t: t != old["total"]))
            out["orders"].append(new)
        elif kind in ("new_order", "late_order"):
            placed = later() if kind == "new_order" else since - timedelta(seconds=draw(st.integers(1, 200 * 86400)))
            oid = f"x{tag}-{n}"
            out["orders"].append({"order_id": oid, "user_id": draw(st.sampled_from(ids)), "order_ts": placed,
                                  "updated_at": max(later(), placed), "status": draw(st.sampled_from(STATUSES)),
                                  "payment_method": "card", "discount": "0.00", "total": draw(money)})
            out["order_items"].append({"order_id": oid, "product_id": "p2", "category": "books", "quantity": 2,
                                       "unit_price": "5.00"})
        elif kind == "profile":
            old = draw(st.sampled_from(shop["users"]))
            out["users"].append({**old, "city": draw(st.sampled_from(["Paris", "Wien", "Gotham"])),
                                 "birth_date": date(1990, 3, 3), "acquisition_channel": "social", "updated_at": later()})
        elif kind == "event":
            out["events"].append({"user_id": draw(st.sampled_from(ids)), "event_ts": later(),
                                  "event_type": "cart_add", "session_id": f"y{tag}-{n}"})
        elif kind == "review_edit" and shop["reviews"]:
            old = draw(st.sampled_from(shop["reviews"]))
            out["reviews"].append({**old, "rating": 1 + old["rating"] % 5, "body": "Awful, refund",
                                   "updated_at": max(later(), old["updated_at"] + timedelta(seconds=1))})
        else:  # a review written after `since`, or one written before it and recorded late
            written = later() if draw(st.booleans()) else since - timedelta(seconds=draw(st.integers(1, 86400 * 30)))
            out["reviews"].append({"review_id": f"y{tag}-{n}", "user_id": draw(st.sampled_from(ids)), "review_ts": written,
                                   "rating": 2, "body": "Terrible", "updated_at": max(later(), written)})
    return out


def _plus(shop, extra):
    return {k: shop[k] + extra[k] for k in shop}


def _together(shops_):
    return {k: [row for shop in shops_ for row in shop[k]] for k in shops_[0]}


@st.composite
def worlds(draw, since: datetime):
    """SHOPS_PER_EXAMPLE independent shops, without and with their changes since `since`."""
    shops_ = [draw(shops(k)) for k in range(SHOPS_PER_EXAMPLE)]
    return _together(shops_), _together([_plus(s, draw(changes(s, since))) for s in shops_])


def features_at_s(spark, raw, read=versioned):
    return customer_features(*read(silver(spark, raw)), S, CFG)


def labels_at_s(spark, raw, read=versioned):
    customers, orders, _, events, _ = read(silver(spark, raw))
    return customer_labels(customers, orders, events, S, H)


def _same(actual, expected):
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def _feature_property(spark, data, read):
    shop, changed = data.draw(worlds(AT_S))
    expected = features_at_s(spark, shop, read)
    assert expected.count() >= SHOPS_PER_EXAMPLE
    _same(features_at_s(spark, changed, read), expected)


QUICK = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=EXAMPLES, **QUICK)
@given(data=st.data())
def test_nothing_recorded_at_or_after_the_snapshot_changes_a_feature(spark, data):
    _feature_property(spark, data, versioned)


def test_the_property_catches_the_old_latest_version_read_path(spark):
    """The same property, reading each key's latest version (the old path): hypothesis finds a counterexample."""
    bites = settings(max_examples=EXAMPLES, phases=[Phase.generate], **QUICK)(given(data=st.data())(
        lambda data: _feature_property(spark, data, latest_versions)))
    with pytest.raises(DataFramesNotEqualError):
        bites()


@settings(max_examples=EXAMPLES // 2, **QUICK)
@given(data=st.data())
def test_nothing_recorded_at_or_after_the_horizon_changes_a_label(spark, data):
    shop, changed = data.draw(worlds(HORIZON_END))
    _same(labels_at_s(spark, changed), labels_at_s(spark, shop))


@settings(max_examples=EXAMPLES // 2, **QUICK)
@given(data=st.data())
def test_labels_count_the_horizon_as_known_at_its_end(spark, data):
    """future_spend and future_orders equal a plain count: orders placed in [S, S + H), in their last version
    recorded before S + H, completed."""
    shop, _ = data.draw(worlds(HORIZON_END))
    got = {r.customer_id: r for r in labels_at_s(spark, shop).collect()}
    by_user = {}
    for o in shop["orders"]:
        if AT_S <= o["order_ts"] < HORIZON_END and o["updated_at"] < HORIZON_END and o["status"] == "completed":
            by_user.setdefault(o["user_id"], []).append(float(o["total"]))
    users = [u["user_id"] for u in shop["users"]]
    assert set(got) == {hmac_hex(DEMO_KEY, u) for u in users}  # all signed up long before S
    for user in users:
        row = got[hmac_hex(DEMO_KEY, user)]
        mine = by_user.get(user, [])
        assert (row.future_orders, row.future_spend, row.churned) == (len(mine), pytest.approx(sum(mine)), not mine)


@settings(max_examples=1, **QUICK)
@given(data=st.data())
def test_snapshots_written_together_are_each_as_computed_alone(spark, data):
    """The jobs compute several snapshots in one plan (rows tagged with their snapshot): each snapshot's rows
    must be exactly those of that snapshot alone, and the property above must hold for S inside a stack with a
    later snapshot (S + 60, which sees everything the changes add)."""
    from customer_value.features.run import snapshot_features, snapshot_labels

    shop, changed = data.draw(worlds(AT_S))
    later = S + timedelta(days=60)
    at_s = {}
    for name, raw in (("shop", shop), ("changed", changed)):
        customers, orders, items, events, reviews = versioned(silver(spark, raw))
        frames = {"customers": customers, "orders": orders, "order_items": items, "events": events,
                  "reviews": reviews}
        both = snapshot_features(frames, [S, later], CFG).cache()
        for s in (S, later):
            _same(both.where(F.col("snapshot_date") == F.lit(s)),
                  customer_features(customers, orders, items, events, reviews, s, CFG))
        at_s[name] = both.where(F.col("snapshot_date") == F.lit(S))
        labels = snapshot_labels(frames, [S - timedelta(days=H), S], H).cache()
        for s in (S - timedelta(days=H), S):
            _same(labels.where(F.col("snapshot_date") == F.lit(s)), customer_labels(customers, orders, events, s, H))
    _same(at_s["changed"], at_s["shop"])
