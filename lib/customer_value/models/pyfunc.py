"""A registered version as an MLflow pyfunc model: what MLflow's own tools load.

Why: `models:/customer_value@champion` is how the MLflow ecosystem names a model (a Databricks serving endpoint,
`mlflow.pyfunc.spark_udf` in someone else's notebook, a batch job that knows nothing of this package's CLI). The
version's artifact (SavedModel, feature spec with its statistics, calibration) travels inside the MLflow model,
and `predict` takes rows of gold.customer_features as they are: the feature spec's transformation
(`spec.input_arrays`) and the product's output arithmetic (`deep.predictions`: calibration, level, cap) run
inside it, so a pandas frame of features in gives the product's scores out.

One input is not a column of the features table: where the spec stacks BG/NBD + Gamma-Gamma's predictions
(`btyd_inputs`), those are fitted on the whole snapshot being scored, which a model seeing one batch cannot do.
Pass the features through `customer_value.models.btyd_inputs.prepared(features, spec)` first (the product's
scorer does the same); a frame without them is refused with that advice rather than scored wrongly.

The package itself (this module, TensorFlow) must be installed where the model is loaded: the wheel that
`deploy/` ships.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from customer_value.scoring.score import PREDICTED

ARTIFACT = "artifact"       # the key of the version's folder among the MLflow model's artifacts
# what `predict` returns, one row per input row, in its order: the scorer's predicted columns (a `spark_udf`
# result type)
OUTPUTS = PREDICTED
RESULT_TYPE = ", ".join(f"{c} double" for c in OUTPUTS)


class ServedModel(PythonModel):
    """customer_value's scorer for MLflow: features rows → expected spend, intervals, P(buy), churn."""

    def load_context(self, context) -> None:
        from customer_value.models.deep import calibration_of, load_saved_model
        from customer_value.models.spec import FeatureSpec

        folder = Path(context.artifacts[ARTIFACT])
        self.spec = FeatureSpec.from_json((folder / "spec.json").read_text())
        self.calibration = calibration_of(folder)
        self.model = load_saved_model(str(folder / "saved_model"), 1)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from customer_value.models.btyd_inputs import BTYD_INPUTS, uses_btyd
        from customer_value.models.deep import predict_arrays
        from customer_value.models.spec import input_arrays

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if uses_btyd(self.spec):
            missing = [c for c in BTYD_INPUTS if c not in frame.columns]
            if missing:
                raise ValueError(f"this model reads BG/NBD + Gamma-Gamma's predictions fitted on the whole snapshot "
                                 f"({', '.join(missing)} missing): pass the features through "
                                 "customer_value.models.btyd_inputs.prepared(features, spec) first")
        if not len(frame):
            return pd.DataFrame({c: np.zeros(0) for c in OUTPUTS})
        out = predict_arrays(self.model, input_arrays(frame, self.spec), **self.calibration)
        return pd.DataFrame({"expected_spend": out["predicted_spend"], **{c: out[c] for c in OUTPUTS[1:]}})


def log_model(folder: Path, requirements: list[str]) -> str:
    """Log the version staged in `folder` to the active MLflow run as a pyfunc model; its URI."""
    import mlflow

    with warnings.catch_warnings():         # MLflow's advice on type hints and pickling: noise for this model
        warnings.simplefilter("ignore")
        info = mlflow.pyfunc.log_model(name="model", python_model=ServedModel(),
                                       artifacts={ARTIFACT: str(folder)}, pip_requirements=requirements)
    return info.model_uri
