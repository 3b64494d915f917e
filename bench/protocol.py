"""The selection protocol on the demo shop: settings chosen on snapshots before the one reported, which stays untouched.

    make bench-protocol   (after make demo; or: python bench/protocol.py [--candidate NAME=key=value,...] [--set ...])

With D the scoring date of the store (the day after its last day of data) and H the horizon, the reported
snapshots are S = D − 2H, untouched, and S + H = D − H, the later one whose horizon has also passed. Settings are
chosen on S − H and S − 2H, whose horizons end by S (role `selection` in gold.model_metrics): each candidate is
backtested there, with the level check off (it scales every amount alike and moves neither Gini nor ROC-AUC, the
rule's metrics), and the one with the best mean spend Gini + churn ROC-AUC over both is kept. Only the kept one is
then backtested at S and S + H (role `test`), level check on, and its figures are the ones to report beside the
baselines'. Every candidate and figure is printed and written to `<store>/reports/protocol/` (protocol.json and
protocol.md).

It runs on a scratch copy of the store's silver, gold features and labels and synthetic truth (a local store, as
`make demo` leaves it), with its own models folder and MLflow registry: nothing of the demo's registry, champion or
tables changes. On the demo shop each deep backtest takes a few minutes on two cores (the selection's about half:
no level check, no refit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "lib"), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from customer_value.config import load_config  # noqa: E402
from customer_value.evaluation.backtest import run_backtest  # noqa: E402
from customer_value.landing import under_root  # noqa: E402
from customer_value.models.deep import DeepModel  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402

# the product's settings against a single tower (the towers were chosen at D − H before this protocol existed)
CANDIDATES = {"conf": [], "one tower": ["training.network.towers=1"]}
COPIED = ("silver", "gold/customer_features", "gold/customer_labels", "synthetic")
SHOWN = ("spend_gini", "churn_roc_auc", "spend_mae", "spend_total_ratio", "interval_coverage_buyers")


def _candidates(given: list[str]) -> dict[str, list[str]]:
    out = {}
    for item in given:
        name, _, settings = item.partition("=")
        out[name] = [s for s in settings.split(",") if s]
    return out or CANDIDATES


def _backtest(base: Path, overrides: list[str], snapshot, horizon: int, role: str) -> dict:
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={base}", "pseudonymisation.demo_mode=true",
                                                     f"backtest.role={role}", *overrides])
    t0 = time.perf_counter()
    with spark_session(cfg) as spark:
        result = run_backtest(spark, cfg, snapshot, horizon, [DeepModel(cfg)])
    return {"snapshot": str(snapshot), "role": role, "seconds": round(time.perf_counter() - t0, 1),
            "role_line": result.context.get("role"), "metrics": result.metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    parser.add_argument("--candidate", action="append", default=[],
                        help="NAME=key=value,key=value (repeatable; default: the conf against one tower)")
    parser.add_argument("--store", default=None, help="the local store to read (default: the conf's storage.root)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="key=value for every backtest (not storage.root: --store)")
    args = parser.parse_args()
    if any(o.startswith("storage.root=") for o in args.overrides):
        raise SystemExit("give the store with --store; the backtests run on a scratch copy of it")
    store_cfg = load_config(args.conf, [*args.overrides, *([f"storage.root={args.store}"] if args.store else [])])
    store = Path(store_cfg.storage.root).resolve()
    if not (store / "silver").exists():
        raise SystemExit(f"no silver tables under {store}: run `make demo` first (this bench reads a local store)")
    horizon = store_cfg.features.horizon_days
    day = store_cfg.cleaning.today() + timedelta(days=1)
    h = timedelta(days=horizon)
    s = day - 2 * h
    selection, tests = [s - 2 * h, s - h], [s, s + h]
    candidates = _candidates(args.candidate)
    out: dict = {"scoring_date": str(day), "horizon_days": horizon, "selection_snapshots": list(map(str, selection)),
                 "test_snapshots": list(map(str, tests)), "candidates": candidates, "selection": {}, "test": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="protocol-") as tmp:
        base = Path(tmp) / "store"
        for part in COPIED:
            shutil.copytree(store / part, base / part)
        for name, settings in candidates.items():
            for snap in selection:
                print(f"== selection: {name} at {snap} ==", flush=True)
                run = _backtest(base, [*args.overrides, *settings, "training.level_check=false",
                                       "training.refit=false"], snap, horizon, "selection")
                out["selection"].setdefault(name, []).append(run)
        score = {name: sum(r["metrics"]["deep_ziln"]["spend_gini"] + r["metrics"]["deep_ziln"]["churn_roc_auc"]
                           for r in runs) / len(runs) for name, runs in out["selection"].items()}
        kept = max(score, key=score.get)
        out["kept"], out["selection_score"] = kept, score
        print(f"kept: {kept} (mean spend Gini + churn ROC-AUC on the selection snapshots: "
              + ", ".join(f"{n} {v:.4f}" for n, v in score.items()) + ")", flush=True)
        for snap in tests:
            print(f"== test: {kept} at {snap} ==", flush=True)
            out["test"].append(_backtest(base, [*args.overrides, *candidates[kept], "training.refit=false"], snap,
                                         horizon, "test"))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    lines = [f"# Selection protocol ({out['scoring_date']}, horizon {horizon} days)", "",
             f"Selection snapshots {', '.join(out['selection_snapshots'])}; test snapshots "
             f"{', '.join(out['test_snapshots'])}; kept: **{kept}**.", "",
             "| role | snapshot | candidate | model | " + " | ".join(SHOWN) + " |",
             "|---|---|---|---|" + "---|" * len(SHOWN)]
    rows = [(r, name) for name, runs in out["selection"].items() for r in runs] + [(r, kept) for r in out["test"]]
    for run, name in rows:
        for model, m in sorted(run["metrics"].items()):
            if run["role"] == "selection" and model != "deep_ziln":
                continue
            lines.append(f"| {run['role']} | {run['snapshot']} | {name if model == 'deep_ziln' else ''} | {model} | "
                         + " | ".join("" if m.get(k) is None else f"{m[k]:.3f}" for k in SHOWN) + " |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    target = Path(under_root(store_cfg, store_cfg.backtest.report_dir)) / "protocol"
    target.mkdir(parents=True, exist_ok=True)
    (target / "protocol.json").write_text(json.dumps(out, indent=1, default=str))
    (target / "protocol.md").write_text(text)
    print(f"written to {target} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
