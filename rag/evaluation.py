"""`rag eval`: retrieval and answer quality of the engine on a question file (eval/README format).

A record may carry a `history` (earlier user and assistant turns): the question is then a follow-up, asked
with that history, and its retrieval is measured on the standalone question the engine resolved it to.
A `kind` (P, E, X, C, M, UN, UO, UA) adds per-kind figures.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.answer.citations import strip_markers
from rag.crosslingual import mostly_english
from rag.engine import Engine
from rag.errors import InvalidInput
from rag.text import sentence_spans
from rag.types import RetrievalMode, Turn

_SPACE = re.compile(r"\s+")
_WORD_CHAR = re.compile(r"\w")
_LIST_NUMBER = re.compile(r"^(?:[-*+•]\s*)?\d{1,2}[.．]$")
GOLD_RUN_SHARE = 0.6  # a sentence shares a run of this share of its characters with a gold string: it holds it


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    gold: list[str]
    answer_keywords: list[str]
    answerable: bool
    kind: str = ""
    history: tuple[Turn, ...] = ()


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
    answer_hit: bool = False  # the answer's first sentence holds a gold string
    kind: str = ""
    resolved: str = ""
    english: bool = False  # the question is mostly English (it goes through the cross-lingual bridge)


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
                    kind=str(raw.get("kind", "")),
                    history=tuple(Turn(role=t["role"], content=t["content"]) for t in raw.get("history", [])),
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


def holds_gold(sentence: str, gold: list[str]) -> bool:
    """The sentence contains a gold string, lies inside one, or shares a run of at least 60 % of its characters
    with one (whitespace collapsed, [n] markers ignored)."""
    s = collapse(strip_markers(sentence))
    if len(_WORD_CHAR.findall(s)) < 2:
        return False
    for raw in gold:
        g = collapse(raw)
        if g and (g in s or s in g or longest_common_run(s, g) >= GOLD_RUN_SHARE * len(s)):
            return True
    return False


def longest_common_run(a: str, b: str) -> int:
    """Length of the longest common substring of `a` and `b`."""
    best = 0
    previous = [0] * (len(b) + 1)
    for ch in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if ch == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def first_sentence(text: str) -> str:
    """The answer's first sentence with any word character in it (what a reader sees first)."""
    plain = strip_markers(text)
    pending = ""
    for start, end in sentence_spans(plain):
        piece = plain[start:end].strip()
        if _LIST_NUMBER.match(piece):  # "1. 将输入……" splits after "1.": the number belongs to its item
            pending = piece + " "
            continue
        if _WORD_CHAR.search(piece):
            return pending + piece
    return pending.strip()


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
        t0 = time.perf_counter()
        answer = engine.ask(q.question, history=q.history, mode=mode)
        latency = (time.perf_counter() - t0) * 1000
        resolved = answer.resolved_question or q.question
        search = engine.search(resolved, top_k=10, mode=mode, expansion=expansion)
        hit_rank = next((h.rank for h in search.hits if is_hit(h.chunk.text, q.gold)), None) if q.gold else None
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
                answer_hit=bool(q.gold) and not answer.refused and holds_gold(first_sentence(answer.text), q.gold),
                kind=q.kind,
                resolved=resolved,
                english=mostly_english(resolved),
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
    chinese = sorted(r.latency_ms for r in results if not r.english)
    english = sorted(r.latency_ms for r in results if r.english)
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
        "answer_hit": _mean([1.0 if r.answer_hit else 0.0 for r in answerable]),
        "gold_cited": _mean([1.0 if r.cited_correct else 0.0 for r in answerable]),
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
        # English questions pay for the cross-lingual bridge (phrase and translation vectors): reported apart
        "latency_chinese_p50_ms": _percentile(chinese, 50),
        "latency_chinese_p95_ms": _percentile(chinese, 95),
        "latency_english_p50_ms": _percentile(english, 50),
        "latency_english_p95_ms": _percentile(english, 95),
    }


def metrics_by_kind(results: list[QuestionResult]) -> dict[str, dict]:
    """The figures per question kind (P, E, X, C, M: answerable; UN, UO, UA: not), where kinds are given."""
    kinds = sorted({r.kind for r in results if r.kind})
    out = {}
    for kind in kinds:
        rows = [r for r in results if r.kind == kind]
        figures = metrics(rows)
        keep = ("n", "hit@5", "mrr@10", "citation_precision", "keyword_coverage", "answer_hit", "false_refusal_rate")
        if not any(r.answerable for r in rows):
            keep = ("n", "refusal_accuracy")
        out[kind] = {k: figures[k] for k in keep}
    return out


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return round(sorted_values[index], 2)
