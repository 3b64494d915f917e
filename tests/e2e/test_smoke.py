"""The foundation's acceptance test: the whole pinned stack, for real, in one process tree."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from customer_value import smoke
from customer_value.schemas import SMOKE_CUSTOMERS, SMOKE_FEATURES
from customer_value.scoring.model_udf import load_model, model_loads_per_worker, predict
from customer_value.tables import Tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(spark, tmp_path_factory):
    from customer_value.config import load_config
    from tests.conftest import ROOT

    root = tmp_path_factory.mktemp("smoke")
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={root / 'tables'}"])
    return cfg, smoke.run(spark, cfg, work_dir=str(root / "work"), rows=4000)


def test_delta_merge_and_time_travel(result):
    _, res = result
    assert res.delta_versions[0] == [("c1", "low", 10.0), ("c2", "mid", 20.0), ("c3", "high", 30.0)]
    assert res.delta_versions[1] == [("c1", "low", 10.0), ("c2", "high", 200.0), ("c3", "high", 30.0), ("c4", "low", 4.0)]


def test_delta_table_is_read_the_same_by_spark_delta_rs_and_polars(result, spark):
    cfg, res = result
    latest = Tables(cfg.storage).read(spark, "smoke.customers")
    expected = spark.createDataFrame(res.delta_versions[1], SMOKE_CUSTOMERS)
    assert_df_equality(latest, expected, ignore_row_order=True, ignore_nullable=True)
    assert res.jvm_free_rows == res.delta_versions[1]
    assert res.polars_rows == res.delta_versions[1]

    from deltalake import DeltaTable

    log = DeltaTable(res.tables["smoke.customers"])
    assert log.version() == 1
    assert [h["operation"] for h in log.history()][:2] == ["MERGE", "WRITE"]


def test_horovod_ran_two_ranks_on_disjoint_shards(result):
    _, res = result
    reports = res.horovod_reports
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["size"] == 2 for r in reports)
    assert reports[0]["pid"] != reports[1]["pid"]
    shards = [set(r["row_ids"]) for r in reports]
    assert shards[0] and shards[1], "each rank must read some rows"
    assert not shards[0] & shards[1], "ranks read overlapping rows"
    assert shards[0] | shards[1] == set(range(4000)), "together the ranks read every row once"


def test_horovod_allreduce_is_the_mean_and_weights_stay_in_sync(result):
    _, res = result
    for r in res.horovod_reports:
        assert r["allreduced_mean"] == pytest.approx((1 + 2) / 2)
        assert r["weights_in_sync"]
        assert r["loss"][-1] < r["loss"][0], "training did not reduce the loss"


def test_only_rank_zero_wrote_the_model(result):
    _, res = result
    assert [r["wrote_model"] for r in res.horovod_reports] == [True, False]
    model_dir = res.model_path.rsplit("/", 1)[0]
    import os

    assert sorted(os.listdir(model_dir)) == ["model.keras", "rank-0.json", "rank-1.json"]


def test_scores_in_delta_match_the_model_in_process(result, spark):
    cfg, res = result
    scores = Tables(cfg.storage).read(spark, "smoke.scores")
    assert res.scored_rows == 4000
    assert scores.select("row_id").distinct().count() == 4000
    sample = spark.read.parquet(res.training_url).orderBy("row_id").limit(50).toPandas()
    expected = predict(load_model(res.model_path), sample[SMOKE_FEATURES].to_numpy("float32"))
    got = scores.where(F.col("row_id") < 50).orderBy("row_id").toPandas()["prediction"].to_numpy()
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # The model learnt the planted linear relation: far better than predicting the mean.
    pdf = scores.toPandas()
    mse = ((pdf.prediction - pdf.label) ** 2).mean()
    assert mse < 0.25 * pdf.label.var()


def test_model_is_loaded_once_per_python_worker(result, spark):
    _, res = result
    df = spark.read.parquet(res.training_url).repartition(8)
    loads = model_loads_per_worker(df, res.model_path).toPandas()
    assert len(loads) == 8
    # Spark reuses Python workers: every process loaded the model exactly once, however many partitions it took.
    assert loads.groupby("pid")["loads"].max().eq(1).all()
    assert loads["pid"].nunique() < 8
