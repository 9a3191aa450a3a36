#!/usr/bin/env bash
# Embedding benchmark: our `embed` stage (frozen EfficientNet-Lite0 on Burn flex) against PyTorch
# running the same network with the same weights, on the same posters. See embed_vs_pytorch.py.
#
#   bash bench/embed-vs-pytorch.sh [--posters N] [--sizes 128x192,224x224] [--repeats N]
#
# Needs: cargo, python3 with venv, PyPI reachable the first time (bench/.venv gets torch==2.9.0,
# about 4 GB with its CUDA wheels, which run on a CPU too). Work files go to bench/work/embed-vs-pytorch/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
cargo build --release --workspace --quiet
if ! "$here/.venv/bin/python" -c 'import torch, PIL, numpy, pyarrow' 2>/dev/null; then
  [ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet 'torch==2.9.0' 'pillow>=10' numpy 'pyarrow>=15'
fi
exec "$here/.venv/bin/python" "$here/embed_vs_pytorch.py" "$@"
