"""Regenerates reference-logits.json: PyTorch's EfficientNet-Lite0 logits on deterministic inputs.

The same graph as `bench/embed_vs_pytorch.py` (TF "SAME" padding, BatchNorm eps 1e-3, ReLU6), loaded
from the shipped checkpoint with `strict=True`, in eval mode. The inputs are drawn from a formula both
sides compute exactly (no image decoder in between), at a square and a non-square size so that the
asymmetric padding of strided convolutions is exercised.

    bench/.venv/bin/python stages/backbone/tests/reference_logits.py   # needs torch (bench/embed-vs-pytorch.sh installs it)
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "bench"))
from embed_vs_pytorch import WEIGHTS, Lite0  # noqa: E402


def pattern(width, height):
    """HWC u8: the formula `tests/imagenet.rs` uses too."""
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    return ((x * 7 + y * 13 + c * 29 + (x * y) % 17) % 256).astype(np.uint8)


def main():
    torch.set_num_threads(2)
    net = Lite0()
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    net.eval()
    cases = []
    for width, height in [(224, 224), (128, 192)]:
        x = (torch.from_numpy(pattern(width, height)).float() - 127.0) / 128.0
        x = x.permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            features = net.features(x)
            logits = net._fc(features)[0]
        top = logits.topk(5)
        cases.append({
            "width": width,
            "height": height,
            "top5": top.indices.tolist(),
            "logits_first10": logits[:10].tolist(),
            "logits_top5": top.values.tolist(),
            "feature_sum": float(features.sum()),
        })
    out = {"torch": torch.__version__, "weights": WEIGHTS.name, "cases": cases}
    (HERE / "reference-logits.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
