#!/usr/bin/env bash
# Quality on real posters: runs the pipeline on ../shared/real-posters (6,923 real posters, never
# part of the repository) over several split seeds and prints micro/macro/samples F1, macro ROC-AUC
# and mAP per model and for both baselines, as mean and spread, with each stage's time. See
# model_quality.py.
#
#   bash bench/model-quality.sh [--seeds 1,2,3] [--pipeline FILE] [-S STAGE.PARAM=VALUE]... [--label NAME]
#
# Needs: cargo, python3 (standard library only). The project and its cache live in
# bench/work/model-quality/<label>/ (git ignores it) and are reused by the next call with that label,
# so comparing `-S` variants re-embeds nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
cargo build --release --workspace --quiet
exec python3 "$here/model_quality.py" --binary "$here/../target/release/pipeline" "$@"
