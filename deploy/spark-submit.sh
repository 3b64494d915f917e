#!/usr/bin/env bash
# Submit one stage to Spark: local, YARN or Kubernetes, with the Delta jars from the local cache (never Maven at
# run time) and this package as a wheel.
#
#   deploy/spark-submit.sh <stage> [--master local[2]|yarn|k8s://https://host:443] [--dry-run] -- [job args]
#   deploy/spark-submit.sh --job-path <stage>      print the job file a stage runs (builds nothing)
#
# <stage> is a `customer-value` command (pipeline, ingest, clean, features, train, score, monitor, backtest,
# evaluate, generate, adapt-transactions, feature-catalogue, smoke, show-config); its job file is
# jobs/<stage with - as _>.py. Job args are the command's own: --conf conf/cluster.yaml --set key=value ...
#
# local[N]  the cached venv runs driver and executors.
# yarn      cluster deploy mode by default (DEPLOY_MODE=client to change). The executors need the same Python:
#           set PYTHON_ARCHIVE to a packed copy of the venv (e.g. `venv-pack -o venv.tar.gz`); it is shipped with
#           --archives and used as ./environment/bin/python. Without it, PYSPARK_PYTHON must exist on every node.
# k8s://... cluster deploy mode; IMAGE is an image built from deploy/Dockerfile, which holds the venv, the jars,
#           the wheel and jobs/ under /opt/customer-value, so everything is addressed as local:// in the image.
# Extra spark-submit flags go in SPARK_SUBMIT_ARGS (e.g. "--num-executors 20 --executor-memory 8g").
# --dry-run prints the spark-submit command line instead of running it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

stages="pipeline generate adapt-transactions ingest clean features train backtest evaluate score monitor
feature-catalogue smoke show-config"

job_path() {
  local stage=$1 f
  f=$here/jobs/${stage//-/_}.py
  if [[ ! " ${stages//$'\n'/ } " == *" $stage "* ]] || [ ! -f "$f" ]; then
    echo "deploy/spark-submit.sh: no stage '$stage'; stages: ${stages//$'\n'/ }" >&2
    return 2
  fi
  echo "$f"
}

if [ "${1:-}" = "--job-path" ]; then
  job_path "${2:?usage: deploy/spark-submit.sh --job-path <stage>}"
  exit
fi

stage=${1:?usage: deploy/spark-submit.sh <stage> [--master M] [--dry-run] -- [job args]}; shift
job=$(job_path "$stage")
master=local[2]
dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    --master) master=${2:?--master needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "deploy/spark-submit.sh: unknown option '$1' (job args go after --)" >&2; exit 2 ;;
  esac
done

delta=(--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
       --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog)

if [[ $master == k8s://* ]]; then
  # Everything is in the image (deploy/Dockerfile): nothing to build or upload here.
  : "${IMAGE:?IMAGE: the image built from deploy/Dockerfile, e.g. registry.example.com/customer-value:0.1.0}"
  app=/opt/customer-value
  py=$app/venv/bin/python
  submit=${SPARK_SUBMIT:-spark-submit}
  cmd=("$submit" --master "$master" --deploy-mode cluster --name "customer-value-$stage"
       --conf "spark.kubernetes.container.image=$IMAGE"
       --conf "spark.kubernetes.driverEnv.PYSPARK_PYTHON=$py" --conf "spark.executorEnv.PYSPARK_PYTHON=$py"
       --conf "spark.kubernetes.driverEnv.CUSTOMER_VALUE_JARS=$app/jars"
       --jars "local://$app/jars/delta-spark_2.12.jar,local://$app/jars/delta-storage.jar"
       "${delta[@]}" ${SPARK_SUBMIT_ARGS:-} "local://$app/jobs/$(basename "$job")" "$@")
else
  eval "$("$here/tools/bootstrap.sh")"       # VENV=..., JARS=...
  jars=$(ls "$JARS"/*.jar | paste -sd, -)
  dist=$here/build/dist
  rm -rf "$dist" && mkdir -p "$dist"
  "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$dist" "$here" >/dev/null
  wheel=$(ls "$dist"/customer_value-*.whl)
  submit=${SPARK_SUBMIT:-$VENV/bin/spark-submit}
  cmd=("$submit" --master "$master" --name "customer-value-$stage" --jars "$jars" --py-files "$wheel")
  if [ "$master" = yarn ]; then
    cmd+=(--deploy-mode "${DEPLOY_MODE:-cluster}")
    if [ -n "${PYTHON_ARCHIVE:-}" ]; then
      cmd+=(--archives "$PYTHON_ARCHIVE#environment"
            --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python
            --conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python)
    fi
  else
    export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$VENV/bin/python}
    export CUSTOMER_VALUE_JARS=$JARS
  fi
  cmd+=("${delta[@]}" ${SPARK_SUBMIT_ARGS:-} "$job" "$@")
fi

if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
