#!/usr/bin/env bash
# Cache benchmark: no-op and add-10-movies reruns, `pipeline run` against `dvc repro` (DVC 3.x from
# PyPI) on the same DAG over 20,000 synthetic posters served from 127.0.0.1. See cache_vs_dvc.py.
#
#   bash bench/cache-vs-dvc.sh [--posters N] [--repeats N]
#
# Needs: cargo, python3 (3.9+) with venv, and PyPI reachable the first time (the venv is kept in
# bench/.venv). Work files go to bench/work/ (about 1 GB at 20,000 posters); delete it afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
cargo build --release --workspace --quiet
if [ ! -x "$here/.venv/bin/dvc" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet 'dvc>=3,<4' 'pillow>=10' numpy 'pyarrow>=15'
fi
"$here/.venv/bin/dvc" --version | sed 's/^/dvc /'
exec "$here/.venv/bin/python" "$here/cache_vs_dvc.py" --dvc "$here/.venv/bin/dvc" "$@"
