"""Recomputes every metric in an evaluate output's metrics.json from its predictions.parquet
with scikit-learn, and prints each disagreement over 1e-6 (exit status 1 if any).

    python tests/metrics_vs_sklearn.py DIR    # DIR holds metrics.json and the predictions files

Run by `metrics_agree_with_scikit_learn` in tests/pipeline.rs. Genres absent from the test split
(no positive) must be null in metrics.json and are left out of macro means, as sklearn's
`labels=` does; samples-F1 counts a movie with neither true nor predicted genres as 1
(`zero_division=1`), everything else divides by zero as 0.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn import metrics as skm

TOLERANCE = 1e-6
out = Path(sys.argv[1])
report = json.loads((out / "metrics.json").read_text())
genres = report["genres"]
failures = []
checked = 0


def agree(where, ours, theirs):
    global checked
    checked += 1
    if theirs is None or ours is None:
        if (theirs is None) != (ours is None):
            failures.append(f"{where}: ours {ours}, sklearn {theirs}")
    elif abs(ours - float(theirs)) > TOLERANCE:
        failures.append(f"{where}: ours {ours!r}, sklearn {float(theirs)!r}")


def top_k(probs, k):
    # Ours: highest probability first, ties to the lower genre index.
    pred = np.zeros_like(probs, dtype=np.uint8)
    for row, p in zip(pred, probs):
        row[np.argsort(-p, kind="stable")[:k]] = 1
    return pred


def check(name, card, y, probs, decided):
    rows = len(y)
    agree(f"{name} rows", card["rows"], rows)
    agree(f"{name} true cardinality", card["true_cardinality"], y.sum(axis=1).mean())
    positives = y.sum(axis=0)
    present = np.flatnonzero(positives > 0)
    both = np.flatnonzero((positives > 0) & (positives < rows))
    half = (probs >= np.float32(0.5)).astype(np.uint8)
    for point, pred in (("at_half", half), ("decided", decided)):
        c, at = card[point], f"{name} {point}"
        agree(f"{at} micro_f1", c["micro_f1"], skm.f1_score(y, pred, average="micro", zero_division=0))
        agree(f"{at} macro_f1", c["macro_f1"],
              skm.f1_score(y, pred, labels=present, average="macro", zero_division=0))
        agree(f"{at} weighted_f1", c["weighted_f1"],
              skm.f1_score(y, pred, average="weighted", zero_division=0))
        agree(f"{at} samples_f1", c["samples_f1"],
              skm.f1_score(y, pred, average="samples", zero_division=1))
        agree(f"{at} micro_precision", c["micro_precision"],
              skm.precision_score(y, pred, average="micro", zero_division=0))
        agree(f"{at} micro_recall", c["micro_recall"],
              skm.recall_score(y, pred, average="micro", zero_division=0))
        agree(f"{at} hamming_loss", c["hamming_loss"], skm.hamming_loss(y, pred))
        agree(f"{at} subset_accuracy", c["subset_accuracy"], skm.accuracy_score(y, pred))
        agree(f"{at} cardinality", c["cardinality"], pred.sum(axis=1).mean())
        for g, genre in enumerate(genres):
            ours, col = card["per_genre"][g][point], (y[:, g], pred[:, g])
            agree(f"{at} {genre} predicted", ours["predicted"], int(pred[:, g].sum()))
            agree(f"{at} {genre} precision", ours["precision"],
                  skm.precision_score(*col, zero_division=0))
            is_present = positives[g] > 0
            agree(f"{at} {genre} recall", ours["recall"],
                  skm.recall_score(*col, zero_division=0) if is_present else None)
            agree(f"{at} {genre} f1", ours["f1"],
                  skm.f1_score(*col, zero_division=0) if is_present else None)
    for g, genre in enumerate(genres):
        ours = card["per_genre"][g]
        agree(f"{name} {genre} genre", float(ours["genre"] == genre), 1.0)
        agree(f"{name} {genre} support", ours["support"], int(positives[g]))
        agree(f"{name} {genre} roc_auc", ours["roc_auc"],
              skm.roc_auc_score(y[:, g], probs[:, g]) if g in both else None)
        agree(f"{name} {genre} average_precision", ours["average_precision"],
              skm.average_precision_score(y[:, g], probs[:, g]) if g in present else None)
    ranking = card["ranking"]
    aucs = [skm.roc_auc_score(y[:, g], probs[:, g]) for g in both]
    aps = [skm.average_precision_score(y[:, g], probs[:, g]) for g in present]
    flat = y.ravel()
    agree(f"{name} roc_auc_macro", ranking["roc_auc_macro"], np.mean(aucs) if aucs else None)
    agree(f"{name} roc_auc_micro", ranking["roc_auc_micro"],
          skm.roc_auc_score(flat, probs.ravel()) if 0 < flat.sum() < len(flat) else None)
    agree(f"{name} mean_average_precision", ranking["mean_average_precision"],
          np.mean(aps) if aps else None)


for model in report["models"]:
    table = pq.read_table(out / model["predictions"])
    y = np.array(table.column("labels").to_pylist(), dtype=np.uint8)
    probs = np.array(table.column("probs").to_pylist(), dtype=np.float32)
    assert y.shape == probs.shape == (model["n_test"], len(genres)), (y.shape, probs.shape)
    if model["top_k"] is not None:
        decided = top_k(probs, model["top_k"])
    else:
        decided = (probs >= np.array(model["thresholds"], dtype=np.float32)).astype(np.uint8)
    check(model["name"], model["test"], y, probs, decided)
    for baseline in model["baselines"]:
        scores = np.tile(np.array(baseline["scores"], dtype=np.float32), (len(y), 1))
        if baseline["always"] is not None:
            always = np.isin(genres, baseline["always"]).astype(np.uint8)
            decided = np.tile(always, (len(y), 1))
        else:
            decided = (scores >= np.array(baseline["thresholds"], dtype=np.float32)).astype(np.uint8)
        check(f"{model['name']} / baseline {baseline['name']}", baseline["test"], y, scores, decided)

for failure in failures:
    print(failure)
print(f"{checked} values checked, {len(failures)} disagree")
sys.exit(1 if failures else 0)
