"""The evaluation report: metrics.json, one PNG per plot and a self-contained report.html, for several models.

The HTML embeds the PNGs as data URIs and carries its own CSS, so it can be mailed or attached to a run as one
file. Figures are built on `matplotlib.figure.Figure` (Agg canvas) rather than pyplot, so nothing depends on the
process's backend or global figure state.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from customer_value.evaluation.metrics import (
    METRICS,
    PREDICTION_COLUMNS,
    calibration,
    decile_table,
    evaluate,
    gain_curve,
    oracle_ratios,
)

ORACLE = "oracle"
DPI = 110


# ---------------------------------------------------------------- models and metrics

def _models(predictions: pd.DataFrame) -> list[str]:
    """Model names sorted, the oracle last: it is the reference, not a contender.

    Sorted rather than in order of appearance: rows read back from Spark come in no fixed order, and the columns
    of the tables, the colours and metrics.json would change with it."""
    names = sorted({str(m) for m in predictions["model"]})
    return [m for m in names if m != ORACLE] + [m for m in names if m == ORACLE]


def _split(predictions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    missing = [c for c in ("model", *PREDICTION_COLUMNS) if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    names = predictions["model"].astype(str)
    return {m: predictions[names == m] for m in _models(predictions)}


def vs_oracle(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Each model's metrics as a share of the oracle's; empty without an oracle."""
    if ORACLE not in metrics:
        return {}
    return {m: oracle_ratios(values, metrics[ORACLE]) for m, values in metrics.items() if m != ORACLE}


def _json_safe(value: float) -> float | None:
    """NaN becomes null: strict JSON has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _write_json(path: Path, title: str, context: Mapping[str, str], metrics: Mapping[str, Mapping[str, float]],
                ratios: Mapping[str, Mapping[str, float]]) -> None:
    def clean(table):
        return {m: {k: _json_safe(v) for k, v in values.items()} for m, values in table.items()}

    document = {"title": title, "context": {str(k): str(v) for k, v in context.items()},
                "metrics": clean(metrics), "vs_oracle": clean(ratios)}
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- plots

def _styles(models: list[str]) -> dict[str, dict]:
    """One colour per model, the same in every plot; the oracle in black, dashed."""
    palette = [f"C{i}" for i in range(10)]
    styles = {}
    for i, m in enumerate(x for x in models if x != ORACLE):
        styles[m] = {"color": palette[i % len(palette)], "linestyle": "-"}
    if ORACLE in models:
        styles[ORACLE] = {"color": "black", "linestyle": "--"}
    return styles


def _figure(**kwargs) -> Figure:
    return Figure(layout="constrained", **kwargs)


def _gain_figure(groups: Mapping[str, pd.DataFrame], metrics: Mapping[str, Mapping[str, float]]) -> Figure:
    fig = _figure(figsize=(7.5, 6))
    ax = fig.subplots()
    grid = np.linspace(0.0, 1.0, 501)  # plotted on a grid: 100k customers need not be 100k vertices
    ideals: list[np.ndarray] = []
    styles = _styles(list(groups))
    for name, frame in groups.items():
        actual = frame["actual_spend"].to_numpy(dtype=float)
        x, y = gain_curve(actual, frame["predicted_spend"].to_numpy(dtype=float))
        gini = metrics[name]["spend_gini"]
        ax.plot(grid, np.interp(grid, x, y), label=f"{name} (Gini {_fmt(gini)})", **styles[name])
        ideal = np.interp(grid, *gain_curve(actual, actual))
        if not any(np.allclose(ideal, seen, equal_nan=True) for seen in ideals):
            ideals.append(ideal)
    for i, ideal in enumerate(ideals):
        ax.plot(grid, ideal, color="grey", linewidth=2.5, alpha=0.6,
                label="ideal (sorted by actual)" if i == 0 else None)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), title="Gain curve: actual spend captured by the predicted-spend ranking",
           xlabel="share of customers, highest predicted spend first", ylabel="cumulative share of actual spend")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def _calibration_figure(groups: Mapping[str, pd.DataFrame], metrics: Mapping[str, Mapping[str, float]]) -> Figure:
    fig = _figure(figsize=(7, 6.5))
    ax = fig.subplots()
    top = 0.05
    styles = _styles(list(groups))
    for name, frame in groups.items():
        table = calibration(frame["churned"].to_numpy(), frame["churn_probability"].to_numpy(dtype=float))
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o",
                label=f"{name} (Brier {_fmt(metrics[name]['churn_brier'])})", **styles[name])
        top = max(top, table["mean_predicted"].max(), table["observed_rate"].max())
    top = min(1.0, math.ceil(top * 1.1 * 20) / 20)  # zoom to the data, in steps of 0.05
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="perfect calibration")
    margin = 0.015 * top  # so markers at 0 or 1 are not cut in half by the frame
    ax.set(xlim=(-margin, top + margin), ylim=(-margin, top + margin), aspect="equal",
           title="Churn calibration (10 quantile bins of predicted probability)",
           xlabel="mean predicted churn probability in bin", ylabel="observed churn rate in bin")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def _deciles_figure(groups: Mapping[str, pd.DataFrame], metrics: Mapping[str, Mapping[str, float]]) -> Figure:
    ncols = min(2, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = _figure(figsize=(6 * ncols, 3.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()  # own y scale each: one model's outlier hides no other
    for ax, (name, frame) in zip(axes, groups.items()):
        table = decile_table(frame["actual_spend"].to_numpy(dtype=float),
                             frame["predicted_spend"].to_numpy(dtype=float))
        ax.bar(table["decile"] - 0.2, table["mean_predicted"], width=0.4, label="predicted", color="C0")
        ax.bar(table["decile"] + 0.2, table["mean_actual"], width=0.4, label="actual", color="C1")
        ax.set(title=f"{name} (decile MAPE {_fmt(metrics[name]['spend_decile_mape'])})", xticks=range(1, 11),
               xlabel="predicted-spend decile (1 = highest)", ylabel="mean spend per customer")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.suptitle("Mean predicted vs actual spend by predicted-spend decile")
    return fig


def _spend_ticks(top: float) -> tuple[list[float], list[str]]:
    """Tick positions (log1p scale) and labels (spend) at 0, 1, 10, 100, ... and 3, 30, ... when few decades."""
    decades = max(1, math.ceil(math.log10(top + 1)))
    values = [0.0] + [10.0 ** k for k in range(decades + 1)]
    if decades <= 4:
        values += [3 * 10.0 ** k for k in range(decades)]
    values = sorted(v for v in values if v <= max(top, 1.0) * 1.5)
    return [math.log1p(v) for v in values], [f"{v:,.0f}" for v in values]


def _distribution_figure(groups: Mapping[str, pd.DataFrame], metrics: Mapping[str, Mapping[str, float]]) -> Figure:
    fig = _figure(figsize=(12, 4.8))
    spend_ax, churn_ax = fig.subplots(1, 2)
    styles = _styles(list(groups))
    # negative predictions (a regression can produce them) are shown at 0: log1p needs values above -1
    spend = {m: np.log1p(np.clip(f["predicted_spend"].to_numpy(dtype=float), 0.0, None)) for m, f in groups.items()}
    spend_bins = np.histogram_bin_edges(np.concatenate(list(spend.values())), bins=50)
    churn_bins = np.linspace(0.0, 1.0, 41)
    for name, frame in groups.items():
        style = {"histtype": "step", "linewidth": 1.6, **styles[name]}
        spend_ax.hist(spend[name], bins=spend_bins, label=name, **style)
        churn_ax.hist(frame["churn_probability"].to_numpy(dtype=float), bins=churn_bins, label=name, **style)
    ticks, labels = _spend_ticks(float(np.expm1(spend_bins[-1])))
    spend_ax.set_xticks(ticks, labels)
    spend_ax.set(title="Predicted spend (log1p scale)", xlabel="predicted spend", ylabel="customers")
    churn_ax.set(title="Churn probability", xlabel="predicted churn probability", ylabel="customers", xlim=(0, 1))
    for ax in (spend_ax, churn_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Distribution of the predictions per model")
    return fig


Plot = Callable[[Mapping[str, pd.DataFrame], Mapping[str, Mapping[str, float]]], Figure]

PLOTS: tuple[tuple[str, str, Plot], ...] = (
    ("gain_curve", "Gain curve: how much of the actual spend the top of each model's ranking holds.", _gain_figure),
    ("calibration", "Churn calibration: observed churn rate against predicted probability.", _calibration_figure),
    ("deciles", "Spend level by predicted-spend decile: predicted against actual mean.", _deciles_figure),
    ("score_distribution", "Distribution of predicted spend and churn probability.", _distribution_figure),
)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


# ---------------------------------------------------------------- HTML

def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _best(values: Mapping[str, float], better: str) -> set[str]:
    """Models whose value, as displayed, equals the best finite one of the row; the oracle competes only alone."""
    contenders = {m: v for m, v in values.items() if m != ORACLE} or dict(values)
    finite = {m: v for m, v in contenders.items() if v is not None and math.isfinite(v)}
    if not finite or better not in ("higher", "lower"):
        return set()
    target = _fmt(max(finite.values()) if better == "higher" else min(finite.values()))
    return {m for m, v in finite.items() if _fmt(v) == target}  # equal as shown: no unexplained winner


def _metrics_table(table: Mapping[str, Mapping[str, float]], suffix: str = "") -> str:
    """Metrics as rows, models as columns; the best value of each row highlighted."""
    e = html.escape
    models = list(table)
    names = list(dict.fromkeys(k for values in table.values() for k in values))
    head = "".join(f"<th>{e(m)}</th>" for m in models)
    rows = []
    for name in names:
        base = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
        better, description = METRICS.get(base, ("", ""))
        values = {m: table[m].get(name, float("nan")) for m in models}
        best = _best(values, better)
        cells = "".join(f'<td class="num{" best" if m in best else ""}">{e(_fmt(values[m]))}</td>' for m in models)
        rows.append(f"<tr><th class=\"metric\">{e(name)}</th><td>{e(better)}</td>{cells}<td>{e(description)}</td></tr>")
    return (f'<table class="metrics"><thead><tr><th>metric</th><th>better</th>{head}<th>what it measures</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _context_table(context: Mapping[str, str]) -> str:
    e = html.escape
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in context.items())
    return f'<table class="context"><tbody>{rows}</tbody></table>'


def _figure_html(png: bytes, name: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #d7f0d7; font-weight: bold; }
th.metric { font-family: ui-monospace, monospace; font-weight: normal; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
p.note { color: #555; font-size: 0.9em; }
"""


def _html(title: str, context: Mapping[str, str], metrics: Mapping[str, Mapping[str, float]],
          ratios: Mapping[str, Mapping[str, float]], figures: list[tuple[str, str, bytes]]) -> str:
    e = html.escape
    note = ("Best value per row highlighted" + (", among the models other than the oracle (shown as the reference)"
                                                 if ORACLE in metrics and len(metrics) > 1 else "")
            + "; 'better' says whether higher or lower values are better. n/a: undefined on this sample.")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
        "<h2>Context</h2>", _context_table(context),
        "<h2>Metrics</h2>", f'<p class="note">{e(note)}</p>', _metrics_table(metrics),
    ]
    if ratios:
        parts += ["<h2>Relative to the oracle</h2>",
                  '<p class="note">Model value divided by the oracle\'s (the true expectation on synthetic data). '
                  "For 'higher' metrics 1 is the attainable best; for 'lower' ones, values above 1 are the excess "
                  "error.</p>",
                  _metrics_table(ratios, suffix="_vs_oracle")]
    parts.append("<h2>Plots</h2>")
    parts += [_figure_html(png, name, caption) for name, caption, png in figures]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- entry point

def write_report(out_dir: str | Path, predictions: pd.DataFrame, title: str,
                 context: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Evaluate every model in `predictions` (columns model + `PREDICTION_COLUMNS`, one row per customer and
    model) and write metrics.json, the PNG plots and report.html into `out_dir`. Returns {model: {metric: value}}.

    metrics.json holds {"title", "context", "metrics": {model: {metric: value}}, "vs_oracle": {model: {...}}},
    with NaN written as null; "vs_oracle" is empty unless a model is named "oracle"."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _split(predictions)
    metrics = {name: evaluate(frame) for name, frame in groups.items()}
    ratios = vs_oracle(metrics)
    _write_json(out / "metrics.json", title, context, metrics, ratios)
    figures = []
    for name, caption, draw in PLOTS:
        png = _png(draw(groups, metrics))
        (out / f"{name}.png").write_bytes(png)
        figures.append((name, caption, png))
    (out / "report.html").write_text(_html(title, context, metrics, ratios, figures), encoding="utf-8")
    return metrics
