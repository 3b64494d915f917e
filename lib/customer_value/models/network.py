"""The Keras network: normalised numeric features, categorical embeddings, a sequence branch over the last N
orders, an MLP trunk, and two heads trained together (ZILN spend, churn).

Normalisation lives inside the model (Keras `Normalization` with the training split's statistics, not
adapted here) so the SavedModel takes the spec's transformed inputs and nothing about it can drift from
training at scoring time. So does the clipping of each numeric input to its training range (`models.spec`:
no input beyond 10 deviations), and, in the served model, the bounds on the spend distribution's parameters
(`bounds`): both are plain Keras layers, so anyone who loads the SavedModel gets bounded outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from customer_value.models.spec import SEQUENCE_CHANNELS, FeatureSpec

SPEND, CHURN = "spend", "churn"


@dataclass(frozen=True)
class NetworkConfig:
    sequence_branch: str = "conv1d"       # conv1d | gru | none
    sequence_units: int = 32
    embedding_dim: int = 4
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    towers: int = 1                       # independent trunks + heads over the shared inputs, averaged
    wide: bool = False                    # a linear path from the normalised numeric inputs to every head
    wide_inputs: tuple[str, ...] = ()     # name prefixes of the numeric inputs the wide path reads; (): all


def input_names(spec: FeatureSpec) -> list[str]:
    return ["numeric", *[f"cat_{c}" for c in spec.categorical_inputs], "sequence"]


def _unit(x: tf.Tensor, low: np.ndarray, width: np.ndarray, name: str) -> tf.Tensor:
    """(x − low) / width per last-axis column, clipped to [0, 1], with built-in layers only (a SavedModel that
    needs no custom code to load): a fixed `Normalization`, then a ReLU capped at 1."""
    layers = tf.keras.layers
    variance = (np.asarray(width, np.float64) ** 2).astype(np.float32)
    unit = layers.Normalization(mean=np.asarray(low, np.float32), variance=variance, name=f"{name}_unit")(x)
    return layers.ReLU(max_value=1.0, name=f"{name}_clip")(unit)


def clipped(x: tf.Tensor, low: np.ndarray, high: np.ndarray, name: str) -> tf.Tensor:
    """x clipped to [low, high] per last-axis column (high > low): scaled to [0, 1] and clipped (`_unit`), then
    scaled back."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    width = high - low
    return tf.keras.layers.Normalization(mean=(-low / width).astype(np.float32),
                                         variance=(1.0 / width ** 2).astype(np.float32), name=name)(
        _unit(x, low, width, name))


def build_network(spec: FeatureSpec, cfg: NetworkConfig, bounds: dict | None = None) -> tf.keras.Model:
    """The functional model; `spec.stats` must hold the training split's statistics. `bounds` (the served
    model's, `models.ziln.spend_bounds`): the spend head's μ and σ clipped to them; the training model has none
    (a clipped μ would stop learning while its random start sits outside the range)."""
    st = spec.stats
    layers = tf.keras.layers
    n_num = len(spec.numeric_inputs)
    numeric_in = tf.keras.Input(shape=(n_num,), name="numeric", dtype=tf.float32)
    std = np.asarray(st["numeric_std"], dtype=np.float64)
    mean = np.asarray(st["numeric_mean"], dtype=np.float64)
    if "numeric_min" in st:     # clipped to the training range, then standardised (at most MAX_SD deviations)
        low, high = np.asarray(st["numeric_min"], np.float64), np.asarray(st["numeric_max"], np.float64)
        width = np.where(high > low, high - low, 1.0)
        unit = _unit(numeric_in, low, width, "numeric_norm")
        # (unit·width + low − mean) / std; an input constant in training is 0 whatever it is at scoring (its
        # weights never learned anything)
        scale = np.where(high > low, std / width, 1e6)
        numeric = layers.Normalization(mean=((mean - low) / width).astype(np.float32),
                                       variance=(scale ** 2).astype(np.float32), name="numeric_norm")(unit)
    else:
        numeric = layers.Normalization(mean=mean.astype(np.float32), variance=(std ** 2).astype(np.float32),
                                       name="numeric_norm")(numeric_in)
    parts = [numeric]
    inputs = [numeric_in]
    for name in spec.categorical_inputs:
        cat_in = tf.keras.Input(shape=(), name=f"cat_{name}", dtype=tf.int32)
        vocab = len(spec.vocabulary(name)) + 1       # index 0: unknown or unseen in training
        emb = layers.Embedding(vocab, cfg.embedding_dim, name=f"emb_{name}")(cat_in)
        parts.append(emb)
        inputs.append(cat_in)
    channels = len(SEQUENCE_CHANNELS) + 1
    seq_in = tf.keras.Input(shape=(spec.sequence_length * channels,), name="sequence", dtype=tf.float32)
    inputs.append(seq_in)
    if cfg.sequence_branch != "none":
        seq = layers.Reshape((spec.sequence_length, channels))(seq_in)
        seq = layers.Normalization(mean=np.asarray([*st["sequence_mean"], 0.0], np.float32),
                                   variance=np.asarray([*st["sequence_std"], 1.0], np.float32) ** 2,
                                   name="sequence_norm")(seq)
        if cfg.sequence_branch == "conv1d":
            seq = layers.Conv1D(cfg.sequence_units, 3, padding="same", activation="relu", name="seq_conv")(seq)
            parts += [layers.GlobalMaxPooling1D()(seq), layers.GlobalAveragePooling1D()(seq)]
        elif cfg.sequence_branch == "gru":
            parts.append(layers.GRU(cfg.sequence_units, name="seq_gru")(seq))
        else:
            raise ValueError(f"unknown sequence_branch {cfg.sequence_branch!r}: conv1d, gru or none")
    x = layers.Concatenate(name="all_inputs")(parts)
    wide_in = _wide_inputs(numeric, spec, cfg) if cfg.wide else None
    spends, churns = [], []
    for t in range(cfg.towers):
        # tower 0 keeps the single-tower layer names, so a one-tower model reads as before
        tag = "" if t == 0 else f"_t{t}"
        h = x
        for i, units in enumerate(cfg.hidden):
            h = layers.Dense(units, activation="relu", name=f"trunk_{i}{tag}")(h)
            if cfg.dropout:
                h = layers.Dropout(cfg.dropout, name=f"trunk_dropout_{i}{tag}")(h)
        spend_t, churn_t = layers.Dense(3, name=f"{SPEND}_head{tag}")(h), layers.Dense(1, name=f"{CHURN}_head{tag}")(h)
        if cfg.wide:    # wide & deep: what is linear in the inputs (BG/NBD's predictions) need not pass the trunk
            spend_t = layers.Add()([spend_t, layers.Dense(3, use_bias=False, name=f"{SPEND}_wide{tag}")(wide_in)])
            churn_t = layers.Add()([churn_t, layers.Dense(1, use_bias=False, name=f"{CHURN}_wide{tag}")(wide_in)])
        spends.append(spend_t)
        churns.append(churn_t)
    # outputs: spend logits [n, 3] and churn logits [n, 1]; with towers [n, towers, 3] and [n, towers], which a
    # prediction averages (models.ziln, models.deep.predict_arrays)
    if cfg.towers == 1:
        spend, churn = spends[0], churns[0]
    else:
        spend = layers.Concatenate(axis=1)([layers.Reshape((1, 3))(t) for t in spends])
        churn = layers.Concatenate(axis=1)(churns)
    if bounds is not None:
        from customer_value.models.ziln import logit_bounds

        low, high = logit_bounds(bounds)
        spend = clipped(spend, low, high, "spend_bound")
    spend = layers.Activation("linear", name=SPEND)(spend)
    churn = layers.Activation("linear", name=CHURN)(churn)
    return tf.keras.Model(inputs, {SPEND: spend, CHURN: churn}, name="customer_value")


def served(trained: tf.keras.Model, spec: FeatureSpec, cfg: NetworkConfig, bounds: dict) -> tf.keras.Model:
    """The network to save and serve: `trained`'s weights in a model whose spend parameters are clipped to
    `bounds` (`models.ziln.spend_bounds`)."""
    model = build_network(spec, cfg, bounds)
    for layer in trained.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def _wide_inputs(numeric: tf.Tensor, spec: FeatureSpec, cfg: NetworkConfig) -> tf.Tensor:
    """The normalised numeric inputs the wide path reads: all, or those named by `cfg.wide_inputs` prefixes,
    picked by a frozen 0/1 matrix (a plain layer, so the SavedModel needs no custom code to load)."""
    names = spec.numeric_inputs
    keep = [i for i, n in enumerate(names) if not cfg.wide_inputs or n.startswith(tuple(cfg.wide_inputs))]
    if not keep:
        raise ValueError(f"wide_inputs {list(cfg.wide_inputs)} match no numeric input of the spec")
    if len(keep) == len(names):
        return numeric
    pick = np.zeros((len(names), len(keep)), np.float32)
    pick[keep, range(len(keep))] = 1.0
    return tf.keras.layers.Dense(len(keep), use_bias=False, trainable=False, name="wide_pick",
                                 kernel_initializer=tf.keras.initializers.Constant(pick))(numeric)


def churn_loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of every tower's churn logit against the one label, averaged over towers."""
    y = tf.broadcast_to(tf.reshape(tf.cast(y_true, tf.float32), [-1, 1]), tf.shape(logits))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits), axis=-1)


def arrays_from_frame(pdf, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The network's input arrays from `model_inputs` rows in pandas (scoring and tests)."""
    out = {"numeric": pdf[spec.numeric_inputs].to_numpy(dtype=np.float32),
           "sequence": pdf[spec.sequence_inputs].to_numpy(dtype=np.float32)}
    for name in spec.categorical_inputs:
        out[f"cat_{name}"] = pdf[name].to_numpy(dtype=np.int32)
    return out
