#!/usr/bin/env bash
# Shared-cache benchmark: `pipeline push`/`pull` against `dvc push`/`pull` of the same files to
# the same S3 server (moto, on 127.0.0.1): the default pipeline's cache on the sample, and a
# download stage of 20,000 synthetic posters. See remote_vs_dvc.py.
#
#   bash bench/remote-vs-dvc.sh [--posters N] [--jobs N]
#
# Needs: cargo, python3 (3.9+) with venv, and PyPI reachable the first time (DVC with its S3
# support goes to bench/.venv, moto's server to .venv as .ci/run installs it). Work files go to
# bench/work/remote-vs-dvc (about 2 GB at 20,000 posters); delete it afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
cargo build --release --workspace --quiet
if [ ! -x "$here/.venv/bin/dvc" ] || ! "$here/.venv/bin/python" -c 'import dvc_s3' 2>/dev/null; then
  [ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet 'dvc[s3]>=3,<4' 'pillow>=10' numpy 'pyarrow>=15'
fi
if ! .venv/bin/python -c 'import moto.server' 2>/dev/null; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet 'moto[server]==5.2.5'
fi
"$here/.venv/bin/dvc" --version | sed 's/^/dvc /'
exec "$here/.venv/bin/python" "$here/remote_vs_dvc.py" --dvc "$here/.venv/bin/dvc" \
  --moto "$PWD/.venv/bin/moto_server" "$@"
