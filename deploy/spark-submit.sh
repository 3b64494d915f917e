#!/usr/bin/env bash
# Submit one stage to Spark: local, YARN or Kubernetes, with the Delta jars from the local cache and this
# package as a wheel on the executors' path.
#
#   deploy/spark-submit.sh <stage> [--master yarn|k8s://...|local[2]] -- [job args: --conf conf/cluster.yaml ...]
#
# Extra spark-submit flags go in SPARK_SUBMIT_ARGS (e.g. "--deploy-mode cluster --num-executors 20").
# On Kubernetes the image must carry the same Python environment (requirements/lock.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
stage=${1:?usage: deploy/spark-submit.sh <stage> [--master M] -- [job args]}; shift
master=local[2]
if [ "${1:-}" = "--master" ]; then master=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift

eval "$("$here/tools/bootstrap.sh")"       # VENV=..., JARS=...
jars=$(ls "$JARS"/*.jar | paste -sd, -)
dist=$here/build/dist
rm -rf "$dist" && mkdir -p "$dist"
"$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$dist" "$here" >/dev/null
wheel=$(ls "$dist"/customer_value-*.whl)

export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$VENV/bin/python}
exec "$VENV/bin/spark-submit" \
  --master "$master" \
  --name "customer-value-$stage" \
  --jars "$jars" \
  --py-files "$wheel" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  ${SPARK_SUBMIT_ARGS:-} \
  "$here/jobs/$stage.py" "$@"
