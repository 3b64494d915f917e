"""Generator throughput: rows written per second at 20 k and 200 k customers, and their ratio, in one run.

    make bench-generate          (or: python bench/generate.py --conf conf/local.yaml [--sizes 20000 200000])

A ratio near 1 means the generator scales linearly (time grows with customers, not faster); the target for
the demo size is under 2 minutes here. Rows are data lines over all five sources, faults included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from customer_value.config import load_config  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402
from customer_value.synthetic.generate import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    base = load_config(args.conf)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        with spark_session(base) as spark:
            for size in args.sizes:
                cfg = load_config(args.conf, [f"storage.root={tmp}/{size}", f"synthetic.customers={size}"])
                t0 = time.perf_counter()
                res = generate(spark, cfg)
                seconds = time.perf_counter() - t0
                results.append((size, res.rows, seconds))
                print(f"{size:>9,} customers: {res.rows:>12,} rows in {seconds:7.1f} s = {res.rows / seconds:>10,.0f} rows/s",
                      flush=True)
    (s0, r0, t0_), (s1, r1, t1) = results[0], results[-1]
    print(f"throughput ratio {s1:,} vs {s0:,} customers: {(r1 / t1) / (r0 / t0_):.2f} "
          f"(time ratio {t1 / t0_:.1f}x for {s1 / s0:.0f}x customers)")


if __name__ == "__main__":
    main()
