"""`rag eval`: retrieval and answer quality of the engine on a question file (eval/README format)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.engine import Engine
from rag.errors import InvalidInput
from rag.types import RetrievalMode

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    gold: list[str]
    answer_keywords: list[str]
    answerable: bool


@dataclass
class QuestionResult:
    id: str
    question: str
    answerable: bool
    hit_rank: int | None  # 1-based rank of the first retrieved passage holding a gold string
    refused: bool
    keyword_coverage: float
    cited: int
    cited_correct: int
    latency_ms: float
    gate_score: float
    answer: str = ""
    features: dict[str, float] = field(default_factory=dict)


def load_questions(path: Path) -> list[EvalQuestion]:
    """Read a JSONL question file; a malformed line is an InvalidInput naming its line number."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            questions.append(
                EvalQuestion(
                    id=str(raw.get("id", number)),
                    question=raw["question"],
                    gold=list(raw.get("gold", [])),
                    answer_keywords=list(raw.get("answer_keywords", [])),
                    answerable=bool(raw.get("answerable", bool(raw.get("gold")))),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:  # AttributeError: not an object
            raise InvalidInput(f"{path}:{number}: not a question record ({exc})") from exc
    return questions


def collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def is_hit(passage: str, gold: list[str]) -> bool:
    """eval/README: the passage contains a gold string, or is itself contained in one."""
    p = collapse(passage)
    return any((g := collapse(raw)) and (g in p or (p and p in g)) for raw in gold)


def evaluate(
    engine: Engine,
    questions: list[EvalQuestion],
    *,
    mode: RetrievalMode = "hybrid",
    expansion: bool | None = None,
) -> tuple[dict, list[QuestionResult]]:
    """Run every question through search (top 10) and ask; return the metrics and per-question rows."""
    doc_texts: dict[str, str] = {}
    results = []
    for q in questions:
        search = engine.search(q.question, top_k=10, mode=mode, expansion=expansion)
        hit_rank = next((h.rank for h in search.hits if is_hit(h.chunk.text, q.gold)), None) if q.gold else None
        t0 = time.perf_counter()
        answer = engine.ask(q.question, mode=mode)
        latency = (time.perf_counter() - t0) * 1000
        cited_correct = 0
        for c in answer.citations:
            if c.doc_id not in doc_texts:
                doc_texts[c.doc_id] = engine.document(c.doc_id)["text"]
            if is_hit(doc_texts[c.doc_id][c.start : c.end], q.gold):
                cited_correct += 1
        text = answer.text.lower()
        coverage = (
            sum(1 for k in q.answer_keywords if k.lower() in text) / len(q.answer_keywords)
            if q.answer_keywords and not answer.refused
            else 0.0
        )
        results.append(
            QuestionResult(
                id=q.id,
                question=q.question,
                answerable=q.answerable,
                hit_rank=hit_rank,
                refused=answer.refused,
                keyword_coverage=coverage,
                cited=len(answer.citations),
                cited_correct=cited_correct,
                latency_ms=latency,
                gate_score=search.gate.score,
                answer=answer.text,
                features=search.gate.features,
            )
        )
    return metrics(results), results


def metrics(results: list[QuestionResult]) -> dict:
    """The figures `rag eval --json` prints (keys fixed by the issue)."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]

    def hit_at(k: int) -> float:
        return _mean([1.0 if r.hit_rank is not None and r.hit_rank <= k else 0.0 for r in answerable])

    with_keywords = [r for r in answerable]
    cited = sum(r.cited for r in answerable)
    latencies = sorted(r.latency_ms for r in results)
    return {
        "n": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "hit@1": hit_at(1),
        "hit@5": hit_at(5),
        "hit@10": hit_at(10),
        "mrr@10": _mean([1.0 / r.hit_rank if r.hit_rank and r.hit_rank <= 10 else 0.0 for r in answerable]),
        "refusal_accuracy": _mean([1.0 if r.refused else 0.0 for r in unanswerable]) if unanswerable else 1.0,
        "false_refusal_rate": _mean([1.0 if r.refused else 0.0 for r in answerable]),
        "keyword_coverage": _mean([r.keyword_coverage for r in with_keywords]),
        "citation_precision": (sum(r.cited_correct for r in answerable) / cited) if cited else 0.0,
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
    }


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return round(sorted_values[index], 2)
