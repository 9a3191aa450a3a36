"""Embedding benchmark: our `embed` stage against PyTorch on the same network, weights and posters.

On N synthetic 182x268 JPEG posters (the cache benchmark's generator), at each input size:

  1. `pipeline run --force embed --no-reuse` (decode, fit, run the frozen EfficientNet-Lite0 on Burn's
     flex CPU backend, write Parquet shards); the stage's own duration from the run record, all cores;
  2. PyTorch (CPU, `torch.set_num_threads(cores)`, eval mode, `no_grad`): the same Lite0 graph (TF
     "SAME" padding, BatchNorm eps 1e-3, ReLU6) loaded from the same `.pth` with `strict=True`, posters
     decoded with Pillow, resized bilinearly (stretch) to the same size, `(x - 127) / 128`, batches of
     16, features written with pyarrow; channels_last too, PyTorch's faster CPU layout for convnets.

Both embed every poster of the train, val and test splits. Prints images/second, the ratios, and how
close the two features of each poster are (cosine similarity): the networks agree to 1e-3 on identical
input (`stages/backbone/tests/imagenet.rs`), so what differs here is the resize (Pillow's bilinear
against fast_image_resize's when shrinking 182x268 posters), which is why 224x224, an enlargement, agrees
closer than 128x192.

Run it with `bash bench/embed-vs-pytorch.sh`.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_vs_dvc import csv_row, poster  # noqa: E402  (the same synthetic posters)

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "models/efficientnet-lite0/efficientnet-lite0-57934424.pth"


class SameConv(nn.Conv2d):
    """TF "SAME" padding: the extra pixel goes bottom/right."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        s = self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def conv(i, o, k, s=1, g=1):
    return SameConv(i, o, k, s, groups=g, bias=False)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, i, o, k, stride, expand):
        super().__init__()
        m = i * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv, self._bn0 = conv(i, m, 1), bn(m)
        self._depthwise_conv, self._bn1 = conv(m, m, k, stride, m), bn(m)
        self._project_conv, self._bn2 = conv(m, o, 1), bn(o)
        self.skip = stride == 1 and i == o

    def forward(self, x):
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class Lite0(nn.Module):
    STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]

    def __init__(self):
        super().__init__()
        blocks = []
        for r, k, s, e, i, o in self.STAGES:
            blocks.append(MBConv(i, o, k, s, e))
            blocks += [MBConv(o, o, k, 1, e) for _ in range(r - 1)]
        self._conv_stem, self._bn0 = conv(3, 32, 3, 2), bn(32)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = conv(320, 1280, 1), bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.adaptive_avg_pool2d(F.relu6(self._bn1(self._conv_head(x))), 1).flatten(1)


def load_rgb(args):
    path, w, h = args
    img = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def torch_embed(net, paths, w, h, out, channels_last, pool):
    """Decode in a pool of the same size as ours, embed in batches of 16, write one Parquet file."""
    feats = []
    with torch.no_grad():
        for start in range(0, len(paths), 16):
            batch = pool.map(load_rgb, [(p, w, h) for p in paths[start:start + 16]])
            x = (torch.from_numpy(np.stack(batch)).float() - 127.0) / 128.0
            x = x.permute(0, 3, 1, 2)
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
            feats.append(net.features(x).numpy())
    f = np.concatenate(feats)
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(f.ravel()), 1280)}), out)
    return f


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posters", type=int, default=300)
    parser.add_argument("--sizes", default="128x192,224x224")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "embed-vs-pytorch")
    parser.add_argument("--binary", type=Path, default=REPO / "target/release/pipeline")
    args = parser.parse_args()
    cores = os.cpu_count()
    torch.set_num_threads(cores)
    n = args.posters
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    project = work / "project"
    posters = project / "data/posters"
    posters.mkdir(parents=True)
    ids = list(range(1_000_000, 1_000_000 + n))
    with Pool(cores) as pool:
        pool.map(poster, [(i, posters / f"{i}.jpg") for i in ids], chunksize=64)
    shutil.copy(WEIGHTS, project / "weights.pth")
    header = "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n"
    (project / "data/movies.csv").write_text(header + "".join(csv_row(i, f"posters/{i}.jpg") for i in ids))

    net = Lite0()
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    net.eval()
    print(f"{n} posters 182x268 JPEG, {cores} cores, torch {torch.__version__}; images/s, median of {args.repeats}")
    print(f"{'input':>9} {'ours (flex)':>12} {'PyTorch':>9} {'PyTorch CL':>11} {'ours/PyTorch':>13} {'ours/CL':>8} {'cos mean/min':>13}")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        (project / "pipeline.yaml").write_text(
            "stages:\n"
            "  ingest: {kind: ingest, files: {csv: data/movies.csv}}\n"
            "  download: {kind: download, inputs: {movies: ingest}, files: {root: data}}\n"
            "  filter: {kind: filter, inputs: {movies: ingest, posters: download}, params: {min_year: null, min_genre_count: 0}}\n"
            "  resize: {kind: resize, inputs: {movies: filter, posters: download}, params: {width: 16, height: 16}}\n"
            "  split: {kind: split, inputs: {shards: resize}}\n"
            f"  embed: {{kind: embed, inputs: {{data: split, posters: download}}, files: {{weights: weights.pth}}, params: {{width: {w}, height: {h}}}}}\n"
        )
        subprocess.run([args.binary, "run", "split"], cwd=project, check=True, capture_output=True)

        def ours():
            subprocess.run([args.binary, "run", "--force", "embed", "--no-reuse"], cwd=project, check=True,
                           capture_output=True)
            log = subprocess.run([args.binary, "log", "-n", "1", "--json"], cwd=project, check=True,
                                 capture_output=True, text=True).stdout
            record = json.loads(log.strip().splitlines()[-1])
            return next(s["seconds"] for s in record["stages"] if s["name"] == "embed")

        ours_s = statistics.median([ours() for _ in range(args.repeats)])
        # The poster each of our rows came from, to compare features row by row.
        out_dirs = sorted((project / "cache/v1/entries").glob("*/out/embed.json"), key=os.path.getmtime)
        ours_dir = out_dirs[-1].parent
        ours_feats = {}
        for split in ("train", "val", "test"):
            meta = json.loads((ours_dir / split / "meta.json").read_text())
            for s in meta["shards"]:
                t = pq.read_table(ours_dir / split / s["file"])
                for p, e in zip(t.column("poster").to_pylist(), t.column("embedding").to_pylist()):
                    ours_feats[p] = np.asarray(e, dtype=np.float32)
        download = [d for d in (project / "cache/v1/entries").glob("*/out/posters") if d.is_dir()][0]
        order = sorted(ours_feats)
        paths = [str(download / Path(p).name) for p in order]
        results = {}
        with Pool(cores) as pool:
            for cl in (False, True):
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    feats = torch_embed(net, paths, w, h, work / "torch.parquet", cl, pool)
                    times.append(time.perf_counter() - start)
                results[cl] = (statistics.median(times), feats)
        feats = results[False][1]
        ours_m = np.stack([ours_feats[p] for p in order])
        cos = (ours_m * feats).sum(1) / (np.linalg.norm(ours_m, axis=1) * np.linalg.norm(feats, axis=1) + 1e-12)
        rate = lambda s: len(order) / s  # noqa: E731
        t_plain, t_cl = results[False][0], results[True][0]
        print(f"{size:>9} {rate(ours_s):12.1f} {rate(t_plain):9.1f} {rate(t_cl):11.1f} {t_plain / ours_s:12.2f}x {t_cl / ours_s:7.2f}x {cos.mean():6.4f}/{cos.min():.4f}")


if __name__ == "__main__":
    main()
