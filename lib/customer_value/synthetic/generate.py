"""The generator as a Spark job: one task per block of customers, each simulating its customers, planting
faults and writing its own file per source; the ground truth comes back as a Delta table.

No driver-side loop over customers: the driver only lists blocks, and merges the per-block manifests.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from customer_value.config import Config, SyntheticConfig
from customer_value.landing import EXTENSIONS, SOURCES, Location, landing_uri
from customer_value.synthetic import faults as F
from customer_value.synthetic.process import simulate_block, block_count
from customer_value.tables import Tables

GROUND_TRUTH_SCHEMA = T.StructType([
    T.StructField("user_id", T.StringType(), False),
    T.StructField("block", T.IntegerType(), False),
    T.StructField("signup_date", T.DateType(), False),
    T.StructField("purchase_rate", T.DoubleType(), False),
    T.StructField("dropout_prob", T.DoubleType(), False),
    T.StructField("spend_nu", T.DoubleType(), False),
    T.StructField("spend_p", T.DoubleType(), False),
    T.StructField("engagement", T.DoubleType(), False),
    T.StructField("mean_rating", T.DoubleType(), False),
    T.StructField("orders_until_dropout", T.LongType(), False),
    T.StructField("dropout_date", T.DateType(), True),
])
MANIFEST_DIR = "_manifest"
MANIFEST_FILE = "_manifest.json"


def file_name(source: str, block: int, day: date | None = None) -> str:
    suffix = "" if day is None else f"-{day:%Y%m%d}"
    return f"{source}/{source}-{block:05d}{suffix}.{EXTENSIONS[source]}"


def delivery_day(name: str) -> date | None:
    """The day of a daily delivery file (`<source>-<block>-YYYYMMDD.<ext>`, as `file_name` writes it), None for a
    history file."""
    tail = name.split(".")[0].rsplit("-", 1)[-1]
    return date(int(tail[:4]), int(tail[4:6]), int(tail[6:])) if len(tail) == 8 and tail.isdigit() else None


# When a row was recorded: the day it reaches a daily delivery (its latest timestamp; an order's lines, its placing)
RECORDED = {"users": ("updated_at", "signup_date"), "orders": ("updated_at", "order_ts"), "events": ("event_ts",),
            "reviews": ("updated_at", "review_ts")}


def recorded_day(frames, source: str) -> pd.Series:
    """Per row of `frames[source]`, the day it was recorded (NaT where no time parses)."""
    if source == "order_items":
        placed = frames["orders"].drop_duplicates("order_id").set_index("order_id")["order_ts"]
        return pd.to_datetime(frames["order_items"]["order_id"].map(placed), errors="coerce", format="mixed").dt.normalize()
    times = [pd.to_datetime(frames[source][c], errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
             for c in RECORDED[source]]
    return pd.concat(times, axis=1).max(axis=1).dt.normalize()


def deliveries(cfg: SyntheticConfig, frames, source: str) -> list[tuple[date | None, pd.DataFrame]]:
    """The rows of one source as files: all in one (no daily deliveries), or the history before the last
    `delivery_days` days and then one file per day (days without rows have no file)."""
    frame = frames[source]
    if not cfg.delivery_days:
        return [(None, frame)]
    first = pd.Timestamp(cfg.export_date - timedelta(days=cfg.delivery_days - 1))
    day = recorded_day(frames, source)
    out = [(None, frame[~(day >= first)])]
    for d in pd.date_range(first, pd.Timestamp(cfg.export_date), freq="D"):
        part = frame[day == d]
        if len(part):
            out.append((d.date(), part))
    return out


def write_block(cfg: SyntheticConfig, landing: str, block: int) -> pd.DataFrame:
    """Simulate one block, write its files (one per source, or per source and delivery day) and its manifest
    piece; return its ground truth."""
    sim = simulate_block(cfg, block)
    rng = np.random.default_rng([cfg.seed, block, 1])  # faults have their own stream: same customers either way
    root = Location.of(landing)
    piece = []
    frames = {s: getattr(sim, s) for s in SOURCES}
    for source in SOURCES:
        for day, frame in deliveries(cfg, frames, source):
            lines, planted = F.inject(frame.reset_index(drop=True), F.SOURCES[source], cfg, rng, block)
            name = file_name(source, block, day)
            data = ("\n".join(lines) + "\n").encode(planted.encoding, errors="replace")
            root.child(name).write_bytes(data)
            header = 1 if F.SOURCES[source].fmt == "csv" else 0
            piece.append({"source": source, "file": name, "rows": len(lines) - header, **asdict(planted)})
    root.child(MANIFEST_DIR, f"block-{block:05d}.json").write_bytes(json.dumps(piece).encode())
    return sim.truth


def summarise(files: list[dict]) -> dict:
    """Totals per source: rows written and faults planted by kind (file faults counted per file)."""
    out: dict[str, dict] = {}
    for f in files:
        s = out.setdefault(f["source"], {"files": 0, "rows": 0, "faults": {}})
        s["files"] += 1
        s["rows"] += f["rows"]
        for tag, lines in f["lines"].items():
            kind = tag.split(":", 1)[0]
            s["faults"][kind] = s["faults"].get(kind, 0) + len(lines)
        if f["encoding"] != "utf-8":
            s["faults"]["wrong_encoding_file"] = s["faults"].get("wrong_encoding_file", 0) + 1
        if f["layout"] != "standard":
            kind = f["layout"].split(":", 1)[0] + "_file"
            s["faults"][kind] = s["faults"].get(kind, 0) + 1
    return out


@dataclass
class GenerateResult:
    landing: str
    manifest: dict
    seconds: float

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.manifest["summary"].values())


def generate(spark: SparkSession, cfg: Config) -> GenerateResult:
    """Write the synthetic shop's raw exports to the landing folder and its ground truth to Delta."""
    t0 = time.perf_counter()
    syn = cfg.synthetic
    landing = landing_uri(cfg)
    root = Location.of(landing)
    root.clear()  # the generator owns this folder: no file of an earlier, larger run may survive
    n_blocks = block_count(syn)

    def run_blocks(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            for block in pdf["id"]:
                yield write_block(syn, landing, int(block))

    truth = spark.range(n_blocks, numPartitions=n_blocks).mapInPandas(run_blocks, GROUND_TRUTH_SCHEMA)
    Tables(cfg.storage).write(truth, "synthetic.ground_truth", mode="overwrite", options={"overwriteSchema": "true"})

    files = []
    for block in range(n_blocks):
        files += json.loads(root.child(MANIFEST_DIR, f"block-{block:05d}.json").read_bytes())
    manifest = {
        "seed": syn.seed,
        "customers": syn.customers,
        "shop_opened": syn.shop_opened.isoformat(),
        "export_date": syn.export_date.isoformat(),
        "summary": summarise(files),
        "files": files,
    }
    root.child(MANIFEST_FILE).write_bytes(json.dumps(manifest, indent=1).encode())
    return GenerateResult(landing=landing, manifest=manifest, seconds=time.perf_counter() - t0)
