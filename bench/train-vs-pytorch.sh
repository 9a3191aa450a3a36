#!/usr/bin/env bash
# Training benchmark: our `train` stage (Burn flex, and libtorch CPU when built; or libtorch CUDA)
# against PyTorch with the same layers, shards, batch size, threads and steps. See train_vs_pytorch.py.
#
#   bash bench/train-vs-pytorch.sh [--threads N] [--only small-cnn] [--epochs N]
#   BENCH_PYTHON=/opt/torch/.venv/bin/python3 bash bench/train-vs-pytorch.sh --device cuda \
#     --binary path/to/pipeline --epochs 3          # on a GPU (scripts/gpu-check.sh runs this)
#
# Needs: cargo, python3 with venv, PyPI reachable the first time (bench/.venv gets torch==2.9.0);
# or BENCH_PYTHON, a Python with torch, pillow, numpy and pyarrow.
# Work files go to bench/work/train-vs-pytorch/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
# On a machine without cargo (the GPU machine of scripts/gpu-check.sh) the binaries are given.
if command -v cargo >/dev/null; then
  cargo build --release --workspace --quiet
fi
# BENCH_PYTHON: a Python that already has torch, pillow, numpy and pyarrow (a GPU machine's own).
python="${BENCH_PYTHON:-$here/.venv/bin/python}"
if ! "$python" -c 'import torch, PIL, numpy, pyarrow' 2>/dev/null; then
  [ -z "${BENCH_PYTHON:-}" ] || { echo "BENCH_PYTHON=$python lacks torch, pillow, numpy or pyarrow" >&2; exit 2; }
  [ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet 'torch==2.9.0' 'pillow>=10' numpy 'pyarrow>=15'
fi
exec "$python" "$here/train_vs_pytorch.py" "$@"
