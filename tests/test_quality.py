"""The quality bar on the question sets in eval/, measured with default settings on the bundled corpus."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from rag.engine import Engine
from rag.evaluation import QuestionResult, evaluate, load_questions

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


def test_dev_retrieval_quality(dev: Run) -> None:
    figures, rows = dev
    assert figures["hit@5"] >= 0.95, misses(rows)
    assert figures["mrr@10"] >= 0.88, misses(rows)


def test_dev_refusals(dev: Run) -> None:
    figures, rows = dev
    assert figures["refusal_accuracy"] == 1.0, misses(rows)
    assert sum(1 for r in rows if not r.answerable and r.refused) == 3
    assert figures["false_refusal_rate"] <= 0.05, misses(rows)


def test_dev_answers_cite_the_right_passages_and_say_the_key_words(dev: Run) -> None:
    figures, rows = dev
    assert figures["keyword_coverage"] >= 0.75, misses(rows)
    assert figures["citation_precision"] >= 0.90, misses(rows)


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


def test_calibration_set_stays_above_its_floors(calibration: Run) -> None:
    # Measured when these floors were set: hit@5 0.875, mrr@10 0.71, refusal_accuracy 0.78,
    # false_refusal_rate 0.08; the floors sit a little below so only a real regression fails.
    figures, rows = calibration
    assert figures["n"] == len(rows) == 60
    assert figures["hit@5"] >= 0.80, misses(rows)
    assert figures["mrr@10"] >= 0.65, misses(rows)
    assert figures["refusal_accuracy"] >= 0.75, misses(rows)
    assert figures["false_refusal_rate"] <= 0.15, misses(rows)


@pytest.fixture(scope="module")
def followups(engine: Engine) -> Run:
    run = evaluate(engine, load_questions(ROOT / "eval" / "followups-train.jsonl"))
    show("followups-train", run[0])
    return run


def test_the_reader_quotes_the_answering_sentence_first(dev: Run, calibration: Run) -> None:
    # Issue 14, measured when set: answer_hit dev 0.511, calibration 0.417 (0.43 / 0.17 before the reader);
    # citation precision dev 0.936, calibration 0.773; keyword coverage dev 0.844, calibration 0.694.
    d, c = dev[0], calibration[0]
    assert d["answer_hit"] >= 0.46, misses(dev[1])
    assert c["answer_hit"] >= 0.33, misses(calibration[1])
    assert d["citation_precision"] >= 0.91 and c["citation_precision"] >= 0.65
    assert d["keyword_coverage"] >= 0.78 and c["keyword_coverage"] >= 0.62


def test_the_reader_refuses_what_no_sentence_answers(calibration: Run) -> None:
    # measured when set: 0.833 of the unanswerable refused at 0.083 false refusals (0.778 / 0.083 before the
    # reader). The floors keep a margin (two unanswerable, one answerable question): near-threshold questions
    # moved between two environments with the same code.
    figures, rows = calibration
    assert figures["refusal_accuracy"] >= 0.77, misses(rows)
    assert figures["false_refusal_rate"] <= 0.13, misses(rows)


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
