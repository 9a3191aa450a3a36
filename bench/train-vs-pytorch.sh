#!/usr/bin/env bash
# Training benchmark: our `train` stage (Burn flex, and libtorch CPU when built) against PyTorch 2.9
# CPU with the same layers, shards, batch size, threads and steps. See train_vs_pytorch.py.
#
#   bash bench/train-vs-pytorch.sh [--threads N] [--only small-cnn]
#
# Needs: cargo, python3 with venv, PyPI reachable the first time (bench/.venv gets torch==2.9.0).
# Work files go to bench/work/train-vs-pytorch/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
cargo build --release --workspace --quiet
if ! "$here/.venv/bin/python" -c 'import torch, PIL, numpy, pyarrow' 2>/dev/null; then
  [ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet 'torch==2.9.0' 'pillow>=10' numpy 'pyarrow>=15'
fi
exec "$here/.venv/bin/python" "$here/train_vs_pytorch.py" "$@"
