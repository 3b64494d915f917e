"""The hostile-input corpus (tests/data/bad/, built by its build.py) in one batch with a generated shop that
carries every fault kind of the generator's manifest: ingest never crashes, quarantines each bad row or file with
its reason, keeps every good row, and the counts in ops.ingest_log reconcile exactly with the files and tables.
The same corpus through the transactions adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

import customer_value.ingest.run as ingest_run
from customer_value.adapters.transactions import TransactionsFileError, adapt, write_landing
from customer_value.ingest.files import list_landing
from customer_value.ingest.run import ingest, spark_path
from customer_value.landing import SOURCES, landing_uri
from customer_value.synthetic.generate import generate
from customer_value.tables import Tables
from tests.conftest import ROOT
from tests.e2e.conftest import shop_config

CORPUS = ROOT / "tests" / "data" / "bad"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


def _copy_corpus(landing: Path) -> None:
    for rel in EXPECTED:
        target = landing / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / rel, target)


@pytest.fixture(scope="module")
def hostile(spark, tmp_path_factory):
    cfg = shop_config(tmp_path_factory.mktemp("hostile"), 600)
    manifest = generate(spark, cfg).manifest
    landing = Path(landing_uri(cfg))
    _copy_corpus(landing)
    result = ingest(spark, cfg)
    return cfg, manifest, landing, result


def _log(spark, cfg):
    return {r["file"]: r for r in Tables(cfg.storage).read(spark, "ops.ingest_log").collect()}


def test_every_bad_file_is_quarantined_whole_with_its_reason(spark, hostile):
    cfg, _, landing, _ = hostile
    log = _log(spark, cfg)
    files = {r["_source_file"]: r["_reason"] for r in Tables(cfg.storage).read(spark, "quarantine.files").collect()}
    for rel, want in EXPECTED.items():
        uri = spark_path(str(landing / rel))
        if "file_reason" in want:
            assert files.get(uri) == want["file_reason"], rel
            assert log[uri]["status"] == "quarantined" and log[uri]["reason"] == want["file_reason"], rel
        else:
            assert uri not in files, f"{rel} is readable and must not be quarantined whole ({files.get(uri)})"


def test_each_bad_row_is_quarantined_with_its_reason_and_every_good_row_arrives(spark, hostile):
    cfg, _, landing, _ = hostile
    tables, log = Tables(cfg.storage), _log(spark, cfg)
    for rel, want in EXPECTED.items():
        if "file_reason" in want:
            continue
        source, uri = rel.split("/")[0], spark_path(str(landing / rel))
        bronze = tables.read(spark, f"bronze.{source}").where(F.col("_source_file") == uri)
        quarantine = tables.read(spark, f"quarantine.{source}").where(F.col("_source_file") == uri)
        reasons = {r["_reason"]: r["count"] for r in quarantine.groupBy("_reason").count().collect()}
        assert bronze.count() == want["good"], rel
        assert reasons == {k: v for k, v in want["reasons"].items() if v}, rel
        assert log[uri]["rows_bronze"] == want["good"] and log[uri]["rows_quarantined"] == sum(want["reasons"].values()), rel
        # hostile text that is valid data (SQL, formulas, accents) arrives byte for byte, never interpreted
        text = [" | ".join(str(v) for v in r) for r in bronze.drop("_issues").collect()]
        for value in want["keep"]:
            assert any(value in t for t in text), f"{rel}: {value!r} did not arrive as it was"


def test_formula_like_cells_are_kept_and_flagged(spark, hostile):
    cfg, _, landing, _ = hostile
    users = Tables(cfg.storage).read(spark, "bronze.users").where(F.col("user_id").startswith("u-formula-"))
    flagged = {r["user_id"]: r["_issues"] for r in users.collect()}
    assert len(flagged) == 4 and all("formula_like:city" in v for v in flagged.values()), flagged
    phones = Tables(cfg.storage).read(spark, "bronze.users").where(F.col("user_id") == "u-good-1").first()
    assert "formula_like:phone" not in phones["_issues"], "an international phone number is not a formula"


def test_counts_reconcile_exactly_for_every_file_of_the_batch(spark, hostile):
    cfg, manifest, landing, result = hostile
    tables, log = Tables(cfg.storage), _log(spark, cfg)
    listed = {spark_path(f.path) for f in list_landing(str(landing), list(SOURCES))}
    assert set(log) == listed, "one ops.ingest_log row per landing file, no more, no fewer"
    for r in log.values():
        assert r["rows_read"] == r["rows_bronze"] + r["rows_quarantined"], r["file"]
    for source in SOURCES:
        rows = [r for r in log.values() if r["source"] == source]
        assert sum(r["rows_bronze"] for r in rows) == tables.read(spark, f"bronze.{source}").count() == result.per_source[source]["bronze"]
        assert sum(r["rows_quarantined"] for r in rows) == tables.read(spark, f"quarantine.{source}").count()
    # the generated shop's files, with every planted fault kind: each line read, the good ones in bronze
    for f in manifest["files"]:
        row = log[spark_path(str(landing / f["file"]))]
        assert row["rows_read"] == f["rows"] or row["status"] == "quarantined", f["file"]


def test_a_file_that_changes_while_it_is_read_is_left_for_the_next_run(spark, tmp_path, monkeypatch):
    cfg = shop_config(tmp_path, 600)
    landing = Path(landing_uri(cfg))
    (landing / "users").mkdir(parents=True)
    growing = landing / "users" / "growing.csv"
    growing.write_text((CORPUS / "users" / "bom.csv").read_bytes().decode("utf-8-sig"))
    shutil.copyfile(CORPUS / "users" / "hostile-text.csv", landing / "users" / "steady.csv")
    real = ingest_run.parse_source

    appended = []

    def appending(spark_, source, files, latin1):  # the shop's export is still writing the file
        out = real(spark_, source, files, latin1)
        if source == "users" and not appended:
            appended.append(True)
            with growing.open("a") as fh:
                fh.write(growing.read_text().splitlines()[1].replace("u-bom-1", "u-late-1") + "\n")
        return out

    monkeypatch.setattr(ingest_run, "parse_source", appending)
    ingest(spark, cfg)
    tables = Tables(cfg.storage)
    uri = spark_path(str(growing))
    assert tables.read(spark, "quarantine.files").where(F.col("_source_file") == uri).first()["_reason"] == "changed_while_read"
    assert tables.read(spark, "bronze.users").where(F.col("_source_file") == uri).count() == 0
    assert tables.read(spark, "bronze.users").count() == 6, "the steady file of the same batch arrives"
    monkeypatch.setattr(ingest_run, "parse_source", real)
    ingest(spark, cfg)                                # the export has finished: taken whole
    assert tables.read(spark, "bronze.users").where(F.col("_source_file") == uri).count() == 3


def test_the_corpus_through_the_transactions_adapter(spark, tmp_path):
    cfg = shop_config(tmp_path, 600)
    for rel, want in EXPECTED.items():
        if "file_reason" in want:
            with pytest.raises(TransactionsFileError, match=want["file_reason"].replace("_", " ")):
                adapt(spark, str(CORPUS / rel), cfg.transactions)
    # hostile rows in a readable transactions file: passed through, then quarantined by ingest with a reason
    tx = tmp_path / "tx.csv"
    cols = cfg.transactions.columns
    header = ",".join(c for c in (cols.customer_id, cols.date, cols.amount) if c)
    rows = ["c1,2024-01-05,10.50", "c2,2024-01-06,=cmd|' /C calc'!A0", "c3\x07,2024-01-07,3.00",
            "c4,2024-01-08," + "9" * 1_200_000, "c5,not a date,1.00", "c6,2024-01-09,7.25"]
    tx.write_text(header + "\n" + "\n".join(rows) + "\n")
    landing = landing_uri(cfg)
    write_landing(adapt(spark, str(tx), cfg.transactions), landing)
    result = ingest(spark, cfg)
    tables = Tables(cfg.storage)
    orders = tables.read(spark, "bronze.orders")
    reasons = sorted(r["_reason"] for r in tables.read(spark, "quarantine.orders").collect())
    assert orders.count() == 2, "c1 and c6, the good rows"
    assert reasons == ["control_characters", "line_too_long", "type_mismatch:order_ts", "type_mismatch:total"], reasons
    assert sum(s["read"] for s in result.per_source.values()) == sum(
        s["bronze"] + s["quarantined"] for s in result.per_source.values())
