"""Fit the relevance gate's logistic weights on the project's evaluation questions.

Usage: python scripts/calibrate_gate.py eval/dev.jsonl eval/calibration.jsonl
Prints the gate features of every question, the fitted weights (to copy into rag/relevance_gate.py GATE_WEIGHTS)
and leave-one-file-out figures, so the threshold is set on a balanced mix of easy and hard questions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.engine import Engine
from rag.evaluation import load_questions

C = 0.5  # moderate regularisation: 110 questions are few for 8 weights
FEATURES = [
    "dense_top", "coverage", "window_coverage", "corpus_coverage", "bigram_coverage", "bm25_norm", "unknown_latin",
    "latin_share", "dense_x_latin",
]


def main(paths: list[str]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    engine = Engine(Settings())
    engine.load()
    rows, labels, groups = [], [], []
    for g, path in enumerate(paths):
        for q in load_questions(Path(path)):
            result = engine.search(q.question)
            rows.append([result.gate.features[f] for f in FEATURES])
            labels.append(int(q.answerable))
            groups.append(g)
    x, y = np.array(rows), np.array(labels)
    for i, name in enumerate(FEATURES):
        print(f"{name:16} AUROC {roc_auc_score(y, x[:, i]):.3f}")
    # Balanced classes: unanswerable questions are the minority that matters most.
    # Standardise for fitting, then fold the scaling back so the weights apply to the raw features.
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=1000).fit((x - mean) / std, y)
    coef = model.coef_[0] / std
    bias = float(model.intercept_[0] - (model.coef_[0] * mean / std).sum())
    p = 1 / (1 + np.exp(-(x @ coef + bias)))
    print(f"combined AUROC {roc_auc_score(y, p):.3f}")
    weights = dict(zip(FEATURES, coef.round(3).tolist(), strict=True))
    weights["bias"] = round(bias, 3)
    print("GATE_WEIGHTS =", weights)
    for threshold in (0.3, 0.4, 0.5, 0.6):
        refused_unans = np.mean(p[y == 0] < threshold)
        refused_ans = np.mean(p[y == 1] < threshold)
        print(f"threshold {threshold}: refusal accuracy {refused_unans:.3f}, false refusals {refused_ans:.3f}")
    if len(paths) > 1:
        for g in range(len(paths)):
            train, test = np.array(groups) != g, np.array(groups) == g
            mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-9
            m = LogisticRegression(C=C, class_weight="balanced", max_iter=1000).fit((x[train] - mu) / sd, y[train])
            pt = m.predict_proba((x[test] - mu) / sd)[:, 1]
            print(
                f"held-out {paths[g]}: refusal acc {np.mean(pt[y[test] == 0] < 0.5):.3f} "
                f"false refusals {np.mean(pt[y[test] == 1] < 0.5):.3f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
