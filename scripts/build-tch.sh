#!/usr/bin/env bash
# Builds the libtorch (`--features tch`) binary from this clone and runs the training tests on
# libtorch's CPU device. Everything comes from PyPI and crates.io: a virtual environment with
# PyTorch (whose bundled libtorch torch-sys links against), then cargo.
#
#   bash scripts/build-tch.sh                       # torch 2.9.0, what burn-tch 0.22.1 expects
#   TORCH_VERSION=2.11.0 bash scripts/build-tch.sh  # another torch (the version check is bypassed)
#   TCH_VENV=bench/.venv bash scripts/build-tch.sh  # reuse an environment that has torch
#   bash scripts/build-tch.sh --build-only          # the binary, no tests (scripts/gpu-check.sh)
#
# The binary lands in target/tch/release/pipeline (its own target directory: the libtorch feature
# set would otherwise rebuild polars and burn in target/ on every switch). It needs libtorch's
# libraries at run time; the script prints the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TCH_VENV:-.venv-tch}
torch_version=${TORCH_VERSION:-2.9.0}
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==$torch_version"
fi
have=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
echo "torch $have from $venv; libtorch at $torch_lib"
export LIBTORCH_USE_PYTORCH=1
export VIRTUAL_ENV="$PWD/$venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
if [ "$have" != 2.9.0 ]; then
  # torch-sys 0.22 checks for exactly 2.9.0; 2.11's C API is a superset (../shared/notes/burn-0.22.md).
  export LIBTORCH_BYPASS_VERSION_CHECK=1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/tch}"
cargo build --release --workspace --features tch
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ "${1:-}" = --build-only ]; then
  exit 0
fi
# The training tests: the stage's unit tests and the pipeline runs that train, on libtorch's CPU.
PIPELINE_DEVICE=tch-cpu cargo test --release --workspace --features tch -- \
  tests::a_cnn_learns tests::a_head_learns tests::fine_tuning tests::the_same_seed \
  tests::streamed_epochs a_training_killed_mid_way fine_tuning_the_backbone \
  default_pipeline_runs_offline device cudnn a_model_trained_on_libtorch \
  dropout_masks cpu_devices_are_not_gpus
echo
echo "Built $CARGO_TARGET_DIR/release/pipeline. Run it with:"
echo "  LD_LIBRARY_PATH=$torch_lib $CARGO_TARGET_DIR/release/pipeline run --device tch-cpu   # or cuda, cuda:N"
