"""Quality on real posters: runs the pipeline on ../shared/real-posters over several split seeds
and prints, per model and for both baselines, micro/macro/samples F1, macro ROC-AUC and mAP on the
test split (mean and spread over the seeds), the decision rule each seed chose, and each stage's
time. Standard library only.

The project lives in bench/work/model-quality/<label>/ and is kept between seeds, so the per-poster
caches (downloads, resized pixels, embeddings) make every seed after the first cost only what the
split changes: the heads and the from-scratch CNN.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

METRICS = [
    ("micro-F1", ("decided", "micro_f1")),
    ("macro-F1", ("decided", "macro_f1")),
    ("samples-F1", ("decided", "samples_f1")),
    ("ROC-AUC", ("ranking", "roc_auc_macro")),
    ("mAP", ("ranking", "mean_average_precision")),
]


def figure(test, path):
    value = test
    for key in path:
        value = (value or {}).get(key)
    return value


def project(work, data, pipeline):
    """The bench project: the pipeline file as given, `data/sample` and `models` linked in."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "data").mkdir(exist_ok=True)
    sample = work / "data" / "sample"
    if sample.is_symlink() or sample.exists():
        sample.unlink()
    sample.symlink_to(data.resolve())
    models = work / "models"
    if not models.exists():
        models.symlink_to(REPO / "models")
    shutil.copyfile(pipeline, work / "pipeline.yaml")
    return work


def run_seed(binary, work, seed, sets):
    args = [str(binary), "run", "-S", f"split.seed={seed}", "-S", "filter.min_year=null"]
    for s in sets:
        args += ["-S", s]
    log_path = work / f"run-seed-{seed}.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        done = subprocess.run(args, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(log_path.read_text()[-6000:])
        raise SystemExit(f"pipeline run failed for seed {seed}; its output is in {log_path}")
    log = subprocess.run(
        [str(binary), "log", "--json", "-n", "1"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(log.stdout)
    stages = {s["name"]: (s["action"], s.get("seconds") or 0.0) for s in record["stages"]}
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    return seconds, stages, metrics


def rows_of(metrics):
    """(row name, test figures, rule) for every model and both baselines of the first model."""
    rows = []
    for model in metrics["models"]:
        decision = model.get("decision") or {}
        rows.append((f"{model['role']}: {model['name']}", model["test"], decision.get("rule", "")))
    for baseline in metrics["models"][0].get("baselines", []):
        rows.append((f"baseline {baseline['name']}", baseline["test"], ""))
    return rows


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "real-posters"))
    parser.add_argument("--pipeline", default=str(REPO / "pipeline.yaml"))
    parser.add_argument("--seeds", default="1,2,3", help="split seeds, comma-separated")
    parser.add_argument("-S", "--set", action="append", default=[], help="STAGE.PARAM=VALUE for every seed")
    parser.add_argument("--label", default="default", help="names the work folder (and the cache kept in it)")
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()

    data = Path(args.data)
    if not (data / "movies.csv").is_file():
        raise SystemExit(f"no real posters at {data} (expected movies.csv and posters/)")
    binary = Path(args.binary).resolve()
    work = project(REPO / "bench" / "work" / "model-quality" / args.label, data, Path(args.pipeline))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(f"pipeline {args.pipeline}, sets {args.set or 'none'}, split seeds {seeds}, data {data}")
    per_seed = []
    for seed in seeds:
        seconds, stages, metrics = run_seed(binary, work, seed, args.set)
        ran = ", ".join(f"{n} {t:.0f}s" for n, (a, t) in stages.items() if a == "ran")
        print(f"seed {seed}: {seconds:.0f} s ({ran or 'nothing ran'}); test {metrics['n_test']} posters")
        per_seed.append({"seed": seed, "seconds": seconds, "stages": stages, "metrics": metrics})

    names = [name for name, _, _ in rows_of(per_seed[0]["metrics"])]
    header = "| model | " + " | ".join(m for m, _ in METRICS) + " | rule per seed |"
    print()
    print(header)
    print("|" + "---|" * (len(METRICS) + 2))
    summary = {}
    for index, name in enumerate(names):
        rows = [rows_of(s["metrics"])[index] for s in per_seed]
        cells = [spread([figure(test, path) for _, test, _ in rows]) for _, path in METRICS]
        rules = ", ".join(rule for _, _, rule in rows if rule) or "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {rules} |")
        summary[name] = {
            metric: [figure(test, path) for _, test, _ in rows] for metric, path in METRICS
        }
    print()
    print("mean ± sample standard deviation over the split seeds; test split of each seed")
    first = per_seed[0]
    print(f"first (cold where the cache was empty) run: {first['seconds']:.0f} s")
    for name, (action, t) in first["stages"].items():
        print(f"  {name:10s} {action:6s} {t:8.1f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "summary": summary, "seeds": per_seed}, indent=1)
        )


if __name__ == "__main__":
    main()
