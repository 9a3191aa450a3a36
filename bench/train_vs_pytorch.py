"""Training benchmark: our `train` stage against PyTorch on the same shards, layers, input size,
batch size, thread count and number of steps.

For each architecture it makes a project from the embedded sample (resized to the architecture's
input size, the split's train fraction sized for the step count), then trains `--epochs` epochs
over the training split (one by default) and keeps each side's fastest epoch:

  1. `pipeline run --force train` on Burn flex: the stage's training time from its cache entry's
     `manifest.json` (`measures.fits[].epochs[].train_seconds`: streaming the shards, packing, forward, backward and the AdamW update, up
     to the last loss read back from the device; the validation pass is left out), all
     `--threads`;
  2. the same with the libtorch binary on `--device tch-cpu`, when `target/tch/release/pipeline`
     (or `--binary`) exists (`bash scripts/build-tch.sh` builds it);
  3. PyTorch on the CPU (`torch.set_num_threads(threads)`): the same layers and initial weights'
     shapes, the same AdamW, BCE with logits and batch size, reading the same Parquet shards with
     pyarrow; the u8-to-float conversion of each batch is inside the timed loop, as ours is.

With `--device cuda` (a GPU machine, the libtorch binary, the machine's own torch) rows 2 and 3
run on the GPU instead and flex is left out (`--device tch-cpu` makes the same comparison on the
CPU, to rehearse it): each batch goes to the GPU as it is made (`.to()`, as
ours does), the clock stops after `torch.cuda.synchronize()`, and PyTorch runs twice: with
cuDNN deterministic and benchmark off, as our `cuda` device sets it (the ratio), and with
PyTorch's defaults (shown beside it). On the GPU the Lite0 fine-tune runs at 224x224 and every
configuration trains on 70 % of the sample.

Prints training images/second and the ratios (ours / PyTorch; above 1 is faster).
Run it with `bash bench/train-vs-pytorch.sh`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_vs_pytorch import Lite0, WEIGHTS  # noqa: E402  (the same PyTorch Lite0)

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench/work/train-vs-pytorch"

# (name, architecture, width, height, batch, fraction of the sample in the train split) on a CPU;
# on the GPU every configuration trains on GPU_TRAIN_FRACTION and the Lite0 fine-tune at 224x224.
CONFIGS = [
    ("small-cnn", "small-cnn", 48, 48, 32, 0.70),
    ("keras-baseline", "keras-baseline", 224, 224, 32, 0.30),
    ("efficientnet-lite0 fine-tune", "efficientnet-lite0", 128, 128, 32, 0.15),
]
GPU_TRAIN_FRACTION = 0.70


def configurations(device):
    for name, arch, w, h, batch, fraction in CONFIGS:
        if device == "cuda":
            fraction = GPU_TRAIN_FRACTION
            if arch == "efficientnet-lite0":
                w, h = 224, 224
        yield f"{name} {w}x{h}", arch, w, h, batch, fraction


PIPELINE = """\
stages:
  ingest: {{kind: ingest, files: {{csv: data/sample/movies.csv}}}}
  download: {{kind: download, inputs: {{movies: ingest}}, files: {{root: data/sample}}}}
  filter:
    kind: filter
    inputs: {{movies: ingest, posters: download}}
    params: {{min_year: 2000, min_genre_count: 25}}
  resize:
    kind: resize
    inputs: {{movies: filter, posters: download}}
    params: {{width: {w}, height: {h}, mode: stretch, shard_rows: 512}}
  split:
    kind: split
    inputs: {{shards: resize}}
    params: {{seed: 42, val_fraction: 0.02, test_fraction: {test}}}
  train:
    kind: train
    inputs: {{data: split}}
    files: {{weights: models/efficientnet-lite0/efficientnet-lite0-57934424.pth}}
    params: {{architecture: {arch}, epochs: {epochs}, batch_size: {batch}, learning_rate: 0.001, finetune_blocks: 2}}
"""


def project(arch, w, h, batch, train_fraction, epochs):
    root = WORK / f"{arch}-{w}x{h}"
    if not root.exists():
        (root / "data").mkdir(parents=True)
        shutil.copytree(REPO / "data/sample", root / "data/sample")
        (root / "models").mkdir()
        shutil.copytree(REPO / "models/efficientnet-lite0", root / "models/efficientnet-lite0")
    test = round(1.0 - 0.02 - train_fraction, 2)
    (root / "pipeline.yaml").write_text(
        PIPELINE.format(w=w, h=h, arch=arch, batch=batch, test=test, epochs=epochs))
    return root


def output_of(root, stage):
    lock = (root / "pipeline.lock").read_text()
    # pipeline.lock is YAML; the key line of the stage is enough here.
    section = lock.split(f"\n  {stage}:\n", 1)[1]
    key = section.split("key: ", 1)[1].split()[0].strip("'\"")
    return root / "cache/v1/entries" / key / "out"


def ours(binary, root, threads, device, env=None):
    """Training images/second of our stage's fastest epoch."""
    cmd = [str(binary), "run", "--force", "train", "--threads", str(threads), "--device", device]
    subprocess.run(cmd, cwd=root, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    out = output_of(root, "train")
    history = json.loads((out / "history.json").read_text())
    # Clock readings stay out of the output (it is a pure function of its inputs); the entry's
    # manifest keeps what the run measured.
    manifest = json.loads((out.parent / "manifest.json").read_text())
    epochs = [e for fit in manifest["measures"]["fits"] for e in fit["epochs"]]
    fastest = min(epoch["train_seconds"] for epoch in epochs)
    return history["train_rows"] / fastest


def read_split(directory):
    meta = json.loads((directory / "meta.json").read_text())
    images, labels = [], []
    for shard in meta["shards"]:
        t = pq.read_table(directory / shard["file"], columns=["image", "labels"])
        images.append(np.frombuffer(b"".join(t.column("image").to_pylist()), np.uint8))
        labels.append(np.asarray(t.column("labels").combine_chunks().flatten(), np.float32))
    n, g = meta_rows(meta), len(meta["genres"])
    x = np.concatenate(images).reshape(n, meta["height"], meta["width"], 3)
    return x, np.concatenate(labels).reshape(n, g), g


def meta_rows(meta):
    return sum(s["rows"] for s in meta["shards"])


class SmallCnn(nn.Module):
    def __init__(self, genres):
        super().__init__()
        chans = [3, 32, 64, 128]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                          nn.BatchNorm2d(chans[i + 1]), nn.ReLU(), nn.MaxPool2d(2))
            for i in range(3))
        self.drop, self.head = nn.Dropout(0.2), nn.Linear(128, genres)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(self.drop(F.adaptive_avg_pool2d(x, 1).flatten(1)))


class KerasBaseline(nn.Module):
    def __init__(self, genres, w, h):
        super().__init__()
        chans = [3, 32, 64, 128]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Dropout(0.25)) for i in range(3))
        side = lambda s: ((((s - 2) // 2 - 2) // 2) - 2) // 2  # noqa: E731
        self.dense = nn.Linear(128 * side(w) * side(h), 128)
        self.drop, self.head = nn.Dropout(0.5), nn.Linear(128, genres)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(self.drop(F.relu(self.dense(x.flatten(1)))))


class Lite0FineTune(nn.Module):
    """Lite0 from the same weights, its last `blocks` blocks, head conv and a new layer trained."""

    def __init__(self, genres, blocks=2):
        super().__init__()
        self.net = Lite0()
        state = torch.load(WEIGHTS, map_location="cpu")
        self.net.load_state_dict(state, strict=True)
        self.first = len(self.net._blocks) - blocks
        for p in self.net.parameters():
            p.requires_grad = False
        trained = list(self.net._blocks[self.first:]) + [self.net._conv_head, self.net._bn1]
        for m in trained:
            for p in m.parameters():
                p.requires_grad = True
        self.drop, self.head = nn.Dropout(0.2), nn.Linear(1280, genres)

    def forward(self, x):
        n = self.net
        with torch.no_grad():
            n._conv_stem.eval(); n._bn0.eval()  # noqa: E702
            x = F.relu6(n._bn0(n._conv_stem(x)))
            for b in n._blocks[:self.first]:
                b.eval()
                x = b(x)
        for b in n._blocks[self.first:]:
            x = b(x)
        x = F.adaptive_avg_pool2d(F.relu6(n._bn1(n._conv_head(x))), 1).flatten(1)
        return self.head(self.drop(x))


def pytorch(arch, root, batch, threads, epochs, device="cpu", deterministic=None):
    """Training images/second of PyTorch's fastest epoch on `device`; on CUDA, `deterministic`
    sets cuDNN's deterministic flag (and benchmark off), None leaves PyTorch's defaults."""
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    # Process-wide flags: set on every call, so that a run with the defaults follows one without.
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = False
    x, y, genres = read_split(output_of(root, "split") / "train")
    h, w = x.shape[1], x.shape[2]
    if arch == "small-cnn":
        net, scale, shift = SmallCnn(genres), 4.0 / 255.0, -2.0
    elif arch == "keras-baseline":
        net, scale, shift = KerasBaseline(genres, w, h), 4.0 / 255.0, -2.0
    else:
        net, scale, shift = Lite0FineTune(genres), 1.0 / 128.0, -127.0 / 128.0
    net.to(device).train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    loss_fn = nn.BCEWithLogitsLoss()
    fastest = float("inf")
    for epoch in range(epochs):
        order = np.random.default_rng(7 + epoch).permutation(len(x))
        started = time.perf_counter()
        for i in range(0, len(order), batch):
            rows = order[i:i + batch]
            xb = torch.from_numpy(x[rows]).to(device).permute(0, 3, 1, 2).float().mul_(scale).add_(shift)
            yb = torch.from_numpy(y[rows]).to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb.contiguous()), yb)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        fastest = min(fastest, time.perf_counter() - started)
    return len(x) / fastest


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def rate(r):
    return "-" if r is None else f"{r:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", help="run only configurations whose name contains this")
    parser.add_argument("--device", choices=["cpu", "cuda", "tch-cpu"], default="cpu",
                        help="cpu: flex, tch-cpu and PyTorch CPU; cuda: our `cuda` and PyTorch CUDA; "
                        "tch-cpu: the cuda comparison on the CPU (a rehearsal of it)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per training; each side's fastest epoch counts")
    parser.add_argument("--binary", type=Path, default=REPO / "target/tch/release/pipeline",
                        help="the libtorch binary (scripts/build-tch.sh)")
    parser.add_argument("--flex-binary", type=Path, default=REPO / "target/release/pipeline",
                        help="the default (flex) binary")
    args = parser.parse_args()
    # One device: ours on it with the libtorch binary, PyTorch on the same device twice.
    single = args.device != "cpu"
    torch_device = "cuda" if args.device == "cuda" else "cpu"
    tch = args.binary
    torch_lib = Path(torch.__file__).parent / "lib"
    if single and not tch.exists():
        sys.exit(f"--device {args.device} needs the libtorch binary; {tch} is missing (--binary)")
    if torch_device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this PyTorch sees no CUDA device")
    gpu_name = f" {torch.cuda.get_device_name(0)}" if torch_device == "cuda" else ""
    print(f"threads {args.threads}, torch {torch.__version__}, device {args.device}{gpu_name}, "
          f"epochs {args.epochs}, "
          f"libtorch binary {tch if tch.exists() else 'absent (bash scripts/build-tch.sh)'}", flush=True)
    # Stages that need no device (ingest to split) run with whichever binary is here.
    prepare = tch if single else args.flex_binary
    env = {"LD_LIBRARY_PATH": str(torch_lib)}
    rows = []
    for name, arch, w, h, batch, fraction in configurations(args.device):
        if args.only and args.only not in name:
            continue
        root = project(arch, w, h, batch, fraction, args.epochs)
        subprocess.run([str(prepare), "run", "split"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, **env})
        n = meta_rows(json.loads((output_of(root, "split") / "train/meta.json").read_text()))
        if single:
            flex = None
            libtorch = ours(tch, root, args.threads, args.device, env)
            reference = pytorch(arch, root, batch, args.threads, args.epochs, torch_device, True)
            default = pytorch(arch, root, batch, args.threads, args.epochs, torch_device, None)
        else:
            flex = ours(args.flex_binary, root, args.threads, "flex")
            libtorch = ours(tch, root, args.threads, "tch-cpu", env) if tch.exists() else None
            reference = pytorch(arch, root, batch, args.threads, args.epochs)
            default = None
        rows.append((name, n, batch, flex, libtorch, reference, default))
        print(f"{name}: {n} posters, batch {batch}: flex {rate(flex)}/s, "
              f"{args.device if single else 'tch-cpu'} {rate(libtorch)}/s, PyTorch {rate(reference)}/s"
              f"{f', PyTorch with cuDNN defaults {rate(default)}/s' if single else ''}", flush=True)
    print()
    if single:
        where = "CUDA" if torch_device == "cuda" else "CPU"
        print(f"| architecture | train posters | batch | ours {args.device} img/s "
              f"| PyTorch {where} img/s (cuDNN deterministic) | ours / PyTorch "
              f"| PyTorch {where} img/s (cuDNN defaults) | ours / PyTorch defaults |")
        print("|---|---|---|---|---|---|---|---|")
        for name, n, batch, _, libtorch, reference, default in rows:
            print(f"| {name} | {n} | {batch} | {rate(libtorch)} | {rate(reference)} | {ratio(libtorch, reference)} "
                  f"| {rate(default)} | {ratio(libtorch, default)} |")
        return
    print("| architecture | train posters | batch | flex img/s | tch-cpu img/s | PyTorch CPU img/s | flex / PyTorch | tch-cpu / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, batch, flex, libtorch, reference, _ in rows:
        print(f"| {name} | {n} | {batch} | {rate(flex)} | {rate(libtorch)} | {rate(reference)} "
              f"| {ratio(flex, reference)} | {ratio(libtorch, reference)} |")


if __name__ == "__main__":
    main()
