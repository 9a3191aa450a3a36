"""Shared-cache benchmark: `pipeline push`/`pull` against `dvc push`/`pull` of the same files to
the same S3 server, in one run.

Starts moto's S3 server on 127.0.0.1 (one process serves both tools, each in its own bucket) and
measures two workloads:

  sample    the default pipeline run on the embedded sample (every stage, ~75 MB of outputs):
            `pipeline push` of its cache, then `pipeline pull` into a fresh copy of the project;
            and DVC tracking the same output files (`dvc add` of each stage's output directory),
            `dvc push`, then `dvc pull` into a fresh copy.
  download  a download stage of N synthetic posters served over HTTP from 127.0.0.1 (default
            20,000): the same, for `ingest` + `download`.

Both tools use the same number of parallel transfers (`--jobs`, default 8). Times are wall-clock
of the command; MB/s is the payload (the output files, each distinct file once) over that time.
The runs that make the outputs are not timed.

Run it with `bash bench/remote-vs-dvc.sh`.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_vs_dvc import FIRST_ID, csv_row, poster, serve  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, cwd, env):
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"`{' '.join(map(str, cmd))}` failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout


def entry_outputs(root):
    """(stage, out dir) of every entry in a project's cache."""
    import json

    found = []
    for entry in sorted((root / "cache/v1/entries").iterdir()):
        manifest = json.loads((entry / "manifest.json").read_text())
        found.append((manifest["stage"], entry / "out"))
    return found


def payload(dirs):
    """Bytes of the distinct files below `dirs` (what either tool must move at least once)."""
    import hashlib

    seen, total, files = set(), 0, 0
    for d in dirs:
        for dirpath, _, names in os.walk(d):
            for name in names:
                path = Path(dirpath) / name
                data = path.read_bytes()
                files += 1
                digest = hashlib.sha256(data).digest()
                if digest not in seen:
                    seen.add(digest)
                    total += len(data)
    return total, files


def copy_project(src, dst, with_cache):
    shutil.rmtree(dst, ignore_errors=True)
    ignore = None if with_cache else shutil.ignore_patterns("cache", "reports", "pipeline.lock")
    shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def measure(name, project, stages, args, env, bucket_ours, bucket_dvc):
    """Pushes and pulls `project`'s entries with both tools; returns the figures."""
    work = project.parent
    binary = args.binary
    outputs = [(stage, out) for stage, out in entry_outputs(project) if stage in stages]
    size, files = payload([out for _, out in outputs])
    print(f"{name}: {len(outputs)} entries, {files} files, {size / 1e6:.1f} MB distinct")
    jobs = str(args.jobs)

    url = f"s3://{bucket_ours}/cache"
    push_s, out = run([binary, "push", *stages, "--remote", url, "-j", jobs], project, env)
    print(f"  pipeline push: {push_s:.2f} s  ({out.strip().splitlines()[-1]})")
    fresh = work / f"{project.name}-pulled"
    copy_project(project, fresh, with_cache=False)
    pull_s, out = run([binary, "pull", *stages, "--remote", url, "-j", jobs], fresh, env)
    print(f"  pipeline pull: {pull_s:.2f} s  ({out.strip().splitlines()[-1]})")
    check_s, _ = run([binary, "run", *stages], fresh, env)

    # DVC over the same output files: one tracked directory per stage.
    repo = work / f"{project.name}-dvc"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    run([args.dvc, "init", "--no-scm", "-q"], repo, env)
    run([args.dvc, "config", "core.analytics", "false"], repo, env)
    for stage, out in outputs:
        shutil.copytree(out, repo / "data" / stage)
    run([args.dvc, "add", "-q", *[f"data/{stage}" for stage, _ in outputs]], repo, env)
    run([args.dvc, "remote", "add", "-d", "bench", f"s3://{bucket_dvc}/cache"], repo, env)
    run([args.dvc, "remote", "modify", "bench", "endpointurl", env["AWS_ENDPOINT"]], repo, env)
    dvc_push_s, _ = run([args.dvc, "push", "-q", "-j", jobs], repo, env)
    print(f"  dvc push:      {dvc_push_s:.2f} s")
    clone = work / f"{project.name}-dvc-pulled"
    shutil.rmtree(clone, ignore_errors=True)
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("cache", "data", "tmp"))
    (clone / "data").mkdir()
    for stage, _ in outputs:
        shutil.copy(repo / "data" / f"{stage}.dvc", clone / "data" / f"{stage}.dvc")
    dvc_pull_s, _ = run([args.dvc, "pull", "-q", "-j", jobs], clone, env)
    print(f"  dvc pull:      {dvc_pull_s:.2f} s")
    mb = size / 1e6
    return {
        "name": name,
        "mb": mb,
        "files": files,
        "rows": [
            ("push", push_s, dvc_push_s),
            ("pull", pull_s, dvc_pull_s),
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posters", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=8, help="parallel transfers, both tools")
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "remote-vs-dvc")
    parser.add_argument("--binary", type=Path, default=REPO / "target/release/pipeline")
    parser.add_argument("--dvc", default=shutil.which("dvc") or "dvc")
    parser.add_argument("--moto", default=str(REPO / ".venv/bin/moto_server"))
    args = parser.parse_args()
    args.binary = args.binary.resolve()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    port = free_port()
    moto = subprocess.Popen([args.moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("moto_server did not start")
                time.sleep(0.2)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT=f"http://127.0.0.1:{port}")
        import urllib.request

        for bucket in ["ours-sample", "dvc-sample", "ours-download", "dvc-download"]:
            # moto takes an unsigned bucket creation.
            request = urllib.request.Request(f"{env['AWS_ENDPOINT']}/{bucket}", method="PUT", data=b"")
            urllib.request.urlopen(request).close()

        results = []
        # 1. The default pipeline on the sample.
        sample = work / "sample"
        sample.mkdir()
        shutil.copy(REPO / "pipeline.yaml", sample / "pipeline.yaml")
        for sub in ["data", "models"]:
            shutil.copytree(REPO / sub, sample / sub)
        made, _ = run([args.binary, "run"], sample, env)
        print(f"sample: the default pipeline ran in {made:.1f} s (not part of the figures)")
        stages = [s for s, _ in entry_outputs(sample)]
        results.append(measure("sample (default pipeline)", sample, stages, args, env, "ours-sample", "dvc-sample"))

        # 2. A download stage of N posters.
        n = args.posters
        served = work / "served"
        served.mkdir()
        started = time.perf_counter()
        with Pool(os.cpu_count()) as pool:
            pool.map(poster, [(i, served / f"{i}.jpg") for i in range(FIRST_ID, FIRST_ID + n)], chunksize=256)
        print(f"generated {n} posters in {time.perf_counter() - started:.1f} s")
        http_port = serve(served)
        dl = work / "download"
        (dl / "data/root").mkdir(parents=True)
        rows = [csv_row(i, f"http://127.0.0.1:{http_port}/{i}.jpg") for i in range(FIRST_ID, FIRST_ID + n)]
        (dl / "data/movies.csv").write_text("imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n" + "".join(rows),
                                            encoding="latin-1")
        (dl / "pipeline.yaml").write_text(
            "stages:\n  ingest:\n    kind: ingest\n    files: {csv: data/movies.csv}\n"
            "  download:\n    kind: download\n    inputs: {movies: ingest}\n    files: {root: data/root}\n"
        )
        made, _ = run([args.binary, "run"], dl, env)
        print(f"download: {n} posters downloaded in {made:.1f} s (not part of the figures)")
        results.append(measure(f"download stage, {n} posters", dl, ["ingest", "download"], args, env,
                               "ours-download", "dvc-download"))
    finally:
        moto.kill()

    print()
    print(f"| workload | | `pipeline` | `dvc` | ratio |")
    print(f"|---|---|---|---|---|")
    for result in results:
        for what, ours, theirs in result["rows"]:
            print(f"| {result['name']} ({result['mb']:.1f} MB, {result['files']} files) | {what} "
                  f"| {ours:.2f} s, {result['mb'] / ours:.1f} MB/s | {theirs:.2f} s, {result['mb'] / theirs:.1f} MB/s "
                  f"| {theirs / ours:.1f}x |")


if __name__ == "__main__":
    main()
