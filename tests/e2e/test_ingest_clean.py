"""Ingest and clean on a generated shop with every kind of planted fault: where each bad row ends up,
counts that reconcile exactly, reruns that change nothing, and no personal data past bronze."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from customer_value.cleaning.pseudonymise import DEMO_KEY, MissingKeyError, hmac_hex
from customer_value.cleaning.quality import DataQualityError
from customer_value.cleaning.run import CONSTRAINTS, clean_all
from customer_value.config import load_config
from customer_value.features.run import run_features
from customer_value.ingest.run import ingest
from customer_value.landing import SOURCES
from customer_value.schemas import RAW_SOURCES
from customer_value.tables import Tables
from tests.conftest import ROOT
from tests.e2e.conftest import SNAPSHOT

pytestmark = pytest.mark.slow
GOLD = ["gold.customer_features", "gold.customer_labels", "gold.training_set"]
HISTORY = {"users": "silver.customer_history", "orders": "silver.order_history", "reviews": "silver.review_history"}
SILVER = {"users": "silver.customers", "orders": "silver.orders", "order_items": "silver.order_items",
          "events": "silver.events", "reviews": "silver.reviews"}


def read(cfg, name: str) -> pd.DataFrame:
    return DeltaTable(Tables(cfg.storage).location(name)).to_pandas()


def _manifest_lines(cfg, manifest, kind: str):
    """(source, file entry, line number, line text) of every planted fault of `kind`."""
    landing = Path(cfg.storage.root) / "landing"
    for entry in manifest["files"]:
        numbers = [n for tag, ns in entry["lines"].items() if tag.split(":")[0] == kind for n in ns]
        if not numbers:
            continue
        text = (landing / entry["file"]).read_bytes().decode("latin-1" if entry["encoding"] == "latin-1" else "utf-8")
        lines = text.split("\n")
        for n in numbers:
            yield entry["source"], entry, n, lines[n - 1]


def _field(source: str, line: str, column: str, header: list[str]):
    if RAW_SOURCES[source].fmt == "jsonl":
        return json.loads(line)[column]
    return line.split(",")[header.index(column)]


def test_ingest_reconciles_per_file(shop):
    cfg, manifest, ingested, _ = shop
    log = read(cfg, "ops.ingest_log")
    assert (log.rows_read == log.rows_bronze + log.rows_quarantined).all()
    expected = {e["file"]: e["rows"] for e in manifest["files"]}
    got = {f.split("/landing/", 1)[1]: n for f, n in zip(log.file, log.rows_read)}
    assert got == expected
    for source in SOURCES:
        bronze = read(cfg, f"bronze.{source}").groupby("_source_file").size()
        quarantine = read(cfg, f"quarantine.{source}").groupby("_source_file").size()
        rows = log[log.source == source].set_index("file")
        assert bronze.reindex(rows.index, fill_value=0).tolist() == rows.rows_bronze.tolist()
        assert quarantine.reindex(rows.index, fill_value=0).tolist() == rows.rows_quarantined.tolist()


def test_clean_reconciles_per_table(shop):
    cfg, _, _, counts = shop
    dq = read(cfg, "ops.data_quality")
    for source, table in SILVER.items():
        m = dq[dq.table == table]
        one = lambda metric: m[m.metric == metric].value.sum()  # noqa: E731
        assert one("rows_in") == len(read(cfg, f"bronze.{source}"))
        assert one("rows_out") == len(read(cfg, table))
        assert one("rows_in") == one("rows_out") + one("rejected") + one("exact_duplicates") + one("superseded_versions")
    rejects = read(cfg, "quarantine.rejects")
    assert rejects.groupby("table").size().to_dict() == {
        t: sum(c.rejected.values()) for t, c in counts.items() if c.rejected}


QUARANTINED = ["malformed_line", "broken_json", "missing_value", "wrong_type"]


@pytest.mark.parametrize("kind", QUARANTINED)
def test_unparseable_rows_are_quarantined_with_their_reason(shop, kind):
    cfg, manifest, _, _ = shop
    quarantine = {s: read(cfg, f"quarantine.{s}") for s in SOURCES}
    bronze_users = read(cfg, "bronze.users").set_index("user_id")
    checked = 0
    planted = list(_manifest_lines(cfg, manifest, kind))
    # two planted lines can be identical (e.g. two searches of one session, both with a broken timestamp)
    copies = pd.Series([(e["file"], line) for _, e, _, line in planted]).value_counts().to_dict()
    for source, entry, number, line in planted:
        tag = next(t for t, ns in entry["lines"].items() if number in ns)
        if source == "users" and kind == "wrong_type":  # an optional column: the row stays, flagged
            user = line.split(",")[0]
            issues = bronze_users.loc[[user], "_issues"]   # a customer who moved has two rows
            assert any("type_mismatch:birth_date" in list(i) for i in issues)
            continue
        reason = {"malformed_line": "malformed_line", "broken_json": "malformed_line",
                  "missing_value": f"missing_required:{tag.split(':')[-1]}"}.get(kind)
        q = quarantine[source]
        match = q[q._source_file.str.endswith("/" + entry["file"]) & (q._raw == line)]
        assert len(match) == copies[(entry["file"], line)], (entry["file"], number, line)
        if reason:
            assert match._reason.iloc[0] == reason
        else:
            assert match._reason.iloc[0].startswith("type_mismatch:")
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("kind", ["negative_amount", "absurd_amount", "future_timestamp", "before_opening"])
def test_invalid_values_are_rejected_by_clean_or_flagged(shop, kind):
    cfg, manifest, _, _ = shop
    rejects = read(cfg, "quarantine.rejects")
    rejects = rejects.assign(rec=rejects.record.map(json.loads))
    customers = read(cfg, "silver.customer_history").set_index("customer_id")
    found = defaultdict(int)
    for source, entry, number, line in _manifest_lines(cfg, manifest, kind):
        header = (Path(cfg.storage.root) / "landing" / entry["file"]).read_text("latin-1").split("\n", 1)[0].split(",")
        if source == "users":  # the customer is real: the impossible signup date is nulled and flagged
            versions = customers.loc[[hmac_hex(DEMO_KEY, line.split(",")[0])]]   # the faulty one among them
            assert any("signup_date_invalid" in list(v.dq_flags) and pd.isna(v.signup_date) for v in versions.itertuples())
            found[source] += 1
            continue
        table = SILVER[source]
        key_col = {"orders": "order_id", "order_items": "order_id", "events": "session_id"}[source]
        key = _field(source, line, key_col, header)
        mine = rejects[(rejects.table == table) & rejects.rec.map(lambda r: r.get(key_col) == key)]
        assert mine.reason.str.startswith(kind).any(), (entry["file"], number, line)
        found[source] += 1
    assert sum(found.values()) > 0


def test_rows_of_unknown_users_are_kept_and_flagged(shop):
    cfg, manifest, _, _ = shop
    orders = read(cfg, "silver.orders").set_index("order_id")
    events = read(cfg, "silver.events")
    orphan_events = events[events.dq_flags.map(lambda f: "orphan" in f)]
    n = 0
    for source, entry, _, line in _manifest_lines(cfg, manifest, "unknown_user"):
        if source == "orders":
            assert "orphan" in orders.loc[line.split(",")[0], "dq_flags"]
        else:
            row = json.loads(line)
            hit = orphan_events[(orphan_events.customer_id == hmac_hex(DEMO_KEY, row["user_id"]))
                                & (orphan_events.event_type == row["event_type"])
                                & (orphan_events.event_ts == pd.Timestamp(row["event_ts"]))]
            assert len(hit) >= 1
        n += 1
    assert n > 0


def test_duplicates_and_resent_orders_are_counted_and_resolved(shop):
    cfg, manifest, _, _ = shop
    dq = read(cfg, "ops.data_quality")
    for source, table in SILVER.items():
        planted = manifest["summary"][source]["faults"]
        m = dq[dq.table == table]
        assert m[m.metric == "exact_duplicates"].value.sum() == planted.get("duplicate_row", 0), table
        # superseded: earlier versions (in the history table) and re-sent copies of a version (no change)
        history = len(read(cfg, HISTORY[source])) - len(read(cfg, table)) if source in HISTORY else 0
        assert m[m.metric == "superseded_versions"].value.sum() == planted.get("resent_order", 0) + history, table
    orders = read(cfg, "silver.orders").set_index("order_id")
    history = read(cfg, "silver.order_history")
    assert orders.index.is_unique and not history.duplicated(["order_id", "valid_from"]).any()
    latest = {}
    for _, entry, _, line in _manifest_lines(cfg, manifest, "resent_order"):
        order_id = line.split(",")[0]
        text = (Path(cfg.storage.root) / "landing" / entry["file"]).read_text()
        faulty = {n for tag, ns in entry["lines"].items() if tag.split(":")[0] not in ("resent_order", "duplicate_row")
                  for n in ns}   # rows clean rejects: they do not make a version
        versions = [ln.split(",") for n, ln in enumerate(text.split("\n"), start=1)
                    if ln.startswith(order_id + ",") and n not in faulty]
        latest[order_id] = max(versions, key=lambda v: v[3])
    assert latest
    for order_id, fields in latest.items():  # the latest version's state won; a re-sent copy is no new version
        assert orders.loc[order_id, "status"] == fields[4]
        mine = history[history.order_id == order_id]
        assert mine.status.tolist() == [s for i, s in enumerate(mine.status) if i == 0 or s != mine.status.iloc[i - 1]]


def test_order_history_keeps_each_state_with_its_time(shop):
    """A returned order was exported first as completed, then as returned: two versions, the first closed by the
    second; its current state is the return."""
    cfg, _, _, _ = shop
    history = read(cfg, "silver.order_history").sort_values(["order_id", "valid_from"])
    orders = read(cfg, "silver.orders").set_index("order_id")
    returned = history[history.status == "returned"].order_id
    pairs = history[history.order_id.isin(returned)].groupby("order_id")
    two = [g for _, g in pairs if len(g) == 2]
    assert len(two) > 0.8 * returned.nunique()
    for g in two[:200]:
        first, last = g.iloc[0], g.iloc[1]
        assert (first.status, last.status) == ("completed", "returned")
        assert first.valid_to == last.valid_from and pd.isna(last.valid_to) and first.valid_from >= first.order_ts
        assert orders.loc[last.order_id, "status"] == "returned"
    open_versions = history[history.valid_to.isna()]
    assert len(open_versions) == len(orders) and set(open_versions.order_id) == set(orders.index)
    customers = read(cfg, "silver.customer_history")
    moved = customers[customers.duplicated("customer_id", keep=False)]
    assert len(moved) > 0 and (moved.groupby("customer_id").valid_to.apply(lambda v: v.isna().sum()) == 1).all()


def test_file_faults_are_read_and_flagged(shop):
    cfg, manifest, _, _ = shop
    log = read(cfg, "ops.ingest_log").set_index("file")
    for entry in manifest["files"]:
        row = log[log.index.str.endswith("/" + entry["file"])].iloc[0]
        bronze = read(cfg, f"bronze.{entry['source']}")
        mine = bronze[bronze._source_file.str.endswith("/" + entry["file"])]
        if entry["encoding"] == "latin-1":
            assert row.encoding == "iso-8859-1" and (mine._encoding == "iso-8859-1").all()
            text = mine["name"] if entry["source"] == "users" else mine["body"]
            assert text.str.contains("[éüöëøåóñ]").any() and not text.str.contains("\ufffd").any()
        else:
            assert row.encoding == "utf-8"
        if entry["layout"] != "standard":
            assert row.layout == entry["layout"]
            assert mine._issues.map(lambda i: entry["layout"] in i).all()


def test_nothing_personal_reaches_silver(shop):
    cfg, _, _, _ = shop
    users = read(cfg, "bronze.users")
    secrets = set(users.user_id) | set(users.name.dropna()) | set(users.email.dropna()) | set(users.phone.dropna())
    raw_id = re.compile(r"\bu\d{7,8}\b")
    personal = {c.name for c in RAW_SOURCES["users"].columns if c.personal}
    assert personal == {"user_id", "name", "email", "phone", "birth_date"}
    # every table there (the backtest's and the scorer's too, once they ran); not `gold/_views`, the view's SQL
    layers = [p for layer in ("silver", "gold") for p in sorted((Path(cfg.storage.root) / layer).glob("*"))
              if (p / "_delta_log").is_dir()]
    names = {f"{p.parent.name}.{p.name}" for p in layers}
    assert set(SILVER.values()) | set(GOLD) <= names
    for path in layers:
        table = DeltaTable(str(path)).to_pandas()
        assert not personal & set(table.columns), path
        for column in table.columns:
            values = table[column].dropna()
            if (not pd.api.types.is_datetime64_any_dtype(values)      # (no strings there; pandas warns on any())
                    and values.map(lambda v: isinstance(v, str)).any()):
                strings = values.astype(str)
                assert not strings.isin(secrets).any(), (path.name, column)
                assert not strings.str.contains(raw_id).any(), (path.name, column)
                assert not strings.str.contains("@example.com").any(), (path.name, column)


def test_rerun_changes_nothing(spark, shop):
    cfg, _, _, _ = shop
    names = [f"{layer}.{s}" for layer in ("bronze", "quarantine") for s in SOURCES] + list(SILVER.values()) + list(HISTORY.values()) + [
        "quarantine.rejects", "ops.data_quality", "ops.ingest_log", "ops.ingested_files", *GOLD]
    before = {n: _canonical(read(cfg, n)) for n in names}
    assert ingest(spark, cfg).batch_id is None  # nothing new
    assert clean_all(spark, cfg) == {}          # no new bronze batch: an incremental clean has nothing to do
    clean_all(spark, cfg, full=True)            # and a full one recomputes the same silver
    run_features(spark, cfg, SNAPSHOT, history=1)  # rerunning a snapshot replaces its partition
    for n in names:
        pd.testing.assert_frame_equal(_canonical(read(cfg, n)), before[n], obj=n)


def _canonical(df: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    df = df.drop(columns=[c for c in drop if c in df.columns])
    df = df.map(lambda v: tuple(v) if hasattr(v, "__len__") and not isinstance(v, (str, bytes)) else v)
    return df.sort_values(list(df.columns), key=lambda s: s.astype(str)).reset_index(drop=True)


def test_silver_tables_carry_their_check_constraints(spark, shop):
    """Every silver table enforces its CHECK constraints for any writer: recorded in its metadata, and a row
    that breaks one is refused with the table left at its version."""
    cfg, _, _, _ = shop
    tables = Tables(cfg.storage)
    for name, constraints in CONSTRAINTS.items():
        config = DeltaTable(tables.location(name)).metadata().configuration
        assert {k: v for k, v in config.items() if k.startswith("delta.constraints.")} == {
            f"delta.constraints.{c}": e for c, e in constraints.items()}, name
    version = DeltaTable(tables.location("silver.orders")).version()
    orders = tables.read(spark, "silver.orders")
    bad = orders.limit(1).withColumn("total", F.lit(-1).cast(dict(orders.dtypes)["total"]))
    with pytest.raises(Exception, match="total_in_range"):
        bad.write.format("delta").mode("append").save(tables.location("silver.orders"))
    assert DeltaTable(tables.location("silver.orders")).version() == version


def test_threshold_fails_after_metrics_and_keeps_silver(spark, shop):
    cfg, _, _, _ = shop
    strict = load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={cfg.storage.root}", "pseudonymisation.demo_mode=true", "cleaning.max_reject_share=0.001"])
    version = DeltaTable(Tables(cfg.storage).location("silver.orders")).version()
    with pytest.raises(DataQualityError, match=r"silver\.events: \d+\.\d% of rows rejected"):
        clean_all(spark, strict, full=True)
    assert DeltaTable(Tables(cfg.storage).location("silver.orders")).version() == version
    dq = read(cfg, "ops.data_quality")
    assert (dq[dq.metric == "reject_share"].value > 0.001).any()


def test_clean_refuses_to_run_without_a_key(spark, shop):
    cfg, _, _, _ = shop
    unset = "CUSTOMER_VALUE_KEY_THAT_IS_NOT_SET"
    assert unset not in os.environ
    real = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={cfg.storage.root}", f"pseudonymisation.key_env={unset}"])
    with pytest.raises(MissingKeyError, match=unset):
        clean_all(spark, real)


def test_features_and_labels_for_each_snapshot(shop):
    cfg, _, _, _ = shop
    features, labels, train = (read(cfg, n) for n in GOLD)
    snapshots = ["2025-09-01", "2025-10-01"]
    # (the backtest and the model's training, sharing this shop, may have added other snapshots' features and
    # labels: those of its training snapshots)
    features = features[features.snapshot_date.astype(str).isin(snapshots)]
    labels = labels[labels.snapshot_date.astype(str).isin(snapshots)]
    assert sorted(labels.snapshot_date.astype(str).unique()) == snapshots
    assert sorted(features.snapshot_date.astype(str).unique()) == snapshots
    for table in (features, labels):
        assert not table.duplicated(["customer_id", "snapshot_date"]).any()
    # labels exist for every featured customer, and the training set is their join
    assert len(train) == len(labels) == len(features)
    customers = set(read(cfg, "silver.customers").customer_id)
    assert set(features.customer_id) <= customers
    assert 0.2 < labels.churned.mean() < 0.9 and labels.future_spend.ge(0).all()
