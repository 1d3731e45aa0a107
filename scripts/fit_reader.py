"""Fit the reader's weights (rag/answer/reader_weights.json) on the labelled training questions.

    python scripts/fit_reader.py            # fit, print cross-validated figures, write the weights
    python scripts/fit_reader.py --dry-run  # figures only
    python scripts/fit_reader.py --dry-run --cross-validate  # and train's `rag eval` figures, out of fold

Labels: for every training question, the candidate sentences of its top passages; a sentence is positive when
it holds a gold string (rag.evaluation.holds_gold), negative otherwise. Two models, both linear over
standardized features:
- the sentence ranker (shipped as the mean of the five folds' fits, which one question more or less moves
  little): a conditional logit (softmax over one question's candidates), fitted on the answerable
  questions of eval/train.jsonl and the follow-ups of eval/followups-train.jsonl (resolved against their
  history as the engine resolves them), and a second one over a few features (ENGLISH_FEATURES) fitted on the
  questions without Chinese alone, which ranks the candidates of those whose words the candidates barely hold
  (`reads_across_languages`);
- the answerability model: logistic regression over question-level features (the relevance gate, the best
  candidates' figures), fitted on eval/train.jsonl; its threshold is the highest that keeps false refusals at
  or under 5 % on train (out-of-fold) and on eval/calibration.jsonl, each. A question a rule refuses whatever
  its probability (an instruction, a name the notes never spell, a figure asked for that no quoted sentence
  states: `Reading.veto`) counts as refused in every figure.
Figures are 5-fold cross-validated on train (folds by question). dev and calibration are not fitted on.
`--cross-validate` also answers each fold's train questions through the engine with the reader fitted on the
other four folds (and the shipped threshold), and prints the `rag eval` figures of the pooled answers: train's
figures as the hidden sets would see them, where `rag eval` on train reads with weights fitted on train itself.
The training files are copied from ../shared/eval when that folder exists (the project never reads it at run
time). Run with the settings of an ingested index (RAG_DATA_DIR, RAG_CORPUS_DIR), e.g. after `rag ingest`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.answer.reader import WEIGHTS_FILE, Ranker, Reader, ReaderModel, reads_across_languages  # noqa: E402
from rag.answer.reader_features import QuestionProfile  # noqa: E402
from rag.answer.sentences import whole_sentence  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.engine import Engine  # noqa: E402
from rag.evaluation import (  # noqa: E402
    EvalQuestion,
    QuestionResult,
    evaluate,
    holds_gold,
    load_questions,
    metrics,
    metrics_by_kind,
)
from rag.question_rewrite import resolve_question  # noqa: E402

EVAL = ROOT / "eval"
SHARED = ROOT.parent / "shared" / "eval"
TRAINING_FILES = ("train.jsonl", "followups-train.jsonl")
SEED = 0
FOLDS = 5
RANKER_L2 = 30.0
# The answerability model's features overlap (coverage of the best window, of any heading, of the predicate): with
# a weak penalty (1.0) a refit that adds a few candidates swung their weights far enough to refuse a plainly answered
# question ("龙井茶用多少度的水冲泡？" over a one-line note: p 0.79 -> 0.58); at 10 the cross-validated AUROC is 0.963
# against 0.967, and answered hand probes moved from 0.52-0.59 to 0.67-0.89.
ANSWER_L2 = 10.0
MAX_FALSE_REFUSALS = 0.05
# The English ranker reads only what carries across languages: the cross-lingual similarity of the sentence
# (and of its passage) to the question's translation, the passage's fused retrieval score, and the forms that
# never answer alone. Fitted with every feature, it followed word overlaps that English words over Chinese notes
# do not have. Cross-validated top sentence on train's English questions: 0.14 with the shared ranker, 0.45 with
# this one for all of them, 0.36 with this one where the reader applies it (`reads_across_languages`).
ENGLISH_FEATURES = (
    "dense_gap", "passage_dense_gap", "fused_relative", "heading_only", "lead_in", "length", "question_like", "short", "title_like"
)


@dataclass
class Example:
    """One question's candidates: feature rows, labels and the question-level features' inputs."""

    question: EvalQuestion
    group: str  # "train", "followups" or "calibration"
    rows: list[dict[str, float]]
    labels: np.ndarray
    gate_score: float
    gate_features: dict[str, float]
    profile: QuestionProfile
    veto: str  # a rule (instruction, unknown name, missing figure) refuses it whatever the probability


def copy_training_files() -> None:
    for name in TRAINING_FILES:
        if (SHARED / name).is_file() and not (EVAL / name).is_file():
            shutil.copy(SHARED / name, EVAL / name)


def collect(engine: Engine, reader: Reader, questions: list[EvalQuestion], group: str) -> list[Example]:
    """Search each question as `ask` would, and read its passages."""
    examples = []
    for q in questions:
        with engine.hold() as state:
            resolved = (
                resolve_question(q.question, q.history, state.generator, state.tokenizer, state.index)
                if q.history
                else q.question
            )
        result = engine.search(resolved, top_k=5)
        reading = reader.read(
            result.searched,
            result.hits,
            weighted=result.weighted_query,
            query_vectors=result.query_vectors,
            gate_score=result.gate.score,
            gate_features=result.gate.features,
            name_forms=result.name_forms,
            phrase_forms=result.phrase_forms,
        )
        rows = [c.features for c in reading.candidates]
        # a piece of a sentence a line break cut is labelled by the whole sentence, as it is judged and quoted
        labels = np.array([
            1.0 if q.gold and holds_gold(whole_sentence(reading.sentences[c.passage], c.sentence), q.gold) else 0.0
            for c in reading.candidates
        ])
        examples.append(
            Example(q, group, rows, labels, result.gate.score, result.gate.features, reading.profile, reading.veto)
        )
    return examples


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def fit_ranker(examples: list[Example], names: list[str] | tuple[str, ...]) -> Ranker:
    """Conditional logit over each question's candidates (questions with at least one positive)."""
    usable = [e for e in examples if e.rows and e.labels.any()]
    x_all = np.array([[r[k] for k in names] for e in usable for r in e.rows])
    mean, scale = standardize(x_all)
    groups = [((np.array([[r[k] for k in names] for r in e.rows]) - mean) / scale, e.labels / e.labels.sum()) for e in usable]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = 0.5 * RANKER_L2 * w @ w, RANKER_L2 * w
        for x, target in groups:
            z = x @ w
            z -= z.max()
            p = np.exp(z)
            p /= p.sum()
            value -= float(target @ np.log(p + 1e-12))
            grad = grad + x.T @ (p - target)
        return value, grad

    w = minimize(loss, np.zeros(len(names)), jac=True, method="L-BFGS-B").x
    return Ranker(tuple(names), mean, scale, w)


def fit_rankers(examples: list[Example], names: list[str]) -> tuple[Ranker, Ranker]:
    """The shared ranker (every question) and the English questions' own, on the shared ranker's scale: the
    margins in logit units that decide what an answer quotes besides its best sentence (rag.answer.spans) mean
    the same whichever ranker scored the candidates."""
    english = [e for e in examples if e.profile.no_chinese]
    shared, own = fit_ranker(examples, names), fit_ranker(english, ENGLISH_FEATURES)
    spread = [np.std(r.scores(e.rows)) for e in english if len(e.rows) > 1 for r in (shared, own)]
    ratio = float(np.mean(spread[0::2]) / max(np.mean(spread[1::2]), 1e-9)) if spread else 1.0
    return shared, Ranker(own.features, own.mean, own.scale, own.weights * ratio)


def averaged(rankers: list[Ranker]) -> Ranker:
    """One ranker that scores as the mean of `rankers` does (up to a constant per question, which no ranking
    sees): their weights averaged on the raw features, on their mean standardization."""
    mean = np.mean([r.mean for r in rankers], axis=0)
    scale = np.mean([r.scale for r in rankers], axis=0)
    raw = np.mean([r.weights / r.scale for r in rankers], axis=0)
    return Ranker(rankers[0].features, mean, scale, raw * scale)


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-regularised logistic regression by Newton steps on standardized features."""
    mean, scale = standardize(x)
    xb = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.r_[np.full(xb.shape[1] - 1, ANSWER_L2), 0.0]
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-6 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return mean, scale, w[:-1], float(w[-1])


def highest_threshold(positives: list[float]) -> float:
    """The highest threshold that refuses at most MAX_FALSE_REFUSALS of these answerable questions."""
    if not positives:
        return 0.5
    ordered = sorted(positives)
    return round(float(ordered[int(MAX_FALSE_REFUSALS * len(ordered))]) - 1e-6, 6)


def model_from(rankers: tuple[Ranker, Ranker], answer: tuple, q_names: list[str], threshold: float) -> ReaderModel:
    q_mean, q_scale, q_w, q_bias = answer
    return ReaderModel(rankers[0], tuple(q_names), q_mean, q_scale, q_w, q_bias, threshold, english=rankers[1])


def scores_of(model: ReaderModel, e: Example) -> np.ndarray:
    return model.rank_scores(e.rows, english=reads_across_languages(e.profile, e.rows))


def question_rows(examples: list[Example], model: ReaderModel) -> list[dict[str, float]]:
    from rag.answer.reader_features import question_features

    rows = []
    for e in examples:
        scores = list(model.rank_scores(e.rows))  # the shared ranker's scale, as the reader judges
        rows.append(question_features(e.profile, e.rows, scores, e.gate_score, e.gate_features))
    return rows


def folds_of(examples: list[Example]) -> list[list[int]]:
    order = np.random.RandomState(SEED).permutation(len(examples))
    return [sorted(order[i::FOLDS].tolist()) for i in range(FOLDS)]


@dataclass
class Fit:
    """What one fit makes: the shipped model, each fold's, and the figures `report` prints."""

    model: ReaderModel  # the mean of the fold rankers and the answerability model fitted on all of train
    threshold: float
    payload: dict  # the weights file's content
    folds: list[list[EvalQuestion]]  # train's questions, cut into the folds
    fold_models: list[ReaderModel]  # each fitted without its fold, at the shipped threshold
    train: list[Example]
    followups: list[Example]
    calibration: list[Example]
    oof_top: dict[int, float]
    oof_prob: dict[int, float]
    cal_prob: list[float]


def fit(engine: Engine) -> Fit:
    """Fit the reader on train (and the follow-ups) over `engine`'s index; deterministic."""
    placeholder = ReaderModel(
        Ranker(("cover",), np.zeros(1), np.ones(1), np.zeros(1)), ("gate_logit",), np.zeros(1), np.ones(1), np.zeros(1), 0.0, 0.5
    )
    with engine.hold() as state:  # the fitting script reads with its own model over the serving index
        reader = Reader(state.index, state.tokenizer, model=placeholder, embed_passages=engine.embedder.embed_passages)

    train = collect(engine, reader, load_questions(EVAL / "train.jsonl"), "train")
    followups = collect(engine, reader, load_questions(EVAL / "followups-train.jsonl"), "followups")
    calibration = collect(engine, reader, load_questions(EVAL / "calibration.jsonl"), "calibration")
    names = sorted(next(e.rows[0] for e in train if e.rows))
    print(f"{sum(len(e.rows) for e in train + followups)} candidate sentences, "
          f"{int(sum(e.labels.sum() for e in train + followups))} positive, {len(names)} features")

    # out-of-fold ranker scores and answerability probabilities on train
    folds = folds_of(train)
    oof_top: dict[int, float] = {}
    oof_prob: dict[int, float] = {}
    q_names: list[str] = []
    fold_rankers: list[tuple[Ranker, Ranker]] = []
    fold_answers: list[tuple] = []
    for test in folds:
        fit_idx = [i for i in range(len(train)) if i not in test]
        rankers = fit_rankers([train[i] for i in fit_idx] + followups, names)
        fold_rankers.append(rankers)
        tmp = model_from(rankers, (np.zeros(1), np.ones(1), np.zeros(1), 0.0), ["gate_logit"], 0.5)
        fit_rows = question_rows([train[i] for i in fit_idx], tmp)
        q_names = sorted(fit_rows[0])
        x = np.array([[r[k] for k in q_names] for r in fit_rows])
        y = np.array([1.0 if train[i].question.answerable else 0.0 for i in fit_idx])
        answer = fit_logistic(x, y)
        fold_answers.append(answer)
        model = model_from(rankers, answer, q_names, 0.5)
        for i, row in zip(test, question_rows([train[i] for i in test], model), strict=True):
            e = train[i]
            scores = scores_of(model, e)
            oof_top[i] = float(e.labels[int(np.argmax(scores))]) if e.rows else 0.0
            oof_prob[i] = 0.0 if e.veto else model.answer_probability(row)  # a vetoed question is refused

    # the shipped rankers are the mean of the folds' (bagging): one question more or less moves them little
    rankers = (averaged([r[0] for r in fold_rankers]), averaged([r[1] for r in fold_rankers]))
    tmp = model_from(rankers, (np.zeros(1), np.ones(1), np.zeros(1), 0.0), ["gate_logit"], 0.5)
    rows = question_rows(train, tmp)
    x = np.array([[r[k] for k in q_names] for r in rows])
    y = np.array([1.0 if e.question.answerable else 0.0 for e in train])
    answer = fit_logistic(x, y)
    model = model_from(rankers, answer, q_names, 0.5)
    cal_prob = [0.0 if e.veto else model.answer_probability(r) for e, r in zip(calibration, question_rows(calibration, model), strict=True)]

    # threshold: as high as possible while false refusals stay <= 5 % on train (out-of-fold) and on calibration,
    # each (pooled, the larger set could spend the whole allowance on the smaller one)
    train_positives = [oof_prob[i] for i in range(len(train)) if train[i].question.answerable]
    cal_positives = [p for p, e in zip(cal_prob, calibration, strict=True) if e.question.answerable]
    threshold = min(highest_threshold(train_positives), highest_threshold(cal_positives))
    payload = {
        "about": "Fitted by scripts/fit_reader.py on eval/train.jsonl (+ followups for the ranker); do not edit.",
        "sentence": rankers[0].to_dict(),
        "sentence_english": rankers[1].to_dict(),
        "question": {
            "features": q_names,
            "mean": answer[0].tolist(),
            "scale": answer[1].tolist(),
            "weights": answer[2].tolist(),
            "bias": answer[3],
            "threshold": threshold,
        },
    }
    return Fit(
        model=model,
        threshold=threshold,
        payload=payload,
        folds=[[train[i].question for i in test] for test in folds],
        fold_models=[model_from(r, a, q_names, threshold) for r, a in zip(fold_rankers, fold_answers, strict=True)],
        train=train,
        followups=followups,
        calibration=calibration,
        oof_top=oof_top,
        oof_prob=oof_prob,
        cal_prob=cal_prob,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print figures, do not write the weights")
    parser.add_argument("--cross-validate", action="store_true", help="also print train's eval figures, out of fold")
    parser.add_argument("--ranker-l2", type=float, default=RANKER_L2, help="L2 penalty of the sentence ranker")
    args = parser.parse_args()
    globals()["RANKER_L2"] = args.ranker_l2
    copy_training_files()
    engine = Engine(Settings())
    engine.load()
    fitted = fit(engine)
    report(fitted)
    if args.cross_validate:
        report_out_of_fold(engine, fitted.folds, fitted.fold_models)
    if args.dry_run:
        return
    target = ROOT / "rag" / "answer" / WEIGHTS_FILE
    target.write_text(json.dumps(fitted.payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")


def report(fitted: Fit) -> None:
    train, followups, calibration = fitted.train, fitted.followups, fitted.calibration
    oof_top, oof_prob, cal_prob = fitted.oof_top, fitted.oof_prob, fitted.cal_prob
    model, threshold = fitted.model, fitted.threshold
    answerable = [i for i, e in enumerate(train) if e.question.answerable]
    print(f"train (cross-validated): top sentence holds gold {np.mean([oof_top[i] for i in answerable]):.3f} "
          f"(any candidate: {np.mean([train[i].labels.any() for i in answerable]):.3f})")
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(train):
        by_kind[e.question.kind].append(i)
    for kind, idx in sorted(by_kind.items()):
        refused = np.mean([oof_prob[i] < threshold for i in idx])
        top = np.mean([oof_top[i] for i in idx]) if train[idx[0]].question.answerable else float("nan")
        print(f"  {kind:3} n={len(idx):3} top-1 {top:.3f} refused {refused:.3f}")
    pos = [oof_prob[i] for i in answerable]
    neg = [oof_prob[i] for i, e in enumerate(train) if not e.question.answerable]
    print(f"train refusal (cv): refused {np.mean([p < threshold for p in neg]):.3f}, false refusals "
          f"{np.mean([p < threshold for p in pos]):.3f}, AUROC {auroc(pos, neg):.3f}")
    cpos = [p for p, e in zip(cal_prob, calibration, strict=True) if e.question.answerable]
    cneg = [p for p, e in zip(cal_prob, calibration, strict=True) if not e.question.answerable]
    print(f"calibration: refused {np.mean([p < threshold for p in cneg]):.3f}, false refusals "
          f"{np.mean([p < threshold for p in cpos]):.3f}, AUROC {auroc(cpos, cneg):.3f}; threshold {threshold:.4f}")
    fu = [float(e.labels[int(np.argmax(scores_of(model, e)))]) if e.rows else 0.0 for e in followups]
    print(f"followups (fitted on): top sentence holds gold {np.mean(fu):.3f}")


def out_of_fold_rows(engine: Engine, folds: list[list[EvalQuestion]], models: list[ReaderModel]) -> list[QuestionResult]:
    """`rag eval`'s rows on train, each fold answered by the reader fitted without it."""
    rows = []
    with engine.hold() as state:
        shipped = state.reader.model, state.reader.threshold
        try:
            for questions, model in zip(folds, models, strict=True):
                state.reader.model, state.reader.threshold = model, model.threshold
                rows += evaluate(engine, questions)[1]
        finally:
            state.reader.model, state.reader.threshold = shipped
    return rows


def report_out_of_fold(engine: Engine, folds: list[list[EvalQuestion]], models: list[ReaderModel]) -> None:
    """`rag eval`'s figures on train, each fold answered by the reader fitted without it."""
    rows = out_of_fold_rows(engine, folds, models)
    f = metrics(rows)
    print(f"train out of fold: hit@5 {f['hit@5']:.3f} MRR@10 {f['mrr@10']:.3f} citation precision "
          f"{f['citation_precision']:.3f} keyword coverage {f['keyword_coverage']:.3f} answer_hit {f['answer_hit']:.3f} "
          f"refused {f['refusal_accuracy']:.3f} false refusals {f['false_refusal_rate']:.3f}")
    for kind, k in metrics_by_kind(rows).items():
        print(f"  {kind:3} " + " ".join(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}" for name, value in k.items()))


def auroc(pos: list[float], neg: list[float]) -> float:
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


if __name__ == "__main__":
    main()
