"""Petastorm → tf.data for the network: each Horovod rank reads its own shard of row groups.

The training set stores the network's numeric and sequence inputs as two fixed-length array columns
(`spec.packed`), so a row group comes out of Petastorm as one matrix per input (Petastorm stacks a fixed-length
list column on the whole row group), not as a few hundred column vectors to stack per batch; `rebatch` cuts
fixed-size training batches without unbatching row by row.

A finite pass (`epochs=1`: shard sizes, calibration) reads through Petastorm's synchronous ("dummy") pool:
its thread pool can end a finite pass early. Its `get_results` checks "every worker is idle" and "the ventilator
has finished" one after the other, so when the ventilator hands out the remaining row groups between the two
checks the reader stops with them unread (petastorm 0.13.1; about every second one-pass read of a 7-row-group
shard here lost 3 of them). An endless reader (`epochs=None`, training) never sees a finished ventilator.

Every rank must run the same number of steps per epoch (a rank that finishes early leaves the others waiting
in an allreduce forever), so the step count comes from the smallest shard (`steps_per_epoch`), and the reader
repeats its shard endlessly.

Validation reads the same rows every epoch (`fresh_pass`): Keras makes a new iterator over the validation data
each epoch and drops the old one with whatever its prefetch had already taken from the reader, so a validation
set drawn from one long-lived reader starts each epoch at a point that depends on thread timing, and the
validation loss (early stopping, the learning-rate plateau, the best checkpoint) differed between two runs of
the same seed and data.
The trainer keeps the batches of that first pass (`cache` after `take`, so the cache is complete): later epochs
validate on the same batches without opening a reader.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from petastorm import make_batch_reader
from petastorm.tf_utils import make_petastorm_dataset

from customer_value.models.spec import NUMERIC_BLOCK, SEQUENCE_BLOCK, FeatureSpec

LABELS = ("future_spend", "churned")
ROW_KEY = "row_key"


def reader(url: str, columns: Sequence[str], rank: int, size: int, epochs: int | None, seed: int | None = None):
    """A Petastorm batch reader over rank `rank`'s row groups of `size` shards. `epochs=None` repeats forever,
    shuffling the order of row groups with `seed` (deterministic: one worker thread); a finite pass reads every
    row group in order on the calling thread (see the module's docstring for why)."""
    return make_batch_reader(url, schema_fields=list(columns), cur_shard=rank, shard_count=size,
                             num_epochs=epochs, shuffle_row_groups=epochs is None, seed=seed,
                             shard_seed=0, workers_count=1, reader_pool_type="thread" if epochs is None else "dummy")


def shard_keys(url: str, rank: int, size: int) -> list[int]:
    """The row keys of this rank's shard, one pass: its size for the step count, and for the tests."""
    with reader(url, [ROW_KEY], rank, size, epochs=1) as r:
        return [int(k) for batch in r for k in batch.row_key]


def fresh_pass(url: str, columns: Sequence[str], rank: int, size: int) -> tf.data.Dataset:
    """Rank `rank`'s shard as Petastorm batches, read from the start by a new finite reader each time the dataset
    is iterated: every epoch's validation sees the same rows in the same order (see the module's docstring)."""
    with reader(url, columns, rank, size, epochs=1) as probe:
        element = make_petastorm_dataset(probe).element_spec       # a namedtuple of TensorSpecs
    fields, row = element._fields, type(element)

    def batches():
        with reader(url, columns, rank, size, epochs=1) as r:
            for b in r:
                yield tuple(getattr(b, f).astype(element[i].dtype.as_numpy_dtype, copy=False)
                            for i, f in enumerate(fields))

    return tf.data.Dataset.from_generator(batches, output_signature=tuple(element)).map(lambda *xs: row(*xs))


def columns_for(spec: FeatureSpec) -> list[str]:
    """The training set's columns the network reads (the packed layout of `spec.packed`) and the labels."""
    return [NUMERIC_BLOCK, SEQUENCE_BLOCK, *spec.categorical_inputs, *LABELS]


def to_tensors(spec: FeatureSpec):
    """A tf.data map from a Petastorm batch (namedtuple of column vectors) to (inputs, targets) of the batch."""
    n_num, n_seq, cats = len(spec.numeric_inputs), len(spec.sequence_inputs), spec.categorical_inputs

    def convert(batch):
        get = lambda n: getattr(batch, n)  # noqa: E731
        inputs = {"numeric": tf.reshape(get(NUMERIC_BLOCK), [-1, n_num]),
                  "sequence": tf.reshape(get(SEQUENCE_BLOCK), [-1, n_seq])}
        for name in cats:
            inputs[f"cat_{name}"] = tf.cast(get(name), tf.int32)
        targets = {"spend": tf.cast(get("future_spend"), tf.float32),
                   "churn": tf.reshape(tf.cast(get("churned"), tf.float32), [-1, 1])}
        return inputs, targets

    return convert


def dataset(r, spec: FeatureSpec, batch_size: int, drop_remainder: bool = True,
            threads: int | None = None) -> tf.data.Dataset:
    """Fixed-size (inputs, targets) batches from an open reader, or from a `fresh_pass` dataset, re-batched
    without unbatching. `threads`: the input pipeline's own thread pool (tf.data otherwise sizes it to every core
    of the machine, and ranks that share a machine then compete for the cores their training threads need).

    Autotuning is off: every stage's parallelism and buffer are fixed here, so it has nothing to tune, and its
    model thread made the end of training wait. Destroying an iterator (Keras does it as `fit` returns) waits for
    that thread, which sleeps between optimisation rounds for up to a minute: about every second training of the
    demo spent 20-36 s there after its last epoch (TensorFlow 2.15, found with gdb in
    `Model::OptimizeLoop`)."""
    source = r if isinstance(r, tf.data.Dataset) else make_petastorm_dataset(r)
    ds = (source.map(to_tensors(spec), num_parallel_calls=1)
          .rebatch(batch_size, drop_remainder=drop_remainder).prefetch(2))
    options = tf.data.Options()
    options.autotune.enabled = False
    if threads:
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)
