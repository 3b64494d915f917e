#!/bin/bash
# Cluster init script of the training cluster: the lock's TensorFlow, then Horovod 0.28.1 compiled against it
# with NCCL for the GPUs (Databricks' documented way to change the runtime's Horovod). Runs on every node.
set -euxo pipefail
PIP=/databricks/python/bin/pip
$PIP uninstall -y horovod || true
$PIP install "tensorflow==2.15.1" "numpy==1.26.4" "protobuf==4.25.9" "pyarrow==14.0.2"
HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 \
HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED \
  $PIP install --no-cache-dir --no-build-isolation "horovod[tensorflow,spark]==0.28.1"
/databricks/python/bin/horovodrun --check-build | grep -q "\[X\] TensorFlow"
