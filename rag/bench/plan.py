"""What a benchmark run does: its plan (how big each section runs) and the questions it asks."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.evaluation import EvalQuestion

ONE_MILLION = 1_000_000
WARMUP_QUERIES = ("预热查询：什么是注意力机制", "warm-up: what is gradient descent")
_REPO_EVAL = Path(__file__).resolve().parents[2] / "eval"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchPlan:
    """How big each section runs; `quick` keeps the whole run to about two minutes."""

    quick: bool
    embed_passages: int
    query_samples: int
    ingest_max_bytes: int | None  # None = the whole corpus
    local_sizes: tuple[int, ...]  # chunks in the scaled indexes (real ones among distractors); 0 = the corpus
    milvus_sizes: tuple[int, ...]  # the same for the Milvus Lite backend
    build_budget_s: float  # a size whose build would take longer (extrapolated) is skipped
    retrieval_queries: int
    http_requests: dict[int, int]
    ef_search: tuple[int, ...]
    repeats: int  # interleaved fp32/bf16 rounds of the embedder and ingest sections; the best is reported

    @classmethod
    def for_run(cls, quick: bool) -> BenchPlan:
        """The quick (CI smoke) plan or the full plan."""
        if quick:
            # 6,000 chunks: above RANK_BM25_MAX_CHUNKS, so the quick run covers the switch to bm25s; Milvus Lite
            # at the corpus size only (its scaled build is the slow part of a smoke run)
            return cls(
                True, 64, 10, 15_000, (0, 6_000), (0,), 600.0, 30, {1: 10, 8: 40, 32: 64}, (16, 64), 1
            )
        return cls(
            False, 128, 30, None, (0, 10_000, 100_000, ONE_MILLION), (0, 100_000, ONE_MILLION), 1800.0, 110,
            {1: 40, 8: 160, 32: 320}, (16, 32, 64, 128, 256), 2,
        )



def size_label(chunks: int, corpus_chunks: int) -> str:
    """"corpus", "10k", "100k", "1M": how the report names an index size."""
    if chunks <= corpus_chunks:
        return "corpus"
    if chunks >= ONE_MILLION and chunks % ONE_MILLION == 0:
        return f"{chunks // ONE_MILLION}M"
    return f"{chunks // 1000}k" if chunks % 1000 == 0 else f"{chunks:,}"


def dev_questions() -> list[EvalQuestion]:
    """The dev questions (eval/dev.jsonl) whose hit@5 and MRR the retrieval section reports at every size."""
    from rag.evaluation import load_questions

    path = _REPO_EVAL / "dev.jsonl"
    return load_questions(path) if path.is_file() else []


def bench_questions(corpus_texts: Sequence[str] = ()) -> list[str]:
    """Real questions: eval/dev.jsonl then eval/calibration.jsonl when present, else heading-like texts."""
    questions: list[str] = []
    for name in ("dev.jsonl", "calibration.jsonl"):
        path = _REPO_EVAL / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    questions.append(str(json.loads(line)["question"]))
    if not questions:
        questions = [t.split("\n", 1)[0][:60] for t in corpus_texts if t.strip()][:110]
    return list(dict.fromkeys(questions))


def unique_texts(questions: Sequence[str], start: int, count: int) -> list[str]:
    """`count` distinct request texts: the questions in turn, numbered once they repeat (no cache hits)."""
    out = []
    for i in range(start, start + count):
        q = questions[i % len(questions)]
        out.append(q if i < len(questions) else f"{q}（{i // len(questions)}）")
    return out

