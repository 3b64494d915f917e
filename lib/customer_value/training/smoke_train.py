"""Smoke training run, one process per Horovod rank: `horovodrun -np 2 python -m customer_value.training.smoke_train`.

Proves the distributed path end to end on a tiny model: each rank reads its own Petastorm shard, gradients are
averaged by Horovod, rank 0 alone writes the model. Every rank writes a small JSON report the caller checks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from customer_value.schemas import SMOKE_FEATURES
from customer_value.training.data import shard_reader, xy_dataset


def build_model(n_features: int) -> tf.keras.Model:
    inputs = tf.keras.Input(shape=(n_features,), name="features")
    hidden = tf.keras.layers.Dense(16, activation="relu")(inputs)
    output = tf.keras.layers.Dense(1, name="prediction")(hidden)
    return tf.keras.Model(inputs, output)


def weights_digest(model: tf.keras.Model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-url", required=True, help="file:// URL of the Parquet training set")
    parser.add_argument("--out", required=True, help="folder for the model (rank 0) and per-rank reports")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd

    hvd.init()
    # Ranks share this machine's cores: one thread each avoids oversubscription.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rank, size = hvd.rank(), hvd.size()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # One pass over this rank's shard, to report which rows it owns.
    with shard_reader(args.data_url, ["row_id"], rank, size, num_epochs=1) as reader:
        row_ids = sorted(int(i) for batch in reader for i in batch.row_id)

    tf.keras.utils.set_random_seed(1234 + rank)
    model = build_model(len(SMOKE_FEATURES))
    optimizer = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate=0.01 * size))
    model.compile(optimizer=optimizer, loss="mse")
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
    ]
    columns = ["row_id", *SMOKE_FEATURES, "label"]
    with shard_reader(args.data_url, columns, rank, size, num_epochs=None) as reader:
        dataset = xy_dataset(reader, SMOKE_FEATURES, "label", args.batch_size)
        history = model.fit(
            dataset, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, verbose=0
        )

    allreduced = float(hvd.allreduce(tf.constant(float(rank + 1)), op=hvd.Average).numpy())
    digests = hvd_tf.allgather_object(weights_digest(model))

    wrote_model = False
    if rank == 0:
        clean = build_model(len(SMOKE_FEATURES))  # without the Horovod optimizer, so anyone can load it
        clean.set_weights(model.get_weights())
        clean.save(out / "model.keras")
        wrote_model = True

    report = {
        "rank": rank,
        "size": size,
        "pid": os.getpid(),
        "row_ids": row_ids,
        "allreduced_mean": allreduced,
        "weights_in_sync": len(set(digests)) == 1,
        "loss": [float(v) for v in history.history["loss"]],
        "wrote_model": wrote_model,
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
