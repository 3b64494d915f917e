"""The synthetic shop: reproducible, its manifest matches what is in the files, its ground truth is honest."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from customer_value.config import load_config
from customer_value.synthetic.faults import SOURCES as FAULT_SPECS
from customer_value.synthetic.generate import MANIFEST_FILE, generate
from customer_value.synthetic.oracle import oracle
from customer_value.synthetic.process import EVENT_COLUMNS, ITEM_COLUMNS, ORDER_COLUMNS, REVIEW_COLUMNS, USER_COLUMNS
from customer_value.tables import Tables
from tests.conftest import ROOT

STANDARD = {"users": USER_COLUMNS, "orders": ORDER_COLUMNS, "order_items": ITEM_COLUMNS, "events": EVENT_COLUMNS,
            "reviews": REVIEW_COLUMNS}
DIRTY = [f"synthetic.dirty.{k}={v}" for k, v in {
    "duplicate_row": 0.01, "resent_order": 0.01, "missing_value": 0.01, "wrong_type": 0.01, "negative_amount": 0.01,
    "absurd_amount": 0.01, "future_timestamp": 0.01, "before_opening": 0.01, "unknown_user": 0.01,
    "malformed_line": 0.01, "broken_json": 0.01, "wrong_encoding_file": 0.4, "extra_column_file": 0.4,
    "missing_column_file": 0.4}.items()]


def _cfg(root: Path, *extra: str):
    return load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={root}", "synthetic.customers=3000", "synthetic.customers_per_file=600", *extra])


def _files(landing: str) -> dict[str, bytes]:
    base = Path(landing)
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dirty_shop(spark, tmp_path_factory):
    cfg = _cfg(tmp_path_factory.mktemp("dirty"), *DIRTY)
    return cfg, generate(spark, cfg)


def test_same_seed_gives_identical_files_and_another_seed_does_not(spark, dirty_shop, tmp_path):
    cfg, first = dirty_shop
    again = generate(spark, _cfg(tmp_path / "again", *DIRTY))
    a, b = _files(first.landing), _files(again.landing)
    assert len(a) == 5 * 5 + 5 + 1  # 5 sources x 5 blocks, 5 manifest pieces, the manifest
    assert a == b
    other = generate(spark, _cfg(tmp_path / "other", *DIRTY, "synthetic.seed=7"))
    c = _files(other.landing)
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith((".csv", ".jsonl")))


def _decode(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def _ts(value: str) -> datetime | None:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt)
        except (TypeError, ValueError):
            pass
    return None


def _number(value, kind=float):
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _detect_row(source: str, row: dict, known_users: set[str], opened: date, exported: date) -> str | None:
    """What is wrong with one parsed row, found without the generator's help (None: nothing)."""
    spec = FAULT_SPECS[source]
    for col in spec.required:
        if col in row and row[col] in (None, ""):
            return "missing_value"
    checks = {"users": ("birth_date", _ts), "orders": ("total", _number), "order_items": ("quantity", lambda v: _number(v, int)),
              "events": ("event_ts", _ts), "reviews": ("rating", lambda v: _number(v, int))}
    col, parse = checks[source]
    if parse(row[col]) is None:
        return "wrong_type"
    if spec.amount and _number(row[spec.amount]) < 0:
        return "negative_amount"
    if spec.absurd_field and _number(row[spec.absurd_field]) >= (1e6 if spec.absurd_field != "quantity" else 1e4):
        return "absurd_amount"
    if spec.timestamp:
        ts = _ts(row[spec.timestamp])
        if ts.date() > exported:
            return "future_timestamp"
        if ts.date() < opened:
            return "before_opening"
    if spec.unknown_user and row["user_id"] not in known_users:
        return "unknown_user"
    return None


def test_manifest_matches_what_the_files_contain(dirty_shop):
    cfg, result = dirty_shop
    landing = Path(result.landing)
    manifest = json.loads((landing / MANIFEST_FILE).read_text())
    opened, exported = cfg.synthetic.shop_opened, cfg.synthetic.export_date
    known_users = {line.split(",", 1)[0] for f in sorted(landing.glob("users/*.csv"))
                   for line in _decode(f.read_bytes())[0].splitlines()[1:]}

    kinds_seen = set()
    for entry in manifest["files"]:
        source, spec = entry["source"], FAULT_SPECS[entry["source"]]
        text, encoding = _decode((landing / entry["file"]).read_bytes())
        assert encoding == entry["encoding"], entry["file"]
        lines = text.splitlines()
        found: dict[str, list[int]] = defaultdict(list)
        if spec.fmt == "csv":
            header = lines[0].split(",")
            extra = [c for c in header if c not in STANDARD[source]]
            missing = [c for c in STANDARD[source] if c not in header]
            layout = f"extra_column:{extra[0]}" if extra else f"missing_column:{missing[0]}" if missing else "standard"
            assert layout == entry["layout"], entry["file"]
            rows = []
            for number, line in enumerate(lines[1:], start=2):
                fields = next(csv.reader([line]))
                if len(fields) != len(header):
                    found["malformed_line"].append(number)
                else:
                    rows.append((number, line, dict(zip(header, fields))))
        else:
            rows = []
            for number, line in enumerate(lines, start=1):
                try:
                    rows.append((number, line, json.loads(line)))
                except json.JSONDecodeError:
                    found["broken_json"].append(number)
        assert len(lines) - (spec.fmt == "csv") == entry["rows"]
        clean_rows = []
        for number, line, row in rows:
            kind = _detect_row(source, row, known_users, opened, exported)
            if kind:
                found[kind].append(number)
            else:
                clean_rows.append((number, line, row))
        # exact duplicates (of clean rows: two broken copies of similar rows may look alike) and re-sent orders
        counts = Counter(line for _, line, _ in clean_rows)
        found_dups = sum(c - 1 for c in counts.values())
        found_resent = 0
        if source == "orders":
            # a re-sent order repeats a state with a later updated_at; a status change (a return) is a new state
            versions = defaultdict(set)
            for _, line, row in clean_rows:
                versions[tuple(v for k, v in sorted(row.items()) if k != "updated_at")].add(row["updated_at"])
            found_resent = sum(len(v) - 1 for v in versions.values())

        planted = defaultdict(list)
        for tag, numbers in entry["lines"].items():
            planted[tag.split(":", 1)[0]] += numbers
        assert found_dups == len(planted.pop("duplicate_row", [])), entry["file"]
        assert found_resent == len(planted.pop("resent_order", [])), entry["file"]
        assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in planted.items()}, entry["file"]
        kinds_seen |= set(entry["lines"]) | ({"encoding"} if encoding != "utf-8" else set()) | {entry["layout"].split(":")[0]}
    kinds_seen = {k.split(":")[0] for k in kinds_seen}
    expected = {"duplicate_row", "resent_order", "missing_value", "wrong_type", "negative_amount", "absurd_amount",
                "future_timestamp", "before_opening", "unknown_user", "malformed_line", "broken_json", "encoding",
                "extra_column", "missing_column"}
    assert expected <= kinds_seen, f"never planted: {expected - kinds_seen}"


def test_summary_counts_add_up(dirty_shop):
    _, result = dirty_shop
    summary = result.manifest["summary"]
    assert set(summary) == set(STANDARD)
    for source, s in summary.items():
        files = [f for f in result.manifest["files"] if f["source"] == source]
        assert s["rows"] == sum(f["rows"] for f in files)
        assert s["faults"].get("duplicate_row", 0) == sum(len(f["lines"].get("duplicate_row", [])) for f in files)


CLEAN = [f"synthetic.dirty.{k}=0" for k in (
    "duplicate_row", "resent_order", "missing_value", "wrong_type", "negative_amount", "absurd_amount",
    "future_timestamp", "before_opening", "unknown_user", "malformed_line", "broken_json", "wrong_encoding_file",
    "extra_column_file", "missing_column_file")]


def test_oracle_expected_spend_agrees_with_realised_spend(spark, tmp_path):
    cfg = _cfg(tmp_path, "synthetic.customers=8000", "synthetic.customers_per_file=2000", *CLEAN)
    result = generate(spark, cfg)
    truth = Tables(cfg.storage).read(spark, "synthetic.ground_truth").toPandas()
    orders = pd.concat(pd.read_csv(f, dtype=str) for f in sorted(Path(result.landing).glob("orders/*.csv")))
    # the export is a change log: each order's final state (a return replaces its first, completed state)
    orders = orders.sort_values("updated_at", kind="stable").drop_duplicates("order_id", keep="last")
    orders["ts"] = pd.to_datetime(orders["order_ts"])
    orders["total"] = orders["total"].astype(float)

    horizon = 90
    for snapshot in (date(2025, 3, 1), date(2025, 9, 1)):
        expected = oracle(truth, cfg.synthetic, snapshot, horizon).set_index("user_id")
        window = orders[(orders.ts >= pd.Timestamp(snapshot)) & (orders.ts < pd.Timestamp(snapshot + timedelta(horizon)))
                        & (orders.status == "completed")]
        realised = window.groupby("user_id")["total"].sum().reindex(expected.index, fill_value=0.0)
        bought = window.groupby("user_id").size().reindex(expected.index, fill_value=0) > 0

        # Customers who had already dropped out never buy again: the oracle knows, and is right.
        assert realised[~expected.alive].sum() == 0
        diff = realised - expected.expected_spend
        se = diff.std() / np.sqrt(len(diff))
        assert abs(diff.mean()) < 4 * se, (snapshot, realised.mean(), expected.expected_spend.mean(), se)
        assert abs(diff.mean()) < 0.1 * realised.mean()
        churn_diff = (~bought).astype(float) - expected.churn_probability
        assert abs(churn_diff.mean()) < 4 * churn_diff.std() / np.sqrt(len(churn_diff))
        # and the oracle ranks customers far better than chance
        assert np.corrcoef(expected.expected_spend, realised)[0, 1] > 0.3


def test_behaviour_carries_signal_beyond_rfm(spark, tmp_path):
    """Customers about to buy browse more; customers who left go quiet and rate worse."""
    cfg = _cfg(tmp_path, *CLEAN)
    result = generate(spark, cfg)
    landing = Path(result.landing)
    events = pd.concat(pd.read_json(f, lines=True, dtype=False) for f in sorted(landing.glob("events/*.jsonl")))
    orders = pd.concat(pd.read_csv(f, dtype=str) for f in sorted(landing.glob("orders/*.csv")))
    reviews = pd.concat(pd.read_json(f, lines=True, dtype=False) for f in sorted(landing.glob("reviews/*.jsonl")))
    truth = Tables(cfg.storage).read(spark, "synthetic.ground_truth").toPandas()

    events["day"] = pd.to_datetime(events.event_ts).dt.normalize().dt.tz_localize(None)
    orders["day"] = pd.to_datetime(orders.order_ts).dt.normalize()
    active = events.groupby(["user_id", "day"]).event_type.apply(lambda t: (t == "cart_add").any()).rename("cart")
    order_days = set(zip(orders.user_id, orders.day))
    soon = [any((u, d + pd.Timedelta(days=k)) in order_days for k in range(4)) for u, d in active.index]
    active = active.to_frame().assign(order_soon=soon)
    rate = active.groupby("cart").order_soon.mean()
    # an order within 3 days is far likelier after a day with cart adds than after other active days
    assert rate[True] > 2.5 * rate[False], rate

    dropped = truth[truth.dropout_date.notna()].set_index("user_id")
    last_orders = orders[orders.status == "completed"].sort_values("order_ts").groupby("user_id").tail(1)
    reviews["last"] = reviews.order_id.isin(last_orders.order_id) & reviews.user_id.isin(dropped.index)
    assert reviews[reviews["last"]].rating.mean() < reviews[~reviews["last"]].rating.mean() - 0.8

    gone = events.merge(dropped[["dropout_date"]], left_on="user_id", right_index=True)
    offset = (gone.day - pd.to_datetime(gone.dropout_date)).dt.days
    before, after = ((offset < 0) & (offset >= -60)).sum(), ((offset > 0) & (offset <= 60)).sum()
    assert after < 0.3 * before, (before, after)
