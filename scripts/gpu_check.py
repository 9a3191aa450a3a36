"""The "there" half of scripts/gpu-check.sh: everything the GPU machine runs, in one go.

    python3 scripts/gpu_check.py --binary BIN --device cuda --out DIR [--budget 420]

BIN is the libtorch build of `pipeline` (`LD_LIBRARY_PATH` already pointing at this Python's
torch/lib: the shell half does that). Each step runs under what is left of `--budget` seconds,
is timed, and keeps its whole output in `logs/`; after every step `DIR/summary.md` and
`DIR/gpu-check.tar.gz` (the logs, every metrics.json, history.json and the report) are written
again, so a run cut short still brings back what it did. The steps:

  1. environment: nvidia-smi, torch and cuDNN versions, what the binary links against;
  2. the default pipeline (pipeline.yaml on the embedded sample) on `--device`, its stage times
     beside flex's on the build machine (gpu-bundle/flex-reference.json), its metrics;
  3. the same seed again: `train` and `cnn` forced to rerun, their model.bpk bytes and metrics
     compared with the first run's;
  4. the models it trained read by the CPU build: `predict` on `--device flex` against `predict`
     on `--device`, probability by probability;
  5. the image networks at 224x224: `keras-baseline` (the original project's 11M-parameter
     network) and an `efficientnet-lite0` fine-tune of its last 2 blocks, trained and evaluated;
  6. bench/train-vs-pytorch.sh: our training against PyTorch eager on the same device, shards,
     layers and batch, with this machine's own torch.

Steps 3 and 4 need step 2; a failed or timed-out step is recorded and the next one runs.
`--steps default,bench` runs only those (with what they need), to run again what failed.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "models/efficientnet-lite0/efficientnet-lite0-57934424.pth"

# The image networks of step 5: resize to 224x224, then both trainings and evaluate.
IMAGE_PIPELINE = """\
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
    params: {{width: 224, height: 224, mode: stretch, shard_rows: 256}}
  split:
    kind: split
    inputs: {{shards: resize}}
    params: {{seed: 42, val_fraction: 0.15, test_fraction: 0.15}}
  keras:
    kind: train
    inputs: {{data: split}}
    params: {{architecture: keras-baseline, epochs: {epochs}, batch_size: 32, learning_rate: 0.001, decision: auto, seed: 7}}
  lite0:
    kind: train
    inputs: {{data: split}}
    files: {{weights: {weights}}}
    params: {{architecture: efficientnet-lite0, finetune_blocks: 2, epochs: {epochs}, batch_size: 32, learning_rate: 0.001, decision: auto, seed: 7}}
  evaluate:
    kind: evaluate
    inputs: {{model: lite0, data: split, second_model: keras, second_data: split, ingest: ingest, download: download, filter: filter}}
    publish: reports
"""


class Check:
    """The run: where things go, the clock, and what each step found."""

    def __init__(self, args):
        self.binary = args.binary.resolve()
        self.device = args.device
        self.python = sys.executable
        self.out = args.out.resolve()
        self.work = args.work.resolve()
        self.logs = self.work / "logs"
        self.deadline = time.monotonic() + args.budget
        self.budget = args.budget
        self.epochs = args.epochs
        self.bench_epochs = args.bench_epochs
        self.reference = args.reference
        self.sections = []  # (title, markdown)
        self.steps = []  # (name, status, seconds)
        self.default = self.work / "default"

    def left(self):
        return self.deadline - time.monotonic()

    def run(self, name, cmd, cwd, limit, env=None, capture=False):
        """Runs `cmd` with its output appended to logs/<name>.log; returns (exit status, seconds,
        this command's output), stdout alone with `capture`. Exit status 124 means it ran past
        `limit` (or what is left of the budget)."""
        limit = max(1.0, min(limit, self.left()))
        log = self.logs / f"{name}.log"
        started = time.monotonic()
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(map(str, cmd))}    (in {cwd}, limit {limit:.0f} s)\n".encode())
            out.flush()
            start = out.tell()
            try:
                done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE if capture else out,
                                      stderr=out if capture else subprocess.STDOUT,
                                      env={**os.environ, **(env or {})}, timeout=limit)
                status, stdout = done.returncode, done.stdout or b""
            except subprocess.TimeoutExpired as timeout:
                status, stdout = 124, timeout.stdout or b""
            out.write(stdout)
            seconds = time.monotonic() - started
            out.write(f"[exit {status} after {seconds:.1f} s]\n".encode())
        if capture:
            return status, seconds, stdout.decode(errors="replace")
        with open(log, "rb") as text:
            text.seek(start)
            output = text.read().decode(errors="replace")
        return status, seconds, output.rsplit("[exit", 1)[0]

    def pipeline(self, name, args, cwd, limit, capture=False):
        return self.run(name, [str(self.binary), *args], cwd, limit, capture=capture)

    def save(self):
        """Writes summary.md and gpu-check.tar.gz into the output folder."""
        lines = [f"# GPU check: `{self.device}`", ""]
        lines += ["| step | status | seconds |", "|---|---|---|"]
        lines += [f"| {n} | {s} | {t:.1f} |" for n, s, t in self.steps]
        for title, body in self.sections:
            lines += ["", f"## {title}", "", body.rstrip()]
        summary = "\n".join(lines) + "\n"
        (self.work / "summary.md").write_text(summary)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.md").write_text(summary)
        partial = self.out / "gpu-check.tar.gz.partial"
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(self.work / "summary.md", arcname="summary.md")
            tar.add(self.logs, arcname="logs")
            for path in sorted(self.work.rglob("*")):
                kept = path.name in ("metrics.json", "history.json", "index.html", "flex-reference.json")
                if kept and path.is_file() and "logs" not in path.parts:
                    tar.add(path, arcname=str(path.relative_to(self.work)))
        partial.replace(self.out / "gpu-check.tar.gz")
        return summary


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def output_of(root, stage):
    """The cache entry folder of `stage`'s output as pipeline.lock records it."""
    lock = (root / "pipeline.lock").read_text()
    section = lock.split(f"\n  {stage}:\n", 1)[1]
    key = section.split("key: ", 1)[1].split()[0].strip("'\"")
    return root / "cache/v1/entries" / key / "out"


def last_run(check, root):
    status, _, out = check.pipeline("log", ["log", "--json", "-n", "1"], root, 30, capture=True)
    if status != 0:
        return None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def headline(metrics_file):
    """Rows of micro-F1, macro-F1, macro ROC-AUC and mAP per model and baseline."""
    metrics = json.loads(Path(metrics_file).read_text())
    rows = []
    for model in metrics["models"]:
        for name, card in [(model["name"], model["test"])] + [
                (f"baseline {b['name']}", b["test"]) for b in model["baselines"]]:
            ranking = card.get("ranking") or {}
            rows.append((name, card["decided"]["micro_f1"], card["decided"]["macro_f1"],
                         ranking.get("roc_auc_macro"), ranking.get("mean_average_precision")))
    return rows


def headline_table(metrics_file):
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["| model | micro-F1 | macro-F1 | macro ROC-AUC | mAP |", "|---|---|---|---|---|"]
    seen = set()
    for row in headline(metrics_file):
        if row[0] in seen:
            continue
        seen.add(row[0])
        lines.append(f"| {row[0]} | " + " | ".join(fmt(v) for v in row[1:]) + " |")
    return "\n".join(lines)


def copy_project(target, pipeline_text=None):
    """A project folder with the sample, the weights and a pipeline file (the repo's by default)."""
    if target.exists():
        shutil.rmtree(target)
    (target / "data").mkdir(parents=True)
    shutil.copytree(REPO / "data/sample", target / "data/sample")
    shutil.copytree(REPO / "models", target / "models")
    if pipeline_text is None:
        shutil.copy(REPO / "pipeline.yaml", target / "pipeline.yaml")
    else:
        (target / "pipeline.yaml").write_text(pipeline_text)


def environment(check):
    parts = []
    if shutil.which("nvidia-smi"):
        _, _, out = check.run("environment", ["nvidia-smi"], REPO, 30)
        parts.append("```\n" + out.strip() + "\n```")
    else:
        parts.append("nvidia-smi: not on this machine")
    probe = (
        "import torch, json; c = torch.cuda.is_available(); print(json.dumps({"
        "'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),"
        "'gpu': torch.cuda.get_device_name(0) if c else None, 'cuda_available': c}))"
    )
    status, _, out = check.run("environment", [check.python, "-c", probe], REPO, 60, capture=True)
    facts = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    parts.append("torch " + ", ".join(f"{k} `{v}`" for k, v in facts.items()))
    _, _, out = check.run("environment", ["ldd", str(check.binary)], REPO, 30, capture=True)
    missing = [line.strip() for line in out.splitlines() if "not found" in line]
    torch_libs = [line.strip() for line in out.splitlines() if "libtorch" in line or "libc10" in line]
    parts.append("binary links: " + ("; ".join(torch_libs) or "no libtorch?") +
                 ("\n\n**missing libraries**: " + "; ".join(missing) if missing else ""))
    _, _, out = check.pipeline("environment", ["--version"], REPO, 30, capture=True)
    parts.append(f"`{out.strip()}`, {os.cpu_count()} CPUs")
    check.sections.append(("Environment", "\n\n".join(parts)))
    if check.device == "cuda" and not facts["cuda_available"]:
        raise RuntimeError("this machine's torch sees no CUDA device")
    if missing:
        raise RuntimeError(f"the binary misses libraries: {missing}")


def fit_timings(root, stage):
    """Each fit's (ensemble member's) epochs with their clock readings, of `stage`'s last
    training: the cache entry's manifest keeps them (`measures.fits`), not `history.json`, which
    holds only what the output is a pure function of."""
    manifest = json.loads((output_of(root, stage).parent / "manifest.json").read_text())
    return [fit["epochs"] for fit in manifest.get("measures", {}).get("fits", [])]


def epoch_timings(root, stage):
    """Every epoch of every fit of `stage`'s last training, in turn."""
    return [e for epochs in fit_timings(root, stage) for e in epochs]


def per_epoch(epochs):
    return ", ".join("%.2f" % e["train_seconds"] for e in epochs)


def per_fit(fits):
    """`3 fits of 27, 31, 25 epochs; seconds per epoch: fit 1: ..., fit 2: ...`."""
    if len(fits) == 1:
        return f"train seconds per epoch {per_epoch(fits[0])}"
    sizes = ", ".join(str(len(f)) for f in fits)
    each = "; ".join(f"fit {i + 1}: {per_epoch(f)}" for i, f in enumerate(fits))
    return f"{len(fits)} fits (an ensemble) of {sizes} epochs; train seconds per epoch: {each}"


def stage_times(record):
    return {s["name"]: (s["action"], s["seconds"]) for s in record["stages"]}


def default_pipeline(check):
    copy_project(check.default)
    status, seconds, out = check.pipeline(
        "default-pipeline", ["run", "--device", check.device, "-v"], check.default, 300)
    if status != 0:
        raise RuntimeError(f"`pipeline run --device {check.device}` exited {status}: {out[-2000:]}")
    record = last_run(check, check.default)
    ours = stage_times(record)
    reference = {}
    if check.reference and check.reference.exists():
        reference = stage_times(json.loads(check.reference.read_text()))
    lines = [f"`pipeline run --device {check.device}` on the embedded sample: {seconds:.1f} s wall "
             f"(the run record says {record['seconds']:.1f} s); flex figures from the build machine "
             f"({check.reference.name if reference else 'none given'}).", "",
             f"| stage | {check.device} s | flex s (build machine) | flex / {check.device} |",
             "|---|---|---|---|"]
    for name, (action, secs) in ours.items():
        flex = reference.get(name, (None, None))[1]
        speedup = f"{flex / secs:.1f}x" if flex and secs > 0 else "-"
        lines.append(f"| {name} ({action}) | {secs:.2f} | {'-' if flex is None else f'{flex:.2f}'} | {speedup} |")
    for stage in ("train", "cnn"):
        history = json.loads((output_of(check.default, stage) / "history.json").read_text())
        fits = fit_timings(check.default, stage)
        lines.append("")
        lines.append(f"`{stage}` trained on `{history['device']}`: {len(history['epochs'])} epochs "
                     f"in its history, {per_fit(fits)}; {history['train_rows']} rows")
    lines += ["", headline_table(check.default / "reports/metrics.json")]
    check.sections.append(("Default pipeline", "\n".join(lines)))


def same_seed(check):
    root = check.default
    before = {s: sha256(output_of(root, s) / "model.bpk") for s in ("train", "cnn")}
    metrics_before = headline(root / "reports/metrics.json")
    shutil.copy(root / "reports/metrics.json", check.work / "metrics-first-run.json")
    status, _, out = check.pipeline(
        "same-seed", ["run", "--device", check.device, "--force", "train", "--force", "cnn", "-v"],
        root, 240)
    if status != 0:
        raise RuntimeError(f"the second run exited {status}: {out[-2000:]}")
    after = {s: sha256(output_of(root, s) / "model.bpk") for s in ("train", "cnn")}
    metrics_after = headline(root / "reports/metrics.json")
    lines = ["`train` and `cnn` forced to run again with the same seed on the same device:", "",
             "| model | model.bpk first run | second run | bytes match |", "|---|---|---|---|"]
    for s in before:
        lines.append(f"| {s} | {before[s][:16]} | {after[s][:16]} | {'yes' if before[s] == after[s] else '**no**'} |")
    worst = max((abs(a - b) for ra, rb in zip(metrics_before, metrics_after)
                 for a, b in zip(ra[1:], rb[1:]) if a is not None and b is not None), default=0.0)
    lines += ["", f"Largest difference of a headline metric between the two runs: {worst:.6f}"]
    check.sections.append(("Same seed, same bytes?", "\n".join(lines)))


def predict_on_flex(check):
    root = check.default
    posters = sorted((REPO / "data/sample/posters").glob("*.jpg"))[:16]
    lines = [f"`predict --json` on {len(posters)} sample posters, the models trained on "
             f"`{check.device}` read by `--device {check.device}` and by `--device flex` (the CPU build's "
             "backend):", "",
             "| model | largest probability difference | same predicted genres |", "|---|---|---|"]
    worst_all = 0.0
    for model in ("train", "cnn"):
        answers = {}
        for device in (check.device, "flex"):
            status, _, out = check.pipeline(
                f"predict-{model}-{device}",
                ["predict", "--device", device, "--json", "--model", model, *map(str, posters)], root, 120,
                capture=True)
            if status != 0:
                raise RuntimeError(f"predict --model {model} on {device} exited {status}: {out[-2000:]}")
            answers[device] = json.loads(out)["posters"]
        worst, same = 0.0, True
        for a, b in zip(answers[check.device], answers["flex"]):
            pa, pb = a["probabilities"], b["probabilities"]
            if any(p != p for p in pa + pb):
                raise RuntimeError(f"{model}: a probability is NaN")
            worst = max(worst, max(abs(x - y) for x, y in zip(pa, pb)))
            same &= [g["genre"] for g in a["genres"]] == [g["genre"] for g in b["genres"]]
        worst_all = max(worst_all, worst)
        lines.append(f"| {model} | {worst:.2e} | {'yes' if same else '**no**'} |")
    check.sections.append(("Read by the CPU build", "\n".join(lines)))
    if worst_all > 1e-3:
        raise RuntimeError(f"flex and {check.device} disagree by {worst_all:.2e}")


def image_networks(check):
    root = check.work / "image-networks"
    copy_project(root, IMAGE_PIPELINE.format(epochs=check.epochs, weights=WEIGHTS))
    status, seconds, out = check.pipeline(
        "image-networks", ["run", "--device", check.device, "-j", "1", "-v"], root, 300)
    if status != 0:
        raise RuntimeError(f"exited {status}: {out[-2000:]}")
    times = stage_times(last_run(check, root))
    lines = [f"224x224 posters, {check.epochs} epochs each, one stage at a time ({seconds:.1f} s in all):", ""]
    for stage in ("keras", "lite0"):
        history = json.loads((output_of(root, stage) / "history.json").read_text())
        epochs = epoch_timings(root, stage)
        fastest = min(e["train_seconds"] for e in epochs)
        lines.append(f"- `{stage}`: stage {times[stage][1]:.1f} s; {history['train_rows']} rows; "
                     f"train seconds per epoch {per_epoch(epochs)} "
                     f"(fastest {history['train_rows'] / fastest:.0f} images/s); "
                     f"best epoch {history['best_epoch']}")
    lines += ["", headline_table(root / "reports/metrics.json")]
    check.sections.append(("Image networks at 224x224", "\n".join(lines)))


def bench(check):
    args = ["bash", "bench/train-vs-pytorch.sh", "--binary", str(check.binary),
            "--epochs", str(check.bench_epochs), "--device", check.device]
    if check.device != "cuda":
        args += ["--only", "small-cnn"]  # the rehearsal: every line, the CPU's shortest training
    status, _, out = check.run("bench", args, REPO, 300, env={"BENCH_PYTHON": check.python})
    table = [line for line in out.splitlines() if line.startswith("|") or line.startswith("threads")]
    check.sections.append(("bench/train-vs-pytorch.sh", "\n".join(table) or out[-2000:]))
    if status != 0:
        raise RuntimeError(f"exited {status}: {out[-2000:]}")


# (name, what --steps calls it, the function, the step it needs)
STEPS = [
    ("environment", "environment", environment, None),
    ("default pipeline", "default", default_pipeline, None),
    ("same seed", "same-seed", same_seed, "default"),
    ("read by flex", "flex", predict_on_flex, "default"),
    ("image networks 224x224", "image", image_networks, None),
    ("bench", "bench", bench, None),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--device", default="cuda", help="cuda (the GPU), or tch-cpu for a rehearsal")
    parser.add_argument("--out", type=Path, required=True, help="what comes back: summary.md, gpu-check.tar.gz")
    parser.add_argument("--work", type=Path, default=REPO / "target/gpu-check-work")
    parser.add_argument("--budget", type=float, default=420, help="seconds for everything")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the 224x224 trainings")
    parser.add_argument("--bench-epochs", type=int, default=3, help="epochs per benchmark training")
    parser.add_argument("--steps", default=",".join(short for _, short, _, _ in STEPS),
                        help="which steps, comma-separated (a step that needs `default` runs it too)")
    parser.add_argument("--reference", type=Path, default=REPO / "gpu-bundle/flex-reference.json",
                        help="the run record of the default pipeline on flex (the here half writes it)")
    args = parser.parse_args()
    check = Check(args)
    if check.work.exists():
        shutil.rmtree(check.work)
    check.logs.mkdir(parents=True)
    if check.reference.exists():
        shutil.copy(check.reference, check.work / "flex-reference.json")
    wanted = set(args.steps.split(","))
    unknown = wanted - {short for _, short, _, _ in STEPS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}")
    wanted |= {needs for _, short, _, needs in STEPS if short in wanted and needs}
    failed = set()
    for name, short, step, needs in STEPS:
        if short not in wanted:
            continue
        started = time.monotonic()
        print(f"== {name} ({check.left():.0f} s of the budget left)", flush=True)
        if needs in failed:
            status = f"skipped ({needs} failed)"
        elif check.left() < 10:
            status = "skipped (out of time)"
        else:
            try:
                step(check)
                status = "ok"
            except Exception as err:  # noqa: BLE001  (recorded; the next step runs)
                status = f"**failed**: {str(err)[:300]}"
        if status != "ok":
            failed.add(short)
        check.steps.append((name, status.replace("\n", " "), time.monotonic() - started))
        print(f"   {status.splitlines()[0] if status else ''} ({time.monotonic() - started:.1f} s)", flush=True)
        check.save()
    print()
    print(check.save())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
