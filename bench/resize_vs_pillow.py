"""Resize benchmark: our `resize` stage against Pillow doing what the original project did.

On the same N synthetic 182x268 JPEGs (written once, in the page cache for every measurement):

  1. `pipeline run resize` (decode, resize to WxH, write Parquet shards; the stage's own duration from
     the run record), `--force --no-reuse` each time (nothing taken from earlier outputs), all cores;
  2. Pillow as the original project: `Image.open(p).convert('RGB').resize((W, H))` into a numpy array,
     then written with pyarrow; single process, and a multiprocessing pool of the same size as ours;
  3. decode only: our decoder (`decode-floor`, the function `filter` and `resize` call) on all cores,
     and Pillow's (`Image.open(p).convert('RGB')`) single process and in the pool;
  4. decode + resize with our code and nothing written (`decode-floor` with a size): how much of the
     distance to the decode floor is resizing and how much is writing shards.

Prints images/second and the ratios the issue sets targets for. Each measurement runs `--repeats`
times: the first is reported as cold, the median of the rest as warm.

Run it with `bash bench/resize-vs-pillow.sh`.
"""

import argparse
import json
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_vs_dvc import csv_row, poster  # noqa: E402  (the same synthetic posters)

SIZE = (224, 224)


def pillow_resize(path):
    return np.asarray(Image.open(path).convert("RGB").resize(SIZE), dtype=np.uint8)


def pillow_decode(path):
    return Image.open(path).convert("RGB").size


def pillow_pipeline(paths, out, processes):
    """The original project's loop, then one Parquet file like our shards (ids, image bytes)."""
    if processes == 1:
        arrays = [pillow_resize(p) for p in paths]
    else:
        with Pool(processes) as pool:
            arrays = pool.map(pillow_resize, paths, chunksize=64)
    table = pa.table({
        "imdbId": pa.array(range(len(arrays)), pa.int64()),
        "image": pa.array([a.tobytes() for a in arrays], pa.binary()),
    })
    pq.write_table(table, out, compression="zstd")


def pillow_decode_only(paths, processes):
    if processes == 1:
        for p in paths:
            pillow_decode(p)
    else:
        with Pool(processes) as pool:
            pool.map(pillow_decode, paths, chunksize=64)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:]) if len(times) > 1 else times[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posters", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "resize-vs-pillow")
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--binary", type=Path, default=repo / "target/release/pipeline")
    parser.add_argument("--decode-floor", type=Path, default=repo / "target/release/decode-floor")
    args = parser.parse_args()
    cores = os.cpu_count()
    n = args.posters
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    posters = work / "project/data/posters"
    posters.mkdir(parents=True)
    ids = list(range(1_000_000, 1_000_000 + n))
    with Pool(cores) as pool:
        pool.map(poster, [(i, posters / f"{i}.jpg") for i in ids], chunksize=256)
    paths = [str(posters / f"{i}.jpg") for i in ids]
    project = work / "project"
    header = "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n"
    (project / "data/movies.csv").write_text(header + "".join(csv_row(i, f"posters/{i}.jpg") for i in ids))
    (project / "pipeline.yaml").write_text(
        "stages:\n"
        "  ingest: {kind: ingest, files: {csv: data/movies.csv}}\n"
        "  download: {kind: download, inputs: {movies: ingest}, files: {root: data}}\n"
        "  filter: {kind: filter, inputs: {movies: ingest, posters: download}, params: {min_year: null, min_genre_count: 0}}\n"
        f"  resize: {{kind: resize, inputs: {{movies: filter, posters: download}}, params: {{width: {SIZE[0]}, height: {SIZE[1]}, shard_rows: 1024}}}}\n"
    )
    subprocess.run([args.binary, "run", "filter"], cwd=project, check=True, capture_output=True)

    def ours():
        # --no-reuse: every poster is decoded and resized again, nothing taken from earlier outputs.
        subprocess.run([args.binary, "run", "--force", "resize", "--no-reuse"], cwd=project, check=True,
                       capture_output=True)
        log = subprocess.run([args.binary, "log", "-n", "1", "--json"], cwd=project, check=True,
                             capture_output=True, text=True).stdout
        record = json.loads(log.strip().splitlines()[-1])
        return next(s["seconds"] for s in record["stages"] if s["name"] == "resize")

    ours_times = [ours() for _ in range(args.repeats)]
    ours_cold, ours_warm = ours_times[0], statistics.median(ours_times[1:] or ours_times)

    def floor():
        out = subprocess.run([args.decode_floor, str(posters), str(cores), str(SIZE[0]), str(SIZE[1])],
                             check=True, capture_output=True, text=True)
        record = json.loads(out.stdout)
        return record["seconds"], record["decode_resize_seconds"]

    floor_runs = [floor() for _ in range(args.repeats)]
    floor_times = [decode for decode, _ in floor_runs]
    floor_cold, floor_warm = floor_times[0], statistics.median(floor_times[1:] or floor_times)
    unwritten = [resized for _, resized in floor_runs]
    unwritten_cold, unwritten_warm = unwritten[0], statistics.median(unwritten[1:] or unwritten)

    out = work / "pillow.parquet"
    p1 = timed(lambda: pillow_pipeline(paths, out, 1), args.repeats)
    pn = timed(lambda: pillow_pipeline(paths, out, cores), args.repeats)
    d1 = timed(lambda: pillow_decode_only(paths, 1), args.repeats)
    dn = timed(lambda: pillow_decode_only(paths, cores), args.repeats)

    rate = lambda seconds: n / seconds  # noqa: E731
    rows = [
        (f"ours: resize stage, {cores} cores", ours_cold, ours_warm),
        ("Pillow: open/convert/resize + pyarrow, 1 process", *p1),
        (f"Pillow: same, Pool({cores})", *pn),
        (f"decode only, ours, {cores} cores", floor_cold, floor_warm),
        ("decode only, Pillow, 1 process", *d1),
        (f"decode only, Pillow, Pool({cores})", *dn),
        (f"decode + resize, ours, nothing written, {cores} cores", unwritten_cold, unwritten_warm),
    ]
    print(f"{n} posters 182x268 JPEG -> {SIZE[0]}x{SIZE[1]}, {cores} cores; images/s (cold = first run, warm = median of the rest)")
    print(f"{'measurement':52} {'cold img/s':>11} {'warm img/s':>11}")
    for label, cold, warm in rows:
        print(f"{label:52} {rate(cold):11.0f} {rate(warm):11.0f}")
    print()
    print(f"ours / Pillow 1 process:      {p1[1] / ours_warm:5.2f}x  (target >= 5)")
    print(f"ours / Pillow Pool({cores}):        {pn[1] / ours_warm:5.2f}x  (target >= 2.5)")
    print(f"ours / our decode-only floor: {floor_warm / ours_warm:5.2f}x  (target: within 1.5x, i.e. >= 0.67)")
    print(f"  of which decode + resize alone, nothing written: {floor_warm / unwritten_warm:5.2f}x of the floor")


if __name__ == "__main__":
    main()
