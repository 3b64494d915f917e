"""A registered version as MLflow's own tools see it: `models:/name@champion` loads as a pyfunc model and scores a
features frame as the product's scorer does, in pandas and through `spark_udf`; the pandas input path is the Spark
one, column for column; a version's folder is never overwritten."""

from __future__ import annotations

from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from customer_value.models import registry
from customer_value.models.deep import score_frame
from customer_value.models.network import arrays_from_frame
from customer_value.models.pyfunc import OUTPUTS, RESULT_TYPE
from customer_value.models.spec import SEQUENCE_CHANNELS, feature_spec, input_arrays, model_inputs
from tests.models.test_interface import features_frame, features_schema, hand_built


def _spec(cfg):
    return feature_spec(cfg.features, {f.name: f.dataType.simpleString() for f in features_schema(cfg).fields})


def _rows(cfg, spec, n: int, seed: int = 3) -> list[dict]:
    """Rows that reach every branch of the transformation: missing numbers, negative ones, categories seen, unseen
    and missing, sequences empty, missing, longer than the network reads, with holes and of unequal lengths."""
    rng = np.random.default_rng(seed)
    numeric = [c.name for c in spec.of("numeric")]
    rows = []
    for i in range(n):
        r: dict = {"customer_id": f"c{i:03d}", "snapshot_date": date(2025, 6, 1)}
        for name in numeric:
            u = rng.random()
            r[name] = None if u < 0.2 else float(rng.normal(0, 50)) if u < 0.4 else float(rng.exponential(30))
        for name in spec.categorical_inputs:
            r[name] = [None, "a", "b", "zzz", ""][i % 5]
        length = [0, 1, 3, spec.sequence_length, spec.sequence_length + 4][i % 5]
        if i % 7 == 6:
            pass                                                # no sequence at all: null columns
        else:
            for c, name in enumerate(SEQUENCE_CHANNELS):
                values = [float(rng.exponential(20)) - (5.0 if c == 0 else 0.0) for _ in range(length)]
                if length > 2 and i % 3 == 0:
                    values[1] = None                            # a hole
                if c == 2 and i % 4 == 1:
                    values = values[:max(0, length - 1)]        # a channel shorter than the first
                r[name] = values
        rows.append(r)
    return rows


def test_the_pandas_inputs_are_the_spark_inputs_column_for_column(spark, cfg, tmp_path):
    spec = _spec(cfg)
    hand_built(spec, tmp_path)                      # gives the spec its statistics and vocabularies
    feats = features_frame(spark, cfg, _rows(cfg, spec, 60))
    want = arrays_from_frame(model_inputs(feats, spec).toPandas().sort_values("customer_id"), spec)
    got = input_arrays(feats.toPandas().sort_values("customer_id"), spec)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_mlflow_loads_the_champion_and_scores_a_features_frame_as_the_product_does(spark, cfg, tmp_path):
    spec = _spec(cfg)
    artifact = hand_built(spec, tmp_path)
    c = registry.client(cfg)
    run = c.create_run(registry.experiment_id(cfg))
    version = registry.register(cfg, artifact, run.info.run_id)
    registry.mark_ready(cfg, version)
    registry.set_alias(cfg, version, registry.CHAMPION, "the test's")
    assert registry.resolve(cfg, f"{version.name}/{registry.CHAMPION}").path == version.path
    source = c.get_model_version(version.name, str(version.version)).source
    assert "pending" not in source

    feats = features_frame(spark, cfg, _rows(cfg, spec, 40))
    product = (score_frame(feats, str(version.path), spec).toPandas()
               .rename(columns={"predicted_spend": "expected_spend"}).set_index("customer_id").sort_index())
    uri = f"models:/{version.name}@{registry.CHAMPION}"

    pdf = feats.toPandas()
    loaded = mlflow.pyfunc.load_model(uri).predict(pdf)
    assert list(loaded.columns) == list(OUTPUTS) and len(loaded) == len(pdf)
    loaded.index = pdf["customer_id"]
    pd.testing.assert_frame_equal(loaded.sort_index()[list(OUTPUTS)], product[list(OUTPUTS)], check_names=False,
                                  rtol=1e-6)

    udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=RESULT_TYPE, env_manager="local")
    via_udf = (feats.select("customer_id", udf(F.struct(*feats.columns)).alias("p")).select("customer_id", "p.*")
               .toPandas().set_index("customer_id").sort_index())
    pd.testing.assert_frame_equal(via_udf[list(OUTPUTS)], product[list(OUTPUTS)], check_names=False, rtol=1e-6)


def test_a_version_folder_is_never_overwritten(cfg, tmp_path):
    """A registry that lost its versions beside a store that kept their folders: registering stops and deletes
    nothing, naming the folder."""
    c = registry.client(cfg)
    name = cfg.training.model_name
    versions = c.search_model_versions(f"name = '{name}'")      # the session's registry may hold some already
    taken = registry.models_root(cfg) / name / str(max((int(v.version) for v in versions), default=0) + 1)
    taken.mkdir(parents=True)
    (taken / "kept.txt").write_text("an older version's file")
    run = c.create_run(registry.experiment_id(cfg))
    staged = tmp_path / "staged"
    (staged / "saved_model").mkdir(parents=True)
    (staged / "spec.json").write_text("{}")
    with pytest.raises(RuntimeError, match="out of step"):
        registry.register(cfg, staged, run.info.run_id)
    assert (taken / "kept.txt").read_text() == "an older version's file" and (staged / "saved_model").exists()
