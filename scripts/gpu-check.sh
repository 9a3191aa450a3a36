#!/usr/bin/env bash
# The one-shot GPU check of the libtorch build, in two halves.
#
#   bash scripts/gpu-check.sh            # here (a machine with cargo and PyPI): build, pack, rehearse
#   bash scripts/gpu-check.sh there      # there (the GPU machine, from the packed folder): run it all
#
# Here: builds the `tch` binary against PyPI's torch 2.11.0 (the GPU machine's torch is
# 2.11.0+cu130, which is what PyPI serves; `TORCH_VERSION` picks another), strips it and
# xz-compresses it into gpu-bundle/ (ignored by git; it travels because the device call carries it),
# runs the default pipeline on flex with it for the reference stage times
# (gpu-bundle/flex-reference.json), and prints the command to run there. `--rehearse` then runs
# the "there" half on this machine on libtorch's CPU (`--device tch-cpu`), so that every line of
# it has run once before GPU time is spent.
#
# There: unpacks the binary, points LD_LIBRARY_PATH at the torch libraries of the machine's
# Python (`GPU_CHECK_PYTHON`, default /opt/torch/.venv/bin/python3), prints nvidia-smi and the
# torch version, and runs scripts/gpu_check.py, which times each step and writes summary.md and
# gpu-check.tar.gz into $OUT (or target/gpu-check-out). Arguments after `there` go to
# gpu_check.py (`--device tch-cpu`, `--budget SECONDS`, `--epochs N`, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=gpu-bundle

if [ "${1:-}" = there ]; then
  shift
  python=${GPU_CHECK_PYTHON:-/opt/torch/.venv/bin/python3}
  [ -x "$python" ] || python=$(command -v python3)
  torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  bin_dir=${GPU_CHECK_BIN:-$PWD/target/gpu-check-bin}
  mkdir -p "$bin_dir"
  # Python's lzma and hashlib: xz and sha256sum need not be there.
  "$python" - "$bundle" "$bin_dir/pipeline" <<'EOF'
import hashlib, lzma, shutil, sys
from pathlib import Path
bundle, target = Path(sys.argv[1]), Path(sys.argv[2])
with lzma.open(bundle / "pipeline.xz") as packed, open(target, "wb") as out:
    shutil.copyfileobj(packed, out)
want = (bundle / "pipeline.sha256").read_text().split()[0]
got = hashlib.sha256(target.read_bytes()).hexdigest()
if got != want:
    sys.exit(f"{target}: sha256 {got}, the bundle says {want}: unpack again")
target.chmod(0o755)
EOF
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "== $(cat "$bundle/build-info.txt")"
  echo "== python $python; libtorch from $torch_lib"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not on this machine"; fi
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  out=${OUT:-$PWD/target/gpu-check-out}
  exec "$python" scripts/gpu_check.py --binary "$bin_dir/pipeline" --out "$out" "$@"
fi

rehearse=false
for arg in "$@"; do
  case "$arg" in
    --rehearse) rehearse=true ;;
    *) echo "usage: bash scripts/gpu-check.sh [--rehearse] | there [gpu_check.py arguments]" >&2; exit 2 ;;
  esac
done
venv=${TCH_VENV:-.venv-tch}
export TORCH_VERSION=${TORCH_VERSION:-2.11.0} TCH_VENV=$venv
bash scripts/build-tch.sh --build-only
binary=target/tch/release/pipeline
mkdir -p "$bundle"
strip -o "$bundle/pipeline" "$binary"
sha256sum "$bundle/pipeline" | sed "s|$bundle/||" > "$bundle/pipeline.sha256"
xz -T0 -6 -f "$bundle/pipeline"
torch=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
echo "pipeline $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes'), built $(date -u +%Y-%m-%dT%H:%MZ) against torch $torch, $(rustc --version)" \
  > "$bundle/build-info.txt"
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')

# The default pipeline on flex, here, for the stage times the GPU's are put beside.
reference="$bundle/flex-reference.json"
if [ ! -s "$reference" ] || [ "$binary" -nt "$reference" ]; then
  project=target/gpu-check-flex
  rm -rf "$project" && mkdir -p "$project/data"
  cp -r data/sample "$project/data/" && cp -r models pipeline.yaml "$project/"
  (cd "$project" && LD_LIBRARY_PATH="$torch_lib" "../../$binary" run --device flex \
    && LD_LIBRARY_PATH="$torch_lib" "../../$binary" log --json -n 1) | tail -n 1 > "$reference.partial"
  mv "$reference.partial" "$reference"
fi

travels=$(( $(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1) + $(du -cb "$bundle" | tail -n 1 | cut -f1) ))
echo
echo "Packed $bundle/: $(du -h "$bundle/pipeline.xz" | cut -f1) binary, $(cat "$bundle/build-info.txt")"
echo "The working tree and the bundle come to $((travels / 1048576)) MiB of the 64 MiB a device call carries."
echo "Run there, in one device call (timeout_s 540, carry [\"$bundle\"]):"
echo
echo "  bash scripts/gpu-check.sh there --device cuda"
echo
if $rehearse; then
  echo "Rehearsing the \"there\" half here on libtorch's CPU:"
  # What the GPU machine's Python has beside torch, for the benchmark.
  "$venv/bin/python" -c 'import PIL, numpy, pyarrow' 2>/dev/null \
    || "$venv/bin/pip" install --quiet 'pillow>=10' numpy 'pyarrow>=15'
  GPU_CHECK_PYTHON="$PWD/$venv/bin/python" bash scripts/gpu-check.sh there --device tch-cpu \
    --budget 3600 --epochs 1 --bench-epochs 1
fi
