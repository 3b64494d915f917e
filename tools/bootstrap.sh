#!/usr/bin/env bash
# Creates, or reuses, the project's virtual environment and Delta jar cache, outside the clone.
#
#   tools/bootstrap.sh            build what is missing, then print VENV=... and JARS=... lines
#   tools/bootstrap.sh --paths    print the two paths only, build nothing
#
# Both live under ${XDG_CACHE_HOME:-~/.cache}/customer-value, keyed by a hash of what defines them
# (the lock file and this script for the venv, the jar POM for the jars), so CI runs on fresh clones and
# reruns reuse them and a new machine builds them once. A half-built venv (no .complete marker, e.g. after
# a crash) is removed and rebuilt. A lock serialises concurrent builds of the same key.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/customer-value
lock_file=$here/requirements/lock.txt
pom=$here/tools/delta-jars.pom.xml
venv_key=$(cat "$lock_file" "$here/tools/bootstrap.sh" | sha256sum | cut -c1-12)
jars_key=$(sha256sum <"$pom" | cut -c1-12)
venv=$cache/venv-$venv_key
jars=$cache/jars-$jars_key

if [ "${1:-}" = "--paths" ]; then
  echo "VENV=$venv"; echo "JARS=$jars"; exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.bootstrap.lock"
flock 9

log() { echo "[bootstrap] $*" >&2; }
# Horovod's build and its --check-build import TensorFlow: no CUDA/TensorRT lines on a CPU box.
export TF_CPP_MIN_LOG_LEVEL=3

build_venv() {
  local py=${PYTHON:-python3.11}
  command -v "$py" >/dev/null || py=python3
  log "building venv $venv with $($py --version) (cold: about 5 minutes, Horovod compiles)"
  local t0=$SECONDS
  rm -rf "$venv"
  "$py" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  "${pip[@]}" install -q --upgrade "pip==24.3.1"
  # Horovod's build needs wheel and setuptools < 70 present before it sees TensorFlow.
  "${pip[@]}" install -q -c "$lock_file" setuptools wheel packaging
  "${pip[@]}" install -q -c "$lock_file" -r "$here/requirements/base.in"
  log "python packages installed after $((SECONDS - t0)) s; compiling Horovod (TensorFlow + Gloo, CPU ops)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
  HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS=-j"$(nproc)" \
  PATH="$venv/bin:$PATH" \
    "${pip[@]}" install -q --no-cache-dir --no-build-isolation -c "$lock_file" "horovod[tensorflow]==0.28.1"
  # read the whole report first: `horovodrun ... | grep -q` closes the pipe at the first match and horovodrun then
  # dies of a broken pipe, which pipefail reported as a build without TensorFlow
  local build
  build=$("$venv/bin/horovodrun" --check-build)
  grep -q "\[X\] TensorFlow" <<<"$build" || { log "Horovod built without TensorFlow"; exit 1; }
  grep -q "\[X\] Gloo" <<<"$build" || { log "Horovod built without Gloo"; exit 1; }
  "${pip[@]}" check >&2
  touch "$venv/.complete"
  log "venv ready after $((SECONDS - t0)) s, $(du -sh "$venv" | cut -f1)"
}

fetch_jars() {
  log "fetching Delta jars from Maven Central into $jars"
  rm -rf "$jars.tmp"
  mvn -q -B -f "$pom" -Dmaven.repo.local="$cache/m2" dependency:copy-dependencies \
      -DexcludeTransitive=true -DoutputDirectory="$jars.tmp" >&2
  mv "$jars.tmp" "$jars"
}

[ -f "$venv/.complete" ] || build_venv
[ -d "$jars" ] || fetch_jars
echo "VENV=$venv"
echo "JARS=$jars"
