"""Which embeddings rank genres best, with one fixed head: scikit-learn's logistic regression
(standardised features, one-vs-rest, C chosen on validation macro ROC-AUC) on every `embed` output
in a model-quality project's cache, grouped by split (outputs with the same test movies), and on the
concatenation of any two made from the same split. Prints test macro ROC-AUC and mAP per feature
set, paired by split. Reads only the cache; runs nothing of the pipeline.

    .venv/bin/python bench/feature_probe.py bench/work/model-quality/default [--pairs]

Needs numpy, pyarrow and scikit-learn (the test venv has them).
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

CS = [1e-4, 3e-4, 1e-3, 3e-3]


def load_split(out, split):
    meta = json.loads((out / split / "meta.json").read_text())
    ids, x, y = [], [], []
    for shard in meta["shards"]:
        t = pq.read_table(out / split / shard["file"])
        ids.extend(t.column("imdbId").to_pylist())
        x.append(np.array(t.column("embedding").to_pylist(), dtype=np.float32))
        y.append(np.array(t.column("labels").to_pylist(), dtype=np.int8))
    return ids, np.concatenate(x), np.concatenate(y)


def outputs(project):
    """(name, split key, {split: (ids, x, y)}) of every embed output in the cache."""
    found = []
    for entry in sorted((project / "cache" / "v1" / "entries").iterdir()):
        stamp_path = entry / "out" / "embed.json"
        if not stamp_path.is_file():
            continue
        stamp = json.loads(stamp_path.read_text())
        name = f"{stamp['backbone'].replace('efficientnet-', '')} {stamp['width']}x{stamp['height']} {stamp['mode']}"
        if stamp.get("flip"):
            name += " flip"
        splits = {s: load_split(entry / "out", s) for s in ("train", "val", "test")}
        key = hash(tuple(sorted(splits["test"][0])))
        found.append((name, key, splits))
    return found


def score(splits, columns=None):
    """Test (macro ROC-AUC, mAP) of the LR whose C scores best on validation."""
    (_, xtr, ytr), (_, xva, yva), (_, xte, yte) = (splits[s] for s in ("train", "val", "test"))
    keep = [g for g in range(ytr.shape[1]) if 0 < ytr[:, g].sum() and 0 < yva[:, g].sum() and 0 < yte[:, g].sum()]
    ytr, yva, yte = ytr[:, keep], yva[:, keep], yte[:, keep]
    scaler = StandardScaler().fit(xtr)
    xtr, xva, xte = scaler.transform(xtr), scaler.transform(xva), scaler.transform(xte)
    best = None
    for c in CS:
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000), n_jobs=2).fit(xtr, ytr)
        val = roc_auc_score(yva, model.predict_proba(xva), average="macro")
        if best is None or val > best[0]:
            best = (val, c, model)
    probs = best[2].predict_proba(xte)
    return roc_auc_score(yte, probs, average="macro"), average_precision_score(yte, probs, average="macro"), best[1]


def aligned(a, b):
    """`b`'s rows in `a`'s order, split by split, and the two feature sets side by side."""
    out = {}
    for s in ("train", "val", "test"):
        ids_a, xa, ya = a[s]
        ids_b, xb, _ = b[s]
        where = {i: r for r, i in enumerate(ids_b)}
        rows = [r for r, i in enumerate(ids_a) if i in where]
        out[s] = ([ids_a[r] for r in rows], np.hstack([xa[rows], xb[[where[ids_a[r]] for r in rows]]]), ya[rows])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--pairs", action="store_true", help="also score every concatenation of two")
    parser.add_argument("--only", default="", help="comma-separated substrings; keep outputs whose name has one")
    args = parser.parse_args()
    found = outputs(args.project)
    if args.only:
        wanted = args.only.split(",")
        found = [f for f in found if any(w in f[0] for w in wanted)]
    by_split = defaultdict(list)
    for name, key, splits in found:
        # Equal stamps from two code versions hold the same vectors: score one.
        if all(name != seen for seen, _ in by_split[key]):
            by_split[key].append((name, splits))
    results = defaultdict(dict)
    for k, (key, members) in enumerate(by_split.items()):
        for name, splits in members:
            results[name][key] = score(splits)
            print(f"split {k}: {name}: ROC-AUC {results[name][key][0]:.4f} mAP {results[name][key][1]:.4f} (C={results[name][key][2]})", file=sys.stderr)
        if args.pairs:
            for i in range(len(members)):
                for j in range(i + 1, len(members)):
                    name = f"{members[i][0]} + {members[j][0]}"
                    results[name][key] = score(aligned(members[i][1], members[j][1]))
                    print(f"split {k}: {name}: ROC-AUC {results[name][key][0]:.4f}", file=sys.stderr)
    print("| features (logistic regression, C on val) | splits | test ROC-AUC | test mAP |")
    print("|---|---|---|---|")
    for name, per in sorted(results.items()):
        aucs = [v[0] for v in per.values()]
        maps = [v[1] for v in per.values()]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {name} | {len(per)} | {statistics.mean(aucs):.3f} ± {sd(aucs):.3f} | {statistics.mean(maps):.3f} ± {sd(maps):.3f} |")


if __name__ == "__main__":
    main()
