"""Dirty data, injected on purpose and written down: each fault's kind and line number go into the manifest,
so ingest and clean can be tested against exactly what was planted.

Row faults either replace a value in a clean row (missing, wrong type, bad amount, bad timestamp, broken
line) or add a row (exact duplicate, re-sent order, row of an unknown user); each row carries at most one
fault. File faults change a whole file (Latin-1 instead of UTF-8, an extra or a missing column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

from customer_value.config import SyntheticConfig


@dataclass(frozen=True)
class SourceFaults:
    """Which faults a source can have, and on which fields."""

    name: str
    fmt: str  # "csv" or "jsonl"
    required: tuple[str, ...]
    wrong_type: dict[str, str] = field(default_factory=dict)  # field -> a value of the wrong type
    amount: str | None = None
    absurd_field: str | None = None
    absurd_value: str = "9999999.99"
    timestamp: str | None = None
    timestamp_iso: bool = False
    resent: bool = False
    unknown_user: bool = False
    extra_column: str | None = None
    missing_column: str | None = None
    encoding: bool = False


SOURCES: dict[str, SourceFaults] = {
    s.name: s
    for s in [
        SourceFaults("users", "csv", required=("signup_date",), wrong_type={"birth_date": "31.02.1990"},
                     timestamp="signup_date", extra_column="loyalty_tier", missing_column="phone", encoding=True),
        SourceFaults("orders", "csv", required=("user_id", "order_ts", "total"), wrong_type={"total": "12,50 EUR"},
                     amount="total", absurd_field="total", timestamp="order_ts", resent=True, unknown_user=True,
                     extra_column="coupon_code", missing_column="payment_method"),
        SourceFaults("order_items", "csv", required=("order_id", "quantity", "unit_price"),
                     wrong_type={"quantity": "two"}, amount="unit_price", absurd_field="quantity",
                     absurd_value="100000", extra_column="warehouse", missing_column="category"),
        SourceFaults("events", "jsonl", required=("user_id", "event_ts", "event_type"),
                     wrong_type={"event_ts": "yesterday"}, timestamp="event_ts", timestamp_iso=True,
                     unknown_user=True),
        SourceFaults("reviews", "jsonl", required=("user_id", "rating"), wrong_type={"rating": "five"}, encoding=True),
    ]
}
ROW_FAULTS = ("missing_value", "wrong_type", "negative_amount", "absurd_amount", "future_timestamp",
              "before_opening", "malformed_line", "broken_json")
ADDED_FAULTS = ("duplicate_row", "resent_order", "unknown_user")


@dataclass
class FileFaults:
    """What was planted in one file: its layout, encoding and faulty line numbers (1-based, header = 1)."""

    encoding: str = "utf-8"
    layout: str = "standard"
    lines: dict[str, list[int]] = field(default_factory=dict)


def _applicable(src: SourceFaults, kind: str) -> bool:
    return {
        "missing_value": True,
        "wrong_type": bool(src.wrong_type),
        "negative_amount": src.amount is not None,
        "absurd_amount": src.absurd_field is not None,
        "future_timestamp": src.timestamp is not None,
        "before_opening": src.timestamp is not None,
        "malformed_line": src.fmt == "csv",
        "broken_json": src.fmt == "jsonl",
        "duplicate_row": True,
        "resent_order": src.resent,
        "unknown_user": src.unknown_user,
    }[kind]


def _shift_ts(value: str, days: int, iso: bool) -> str:
    ts = pd.Timestamp(value.rstrip("Z")) + timedelta(days=days)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ" if iso else "%Y-%m-%d %H:%M:%S")


def _timestamp(day: pd.Timestamp, iso: bool, date_only: bool) -> str:
    if date_only:
        return day.strftime("%Y-%m-%d")
    return day.strftime("%Y-%m-%dT%H:%M:%SZ" if iso else "%Y-%m-%d %H:%M:%S")


def inject(frame: pd.DataFrame, src: SourceFaults, cfg: SyntheticConfig, rng: np.random.Generator,
           block: int) -> tuple[list[str], FileFaults]:
    """The file's lines (header included for CSV) with faults planted, and the record of what was planted."""
    rates = cfg.dirty
    df = frame.astype(object).reset_index(drop=True)
    n = len(df)
    tags = np.full(n, None, dtype=object)
    faults = FileFaults()

    # Replace-faults: disjoint clean rows.
    order = rng.permutation(n)
    taken = 0
    for kind in ROW_FAULTS:
        if not _applicable(src, kind):
            continue
        k = int(rng.binomial(n, getattr(rates, kind))) if n else 0
        rows, taken = order[taken:taken + k], taken + k
        for i in rows:
            if kind == "missing_value":
                col = src.required[rng.integers(len(src.required))]
                df.at[i, col] = None
                tags[i] = f"missing_value:{col}"
                continue
            if kind == "wrong_type":
                col, bad = next(iter(src.wrong_type.items()))
                df.at[i, col] = bad
            elif kind == "negative_amount":
                df.at[i, src.amount] = f"-{df.at[i, src.amount]}"
            elif kind == "absurd_amount":
                df.at[i, src.absurd_field] = src.absurd_value
            elif kind == "future_timestamp":
                day = pd.Timestamp(cfg.export_date) + timedelta(days=int(rng.integers(30, 400)), hours=12)
                df.at[i, src.timestamp] = _timestamp(day, src.timestamp_iso, src.name == "users")
            elif kind == "before_opening":
                day = pd.Timestamp("1999-01-01") + timedelta(days=int(rng.integers(0, 365)), hours=12)
                df.at[i, src.timestamp] = _timestamp(day, src.timestamp_iso, src.name == "users")
            tags[i] = kind

    # Whole-file faults. An extra column is added before rows are copied, so that copies stay exact.
    if src.extra_column and rng.random() < rates.extra_column_file:
        df[src.extra_column] = rng.choice(["a", "b", "c"], len(df))
        faults.layout = f"extra_column:{src.extra_column}"
    elif src.missing_column and rng.random() < rates.missing_column_file:
        faults.layout = f"missing_column:{src.missing_column}"
    if src.encoding and rng.random() < rates.wrong_encoding_file:
        faults.encoding = "latin-1"

    # Added rows: copies of clean rows, at random places in the file.
    clean = np.nonzero(tags == None)[0]  # noqa: E711  (elementwise)
    added, added_tags = [], []
    for kind in ADDED_FAULTS:
        if not _applicable(src, kind) or not len(clean):
            continue
        k = min(int(rng.binomial(n, getattr(rates, kind))), len(clean))
        if not k:
            continue
        # a row is re-sent at most once: two copies with the same shift would be exact duplicates, not versions
        copies = df.iloc[rng.choice(clean, k, replace=kind != "resent_order")].copy()
        if kind == "resent_order":
            copies["updated_at"] = [_shift_ts(v, int(d), iso=False) for v, d in zip(copies["updated_at"], rng.integers(1, 4, k))]
        elif kind == "unknown_user":
            copies["user_id"] = [f"u9{x:07d}" for x in rng.integers(0, 10**7, k)]
            if "order_id" in copies:
                copies["order_id"] = [f"ox{block:05d}-{j:05d}" for j in range(k)]
        added.append(copies)
        added_tags += [kind] * k
    if added:
        position = np.concatenate([np.arange(n, dtype=float), rng.uniform(0, max(n, 1), len(added_tags))])
        df = pd.concat([df, *added], ignore_index=True)
        tags = np.concatenate([tags, np.array(added_tags, dtype=object)])
        resort = np.argsort(position, kind="stable")
        df, tags = df.iloc[resort].reset_index(drop=True), tags[resort]

    if faults.layout.startswith("missing_column"):
        df = df.drop(columns=[src.missing_column])

    lines = serialise(df, src.fmt)
    offset = 2 if src.fmt == "csv" else 1
    for i, tag in enumerate(tags):
        if tag in ("malformed_line", "broken_json"):
            line = lines[i + offset - 1]
            lines[i + offset - 1] = line[: max(1, len(line) // 2)] + ('"' if src.fmt == "csv" else "")
    for i in np.nonzero(tags != None)[0]:  # noqa: E711
        faults.lines.setdefault(tags[i], []).append(int(i) + offset)
    return lines, faults


def serialise(df: pd.DataFrame, fmt: str) -> list[str]:
    if fmt == "csv":
        text = df.to_csv(index=False, lineterminator="\n")
    else:
        text = df.to_json(orient="records", lines=True, force_ascii=False)
    return text.rstrip("\n").split("\n") if text else []
