"""Cache benchmark: `pipeline run` against `dvc repro` driving the same stages.

Generates N synthetic 182x268 JPEG posters, serves them from a real HTTP server on 127.0.0.1
(in this process, counting requests), and builds two projects over the same CSV:

  ours/  pipeline.yaml: ingest -> download -> filter -> resize -> split -> stats
  dvc/   the same pipeline.yaml, each stage publishing its output to out/<stage>, and a dvc.yaml
         whose stages run `pipeline run STAGE` with out/<stage> as the DVC out

and a third, local/, where the posters are workspace files (so the stat cache covers N files).

Then it measures, in this one run: a no-op `pipeline run`, a no-op `dvc repro`, and adding 10
movies to the CSV and rerunning with each tool (with the HTTP requests each made). Train and
evaluate are left out of the DAG: every new movie changes the training set, so both tools would
retrain from scratch, and that identical cost would hide what the benchmark is about.

Run it with `bash bench/cache-vs-dvc.sh` (builds the binary, makes the venv with DVC).
"""

import argparse
import http.server
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

GENRES = [
    "Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary", "Drama",
    "Family", "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Sport", "Thriller", "War", "Western",
]
STAGES = ["ingest", "download", "filter", "resize", "split", "stats"]
FIRST_ID = 1_000_000


def poster(args):
    """Writes one synthetic poster: a two-colour gradient with a few boxes, like a flat poster."""
    from PIL import Image, ImageDraw

    movie_id, path = args
    rng = random.Random(movie_id)
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (182, 268))
    draw = ImageDraw.Draw(image)
    for y in range(268):
        t = y / 267
        draw.line([(0, y), (181, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randrange(2, 6)):
        x0, y0 = rng.randrange(150), rng.randrange(240)
        draw.rectangle(
            [x0, y0, x0 + rng.randrange(10, 60), y0 + rng.randrange(10, 60)],
            fill=tuple(rng.randrange(256) for _ in range(3)),
        )
    image.save(path, quality=85)


def csv_row(movie_id, poster_ref):
    rng = random.Random(movie_id * 7)
    genres = "|".join(rng.sample(GENRES, rng.randrange(1, 4)))
    year = rng.randrange(1980, 2017)
    title = f'"Movie {movie_id}, the sequel ({year})"' if movie_id % 11 == 0 else f"Movie {movie_id} ({year})"
    return (
        f"{movie_id},http://www.imdb.com/title/tt{movie_id:07d},{title},"
        f"{rng.randrange(10, 95) / 10},{genres},{poster_ref}\n"
    )


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = 0
    lock = threading.Lock()

    def do_GET(self):
        with CountingHandler.lock:
            CountingHandler.requests += 1
        super().do_GET()

    def log_message(self, *args):
        pass


def serve(directory):
    handler = lambda *a, **kw: CountingHandler(*a, directory=str(directory), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def pipeline_yaml(publish, poster_root):
    lines = ["stages:"]
    spec = {
        "ingest": ("files: {csv: data/movies.csv}", None),
        "download": ("inputs: {movies: ingest}", f"files: {{root: {poster_root}}}"),
        "filter": ("inputs: {movies: ingest, posters: download}", "params: {min_year: null, min_genre_count: 10}"),
        "resize": ("inputs: {movies: filter, posters: download}", "params: {width: 48, height: 48, shard_rows: 2048}"),
        "split": ("inputs: {shards: resize}", None),
        "stats": ("inputs: {data: split}", None),
    }
    for stage in STAGES:
        first, second = spec[stage]
        lines += [f"  {stage}:", f"    kind: {stage}", f"    {first}"]
        if second:
            lines.append(f"    {second}")
        if publish:
            lines.append(f"    publish: out/{stage}")
    return "\n".join(lines) + "\n"


def dvc_yaml(binary):
    deps = {
        "ingest": ["data/movies.csv"],
        "download": ["out/ingest", "data/root"],
        "filter": ["out/ingest", "out/download"],
        "resize": ["out/filter", "out/download"],
        "split": ["out/resize"],
        "stats": ["out/split"],
    }
    lines = ["stages:"]
    for stage in STAGES:
        lines += [f"  {stage}:", f"    cmd: {binary} run {stage}", "    deps:"]
        lines += [f"      - {d}" for d in deps[stage]]
        lines += ["    outs:", f"      - out/{stage}"]
    return "\n".join(lines) + "\n"


def timed(cmd, cwd, env=None):
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"`{' '.join(map(str, cmd))}` failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout


def median_of(runs, cmd, cwd):
    times = [timed(cmd, cwd)[0] for _ in range(runs)]
    return statistics.median(times), min(times), max(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posters", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "cache-vs-dvc")
    parser.add_argument("--binary", type=Path, default=Path(__file__).resolve().parents[1] / "target/release/pipeline")
    parser.add_argument("--dvc", default=shutil.which("dvc") or "dvc")
    parser.add_argument("--repeats", type=int, default=5, help="no-op runs per tool (median reported)")
    args = parser.parse_args()
    binary = args.binary.resolve()
    work = args.work.resolve()
    n, extra = args.posters, 10

    shutil.rmtree(work, ignore_errors=True)
    posters = work / "served"
    posters.mkdir(parents=True)
    ids = list(range(FIRST_ID, FIRST_ID + n + extra))
    started = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(poster, [(i, posters / f"{i}.jpg") for i in ids], chunksize=256)
    print(f"generated {len(ids)} posters (182x268 JPEG) in {time.perf_counter() - started:.1f} s")
    port = serve(posters)
    header = "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n"
    url = lambda i: f"http://127.0.0.1:{port}/{i}.jpg"  # noqa: E731

    projects = {"ours": work / "ours", "dvc": work / "dvc", "local": work / "local"}
    for name, root in projects.items():
        (root / "data/root").mkdir(parents=True)
        local = name == "local"
        if local:
            shutil.copytree(posters, root / "data/root/posters")
        rows = [csv_row(i, f"posters/{i}.jpg" if local else url(i)) for i in ids[:n]]
        (root / "data/movies.csv").write_text(header + "".join(rows), encoding="latin-1")
        (root / "pipeline.yaml").write_text(pipeline_yaml(name == "dvc", "data/root"))
    # Posters a minute old, as they would be: the stat cache never trusts files modified just now.
    old = time.time() - 60
    for root, _, files in os.walk(work):
        for f in files:
            os.utime(os.path.join(root, f), (old, old))
    dvc_root = projects["dvc"]
    (dvc_root / "dvc.yaml").write_text(dvc_yaml(binary))
    timed([args.dvc, "init", "--no-scm", "-q"], dvc_root)
    timed([args.dvc, "config", "core.analytics", "false"], dvc_root)

    results = {}
    for name in ["ours", "local"]:
        before = CountingHandler.requests
        first, _ = timed([binary, "run"], projects[name])
        print(f"{name}: first `pipeline run` {first:.1f} s, {CountingHandler.requests - before} HTTP requests")
    before = CountingHandler.requests
    first, _ = timed([args.dvc, "repro", "-q"], dvc_root)
    print(f"dvc: first `dvc repro` {first:.1f} s, {CountingHandler.requests - before} HTTP requests")

    results["ours"] = median_of(args.repeats, [binary, "run"], projects["ours"])
    results["local"] = median_of(args.repeats, [binary, "run"], projects["local"])
    results["dvc"] = median_of(max(3, args.repeats // 2), [args.dvc, "repro", "-q"], dvc_root)
    _, status = timed([args.dvc, "status"], dvc_root)
    if "up to date" not in status:
        sys.exit(f"dvc repro left the project dirty:\n{status}")

    added = {}
    new_rows = "".join(csv_row(i, url(i)) for i in ids[n:])
    new_local = "".join(csv_row(i, f"posters/{i}.jpg") for i in ids[n:])
    for name, cmd in [("ours", [binary, "run"]), ("dvc", [args.dvc, "repro", "-q"]), ("local", [binary, "run"])]:
        root = projects[name]
        with open(root / "data/movies.csv", "a", encoding="latin-1") as csv:
            csv.write(new_local if name == "local" else new_rows)
        before = CountingHandler.requests
        seconds, out = timed(cmd, root)
        # Our stages say how many posters they fetched and decoded; DVC runs them quietly.
        decoded = "; ".join(line.strip() for line in out.splitlines() if "decoded" in line or "fetched" in line)
        added[name] = (seconds, CountingHandler.requests - before, decoded)

    no_op_ours, no_op_local, no_op_dvc = results["ours"][0], results["local"][0], results["dvc"][0]
    print()
    print(f"{n} posters, DAG {' -> '.join(STAGES)}, {os.cpu_count()} cores")
    print(f"{'measurement':44} {'median s':>9} {'min s':>8} {'max s':>8}")
    for label, key in [
        ("no-op `pipeline run` (posters over HTTP)", "ours"),
        ("no-op `pipeline run` (posters as local files)", "local"),
        ("no-op `dvc repro`", "dvc"),
    ]:
        med, lo, hi = results[key]
        print(f"{label:44} {med:9.3f} {lo:8.3f} {hi:8.3f}")
    print(f"no-op ratio, dvc / pipeline (HTTP):   {no_op_dvc / no_op_ours:7.1f}x")
    print(f"no-op ratio, dvc / pipeline (local):  {no_op_dvc / no_op_local:7.1f}x")
    print()
    print(f"add {extra} movies and rerun:")
    for label, key in [("`pipeline run` (HTTP)", "ours"), ("`dvc repro`", "dvc"), ("`pipeline run` (local)", "local")]:
        seconds, requests, decoded = added[key]
        print(f"  {label:24} {seconds:7.2f} s, {requests:5} HTTP requests  {decoded}")
    print(f"add-{extra} ratio, dvc / pipeline (HTTP): {added['dvc'][0] / added['ours'][0]:7.1f}x")


if __name__ == "__main__":
    main()
