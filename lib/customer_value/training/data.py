"""Petastorm readers turned into tf.data pipelines, one shard per Horovod rank."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from petastorm import make_batch_reader
from petastorm.tf_utils import make_petastorm_dataset


def shard_reader(url: str, columns: Sequence[str], rank: int, size: int, num_epochs: int | None):
    """A Petastorm batch reader over this rank's row groups only (rank `rank` of `size`).

    Row-group batches, not rows: Petastorm then hands whole Arrow batches to tf.data, the fast path.
    """
    return make_batch_reader(
        url,
        schema_fields=list(columns),
        cur_shard=rank,
        shard_count=size,
        num_epochs=num_epochs,
        shuffle_row_groups=num_epochs is None,
        workers_count=1,
    )


def xy_dataset(reader, features: Sequence[str], label: str, batch_size: int) -> tf.data.Dataset:
    """(features matrix, label) batches from a batch reader, re-batched to a fixed size."""

    def to_xy(batch):
        x = tf.stack([tf.cast(getattr(batch, f), tf.float32) for f in features], axis=1)
        y = tf.cast(getattr(batch, label), tf.float32)
        return tf.data.Dataset.from_tensor_slices((x, y))

    return make_petastorm_dataset(reader).flat_map(to_xy).batch(batch_size, drop_remainder=True)
