"""Apply a Keras model to a DataFrame with `mapInPandas`, loading it once per Python worker.

Why once per worker: loading a model costs far more than scoring a batch; Spark reuses Python workers
(spark.python.worker.reuse), so a per-process cache makes the load a one-off per worker, not per batch.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T


@functools.lru_cache(maxsize=4)
def load_model(path: str):
    """The model at `path`, loaded at most once per process."""
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf.keras.models.load_model(path, compile=False)


def predict(model, features: np.ndarray) -> np.ndarray:
    return np.asarray(model(features, training=False)).reshape(len(features), -1)[:, 0]


def score_with_model(
    df: DataFrame, model_path: str, features: Sequence[str], keep: Sequence[str], schema: T.StructType
) -> DataFrame:
    """`keep` columns plus a float `prediction` per row, from the model at `model_path`."""
    feature_cols, keep_cols = list(features), list(keep)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = load_model(model_path)
        for pdf in batches:
            x = pdf[feature_cols].to_numpy(dtype=np.float32)
            out = pdf[keep_cols].copy()
            out["prediction"] = predict(model, x).astype(np.float32) if len(pdf) else np.array([], np.float32)
            yield out

    return df.mapInPandas(score, schema)


def model_loads_per_worker(df: DataFrame, model_path: str) -> DataFrame:
    """(pid, loads) per scored partition: how often each Python worker process loaded the model."""
    import os

    def probe(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for _ in batches:
            load_model(model_path)
        yield pd.DataFrame({"pid": [os.getpid()], "loads": [load_model.cache_info().misses]})

    return df.mapInPandas(probe, "pid long, loads long")

