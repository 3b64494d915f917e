"""Tiny silver-shaped frames for feature tests, written inline: the version histories of customers, orders and
reviews (one version each, known from the event's own time unless `updated_at` says otherwise), items and events."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

CUSTOMERS = ("customer_id string, signup_date date, birth_month date, gender string, city string, "
             "acquisition_channel string, updated_at timestamp, dq_flags array<string>, valid_from timestamp, "
             "valid_to timestamp")
ORDERS = ("order_id string, customer_id string, order_ts timestamp, updated_at timestamp, status string, "
          "payment_method string, discount decimal(12,2), total decimal(12,2), item_count int, "
          "dq_flags array<string>, valid_from timestamp, valid_to timestamp")
ITEMS = "order_id string, product_id string, category string, quantity int, unit_price decimal(12,2), dq_flags array<string>"
EVENTS = "customer_id string, event_ts timestamp, event_type string, product_id string, session_id string, dq_flags array<string>"
REVIEWS = ("review_id string, customer_id string, order_id string, product_id string, review_ts timestamp, rating int, "
           "body string, updated_at timestamp, dq_flags array<string>, valid_from timestamp, valid_to timestamp")
OPENED = datetime(2023, 1, 1)


def customer(cid: str, signup: date | None = date(2024, 1, 1), city: str = "Berlin", birth_month: date | None = date(1995, 5, 1)):
    known = datetime.combine(signup, datetime.min.time()) if signup else OPENED
    return (cid, signup, birth_month, "f", city, "email", known, [], known, None)


def order(oid: str, cid: str, ts: datetime, total: float, status: str = "completed", discount: float = 0.0, flags=(),
          items: int = 1, updated_at: datetime | None = None):
    t = Decimal(f"{total:.2f}")
    known = updated_at or ts
    return (oid, cid, ts, known, status, "card", Decimal(f"{discount:.2f}"), t, items, list(flags), known, None)


def item(oid: str, category: str, quantity: int = 1, price: float = 10.0):
    return (oid, f"p-{category}", category, quantity, Decimal(f"{price:.2f}"), [])


def event(cid: str, ts: datetime, kind: str, session: str = "s1"):
    return (cid, ts, kind, None, session, [])


def review(rid: str, cid: str, ts: datetime, rating: int, body: str):
    return (rid, cid, None, None, ts, rating, body, ts, [], ts, None)


def frames(spark, customers=(), orders=(), items=(), events=(), reviews=()):
    return (spark.createDataFrame(list(customers), CUSTOMERS), spark.createDataFrame(list(orders), ORDERS),
            spark.createDataFrame(list(items), ITEMS), spark.createDataFrame(list(events), EVENTS),
            spark.createDataFrame(list(reviews), REVIEWS))
