"""The score and monitor jobs: the I/O around `scoring.score`, `scoring.segments` and `scoring.drift`.

score:   gold.customer_features at S → the model (mapInPandas) → value score, tier, segment, reasons, action →
         gold.customer_scores (S's partition replaced in one commit) and gold.segment_summary; the view
         gold.customer_scores_named joins the segment names for dashboards.
monitor: PSI of every numeric feature, the value score and churn probability at S against the model's
         training reference → gold.drift, a verdict, a plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.config import Config, FeaturesConfig
from customer_value.features.catalogue import catalogue
from customer_value.models import registry
from customer_value.models.btyd_inputs import in_batch
from customer_value.models.spec import NUMERIC, FeatureSpec, model_inputs
from customer_value.scoring import drift
from customer_value.scoring.score import (PREDICTED, apply_model, quantile_grid, reasons_array,
                                          with_tier_and_action, with_value_score)
from customer_value.scoring.segments import Segmentation, fit_segmentation, segments_frame
from customer_value.tables import Tables

SCORE_COLUMNS = ("snapshot_date", "customer_id", "model_name", "model_version", *PREDICTED, "value_score", "tier",
                 "churn_risk", "segment", "action", "top_reasons")
VIEW = "gold.customer_scores_named"
SCORE_OUTPUTS = {"value_score", "expected_spend", "churn_probability", "buy_probability"}
SHOP_LEVEL_GROUPS = ("context",)    # catalogue groups with one value per snapshot, shared by all its customers


class ScoringError(ValueError):
    pass


def _log(msg: str) -> None:
    print(f"[score] {msg}", flush=True)


@dataclass
class ScoreResult:
    snapshot: date
    model: str
    customers: int
    seconds: float
    tiers: dict[str, int] = field(default_factory=dict)
    summary: list[dict] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)


def _spec(model: registry.RegisteredModel) -> FeatureSpec:
    return FeatureSpec.from_json((model.path / "spec.json").read_text())


def _training(model: registry.RegisteredModel) -> dict:
    return json.loads((model.path / "training.json").read_text())


def segment_inputs(cfg: Config, spec: FeatureSpec) -> list[str]:
    """The model inputs the segmentation needs from the UDF (its features that are not the model's outputs)."""
    wanted = [c for c in cfg.scoring.segments.features if c not in SCORE_OUTPUTS]
    unknown = [c for c in wanted if c not in spec.numeric_inputs]
    if unknown:
        raise ScoringError(f"scoring.segments.features: {unknown} are neither scores ({sorted(SCORE_OUTPUTS)}) nor "
                           f"numeric inputs of the model")
    return wanted


def features_at(spark: SparkSession, tables: Tables, snapshot: date | None) -> tuple[date, DataFrame]:
    """gold.customer_features of S (default: its latest snapshot); a clear error where there is none."""
    if not tables.exists(spark, "gold.customer_features"):
        raise ScoringError("gold.customer_features does not exist: run `customer-value features` first")
    feats = tables.read(spark, "gold.customer_features")
    if snapshot is None:
        snapshot = feats.agg(F.max("snapshot_date")).collect()[0][0]
        if snapshot is None:
            raise ScoringError("gold.customer_features is empty: run `customer-value features` first")
    at = feats.where(F.col("snapshot_date") == F.lit(snapshot))
    if at.limit(1).count() == 0:
        raise ScoringError(f"gold.customer_features has no rows at snapshot {snapshot}: run "
                           f"`customer-value features --snapshot-date {snapshot}` first")
    return snapshot, at


def scored_frame(cfg: Config, model: registry.RegisteredModel, spec: FeatureSpec, features: DataFrame,
                 reasons: bool) -> DataFrame:
    """One snapshot's features → predictions (+ reasons) and the segmentation's inputs, per customer."""
    sc = cfg.scoring
    features, btyd = in_batch(features, spec, cfg.backtest.spend_fit_max_customers)
    inputs = model_inputs(features, spec, carry=btyd.carried() if btyd else ())
    return apply_model(inputs, str(model.path), spec, segment_inputs(cfg, spec),
                       sc.reason_count if reasons else 0, sc.reason_steps, btyd, sc.threads_per_worker,
                       shop_level_features(cfg.features))


def reference(spark: SparkSession, cfg: Config, tables: Tables, model: registry.RegisteredModel,
              spec: FeatureSpec) -> Segmentation:
    """The version's segmentation and drift reference, fitted once on its last training snapshot and saved in
    its artifact (`segments/`, `monitor/reference.json`); later calls load them."""
    seg_dir, ref_file = model.path / "segments", model.path / "monitor" / "reference.json"
    if (seg_dir / "names.json").exists() and ref_file.exists():
        segmentation = Segmentation.load(seg_dir)
        if not _has_segments(spark, tables, model):      # e.g. the same model serving another storage root
            _write_segments(spark, tables, segmentation, model)
        return segmentation
    t0 = time.perf_counter()
    ref_snapshot = max(date.fromisoformat(s) for s in _training(model)["training_set"]["snapshots"])
    _, feats = features_at(spark, tables, ref_snapshot)
    scored = scored_frame(cfg, model, spec, feats, reasons=False).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        scored = with_value_score(scored, quantile_grid(scored, relative_error=cfg.scoring.quantile_error))
        sc = cfg.scoring
        segmentation = fit_segmentation(scored, sc.segments, sc.tiers, sc.churn_risk_high)
        segmentation.save(seg_dir)
        _write_segments(spark, tables, segmentation, model)
        edges, shares = reference_distribution(feats, scored, spec, cfg.features, cfg.monitor.bins)
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        drift.save_reference(ref_file, edges, shares, {"snapshot": str(ref_snapshot), "model": model.label})
    finally:
        scored.unpersist()
    _log(f"model {model.label}: segments and drift reference fitted on its training snapshot {ref_snapshot} "
         f"({time.perf_counter() - t0:.1f} s)")
    return segmentation


def _has_segments(spark: SparkSession, tables: Tables, model: registry.RegisteredModel) -> bool:
    return tables.exists(spark, "gold.segments") and tables.read(spark, "gold.segments").where(
        (F.col("model_name") == model.name) & (F.col("model_version") == model.version)).limit(1).count() > 0


def _write_segments(spark: SparkSession, tables: Tables, segmentation: Segmentation,
                    model: registry.RegisteredModel) -> None:
    tables.write(segments_frame(spark, segmentation, model.name, model.version), "gold.segments",
                 replace_where=f"model_name = '{model.name}' AND model_version = {model.version}")


def shop_level_features(features_cfg: FeaturesConfig) -> list[str]:
    """Features with one value per snapshot, shared by all its customers (catalogue group `context`)."""
    return [d.name for d in catalogue(features_cfg) if d.group in SHOP_LEVEL_GROUPS]


def monitored_features(spec: FeatureSpec, features_cfg: FeaturesConfig) -> list[str]:
    """The stored per-customer numeric features the model reads. Not its added BG/NBD inputs (derived, not
    stored), and not the shop-level context features (`shop_season_index`): one value shared by every customer of
    a snapshot, so any two snapshots differ by a whole point mass and their PSI is huge by construction (18 on the
    demo); the season moving is what the model was trained across, not drift."""
    from customer_value.models.btyd_inputs import BTYD_INPUTS

    shop_level = set(shop_level_features(features_cfg))
    return [c.name for c in spec.of(NUMERIC) if c.name not in BTYD_INPUTS and c.name not in shop_level]


def reference_distribution(features: DataFrame, scored: DataFrame, spec: FeatureSpec, features_cfg: FeaturesConfig,
                           bins: int):
    cols = monitored_features(spec, features_cfg)
    edges = drift.reference_edges(features, cols, bins)
    shares = drift.bin_shares(features, edges)
    out_edges = drift.reference_edges(scored, ["expected_spend", "churn_probability"], bins)
    out_shares = drift.bin_shares(scored, out_edges)
    edges.update({"value_score": out_edges["expected_spend"], "churn_probability": out_edges["churn_probability"]})
    shares.update({"value_score": out_shares["expected_spend"], "churn_probability": out_shares["churn_probability"]})
    return edges, shares


def score_snapshot(spark: SparkSession, cfg: Config, snapshot: date | None = None,
                   model_ref: str | None = None) -> ScoreResult:
    """Score every customer of S with a registered model into gold.customer_scores (rerun: S replaced)."""
    t_start = time.perf_counter()
    tables = Tables(cfg.storage)
    sc = cfg.scoring
    model = registry.resolve(cfg, model_ref or f"{cfg.training.model_name}/{registry.CHAMPION}")
    spec = _spec(model)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(sc.arrow_batch_size))
    snapshot, feats = features_at(spark, tables, snapshot)
    segmentation = reference(spark, cfg, tables, model, spec)
    t0 = time.perf_counter()
    scored = scored_frame(cfg, model, spec, feats, sc.reasons).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n = scored.count()
        _log(f"{n:,} customers at {snapshot} scored by {model.label} "
             f"{'with' if sc.reasons else 'without'} reasons ({time.perf_counter() - t0:.1f} s)")
        t0 = time.perf_counter()
        grid = quantile_grid(scored, relative_error=sc.quantile_error)
        out = with_tier_and_action(with_value_score(scored, grid), sc.tiers, sc.churn_risk_high, sc.actions)
        out = reasons_array(segmentation.assign(out), sc.reason_count if sc.reasons else 0)
        out = out.select(F.lit(snapshot).cast("date").alias("snapshot_date"), "customer_id",
                         F.lit(model.name).alias("model_name"), F.lit(model.version).alias("model_version"),
                         *SCORE_COLUMNS[4:])
        # mergeSchema: a table scored before the interval of spend given a purchase got its own columns gains
        # them (its older snapshots hold null there; docs/analysts.md)
        tables.write(out, "gold.customer_scores", replace_where=f"snapshot_date = '{snapshot}'",
                     options={"mergeSchema": "true"})
        _log(f"gold.customer_scores at {snapshot} written ({time.perf_counter() - t0:.1f} s)")
    finally:
        scored.unpersist()
    written = tables.read(spark, "gold.customer_scores").where(F.col("snapshot_date") == F.lit(snapshot))
    summary = segment_summary(written, tables.read(spark, "gold.segments"))
    tables.write(summary, "gold.segment_summary", replace_where=f"snapshot_date = '{snapshot}'")
    register_view(spark, tables)
    return scores_report(spark, cfg, snapshot, time.perf_counter() - t_start)


def scores_report(spark: SparkSession, cfg: Config, snapshot: date, seconds: float = 0.0) -> ScoreResult | None:
    """What gold.customer_scores and gold.segment_summary hold for S (None where S is not scored): the tier
    counts, the segments, where the tables are. Read back from the tables, so a pipeline run that skipped the
    score stage reports the same as the run that wrote them."""
    tables = Tables(cfg.storage)
    if not tables.exists(spark, "gold.customer_scores") or not tables.exists(spark, "gold.segment_summary"):
        return None
    written = tables.read(spark, "gold.customer_scores").where(F.col("snapshot_date") == F.lit(snapshot))
    counts = written.groupBy("tier", "model_name", "model_version").count().collect()
    if not counts:
        return None
    tiers = {r["tier"]: r["count"] for r in counts}
    label = f"{counts[0]['model_name']}/{counts[0]['model_version']}"
    rows = [r.asDict() for r in tables.read(spark, "gold.segment_summary")
            .where(F.col("snapshot_date") == F.lit(snapshot)).orderBy(F.desc("mean_value_score")).collect()]
    return ScoreResult(snapshot, label, sum(tiers.values()), seconds, tiers, rows,
                       {t: tables.location(t) for t in ("gold.customer_scores", "gold.segment_summary", "gold.segments")})


def segment_summary(scores: DataFrame, segments: DataFrame) -> DataFrame:
    """Per snapshot and segment: customers, mean value score and expected spend, expected churn rate (mean
    churn probability), the segment's share of the snapshot's expected spend, and its three commonest actions."""
    total = F.sum("expected_spend").over(_whole_snapshot())
    per = (scores.groupBy("snapshot_date", "model_name", "model_version", "segment")
           .agg(F.count(F.lit(1)).alias("customers"), F.avg("value_score").alias("mean_value_score"),
                F.avg("expected_spend").alias("mean_expected_spend"), F.sum("expected_spend").alias("expected_spend"),
                F.avg("churn_probability").alias("churn_rate"),
                F.sum(F.when(F.col("tier") == "high", 1).otherwise(0)).alias("high_tier"),
                F.sum(F.when(F.col("tier") == "mid", 1).otherwise(0)).alias("mid_tier"),
                F.sum(F.when(F.col("tier") == "low", 1).otherwise(0)).alias("low_tier")))
    per = per.withColumn("spend_share", F.col("expected_spend") / total)
    actions = (scores.groupBy("snapshot_date", "segment", "action").count()
               .groupBy("snapshot_date", "segment")
               .agg(F.slice(F.transform(F.sort_array(F.collect_list(F.struct((-F.col("count")).alias("n"),
                                                                              F.col("action").alias("a")))),
                                        lambda s: s["a"]), 1, 3).alias("top_actions")))
    names = segments.select("model_name", "model_version", "segment", "segment_name")
    return (per.join(actions, ["snapshot_date", "segment"]).join(names, ["model_name", "model_version", "segment"], "left")
            .select("snapshot_date", "model_name", "model_version", "segment", "segment_name", "customers",
                    "mean_value_score", "mean_expected_spend", "churn_rate", "spend_share", "high_tier", "mid_tier",
                    "low_tier", "top_actions"))


def _whole_snapshot():
    from pyspark.sql import Window

    return Window.partitionBy("snapshot_date")


def view_sql(tables: Tables) -> str:
    def ref(name: str) -> str:
        return tables.identifier(name) or f"delta.`{tables.location(name)}`"

    return (f"SELECT s.*, g.segment_name FROM {ref('gold.customer_scores')} s LEFT JOIN {ref('gold.segments')} g "
            "ON s.model_name = g.model_name AND s.model_version = g.model_version AND s.segment = g.segment")


def register_view(spark: SparkSession, tables: Tables) -> None:
    """gold.customer_scores_named: a persistent view in the metastore when a catalog is configured; on
    path-addressed storage a session view of that name plus its SQL beside the tables (`gold/_views/`), for
    any SQL engine that reads Delta."""
    sql = view_sql(tables)
    ident = tables.identifier("gold.customer_scores") and f"{tables.storage.catalog}.{VIEW}"
    if ident:
        spark.sql(f"CREATE OR REPLACE VIEW {ident} AS {sql}")
        return
    spark.sql(f"CREATE OR REPLACE TEMP VIEW customer_scores_named AS {sql}")
    folder = Path(tables.location("gold.customer_scores")).parent / "_views"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customer_scores_named.sql").write_text(f"CREATE OR REPLACE VIEW customer_scores_named AS\n{sql};\n")


@dataclass
class MonitorResult:
    snapshot: date
    model: str
    verdict: str
    rows: list[dict]
    plot: str


def monitor(spark: SparkSession, cfg: Config, snapshot: date | None = None) -> MonitorResult:
    """PSI of S's features and scores against the scoring model's training reference → gold.drift."""
    tables = Tables(cfg.storage)
    mc = cfg.monitor
    if not tables.exists(spark, "gold.customer_scores"):
        raise ScoringError("gold.customer_scores does not exist: run `customer-value score` first")
    scores = tables.read(spark, "gold.customer_scores")
    if snapshot is None:
        snapshot = scores.agg(F.max("snapshot_date")).collect()[0][0]
    at = scores.where(F.col("snapshot_date") == F.lit(snapshot))
    versions = at.select("model_name", "model_version").distinct().collect()
    if not versions:
        raise ScoringError(f"gold.customer_scores has no rows at snapshot {snapshot}: score it first")
    model = registry.resolve(cfg, f"{versions[0]['model_name']}/{versions[0]['model_version']}")
    edges, ref_shares, meta = drift.load_reference(model.path / "monitor" / "reference.json")
    wanted = {*monitored_features(_spec(model), cfg.features), "value_score", "churn_probability"}
    edges = {c: e for c, e in edges.items() if c in wanted}     # a reference written before a rule changed
    _, feats = features_at(spark, tables, snapshot)
    feature_edges = {c: e for c, e in edges.items() if c not in ("value_score", "churn_probability")}
    current = drift.bin_shares(feats, feature_edges)
    current.update(drift.bin_shares(at.select(F.col("expected_spend").alias("value_score"), "churn_probability"),
                                    {c: edges[c] for c in ("value_score", "churn_probability")}))
    outside = drift.outside_range(feats, training_ranges(_spec(model), feature_edges))
    rows = []
    for column in edges:
        value = drift.psi(ref_shares[column], current[column])
        rows.append({"snapshot_date": snapshot, "model_name": model.name, "model_version": model.version,
                     "reference_snapshot": date.fromisoformat(meta["snapshot"]), "column": column,
                     "kind": "score" if column in ("value_score", "churn_probability") else "feature",
                     "psi": value, "status": drift.status(value, mc.watch, mc.retrain),
                     "outside_training_range": outside.get(column)})
    frame = spark.createDataFrame(rows, "snapshot_date date, model_name string, model_version int, "
                                        "reference_snapshot date, column string, kind string, psi double, status string, "
                                        "outside_training_range long")
    tables.write(frame, "gold.drift", replace_where=f"snapshot_date = '{snapshot}'", options={"mergeSchema": "true"})
    worst = max((r["status"] for r in rows), key=["stable", "watch", "retrain"].index)
    plot = drift_plot(cfg, snapshot, rows, mc.watch, mc.retrain)
    return MonitorResult(snapshot, model.label, worst, sorted(rows, key=lambda r: -r["psi"]), plot)


def training_ranges(spec: FeatureSpec, columns) -> dict[str, tuple[float, float]]:
    """Each stored feature's (min, max) on the model's training split, undoing the spec's sign·log1p; none for a
    model trained before the spec recorded ranges."""
    import math

    if "numeric_min" not in spec.stats:
        return {}
    index = {n: i for i, n in enumerate(spec.numeric_inputs)}

    def unlog(v: float) -> float:
        return math.copysign(math.expm1(abs(v)), v)

    return {c: (unlog(spec.stats["numeric_min"][index[c]]), unlog(spec.stats["numeric_max"][index[c]]))
            for c in columns if c in index}


def drift_plot(cfg: Config, snapshot: date, rows: list[dict], watch: float, retrain: float) -> str:
    """A bar per column, largest PSI first, with the two thresholds: reports/drift/<S>/drift.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from customer_value.landing import under_root

    top = sorted(rows, key=lambda r: -r["psi"])[:30]
    folder = Path(under_root(cfg, cfg.backtest.report_dir)) / "drift" / str(snapshot)
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(top) + 1.5))
    colours = ["#c0392b" if r["psi"] > retrain else "#e67e22" if r["psi"] >= watch else "#27ae60" for r in top]
    ax.barh([r["column"] for r in top][::-1], [r["psi"] for r in top][::-1], color=colours[::-1])
    for x, style in ((watch, ":"), (retrain, "--")):
        ax.axvline(x, color="black", linestyle=style, linewidth=1)
    ax.set_xlabel("population stability index vs the model's training snapshot")
    ax.set_title(f"Drift at {snapshot} (largest {len(top)})")
    fig.tight_layout()
    path = folder / "drift.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
