"""The Milvus backend ranks and answers the dev questions as the local one does (issue 15: within 0.01)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import run_ingest
from rag.config import Settings
from rag.engine import Engine
from rag.evaluation import evaluate, load_questions
from rag.index.milvus_schema import disconnect

DEV = Path(__file__).resolve().parents[1] / "eval" / "dev.jsonl"
METRICS = ["hit@1", "hit@5", "hit@10", "mrr@10", "refusal_accuracy", "answer_hit", "gold_cited", "citation_precision"]


@pytest.mark.slow
def test_milvus_eval_on_dev_is_within_001_of_local(
    engine: Engine, make_settings: Callable[..., Settings], embedder: Any
) -> None:
    settings = make_settings(index_backend="milvus", milvus_collection_prefix="evalcmp")
    try:
        assert run_ingest(settings, embedder=embedder).embedded == 0  # the same vectors, from the cache
        milvus = Engine(settings, embedder=embedder)
        milvus.load()
        questions = load_questions(DEV)
        local_metrics, local_rows = evaluate(engine, questions)
        milvus_metrics, milvus_rows = evaluate(milvus, questions)
        for name in METRICS:
            assert abs(local_metrics[name] - milvus_metrics[name]) <= 0.01, (name, local_metrics, milvus_metrics)
        same_rank = sum(a.hit_rank == b.hit_rank for a, b in zip(local_rows, milvus_rows, strict=True))
        assert same_rank >= len(questions) - 1
    finally:
        disconnect(str(settings.index_dir / "milvus.db"))
