"""Tiny silver-shaped frames for feature tests, written inline."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

CUSTOMERS = "customer_id string, signup_date date, age_band string, gender string, city string, acquisition_channel string, dq_flags array<string>"
ORDERS = ("order_id string, customer_id string, order_ts timestamp, updated_at timestamp, status string, "
          "payment_method string, discount decimal(12,2), total decimal(12,2), total_capped decimal(12,2), item_count int, "
          "dq_flags array<string>")
ITEMS = "order_id string, product_id string, category string, quantity int, unit_price decimal(12,2), dq_flags array<string>"
EVENTS = "customer_id string, event_ts timestamp, event_type string, product_id string, session_id string, dq_flags array<string>"
REVIEWS = ("review_id string, customer_id string, order_id string, product_id string, review_ts timestamp, rating int, "
           "body string, dq_flags array<string>")


def customer(cid: str, signup: date | None = date(2024, 1, 1), city: str = "Berlin"):
    return (cid, signup, "25-34", "f", city, "email", [])


def order(oid: str, cid: str, ts: datetime, total: float, status: str = "completed", discount: float = 0.0, flags=(),
          items: int = 1):
    t = Decimal(f"{total:.2f}")
    return (oid, cid, ts, ts, status, "card", Decimal(f"{discount:.2f}"), t, t, items, list(flags))


def item(oid: str, category: str, quantity: int = 1, price: float = 10.0):
    return (oid, f"p-{category}", category, quantity, Decimal(f"{price:.2f}"), [])


def event(cid: str, ts: datetime, kind: str, session: str = "s1"):
    return (cid, ts, kind, None, session, [])


def review(rid: str, cid: str, ts: datetime, rating: int, body: str):
    return (rid, cid, None, None, ts, rating, body, [])


def frames(spark, customers=(), orders=(), items=(), events=(), reviews=()):
    return (spark.createDataFrame(list(customers), CUSTOMERS), spark.createDataFrame(list(orders), ORDERS),
            spark.createDataFrame(list(items), ITEMS), spark.createDataFrame(list(events), EVENTS),
            spark.createDataFrame(list(reviews), REVIEWS))
