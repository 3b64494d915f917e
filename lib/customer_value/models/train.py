"""One Horovod rank of the model's training: `horovodrun -np N python -m customer_value.models.train --plan P`,
or `train(plan)` inside `horovod.spark.run`. The plan (JSON, written by `models.fit`) says what to read and
where to write; one process is the same code with size 1.

Per rank: its own Petastorm shard, the same number of steps as every other rank (the smallest shard's),
gradients averaged by `DistributedOptimizer`, learning rate scaled by the rank count, variables broadcast from
rank 0, metrics averaged across ranks before anyone looks at them, so early stopping is the same decision on
every rank. Rank 0 alone writes checkpoints (every epoch: weights, then a state file that points at them, so a
crash between the two leaves the previous state whole) and the model. A rerun after a crash resumes from the
last checkpoint, with the early-stopping state it had.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

STATE = "state.json"


def _threads(n: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_state(checkpoints: Path) -> dict | None:
    f = checkpoints / STATE
    return json.loads(f.read_text()) if f.exists() else None


def train(plan: dict) -> dict:
    """Train on this rank; return (and write) this rank's report. Rank 0 also writes the model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from customer_value.models import data
    from customer_value.models.network import CHURN, SPEND, NetworkConfig, build_network, churn_loss, served
    from customer_value.models.spec import FeatureSpec, resolved_network
    from customer_value.models.ziln import ziln_loss

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    threads = int(plan.get("threads_per_rank", 1))
    _threads(threads)
    seed = int(plan["seed"])
    tf.keras.utils.set_random_seed(seed)
    spec = FeatureSpec.from_json(Path(plan["spec"]).read_text())
    checkpoints, out, reports = Path(plan["checkpoint_dir"]), Path(plan["out_dir"]), Path(plan["report_dir"])
    wrote: list[str] = []
    t_start = time.perf_counter()
    started_at = time.time()
    phases: dict[str, float] = {}       # seconds per part of this rank's work, in order
    last = [t_start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        phases[name], last[0] = round(now - last[0], 3), now

    # Equal steps on every rank: the smallest shard decides.
    train_keys = data.shard_keys(plan["train_url"], rank, size)
    val_keys = data.shard_keys(plan["validation_url"], rank, size)
    batch = int(plan["batch_size"])
    min_train = int(hvd_tf.allreduce(tf.constant(len(train_keys), tf.int64), op=hvd_tf.Min).numpy())
    min_val = int(hvd_tf.allreduce(tf.constant(len(val_keys), tf.int64), op=hvd_tf.Min).numpy())
    if min_val == 0:
        raise ValueError(f"rank {rank}: no validation rows in its shard ({len(val_keys)} here, the fewest of {size} "
                         f"ranks: 0); the validation split has fewer row groups than ranks: give it more customers "
                         f"or snapshots, or lower training.rows_per_group")
    # validation batches are whole (the loader drops a remainder): a split smaller than one batch a rank is
    # validated in one smaller batch, not skipped (Keras then reports no val_loss and early stopping has nothing)
    val_batch = min(batch, min_val)
    steps, val_steps = min_train // batch, max(1, min_val // val_batch)
    if steps < 1:
        raise ValueError(f"rank {rank}: the smallest shard has {min_train} rows, fewer than one batch of {batch}")
    lap("shards")

    model = build_network(spec, NetworkConfig(**resolved_network(plan["network"], spec)))
    lr = float(plan["learning_rate"]) * size
    opt = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate=lr),
                                   backward_passes_per_step=int(plan.get("backward_passes_per_step", 1)),
                                   average_aggregated_gradients=True,
                                   # embedding gradients are IndexedSlices; as dense tensors they fuse with the
                                   # rest and can be aggregated locally (the tables are tiny)
                                   sparse_as_dense=True,
                                   # one grouped allreduce per step: one negotiation instead of one per tensor
                                   # (the per-step latency that holds CPU ranks back)
                                   num_groups=int(plan.get("horovod", {}).get("num_groups", 1)))
    model.compile(optimizer=opt,
                  loss={SPEND: ziln_loss, CHURN: churn_loss},
                  loss_weights={SPEND: 1.0, CHURN: float(plan.get("churn_loss_weight", 1.0))})
    lap("model")

    state = read_state(checkpoints)
    initial_epoch = 0
    best, wait = float("inf"), 0
    if state:
        model.load_weights(str(checkpoints / state["weights"]))
        initial_epoch, best, wait = state["epoch"], state["best_loss"], state["wait"]
    patience, epochs = int(plan["patience"]), int(plan["epochs"])
    lr_patience = int(plan.get("lr_patience") or patience + 1)     # epochs without improvement before lr / 2

    class Checkpoint(tf.keras.callbacks.Callback):
        """Rank 0: weights of each epoch, the best ones, and the state pointing at them; all ranks: the
        agreed stop (val_loss is already averaged across ranks here, so every rank decides the same)."""

        def __init__(self):
            super().__init__()
            self.best, self.wait, self.epoch_times = best, wait, []
            self.t0 = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.t_val = None

        def on_test_begin(self, logs=None):
            self.t_val = time.perf_counter()       # the epoch's training steps end where validation begins

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_times.append((self.t_val or time.perf_counter()) - self.t0)
            loss = float(logs["val_loss"])
            improved = loss < self.best - 1e-4
            self.best, self.wait = (loss, 0) if improved else (self.best, self.wait + 1)
            if rank == 0:
                checkpoints.mkdir(parents=True, exist_ok=True)
                name = f"epoch-{epoch + 1:04d}"
                self.model.save_weights(str(checkpoints / name))
                prev = read_state(checkpoints) or {}
                if improved:
                    self.model.save_weights(str(checkpoints / "best"))
                _write_json(checkpoints / STATE, {"epoch": epoch + 1, "weights": name, "best_loss": self.best,
                                                  "best_epoch": (epoch + 1) if improved else prev.get("best_epoch", epoch + 1),
                                                  "best_weights": "best", "wait": self.wait})
                # the state now points at this epoch's weights: older epochs' files are no longer needed
                for old in checkpoints.glob("epoch-*"):
                    if not old.name.startswith(name):
                        old.unlink()
                wrote.append(str(checkpoints / name))
            if self.wait >= patience:
                self.model.stop_training = True
            elif self.wait and self.wait % lr_patience == 0:     # a plateau: halve the learning rate (all ranks)
                lr_var = self.model.optimizer.learning_rate
                lr_var.assign(lr_var * 0.5)

    ckpt = Checkpoint()
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback(), ckpt]
    history: dict = {}
    if initial_epoch < epochs and wait < patience:
        seed_r = seed + 1000 * initial_epoch       # a resumed run does not replay the same row-group order
        va = data.fresh_pass(plan["validation_url"], data.columns_for(spec), rank, size)
        # the validation batches read once and kept (a few MB): every epoch sees the same rows in the same order
        # without opening a Petastorm reader again. Read to the end here: Keras stops after `validation_steps`
        # batches, and a cache left unfinished is dropped
        validation = data.dataset(va, spec, val_batch, threads=threads).take(val_steps).cache()
        for _ in validation:
            pass
        lap("validation")
        with data.reader(plan["train_url"], data.columns_for(spec), rank, size, None, seed_r) as tr:
            fit = model.fit(data.dataset(tr, spec, batch, threads=threads), steps_per_epoch=steps, epochs=epochs,
                            initial_epoch=initial_epoch,
                            validation_data=validation,
                            validation_steps=val_steps, callbacks=callbacks, verbose=0)
            history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
            lap("fit")
        lap("close")

    final = read_state(checkpoints) if rank == 0 else None
    if rank == 0:
        # no Horovod optimizer: anyone can load it
        net = NetworkConfig(**resolved_network(plan["network"], spec))
        clean = build_network(spec, net)
        clean.load_weights(str(checkpoints / "best"))
        calibration = calibrate(clean, plan["validation_url"], spec, plan.get("bounds", {}))
        out.mkdir(parents=True, exist_ok=True)
        served(clean, spec, net, calibration["bounds"]).save(str(out / "saved_model"), include_optimizer=False)
        _write_json(out / "calibration.json", calibration)
        wrote += [str(out / "saved_model"), str(out / "calibration.json")]
        lap("save")
    report = {
        "rank": rank, "size": size, "pid": os.getpid(), "train_rows": len(train_keys), "validation_rows": len(val_keys),
        "steps_per_epoch": steps, "validation_steps": val_steps, "batch_size": batch, "initial_epoch": initial_epoch,
        "epochs_run": len(ckpt.epoch_times), "train_seconds": ckpt.epoch_times, "history": history,
        # global training samples/s, validation excluded, from the second epoch on (the first traces the graph)
        "samples_per_second": (steps * batch * size / (sum(ckpt.epoch_times[1:]) / len(ckpt.epoch_times[1:])))
        if len(ckpt.epoch_times) > 1 else None,
        "best_loss": ckpt.best, "best_epoch": (final or {}).get("best_epoch"), "wrote": wrote,
        "seconds": time.perf_counter() - t_start, "phases": phases, "started_at": started_at,
    }
    if plan.get("record_shards"):
        report["train_keys"], report["validation_keys"] = sorted(train_keys), sorted(val_keys)
    reports.mkdir(parents=True, exist_ok=True)
    _write_json(reports / f"rank-{rank}.json", report)
    return report


def calibrate(model, validation_url: str, spec, settings: dict) -> dict:
    """The served model's bounds (`ziln.spend_bounds`, from the training labels' range in the spec and the σ the
    network gives the validation split) and, on the bounded outputs, the interval's and the mean's calibration
    (rank 0, after training). `settings`: `spend_cap_multiple` and `mu_log_margin` (training config)."""
    import numpy as np

    from customer_value.models import data
    from customer_value.models.network import SPEND
    from customer_value.models.ziln import bounded, interval_scale, mean_scale, spend_bounds

    logits, spend = [], []
    with data.reader(validation_url, data.columns_for(spec), 0, 1, epochs=1) as r:
        for x, y in data.dataset(r, spec, 4096, drop_remainder=False):
            logits.append(np.asarray(model(x, training=False)[SPEND]))
            spend.append(y["spend"].numpy())
    lg, y = np.concatenate(logits), np.concatenate(spend)
    bounds = spend_bounds(spec.stats["spend_labels"], np.logaddexp(0.0, lg[..., 2]).ravel(),
                          settings.get("mu_log_margin", 0.5), settings.get("spend_cap_multiple", 1.0))
    lg = bounded(lg, bounds)
    return {"interval_scale": interval_scale(lg, y), "mean_scale": mean_scale(lg, y), "validation_rows": int(len(y)),
            "validation_buyers": int((y > 0).sum()), "bounds": bounds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", required=True, help="the training plan (JSON) written by customer_value.models.fit")
    args = parser.parse_args(argv)
    train(json.loads(Path(args.plan).read_text()))


if __name__ == "__main__":
    main()
