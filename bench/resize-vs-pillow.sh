#!/usr/bin/env bash
# Resize benchmark: our resize stage vs Pillow as the original project used it, and both decode-only
# floors, on 5,000 synthetic 182x268 JPEGs. See resize_vs_pillow.py.
#
#   bash bench/resize-vs-pillow.sh [--posters N] [--repeats N]
#
# Needs: cargo, python3 with venv, PyPI reachable the first time (bench/.venv, shared with the cache
# benchmark). Work files go to bench/work/resize-vs-pillow/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
cargo build --release --workspace --quiet
if ! "$here/.venv/bin/python" -c 'import PIL, numpy, pyarrow' 2>/dev/null; then
  [ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet 'pillow>=10' numpy 'pyarrow>=15'
fi
exec "$here/.venv/bin/python" "$here/resize_vs_pillow.py" "$@"
