"""The quality bar on the question sets in eval/, measured with default settings on the bundled corpus."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import ROOT, fit_reader_script

from rag.engine import Engine
from rag.evaluation import QuestionResult, evaluate, load_questions, metrics

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
Run = tuple[dict, list[QuestionResult]]


def show(title: str, figures: dict) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        print(f"  {key:<20} {value:.4f}" if isinstance(value, float) else f"  {key:<20} {value}")


def misses(rows: list[QuestionResult]) -> str:
    """Per-question detail for failure messages."""
    return "; ".join(
        f"{r.id} hit={r.hit_rank} refused={r.refused} cited={r.cited_correct}/{r.cited} gate={r.gate_score:.2f}"
        for r in rows
        if (r.answerable and (r.hit_rank != 1 or r.refused or r.cited_correct < r.cited))
        or (not r.answerable and not r.refused)
    )


@pytest.fixture(scope="module")
def dev(engine: Engine) -> Run:
    run = evaluate(engine, load_questions(ROOT / "eval" / "dev.jsonl"))
    show("dev (expansion on)", run[0])
    return run


@pytest.fixture(scope="module")
def dev_no_expansion(engine: Engine) -> Run:
    run = evaluate(engine, load_questions(ROOT / "eval" / "dev.jsonl"), expansion=False)
    show("dev (expansion off)", run[0])
    return run


@pytest.fixture(scope="module")
def calibration(engine: Engine) -> Run:
    run = evaluate(engine, load_questions(ROOT / "eval" / "calibration.jsonl"))
    show("calibration (expansion on)", run[0])
    return run


def test_dev_set_covers_what_the_bar_is_about(dev: Run) -> None:
    figures, rows = dev
    assert figures["n"] == len(rows) == 50
    assert figures["unanswerable"] == 3
    assert any(not CJK.search(r.question) for r in rows)


# Issue 14's floors (default settings, extractive answerer), per set: at least for the first five figures,
# the refused share of unanswerable questions at least, the false refusal rate at most.
FLOORS = {
    "dev": (0.97, 0.93, 0.95, 0.85, 0.70, 1.0, 0.0),
    "calibration": (0.88, 0.72, 0.80, 0.60, 0.45, 0.80, 0.05),
    "train, out of fold": (0.86, 0.75, 0.82, 0.60, 0.50, 0.82, 0.05),
}
AT_LEAST = ("hit@5", "mrr@10", "citation_precision", "keyword_coverage", "answer_hit", "refusal_accuracy")


def below_floors(name: str, figures: dict) -> list[str]:
    """The figures of one set that miss its floors, as "name value < floor"."""
    *floors, most_false_refusals = FLOORS[name]
    missed = [f"{k} {figures[k]:.3f} < {f}" for k, f in zip(AT_LEAST, floors, strict=True) if figures[k] < f]
    if figures["false_refusal_rate"] > most_false_refusals:
        missed.append(f"false_refusal_rate {figures['false_refusal_rate']:.3f} > {most_false_refusals}")
    return missed


def test_dev_meets_the_readers_floors(dev: Run) -> None:
    # measured when set: hit@5 0.979, MRR@10 0.970, citation precision 0.958, keyword coverage 0.915,
    # answer_hit 0.702, 3 of 3 refused, no false refusal
    figures, rows = dev
    assert not below_floors("dev", figures), (below_floors("dev", figures), misses(rows))
    assert sum(1 for r in rows if not r.answerable and r.refused) == 3


def test_expansion_never_lowers_dev_quality(dev: Run, dev_no_expansion: Run) -> None:
    on, off = dev[0], dev_no_expansion[0]
    for key in ("hit@1", "hit@5", "hit@10", "mrr@10", "refusal_accuracy", "keyword_coverage", "citation_precision"):
        assert on[key] >= off[key], (key, on[key], off[key])
    assert on["false_refusal_rate"] <= off["false_refusal_rate"]


def test_english_dev_questions_are_found_with_expansion(dev: Run) -> None:
    # Issue 7: with expansion on, every English question ranks its passage first and is answered.
    english = [r for r in dev[1] if not CJK.search(r.question)]
    assert len(english) >= 2
    assert all(r.hit_rank == 1 for r in english), [(r.id, r.hit_rank) for r in english]
    assert not any(r.refused for r in english)


def test_calibration_meets_the_readers_floors(calibration: Run) -> None:
    # measured when set: hit@5 0.917, MRR@10 0.773, citation precision 0.826, keyword coverage 0.750,
    # answer_hit 0.542, 0.944 of the unanswerable refused at 0.042 false refusals
    figures, rows = calibration
    assert figures["n"] == len(rows) == 60
    assert not below_floors("calibration", figures), (below_floors("calibration", figures), misses(rows))


@pytest.fixture(scope="module")
def fitted(engine: Engine):
    """The reader fitted afresh by scripts/fit_reader.py over the bundled notes, and the script."""
    script = fit_reader_script()
    return script, script.fit(engine)


def test_train_out_of_fold_meets_the_readers_floors(engine: Engine, fitted) -> None:
    # each fold answered by the reader fitted on the other four: measured when set, hit@5 0.922, MRR@10 0.800,
    # citation precision 0.853, keyword coverage 0.766, answer_hit 0.610, 0.909 refused at 0.039 false refusals
    script, fit = fitted
    rows = script.out_of_fold_rows(engine, fit.folds, fit.fold_models)
    figures = metrics(rows)
    show("train, out of fold", figures)
    assert figures["n"] == len(rows) == 110
    assert not below_floors("train, out of fold", figures), (below_floors("train, out of fold", figures), misses(rows))


def test_the_shipped_reader_weights_are_what_the_fitting_script_writes(fitted) -> None:
    # an index built afresh embeds the notes with float differences of about 1e-5, which move the fitted
    # weights by a few 1e-4: a feature changed without a refit moves them by far more
    _, fit = fitted
    shipped = json.loads((ROOT / "rag" / "answer" / "reader_weights.json").read_text(encoding="utf-8"))
    assert shipped.keys() == fit.payload.keys()
    for part in ("sentence", "sentence_english", "question"):
        assert shipped[part]["features"] == fit.payload[part]["features"], part
        for key in ("mean", "scale", "weights"):
            assert np.allclose(shipped[part][key], fit.payload[part][key], rtol=0, atol=5e-3), (part, key)
    assert shipped["question"]["threshold"] == pytest.approx(fit.payload["question"]["threshold"], abs=2e-3)


@pytest.fixture(scope="module")
def followups(engine: Engine) -> Run:
    run = evaluate(engine, load_questions(ROOT / "eval" / "followups-train.jsonl"))
    show("followups-train", run[0])
    return run


def test_no_english_question_is_refused_when_its_passage_ranks_in_the_top_3(dev: Run, calibration: Run) -> None:
    english = [r for r in dev[1] + calibration[1] if r.answerable and not CJK.search(r.question)]
    assert len(english) >= 8
    assert not [r.id for r in english if r.refused and r.hit_rank is not None and r.hit_rank <= 3]


def test_followups_cite_the_gold_passage(followups: Run) -> None:
    # measured when set: 15 of 15 (10 before the subject-carrying resolver, 13 while "ChatGLM-6B" counted as
    # a name the notes never use)
    figures, rows = followups
    assert sum(1 for r in rows if r.cited_correct) >= 13, misses(rows)
    assert all(r.resolved != r.question for r in rows), [r.id for r in rows if r.resolved == r.question]
