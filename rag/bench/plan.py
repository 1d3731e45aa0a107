"""What a benchmark run does: its plan (how big each section runs) and the questions it asks."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    multipliers: tuple[int, ...]
    include_million: bool
    retrieval_queries: int
    http_requests: dict[int, int]
    ef_search: tuple[int, ...]
    repeats: int  # interleaved fp32/bf16 rounds of the embedder and ingest sections; the best is reported

    @classmethod
    def for_run(cls, quick: bool) -> BenchPlan:
        """The quick (CI smoke) plan or the full plan."""
        if quick:
            return cls(True, 64, 10, 15_000, (1, 10), False, 30, {1: 10, 8: 40, 32: 64}, (16, 64), 1)
        return cls(
            False, 128, 30, None, (1, 10, 100), True, 110, {1: 40, 8: 160, 32: 320}, (16, 32, 64, 128, 256), 2
        )



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

