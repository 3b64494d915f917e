"""The HTML report on a small synthetic frame: files, PNGs, the self-contained page and metrics.json."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from customer_value.evaluation.metrics import METRICS

# Models without an interval (no spend_p10/p90 columns) have every metric but the intervals' coverage.
POINT_METRICS = set(METRICS) - {"interval_coverage_buyers", "interval_coverage"}
from customer_value.evaluation.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["gain_curve.png", "calibration.png", "deciles.png", "score_distribution.png"]
IMG = '<img src="data:image/png;base64,'


def predictions(models: dict[str, float], n: int = 400, seed: int = 0) -> pd.DataFrame:
    """One row per customer and model: each model is the truth blurred by noise of the given scale."""
    rng = np.random.default_rng(seed)
    churn_p = rng.beta(1.5, 1.5, n)
    churned = rng.random(n) < churn_p
    expected = (1 - churn_p) * rng.gamma(2.0, 50.0, n)
    actual = np.where(churned, 0.0, expected * rng.gamma(4.0, 0.25, n))
    frames = [pd.DataFrame({
        "model": name,
        "predicted_spend": expected * np.exp(rng.normal(0, noise, n)),
        "churn_probability": np.clip(churn_p + rng.normal(0, noise / 4, n), 0, 1),
        "actual_spend": actual,
        "churned": churned,
    }) for name, noise in models.items()]
    return pd.concat(frames, ignore_index=True)


CONTEXT = {"snapshot": "2024-06-01", "horizon_days": "90", "customers": "400", "versions": "<script>x</script>"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    metrics = write_report(out, predictions({"dnn": 0.6, "oracle": 0.0}), "Evaluation & <test>", CONTEXT)
    return out, metrics


def test_writes_valid_pngs_with_the_models_drawn(report):
    out, _ = report
    first_model = np.array(to_rgb("C0"))  # the first model's colour in every plot
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 5_000, name
        # Size alone proves little (empty labelled axes are ~20 kB): the model's curve/bars must be on the canvas.
        pixels = imread(io.BytesIO(data), format="png")[..., :3]
        assert (np.abs(pixels - first_model).max(axis=2) < 0.08).sum() > 500, name


def test_html_is_self_contained_and_complete(report):
    out, metrics = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count(IMG) == len(list(out.glob("*.png"))) == len(PLOTS)
    assert not re.search(r"<(link|script)\b", page) and "http" not in page  # nothing fetched from elsewhere
    for model in metrics:
        assert f"<th>{model}</th>" in page
    for name in POINT_METRICS:
        assert f">{name}</th>" in page
        assert f">{name}_vs_oracle</th>" in page  # dnn against the oracle
    assert "Evaluation &amp; &lt;test&gt;" in page and "<test>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "2024-06-01" in page
    # The oracle is the reference, not a contender: the model is highlighted although the oracle is better.
    assert metrics["oracle"]["spend_gini"] > metrics["dnn"]["spend_gini"]
    assert [best for best, _ in _row(page, "spend_gini")] == [True, False]  # columns: dnn, oracle


def test_metrics_json_round_trips(report):
    out, metrics = report
    document = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert document["title"] == "Evaluation & <test>"
    assert document["context"] == CONTEXT
    assert set(document["metrics"]) == set(metrics) == {"dnn", "oracle"}
    for model, values in metrics.items():
        assert set(values) == POINT_METRICS
        assert document["metrics"][model] == pytest.approx(values)
    assert set(document["vs_oracle"]) == {"dnn"}
    assert document["vs_oracle"]["dnn"]["spend_gini_vs_oracle"] == pytest.approx(
        metrics["dnn"]["spend_gini"] / metrics["oracle"]["spend_gini"])


def _row(page: str, metric: str) -> list[tuple[bool, str]]:
    """(highlighted, text) of each model cell in the first table row of `metric`."""
    row = re.search(rf'<th class="metric">{metric}</th>(.*?)</tr>', page).group(1)
    return [("best" in cls, text) for cls, text in re.findall(r'<td class="(num[^"]*)">([^<]*)</td>', row)]


def test_best_value_per_row_is_highlighted_whichever_direction(tmp_path):
    # "good" is the truth itself, "bad" is heavily blurred: good wins both a higher- and a lower-is-better row.
    metrics = write_report(tmp_path, predictions({"bad": 2.0, "good": 0.0}), "t", {})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert metrics["good"]["spend_gini"] > metrics["bad"]["spend_gini"]
    assert metrics["good"]["spend_mae"] < metrics["bad"]["spend_mae"]
    for metric in ("spend_gini", "spend_mae"):
        assert [best for best, _ in _row(page, metric)] == [False, True]  # columns: bad, good
    assert "_vs_oracle" not in page
    assert json.loads((tmp_path / "metrics.json").read_text())["vs_oracle"] == {}


def test_undefined_metrics_are_null_in_json_and_na_in_html(tmp_path):
    frame = predictions({"m": 0.5, "oracle": 0.0}, n=200)
    frame["churned"] = True  # one class only: the AUCs are undefined
    metrics = write_report(tmp_path, frame, "t", {})
    assert math.isnan(metrics["m"]["churn_roc_auc"])
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["metrics"]["m"]["churn_roc_auc"] is None
    assert [text for _, text in _row((tmp_path / "report.html").read_text(), "churn_roc_auc")] == ["n/a", "n/a"]


def test_missing_columns_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model"):
        write_report(tmp_path, predictions({"m": 0.5}).drop(columns="model"), "t", {})


def test_the_report_is_the_same_file_for_file_whatever_the_row_order(tmp_path):
    # Rows as Spark may return them: models interleaved, "rfm" first in one order and "dnn" in the other. The
    # columns, colours and metrics.json follow the sorted model names (oracle last), not the order of appearance,
    # and every metric and plot is order-free: the same bytes come out.
    frame = predictions({"rfm": 0.8, "dnn": 0.4, "oracle": 0.0}, n=300)
    rows = np.random.default_rng(1).permutation(len(frame))
    rfm_first = frame.iloc[rows].sort_values("model", key=lambda m: m != "rfm", kind="stable")
    dnn_first = frame.iloc[rows[::-1]].sort_values("model", key=lambda m: m != "dnn", kind="stable")
    outs = []
    for i, order in enumerate((rfm_first, dnn_first)):
        metrics = write_report(tmp_path / str(i), order, "t", CONTEXT)
        assert list(metrics) == ["dnn", "rfm", "oracle"]
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / str(i)).iterdir())})
    assert list(outs[0]) == sorted(PLOTS + ["metrics.json", "report.html"])
    assert outs[0] == outs[1]
