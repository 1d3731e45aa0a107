"""Retrieval: RRF and passage merging as pure functions, then the modes, reranking, the relevance gate,
follow-ups, explanations and search/ask consistency on the shared index of the bundled corpus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import CORPUS
from live import LiveServer

from rag import notes_spelling
from rag.api import create_app
from rag.chunk_merging import continued, merge_adjacent
from rag.config import Settings
from rag.engine import Engine
from rag.evaluation import is_hit
from rag.fusion import rrf, score_fusion
from rag.notes_spelling import (
    fix_asked_plainly,
    notes_spellings,
    one_slip,
    respelled,
    sound_slips,
    unwritten_compounds,
    unwritten_words,
    writes,
)
from rag.question_names import latin_names, written_together
from rag.retrieval import phrase_forms
from rag.text import known_words, spelled_as_one, unglued, written_forms
from rag.types import Chunk, Hit, Turn

ANSWERABLE = "LoRA 微调里最重要的超参数是什么？"
FORGETTING_GOLD = ["灾难性遗忘（Catastrophic Forgetting）是指在模型微调过程中"]
CONSISTENCY_QUERIES = [
    ANSWERABLE,
    "为什么微调大模型时会出现灾难性遗忘，怎么缓解？",
    "What is catastrophic forgetting when fine-tuning an LLM?",
    "知识蒸馏中温度T变大时 softmax 输出会怎样？",
    "RLHF 是什么",
]


# --------------------------------------------------------------------------------------------- rrf


def test_rrf_scores_are_weighted_reciprocal_ranks() -> None:
    fused = rrf({"bm25": ["a", "b", "c"], "dense": ["c", "a"]}, k=60)
    by_id = {item: (score, parts) for item, score, parts in fused}
    assert [item for item, _, _ in fused] == ["a", "c", "b"]
    assert by_id["a"][0] == pytest.approx(1 / 61 + 1 / 62)
    assert by_id["c"][0] == pytest.approx(1 / 63 + 1 / 61)
    assert by_id["b"][0] == pytest.approx(1 / 62)
    assert by_id["a"][1] == pytest.approx({"bm25": 1 / 61, "dense": 1 / 62})
    assert by_id["b"][1] == pytest.approx({"bm25": 1 / 62})


def test_rrf_weights_and_k_change_the_order() -> None:
    rankings = {"bm25": ["a", "b"], "dense": ["b", "a"]}
    heavy_dense = rrf(rankings, k=1, weights={"bm25": 1.0, "dense": 3.0})
    assert [item for item, _, _ in heavy_dense] == ["b", "a"]
    assert heavy_dense[0][1] == pytest.approx(1 / 3 + 3 / 2)
    assert heavy_dense[1][1] == pytest.approx(1 / 2 + 3 / 3)
    # a list missing from `weights` counts with weight 1; weight 0 silences a list
    muted = rrf(rankings, k=1, weights={"dense": 0.0})
    assert [item for item, _, _ in muted] == ["a", "b"]
    assert muted[0][2]["dense"] == 0.0


def test_rrf_ties_are_broken_deterministically_by_the_first_list() -> None:
    first = rrf({"bm25": ["x", "y"], "dense": ["y", "x"]}, k=60)
    assert first[0][1] == first[1][1]
    assert [item for item, _, _ in first] == ["x", "y"]
    assert [item for item, _, _ in rrf({"dense": ["y", "x"], "bm25": ["x", "y"]}, k=60)] == ["y", "x"]
    for _ in range(5):
        assert rrf({"bm25": ["x", "y"], "dense": ["y", "x"]}, k=60) == first
    # equal sums: the id with the better best rank wins, even when another list names the other first
    tied = rrf({"b": ["z", "q"], "a": ["p"]}, k=1, weights={"b": 3.0, "a": 2.0})
    assert [(item, score) for item, score, _ in tied] == [("z", 1.5), ("p", 1.0), ("q", 1.0)]


@pytest.mark.parametrize("k", [0, -1])
def test_rrf_rejects_non_positive_k(k: int) -> None:
    with pytest.raises(ValueError, match="k"):
        rrf({"bm25": ["a"]}, k=k)


def test_rrf_of_nothing_is_empty() -> None:
    assert rrf({}) == []
    assert rrf({"bm25": [], "dense": []}) == []


def test_score_fusion_rescales_each_retriever_by_its_spread() -> None:
    # BM25 scores run to the tens, cosine similarities sit within 0.02 of each other: rescaled, both count.
    # "a" towers over the rest in BM25 and is 7th of 10 in dense.
    bm25 = {"a": 30.0, **{f"n{i}": 8.0 - 0.3 * i for i in range(9)}}
    dense = {"n0": 0.84, **{f"n{i}": 0.835 - 0.002 * i for i in range(1, 9)}, "a": 0.829}
    fused = score_fusion({"bm25": bm25, "dense": dense})
    assert fused[0][0] == "a"
    # ranks alone cannot see the lead: reciprocal rank fusion puts "a" third
    ranked = rrf({"bm25": list(bm25), "dense": sorted(dense, key=dense.get, reverse=True)})
    assert [item for item, _, _ in ranked].index("a") == 2
    for _, score, parts in fused:
        assert score == pytest.approx(parts["bm25"] + parts["dense"])
    values = [parts["bm25"] for _, _, parts in fused]
    assert sum(values) / len(values) == pytest.approx(0.5)  # the mean maps to 0.5 (mean ± 3 sd -> 0..1)


def test_score_fusion_weights_missing_scores_and_ties() -> None:
    bm25, dense = {"a": 10.0, "b": 1.0}, {"b": 0.9, "c": 0.1}
    fused = dict((item, score) for item, score, _ in score_fusion({"bm25": bm25, "dense": dense}))
    assert set(fused) == {"a", "b", "c"}
    assert fused["b"] > fused["c"]  # c has no BM25 score: it counts 0 there
    dense_only = score_fusion({"bm25": bm25, "dense": dense}, weights={"bm25": 0.0, "dense": 1.0})
    assert dense_only[0][0] == "b" and dense_only[0][2]["bm25"] == 0.0
    flat = score_fusion({"bm25": {"x": 1.0, "y": 1.0}, "dense": {"y": 0.5, "x": 0.5}})
    assert [item for item, _, _ in flat] == ["x", "y"]  # equal scores keep first appearance
    assert all(parts == {"bm25": 0.5, "dense": 0.5} for _, _, parts in flat)
    assert score_fusion({}) == [] and score_fusion({"bm25": {}, "dense": {}}) == []


def test_score_fusion_scores_deeper_candidates_on_the_scale_of_the_top_ones() -> None:
    top_bm25 = {"a": 12.0, "b": 9.0, "c": 4.0}
    top_dense = {"a": 0.82, "b": 0.80, "c": 0.86}
    deeper_bm25, deeper_dense = {**top_bm25, "d": 1.0}, {**top_dense, "d": 0.88}
    basis = ["a", "b", "c"]
    alone = {item: score for item, score, _ in score_fusion({"bm25": top_bm25, "dense": top_dense})}
    deep = {item: score for item, score, _ in score_fusion({"bm25": deeper_bm25, "dense": deeper_dense}, basis=basis)}
    assert {k: deep[k] for k in alone} == pytest.approx(alone)  # the top ones keep their scores
    assert "d" in deep and deep["d"] > deep["b"]  # fetched from deeper down, it still counts its dense lead
    moved = {item: score for item, score, _ in score_fusion({"bm25": deeper_bm25, "dense": deeper_dense})}
    assert moved["a"] != pytest.approx(alone["a"])  # without a basis, the deeper one moves the scale


def test_a_chinese_hybrid_search_fuses_deeper_candidates_than_the_others(engine: Engine, base_settings: Settings) -> None:
    def search(settings: Settings, query: str, mode: str = "hybrid") -> list[Hit]:
        e = Engine(settings, embedder=engine.embedder)
        e.load()
        return e.search(query, top_k=5, mode=mode).hits

    shallow = base_settings.model_copy(update={"deep_candidates": base_settings.candidates})
    # a paraphrase of 判别性微调: BM25 ranks its passage below the top 30, the dense model near the top
    question = "每一层学习率都不同的微调方式叫啥"
    def titled(hits: list[Hit]) -> list[Hit]:
        return [h for h in hits if "判别性微调" in h.chunk.heading_path[-1]]

    found = titled(search(base_settings, question))
    assert found and found[0].bm25_rank > base_settings.candidates
    assert not titled(search(shallow, question))

    def deepest(hits: list[Hit]) -> int:
        return max(r for h in hits for r in (h.bm25_rank, h.dense_rank) if r is not None)

    # no best-sentence ranking follows (an English question, BM25 alone, the sentence weight off): no deeper reach
    deep = base_settings.model_copy(update={"deep_candidates": 500})
    assert deepest(search(deep, "Which learning rate does each layer get in discriminative fine-tuning?")) <= 30
    assert deepest(search(deep, question, mode="bm25")) <= 30
    assert deepest(search(deep.model_copy(update={"sentence_weight": 0.0}), question)) <= 30


# ------------------------------------------------------------------------------------ merge_adjacent

DOC = "".join(f"第{i:03d}句讲的是检索增强生成的一个细节。" for i in range(40))


def chunk(doc_id: str, start: int, end: int, heading: tuple[str, ...] = ("检索",), text: str = DOC) -> Chunk:
    return Chunk(
        chunk_id=f"{doc_id}:{heading}:{start}-{end}",
        doc_id=doc_id,
        heading_path=heading,
        start=start,
        end=end,
        text=text[start:end],
        index_text=" > ".join(heading) + "\n" + text[start:end],
        ordinal=start // 100,
    )


def hit(c: Chunk, score: float, *, bm25: int | None = None, dense: int | None = None) -> Hit:
    return Hit(
        chunk=c,
        score=score,
        rank=0,
        bm25_score=None if bm25 is None else 10.0 / bm25,
        bm25_rank=bm25,
        dense_score=None if dense is None else 1.0 / dense,
        dense_rank=dense,
        chunk_ids=(c.chunk_id,),
    )


def test_overlapping_neighbours_of_one_section_merge_into_an_exact_slice() -> None:
    a, b = chunk("n.md", 0, 120), chunk("n.md", 100, 220)
    merged = merge_adjacent([hit(b, 0.9, bm25=3), hit(a, 0.5, bm25=1, dense=2)])
    assert len(merged) == 1
    m = merged[0]
    assert (m.chunk.start, m.chunk.end) == (0, 220)
    assert m.chunk.text == DOC[0:220]
    assert m.chunk_ids == (b.chunk_id, a.chunk_id)
    assert m.score == 0.9  # the better (earlier) hit's score
    assert (m.bm25_rank, m.dense_rank) == (1, 2)  # best evidence of both
    assert m.bm25_score == pytest.approx(10.0)


def test_contiguous_chunks_merge_but_a_gap_does_not() -> None:
    a, b, far = chunk("n.md", 0, 100), chunk("n.md", 100, 200), chunk("n.md", 300, 400)
    merged = merge_adjacent([hit(a, 0.9), hit(far, 0.8), hit(b, 0.7)])
    assert [(h.chunk.start, h.chunk.end) for h in merged] == [(0, 200), (300, 400)]
    assert merged[0].chunk.text == DOC[0:200]


def test_never_merges_across_sections_or_documents() -> None:
    a = chunk("n.md", 0, 120)
    other_section = chunk("n.md", 100, 220, heading=("生成",))
    other_doc = chunk("m.md", 100, 220)
    merged = merge_adjacent([hit(a, 0.9), hit(other_section, 0.8), hit(other_doc, 0.7)])
    assert [h.chunk.chunk_id for h in merged] == [a.chunk_id, other_section.chunk_id, other_doc.chunk_id]
    assert all(len(h.chunk_ids) == 1 for h in merged)


def test_duplicates_and_contained_chunks_are_dropped() -> None:
    a = chunk("n.md", 0, 200)
    inner = chunk("n.md", 50, 150)
    merged = merge_adjacent([hit(a, 0.9), hit(a, 0.8), hit(inner, 0.7)])
    assert len(merged) == 1
    assert merged[0].chunk == a and merged[0].score == 0.9


def test_a_hit_reads_on_into_the_next_chunk_of_its_section() -> None:
    a, b, c = chunk("n.md", 0, 120), chunk("n.md", 100, 220), chunk("n.md", 220, 330)
    assert continued([], []) == []
    out = continued([hit(a, 0.9)], [b])
    assert [(h.chunk.start, h.chunk.end) for h in out] == [(0, 220)]
    assert out[0].chunk.text == DOC[0:220] and out[0].chunk_ids == (a.chunk_id, b.chunk_id)
    assert out[0].score == 0.9
    # not into another section, another note, a chunk before it, or nothing
    for after in (chunk("n.md", 120, 220, heading=("生成",)), chunk("m.md", 120, 220), chunk("n.md", 0, 50), None):
        assert [(h.chunk.start, h.chunk.end) for h in continued([hit(a, 0.9)], [after])] == [(0, 120)]
    # a passage it then meets joins it (one passage, the better rank), and one it now holds is dropped
    out = continued([hit(a, 0.9), hit(c, 0.5), hit(b, 0.4)], [b, None, None])
    assert [(h.chunk.start, h.chunk.end, h.score) for h in out] == [(0, 330, 0.9)]
    assert out[0].chunk.text == DOC[0:330]


def test_search_returns_passages_read_on_to_the_next_chunk_of_their_section(engine: Engine) -> None:
    """Over the bundled notes: a passage of one chunk is the last of its section, and every passage is exactly
    the note's text over its span."""
    for question in ("大型语言模型有什么特点？", "LoRA 的原理是什么？", "What is the rank in LoRA?"):
        hits = engine.search(question, top_k=5).hits
        for h in hits:
            note = engine.document(h.chunk.doc_id)
            assert note["text"][h.chunk.start : h.chunk.end] == h.chunk.text
            if len(h.chunk_ids) == 1:
                section = [c for c in note["chunks"] if tuple(c["heading_path"]) == h.chunk.heading_path]
                assert not [c for c in section if h.chunk.start < c["start"] <= h.chunk.end < c["end"]], question
        assert any(len(h.chunk_ids) > 1 for h in hits), question  # some passage did read on


# ------------------------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_modes_set_their_own_score_fields(engine: Engine, mode: str) -> None:
    result = engine.search(ANSWERABLE, mode=mode, top_k=5, explain=True)
    assert result.mode == mode
    assert len(result.hits) == 5
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert result.explanation is not None
    fused = {row["chunk_id"]: row for row in result.explanation["fused"]}
    for h in result.hits:
        assert h.document_title and h.chunk.chunk_id in h.chunk_ids
        if mode == "bm25":
            assert h.bm25_rank is not None and h.bm25_score is not None
            assert h.dense_rank is None and h.dense_score is None
            assert h.score == pytest.approx(h.bm25_score)
        elif mode == "dense":
            assert h.dense_rank is not None and h.dense_score is not None
            assert h.bm25_rank is None and h.bm25_score is None
            assert h.score == pytest.approx(h.dense_score) and -1.0 <= h.score <= 1.0
        else:
            assert h.bm25_rank is not None or h.dense_rank is not None
            if len(h.chunk_ids) == 1:  # an unmerged hit's score: its fused score (both parts) and its best sentence's
                row = fused[h.chunk.chunk_id]
                assert set(row["contributions"]) == {"bm25", "dense"}
                assert row["score"] == pytest.approx(sum(row["contributions"].values()), abs=1e-5)
                assert h.score == pytest.approx(row["score"] + row["sentence_shift"], abs=1e-5)
                assert row["sentence_shift"] <= 0 and row["best_sentence"] == pytest.approx(h.sentence_similarity, abs=1e-4)
        assert h.rerank_score is None
        assert (h.sentence_similarity is not None) == (mode == "hybrid")


def test_rrf_fusion_setting_scores_hits_by_reciprocal_ranks(engine: Engine, base_settings: Settings) -> None:
    # the fusion alone (a passage's best sentence moves it as it does after score fusion: tested apart)
    settings = base_settings.model_copy(update={"fusion": "rrf", "sentence_weight": 0.0})
    rrf_engine = Engine(settings, embedder=engine.embedder)
    rrf_engine.load()
    result = rrf_engine.search(ANSWERABLE, top_k=5)
    s = rrf_engine.settings
    unmerged = [h for h in result.hits if len(h.chunk_ids) == 1]
    assert unmerged
    for h in unmerged:
        expected = sum(
            w / (s.rrf_k + r)
            for w, r in ((s.bm25_weight, h.bm25_rank), (s.dense_weight, h.dense_rank))
            if r is not None
        )
        assert h.score == pytest.approx(expected)
    assert result.hits[0].chunk.chunk_id == engine.search(ANSWERABLE, top_k=5).hits[0].chunk.chunk_id


def test_hybrid_uses_evidence_from_both_retrievers(engine: Engine) -> None:
    hits = engine.search(ANSWERABLE, mode="hybrid", top_k=5).hits
    assert any(h.bm25_rank is not None for h in hits)
    assert any(h.dense_rank is not None for h in hits)
    assert any(h.bm25_rank is not None and h.dense_rank is not None for h in hits)


def test_a_passage_is_ranked_by_its_best_sentence_too(engine: Engine, base_settings: Settings) -> None:
    hits = engine.search(ANSWERABLE, top_k=8).hits
    best = [h.sentence_similarity for h in hits]
    assert all(s is not None and -1.0 <= s <= 1.0 for s in best)
    flat_engine = Engine(base_settings.model_copy(update={"sentence_weight": 0.0}), embedder=engine.embedder)
    flat_engine.load()
    flat = flat_engine.search(ANSWERABLE, top_k=8).hits
    assert all(h.sentence_similarity is None for h in flat)  # off: the fused order alone
    # every passage but the one whose sentence matches best loses score, so it can only move up against them
    top_sentence = max(hits, key=lambda h: h.sentence_similarity or 0.0).chunk.chunk_id
    flat_scores = {h.chunk.chunk_id: h.score for h in flat}
    for h in hits:
        if h.chunk.chunk_id in flat_scores and len(h.chunk_ids) == 1:
            assert h.score <= flat_scores[h.chunk.chunk_id] + 1e-9
            if h.chunk.chunk_id == top_sentence:
                assert h.score == pytest.approx(flat_scores[h.chunk.chunk_id])


def test_rescoring_by_best_sentence_is_pure_and_keeps_the_top_scale() -> None:
    from rag.sentence_ranking import best_sentence_similarities, rescored

    a, b, c = (hit(chunk("n.md", i * 300, i * 300 + 120, heading=(f"节{i}",)), score) for i, score in enumerate((1.0, 0.9, 0.8)))
    out = rescored([a, b, c], [0.80, 0.90, 0.85], weight=3.0)
    assert [h.chunk.chunk_id for h in out] == [b.chunk.chunk_id, a.chunk.chunk_id, c.chunk.chunk_id]
    assert [round(h.score, 6) for h in out] == [0.9, round(1.0 - 3.0 * 0.1, 6), round(0.8 - 3.0 * 0.05, 6)]
    assert a.score == 1.0 and a.sentence_similarity is None  # the inputs are left alone
    assert [h.score for h in rescored([a, b], [0.5, 0.5], weight=3.0)] == [1.0, 0.9]  # equal sentences: fused order
    assert rescored([], [], weight=3.0) == []

    class Stored:
        def __init__(self, vectors: dict[str, np.ndarray]) -> None:
            self.vectors = vectors

        def reader_vectors(self, texts):
            out = np.array([self.vectors.get(t, np.zeros(2)) for t in texts], dtype=np.float32)
            return out, np.array([t in self.vectors for t in texts])

    text = "## 标题\n第一句讲检索。第二句讲生成。\n"
    passage = Chunk("p", "p.md", ("标题",), 0, len(text), text, text)
    links = Chunk("q", "q.md", ("链接",), 0, 22, "https://example.com/a", "https://example.com/a")
    from rag.answer.reader import reader_texts

    sentences = reader_texts([passage])
    assert len(sentences) == 2
    stored = Stored({sentences[0]: np.array([1.0, 0.0]), sentences[1]: np.array([0.6, 0.8])})
    query = np.array([0.0, 2.0])  # normalized before comparing
    sims = best_sentence_similarities(stored, query, [hit(passage, 1.0), hit(links, 0.9)])
    assert sims == pytest.approx([0.8, 0.0])  # the best sentence; nothing quotable counts 0
    assert best_sentence_similarities(Stored({}), query, [hit(passage, 1.0)]) is None  # none stored: not compared


def test_a_note_the_question_names_is_found_by_its_title_or_file_name() -> None:
    from rag.named_documents import document_names, named_documents, named_lifted

    names = document_names(
        [
            {"doc_id": "python-for-ai.md", "title": "python for AI"},
            {"doc_id": "vault/周会记录.md", "title": "2026-11 周会记录"},
            {"doc_id": "ai.md", "title": "AI"},  # too short a name: every question would name it
            {"doc_id": "笔记.md", "title": "笔记"},
            {"doc_id": "读书.md", "title": "读书"},
            {"doc_id": "notes/deep-learning-glossary.md", "title": "deep-learning-glossary"},
        ]
    )
    assert names["ai.md"] == () and names["笔记.md"] == ()
    assert "周会记录" in names["vault/周会记录.md"]  # four Chinese characters are a name
    assert named_documents("周会记录里数据库什么时候升级？", names) == {"vault/周会记录.md"}
    assert named_documents("In the python-for-AI notes, what is a tensor?", names) == {"python-for-ai.md"}
    assert named_documents("python for AI 那份笔记说了什么？", names) == {"python-for-ai.md"}
    assert named_documents("Python_For_AI 里怎么装 torch？", names) == {"python-for-ai.md"}
    assert named_documents("2026-11 周会记录里谁负责发布？", names) == {"vault/周会记录.md"}
    assert named_documents("AI 是什么？", names) == frozenset()
    assert named_documents("什么是过拟合？", names) == frozenset()
    everything = document_names([{"doc_id": "a-long-name.md", "title": "a-long-name"}])
    assert named_documents("a long name?", everything) == frozenset()  # naming every note prefers none

    a, b, c = (hit(chunk(doc, 0, 100), score) for doc, score in (("x.md", 1.0), ("python-for-ai.md", 0.7), ("python-for-ai.md", 0.2)))
    out = named_lifted([a, b, c], frozenset({"python-for-ai.md"}))
    assert [round(h.score, 6) for h in out] == [1.2, 1.0, 0.7]  # lifted by half the top score, then sorted
    assert out[0].chunk.doc_id == "python-for-ai.md" and out[2].chunk.doc_id == "python-for-ai.md"
    assert named_lifted([a, b], frozenset()) == [a, b]


def test_a_question_naming_a_note_ranks_that_notes_passages_up(engine: Engine) -> None:
    result = engine.search("python for AI 那份笔记里卷积是什么？", top_k=5, explain=True)
    assert result.explanation is not None and result.explanation["named_documents"] == ["python-for-ai.md"]
    assert result.hits[0].chunk.doc_id == "python-for-ai.md"
    # the lift is the note's, not its sentences': a candidate's sentence shift still never raises it
    assert all(row.get("sentence_shift", 0.0) <= 0 for row in result.explanation["fused"])
    assert engine.search("卷积是什么？", top_k=5, explain=True).explanation["named_documents"] == []


@pytest.mark.parametrize("top_k", [1, 3, 8])
def test_top_k_is_respected(engine: Engine, top_k: int) -> None:
    for mode in ("bm25", "dense", "hybrid"):
        assert len(engine.search("注意力机制", mode=mode, top_k=top_k).hits) == top_k


# --------------------------------------------------------------------------------------- reranking


def tiny_cross_encoder(path: Path) -> Path:
    """A randomly initialised 2-layer BERT cross-encoder with a character vocabulary of the corpus."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    chars = sorted(
        {ch for note in CORPUS.glob("*.md") for ch in note.read_text(encoding="utf-8") if ch.strip()}
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(c.lower() for c in chars)]
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_cross_encoder(tmp_path_factory.mktemp("reranker") / "tiny-ce")


def test_reranker_scores_and_orders_the_hits(
    base_settings: Settings, embedder, corpus_index, reranker_path: Path
) -> None:
    from sentence_transformers import CrossEncoder

    settings = base_settings.model_copy(update={"rerank_model": str(reranker_path)})
    reranked = Engine(settings, embedder=embedder)
    reranked.load()
    query = "为什么微调大模型时会出现灾难性遗忘？"
    hits = reranked.search(query, top_k=5).hits
    assert len(hits) == 5
    assert all(h.rerank_score is not None for h in hits)
    assert [h.score for h in hits] == [h.rerank_score for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    model = CrossEncoder(str(reranker_path), device="cpu")
    single = [h for h in hits if len(h.chunk_ids) == 1]
    assert single
    expected = np.asarray(model.predict([(query, h.chunk.index_text) for h in single]), dtype=float).ravel()
    assert [h.rerank_score for h in single] == pytest.approx(expected.tolist(), abs=1e-4)
    assert reranked.ask(query).citations  # answering still works on reranked passages


# ----------------------------------------------------------------------------------- relevance gate


@pytest.mark.parametrize("question", ["红烧肉怎么做才好吃？", "🤔"])
def test_off_domain_questions_are_refused(engine: Engine, question: str) -> None:
    answer = engine.ask(question)
    assert answer.refused
    assert answer.citations == []
    assert answer.text
    assert not engine.search(question).gate.answerable


def test_known_words_reads_jiebas_cuts_as_the_notes_words() -> None:
    notes = {"改进", "太大", "过大", "学习率", "正则化", "系数"}.__contains__
    assert known_words("改进版", "din的改进版是什么", ["din", "改进", "改进版"], notes) == ["改进"]
    assert known_words("设太", "学习率设太大会怎样", [], notes) == ["太大"]
    assert known_words("大会", "正则化系数过大会怎样", [], notes) == ["过大"]
    assert known_words("量子", "什么是量子纠缠", [], notes) == ["量子"]  # nothing of the notes there: itself
    assert known_words("学习率", "学习率是什么", [], notes) == ["学习率"]
    assert known_words("lora", "lora是什么", [], notes) == ["lora"]
    # jieba glued a function character to a word of the notes: "张量的阶是什么" is cut 张量|的|阶是|什么
    assert known_words("阶是", "张量的阶是什么", ["阶是"], {"阶", "张量"}.__contains__) == ["阶"]


def test_a_word_jieba_glued_a_character_to_is_searched_as_well() -> None:
    notes = {"输入", "门", "位", "大"}.__contains__
    # "输入门有什么作用" is cut 输入|门有|什么|作用: 门 was lost to BM25
    assert unglued(["输入", "门有", "作用"], notes) == ["输入", "门有", "作用", "门"]
    assert unglued(["指数", "位有", "位"], notes) == ["指数", "位有", "位"]  # no token twice
    assert unglued(["大会"], notes) == ["大会", "大"]  # 会 glued to 大
    assert unglued(["门有", "奶奶"], {"门有"}.__contains__) == ["门有", "奶奶"]  # a word the notes use stays as is


def test_a_word_jieba_mis_cut_is_not_counted_missing_from_the_notes(engine: Engine) -> None:
    # "学习率设太大会怎样" is cut 学习率|设太|大会: every word the question means is in the notes
    assert engine.search("学习率设太大会怎样？").gate.features["corpus_coverage"] == 1.0


def test_a_hyphenated_name_the_notes_spell_is_not_an_unknown_term(engine: Engine) -> None:
    # the index holds "chatglm-6b" as "chatglm" + "6b"; the gate must not call the name unknown for that
    known = engine.search("ChatGLM-6B 英文回答靠谱吗？").gate.features
    assert known["unknown_latin"] == 0.0
    unknown = engine.search("ChatGLM-7B 英文回答靠谱吗？").gate.features  # the notes never name this one
    assert unknown["unknown_latin"] == 1.0


def test_an_english_phrase_keeps_the_chinese_names_its_expansion_gave_it() -> None:
    expansions = [
        {"matched": "discount factor", "added": ["折扣率", "折扣因子"]},
        {"matched": "RL", "added": ["强化学习"]},  # one word: a name, kept by the gate's name forms instead
        {"matched": "layer norm", "added": ["LayerNorm"]},  # no Chinese name
    ]
    assert phrase_forms(expansions) == {"discount factor": ("折扣率", "折扣因子")}
    assert phrase_forms(None) == {}


def test_an_english_question_names_what_it_capitalizes_inside_the_sentence() -> None:
    assert latin_names("What is Focal Loss used for?") == ["focal loss"]
    assert latin_names("How does XLNet differ from BERT?") == ["xlnet", "bert"]
    assert latin_names("What is the discount factor?") == []  # plain words, and the capital that opens a sentence
    assert latin_names("Does I mean anything here?") == []


def test_two_names_side_by_side_in_a_chinese_question_are_two_names(engine: Engine) -> None:
    assert latin_names("LSTM GRU 有什么区别？") == ["lstm", "gru"]
    assert latin_names("word2vec CBOW 是什么？") == ["word2vec", "cbow"]
    assert latin_names("ELMo BERT 有什么不同？") == ["elmo", "bert"]
    # one name of several words: a plain word after a name, or plain words only
    assert latin_names("KV cache 有什么用？") == ["kv cache"]
    assert latin_names("focal loss 是什么？") == ["focal loss"]
    # they were refused as one name no passage spells ("LSTM GRU"); each is a name of the notes
    for question, opening in (("LSTM GRU 有什么区别？", "GRU是LSTM"), ("GPT BERT 有什么区别？", "GPT和BERT的区别")):
        answer = engine.ask(question)
        assert not answer.refused and answer.text.startswith(opening), question
    assert engine.search("word2vec CBOW 是什么？").gate.features["unknown_latin"] == 0.0
    # a name the notes never spell is still unknown beside one they do
    assert engine.search("BERT WWM 是什么？").gate.features["unknown_latin"] == 1.0
    assert engine.ask("BERT WWM 是什么？").refused


def test_english_words_a_passage_writes_apart_are_no_unknown_name(engine: Engine) -> None:
    assert written_together(["lora", "rank"], ["lora 的秩 r（rank）", "无关"])
    assert not written_together(["kv", "cache"], ["kv 在这里", "cache 在那里"])  # never in one passage
    assert not written_together(["rank"], ["ranking"])  # a word of its own, not a piece of a longer one
    # Chinese questions mix in English words: the LoRA section writes "lora" and "rank", never side by side
    for question in ("LoRA rank 一般设多少？", "attention mask 有什么用？", "BERT embedding 的维度跟 hidden size 有什么关系？"):
        assert engine.search(question).gate.features["unknown_latin"] == 0.0, question
        assert not engine.ask(question).refused, question
    assert "维度" in engine.ask("BERT embedding 的维度跟 hidden size 有什么关系？").text.split("[1]")[0]
    # asked for a figure the passages read do not state (a list's "1、" is none), it is refused for that, not
    # for a name the notes never spell
    answer = engine.ask("BERT embedding 维度是多少？", explain=True)
    assert engine.search("BERT embedding 维度是多少？").gate.features["unknown_latin"] == 0.0
    assert answer.refused and "figure" in answer.explanation["reader"]["reason"]
    # what no passage read writes together stays a name the notes never spell
    for question in ("KV cache 有什么用？", "flash attention 是什么？", "knowledge graph 是什么？"):
        assert engine.ask(question).refused, question


def test_a_search_gives_every_form_of_the_names_the_question_spells(engine: Engine) -> None:
    # the reader checks that the passage it answers from names the subject in one of these forms
    forms = engine.search("RCG 和 RAG 的区别是什么？").name_forms
    assert set(forms) == {"rcg", "rag"} and "检索中心型生成" in forms["rcg"]
    assert set(engine.search("How does DDPG add noise to its actions?").name_forms) == {"ddpg"}
    # a Chinese name of an alias group brings its group, so a passage that writes another of its names names it
    assert engine.search("什么是过拟合？").name_forms == {"过拟合": ("过拟合", "overfit")}


def test_a_latin_name_of_several_words_the_notes_never_spell_is_unknown(engine: Engine) -> None:
    # "kv" and "cache" each occur in the notes, "KV cache" nowhere: the gate must see an unknown name
    assert engine.search("KV cache 有什么用？").gate.features["unknown_latin"] == 1.0
    assert engine.ask("KV cache 有什么用？").refused
    # names the top passages spell, with a space, a hyphen or a stopword inside, and names the notes or the
    # glossary hold as one term ("pretraining", an alias of 预训练), are known
    for question in (
        "beam search 和贪心搜索有什么关系？", "batch size 怎么选？", "python for AI 那份笔记讲了哪些框架？",
        "fine tuning 和 pre training 的区别？",
    ):
        assert engine.search(question).gate.features["unknown_latin"] == 0.0, question


def test_a_name_is_spelled_as_one_with_a_space_a_hyphen_or_nothing() -> None:
    for text in ("gpt4的模型容量更大", "gpt-4", "gpt 4", "gpt_4"):
        assert spelled_as_one(["gpt", "4"]).search(text), text
    assert not spelled_as_one(["gpt", "4"]).search("gpt40")  # not inside a longer name
    assert not spelled_as_one(["gpt"]).search("gptq")
    assert spelled_as_one(["kv", "cache"]).search("开启 kv cache 后")


def test_an_english_question_naming_what_the_notes_never_spell_is_unknown(engine: Engine) -> None:
    # an acronym or a word with an inner capital is a name; the notes spell neither "HNSW" nor "efSearch", so
    # passages about vectors in general must not answer (they did, through the reader's English prior)
    question = "In an HNSW graph index, what does the efSearch parameter trade off?"
    assert engine.search(question).gate.features["unknown_latin"] == 1.0
    assert engine.ask(question).refused
    # names the notes hold, also inside hyphenated forms ("GPT-3", "ChatGLM-6B"), are known
    for question in (
        "How does XLNet differ from BERT?", "Why does GPT-3 work with few-shot prompts?",
        "How much memory does ChatGLM-6B need in FP16?",
    ):
        assert engine.search(question).gate.features["unknown_latin"] == 0.0, question
        assert not engine.ask(question).refused, question
    # known names, but the notes only list them ("12. GroupNorm、LayerNorm、BatchNorm"): known, whatever the verdict
    assert engine.search("What is the difference between LayerNorm and BatchNorm?").gate.features["unknown_latin"] == 0.0


def test_how_a_question_asks_which_ones_does_not_change_the_verdict(engine: Engine) -> None:
    # 哪几个 / 几种 are question words: counted as unknown topic words they lowered the gate's coverage and
    # refused "GRU 有哪几个门？" while "GRU 有哪些门？" was answered
    forms = ["GRU 有哪几个门？", "GRU 有哪些门？", "GRU 有几个门？"]
    for form in forms:
        assert not {"哪几个", "几个", "哪些"} & set(engine.search(form).weighted_query), form
    answers = [engine.ask(form) for form in forms]
    assert not any(a.refused for a in answers)
    assert len({a.citations[0].doc_id for a in answers}) == 1


def test_answerable_question_is_answered_with_citations(engine: Engine) -> None:
    answer = engine.ask(ANSWERABLE)
    assert not answer.refused
    assert answer.citations
    assert "秩" in answer.text
    assert engine.search(ANSWERABLE).gate.answerable


# --------------------------------------------------------------------------------------- follow-ups


def test_followup_is_resolved_against_the_history(engine: Engine) -> None:
    question = "那它的秩一般设多少？"
    history = [Turn("user", "LoRA 是什么？"), Turn("assistant", "LoRA 是一种低秩适配的微调方法。")]
    answer = engine.ask(question, history=history)
    assert answer.question == question
    assert answer.resolved_question != question
    assert answer.resolved_question == "LoRA 的秩一般设多少？"  # the previous subject in place of 它
    assert not answer.refused
    assert any("lora" in c.snippet.lower() for c in answer.citations)
    alone = engine.ask(question)
    assert alone.resolved_question == question  # without history nothing is carried over


def test_a_standalone_question_with_history_is_not_rewritten(engine: Engine) -> None:
    history = [Turn("user", "LoRA 是什么？"), Turn("assistant", "LoRA 是一种低秩适配的微调方法。")]
    question = "知识蒸馏中温度T变大时 softmax 输出会怎样？"
    assert engine.ask(question, history=history).resolved_question == question


# ---------------------------------------------------------------------------------- notes' spelling


def test_every_variant_a_text_writes_is_listed() -> None:
    text = "全参数微调既占显存。与完全微调相比……效果不输全参数微调；全量的数据都用来微调"
    assert written_forms("全量微调", text) == ["全参数微调", "全微调", "全参数微调"]
    assert written_forms("早停", text) == []  # too short to have a variant


def test_a_term_the_notes_never_write_is_searched_as_they_write_it(engine: Engine) -> None:
    with engine.hold() as state:
        tokenizer, index = state.tokenizer, state.index

        def spellings(question: str) -> dict[str, str]:
            return notes_spellings(question, tokenizer.tokenize(question), tokenizer, index)

        # the notes write 全参数微调 six times and 完全微调 once: the form written most often wins
        assert spellings("全量微调有什么问题？") == {"全量微调": "全参数微调"}
        assert spellings("全参数微调有什么问题？") == {}  # written as asked
        assert spellings("只训练一次就想得到好几个模型，有什么办法？") == {}  # 好几个 is everyday language
        assert spellings("它想让模型重点学哪类样本？") == {}  # 哪类 starts with a function character
        assert spellings("梯度裁剪是什么？") == {}  # 裁剪 is no domain term: no kind of thing to vary
        three = "全量微调，全量模型，全量样本"
        assert unwritten_compounds(three, tokenizer, index) == ["全量微调", "全量模型", "全量样本"]
        with pytest.MonkeyPatch.context() as patch:  # a long question: a bounded scan
            patch.setattr(notes_spelling, "MAX_COMPOUNDS", 2)
            assert unwritten_compounds(three, tokenizer, index) == ["全量微调", "全量模型"]

    result = engine.search("全量微调有什么问题？", explain=True)
    assert result.query == "全量微调有什么问题？" and result.searched == "全参数微调有什么问题？"
    assert result.explanation is not None and result.explanation["notes_spellings"] == {"全量微调": "全参数微调"}
    assert "全参数微调" in result.hits[0].chunk.text
    assert engine.search("全量微调有什么问题？", expansion=False).searched == "全量微调有什么问题？"
    answer = engine.ask("全量微调有什么问题？")
    assert not answer.refused and "全参数微调" in answer.text.split("[1]")[0]  # not a sentence on 微调 in general


def test_a_latin_word_one_slip_from_what_the_notes_write_is_searched_as_they_write_it(engine: Engine) -> None:
    assert one_slip("transfomer", "transformer") and one_slip("trasnformer", "transformer")  # dropped, swapped
    assert one_slip("dropuot", "dropout") and not one_slip("dropout", "dropout")
    assert not one_slip("bloomz", "bloom") and not one_slip("transfomer", "transformers")  # too short, two slips
    assert respelled("Transfomer 为啥要有位置编码", {"transfomer": "transformer"}) == "transformer 为啥要有位置编码"
    with engine.hold() as state:
        tokenizer, index = state.tokenizer, state.index
        question = "transfomer 为啥要有位置编码"
        assert notes_spellings(question, tokenizer.tokenize(question), tokenizer, index) == {"transfomer": "transformer"}
        two = "transfomer 的 attentoin 和位置编码"
        assert notes_spellings(two, tokenizer.tokenize(two), tokenizer, index) == {
            "transfomer": "transformer", "attentoin": "attention"
        }
        with pytest.MonkeyPatch.context() as patch:  # a long question: a bounded scan
            patch.setattr(notes_spelling, "MAX_COMPOUNDS", 1)
            assert notes_spellings(two, tokenizer.tokenize(two), tokenizer, index) == {"transfomer": "transformer"}
        # a version is no slip: "GPT-5" is not GPT-4, and the gate still finds the name unknown
        assert notes_spellings("GPT-5 有多少参数？", tokenizer.tokenize("GPT-5 有多少参数？"), tokenizer, index) == {}
    answer = engine.ask("transfomer 的位置编码是什么？")  # refused before: a Latin name the notes never write
    assert not answer.refused and "Transformer" in answer.text
    assert engine.ask("GPT-5 有多少参数？").refused


def test_a_chinese_word_mistyped_with_a_homophone_is_searched_as_the_notes_write_it(engine: Engine) -> None:
    assert sound_slips("小失", "梯度消失是指……梯度损失") == ["消失"]  # 损 does not sound like 小
    assert sound_slips("学习律", "学习率设为 0.01；学习率衰减") == ["学习率", "学习率"]
    assert sound_slips("噪声", "噪声") == []  # written as asked
    with engine.hold() as state:
        tokenizer, index = state.tokenizer, state.index

        def spellings(question: str) -> dict[str, str]:
            return notes_spellings(question, tokenizer.tokenize(question), tokenizer, index)

        assert spellings("梯度小失怎么解决？") == {"小失": "消失"}
        assert spellings("学习律设多大合适？") == {"学习律": "学习率"}
        assert unwritten_words("过拟和怎么解决？", tokenizer, index) == ["过拟", "过拟和"]  # jieba cut "和" off
        assert spellings("过拟和怎么解决？") == {"过拟和": "过拟合"}
        assert spellings("老是过拟合咋整啊") == {}  # chatter, not 老师
        assert spellings("预料是什么意思？") == {}  # everyday language, not 语料
    result = engine.search("训练的时候往输入里加噪生，那推理的时候还要加吗？")
    assert "噪声" in result.searched and "噪声" in result.hits[0].chunk.text
    assert "学习率" in engine.ask("学习律设多大合适？").text.split("[1]")[0]  # refused before


def test_a_colloquial_way_of_asking_for_a_fix_is_asked_as_the_notes_say_it(engine: Engine) -> None:
    assert fix_asked_plainly("老是过拟合咋整啊") == ("老是过拟合怎么解决啊", {"咋整": "怎么解决"})
    assert fix_asked_plainly("遇到 OOV 词该怎么办？") == ("遇到 OOV 词怎么解决？", {"该怎么办": "怎么解决"})
    assert fix_asked_plainly("标注数据不够怎么破") == ("标注数据不够怎么解决", {"怎么破": "怎么解决"})
    for other in ("密码怎么破解？", "笔记怎么整理？", "过拟合怎么解决？"):  # asking something else, or already plain
        assert fix_asked_plainly(other) == (other, {})
    for bare in ("怎么办？", "那该怎么办呢", "咋整"):  # nothing but the ask: no problem named
        assert fix_asked_plainly(bare) == (bare, {})
    assert engine.ask("咋整").refused

    result = engine.search("过拟合怎么办？", explain=True)
    assert result.query == "过拟合怎么办？" and result.searched == "过拟合怎么解决？"
    assert result.explanation is not None and result.explanation["notes_spellings"] == {"怎么办": "怎么解决"}
    # answered with a remedy, no longer with the definition of 过拟合 ("过拟合是指……")
    for question in ("过拟合怎么办？", "老是过拟合咋整啊"):
        first = engine.ask(question).text.split("[1]")[0]
        assert "防止" in first and "过拟合" in first and "是指" not in first, question
    assert "解决方法" in engine.ask("欠拟合咋整").text.split("[1]")[0]


def test_whether_the_notes_write_a_name_of_several_tokens(engine: Engine) -> None:
    with engine.hold() as state:
        tokenizer, index = state.tokenizer, state.index
        assert writes("DCN-V2", tokenizer, index) and writes("dcn v2", tokenizer, index)  # written "DCN-v2"
        assert writes("GPT-2", tokenizer, index) and writes("GPT2", tokenizer, index)
        assert not writes("ResNet-V2", tokenizer, index) and not writes("GPT-V2", tokenizer, index)
    history = [Turn("user", "什么是 GPT？"), Turn("assistant", engine.ask("什么是 GPT？").text)]
    answer = engine.ask("它的第二版有什么改进？", history=history)
    assert answer.resolved_question == "GPT-2 有什么改进？"  # "GPT GPT-V2 GPT V2 有什么改进？", refused, before
    assert not answer.refused and "GPT-2" in answer.text


def test_a_followup_comparing_with_a_term_the_notes_spell_otherwise_reads_their_spelling(engine: Engine) -> None:
    history = [Turn("user", ANSWERABLE)]
    history.append(Turn("assistant", engine.ask(ANSWERABLE).text))
    answer = engine.ask("它和全量微调比呢？", history=history)
    assert answer.resolved_question == "LoRA 微调和全量微调比呢？"
    assert not answer.refused and "全参数微调" in answer.text.split("[1]")[0]


# ------------------------------------------------------------------------------------- explanations


def test_explanation_block_when_asked_for(engine: Engine) -> None:
    answer = engine.ask("What is catastrophic forgetting?", explain=True)
    e = answer.explanation
    assert e is not None
    assert {"tokens", "expansions", "bm25", "dense", "fused", "gate"} <= set(e)
    assert "catastrophic" in e["tokens"] and "forgetting" in e["tokens"]
    assert any("灾难性遗忘" in item["added"] for item in e["expansions"])
    assert e["bm25"] and e["dense"] and e["fused"]
    assert [r["rank"] for r in e["fused"]] == list(range(1, len(e["fused"]) + 1))
    assert all(r["matched_terms"] for r in e["bm25"])
    assert set(e["gate"]) >= {"answerable", "score", "threshold", "features", "reason"}
    assert e["gate"]["answerable"] is True and e["gate"]["score"] >= e["gate"]["threshold"]
    assert engine.ask("What is catastrophic forgetting?").explanation is None
    assert engine.search("What is catastrophic forgetting?").explanation is None


def assert_same_ranking(search: dict, ask: dict, hit_ids: list[list[str]]) -> None:
    """`ask`'s fused ranking equals `search`'s, and search's hits are those passages in that order."""
    assert [(r["chunk_id"], r["score"]) for r in ask["fused"]] == [
        (r["chunk_id"], r["score"]) for r in search["fused"]
    ]
    rank_of = {r["chunk_id"]: r["rank"] for r in ask["fused"]}
    # a passage read on into the next chunk of its section lists that chunk too, which nothing ranked
    assert all(any(cid in rank_of for cid in ids) for ids in hit_ids)
    first_ranks = [min(rank_of[cid] for cid in ids if cid in rank_of) for ids in hit_ids]
    assert first_ranks == sorted(first_ranks)
    assert first_ranks[0] == 1


@pytest.mark.parametrize("query", CONSISTENCY_QUERIES)
def test_search_and_ask_rank_the_same_passages(engine: Engine, query: str) -> None:
    # top_k=3 keeps every candidate inside the explanation's top 10 fused passages
    result = engine.search(query, top_k=3, explain=True)
    answer = engine.ask(query, top_k=3, explain=True)
    assert result.explanation is not None and answer.explanation is not None
    assert answer.explanation["expansions"] == result.explanation["expansions"]
    assert_same_ranking(result.explanation, answer.explanation, [list(h.chunk_ids) for h in result.hits])
    hit_spans = {(h.chunk.doc_id, h.chunk.start, h.chunk.end) for h in result.hits}
    assert {(c.doc_id, c.start, c.end) for c in answer.citations} <= hit_spans


@pytest.fixture(scope="module")
def live(base_settings: Settings, engine: Engine) -> Iterator[httpx.Client]:
    with LiveServer(create_app(base_settings, engine=engine)) as server, server.client() as client:
        yield client


def test_search_and_ask_rank_the_same_passages_over_http(live: httpx.Client, engine: Engine) -> None:
    for query in CONSISTENCY_QUERIES[:3]:
        search = live.post("/search", json={"query": query, "top_k": 3, "explain": True})
        ask = live.post("/ask", json={"question": query, "top_k": 3, "explain": True})
        assert search.status_code == 200 and ask.status_code == 200, (search.text, ask.text)
        s, a = search.json(), ask.json()
        assert_same_ranking(s["explanation"], a["explanation"], [h["chunk_ids"] for h in s["hits"]])
        local = engine.search(query, top_k=3)
        assert [h["chunk_ids"] for h in s["hits"]] == [list(h.chunk_ids) for h in local.hits]


# ------------------------------------------------------------------------------------ cross-lingual


def test_english_question_finds_the_chinese_passage(engine: Engine) -> None:
    hits = engine.search("What is catastrophic forgetting?", top_k=3).hits
    assert any(is_hit(h.chunk.text, FORGETTING_GOLD) for h in hits)
    answer = engine.ask("What is catastrophic forgetting?")
    assert not answer.refused and "灾难性遗忘" in answer.text
