"""Extractive answerer, citation parsing, refusals and follow-up resolution, on real note text."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.answer import (
    REFUSAL_EN,
    REFUSAL_ZH,
    ExtractiveGenerator,
    make_generator,
    refusal_answer,
)
from rag.answer.citations import parse_citations
from rag.config import Settings
from rag.text import Tokenizer, char_bigrams, sentence_spans
from rag.types import Answer, Chunk, Hit

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
GLOSSARY = "deep-learning-glossary.md"
MARKER = re.compile(r"\[(\d+)\]")


def note(doc_id: str) -> str:
    return (CORPUS / doc_id).read_text(encoding="utf-8")


def section_hit(heading: str, rank: int, doc_id: str = GLOSSARY, level: str = "###") -> Hit:
    """A Hit whose chunk is the real note section under `heading` (up to the next heading of that level)."""
    text = note(doc_id)
    start = text.index(f"{level} {heading}\n")
    nxt = text.find(f"\n{level} ", start + len(level) + 1)
    end = nxt + 1 if nxt >= 0 else len(text)
    chunk = Chunk(
        chunk_id=f"{doc_id}#{start}",
        doc_id=doc_id,
        heading_path=(heading,),
        start=start,
        end=end,
        text=text[start:end],
        index_text=f"{heading}\n{text[start:end]}",
        ordinal=rank,
    )
    return Hit(chunk=chunk, score=1.0 / rank, rank=rank, document_title=doc_id.removesuffix(".md"))


def hits(*headings: str) -> list[Hit]:
    return [section_hit(h, i) for i, h in enumerate(headings, start=1)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def extractive(tokenizer: Tokenizer, **overrides: object) -> ExtractiveGenerator:
    return ExtractiveGenerator(Settings(_env_file=None, **overrides), tokenizer)


def cited_segments(answer: Answer) -> list[tuple[int, str]]:
    """(passage number, text) for each run of answer text closed by a [n] marker."""
    segments = []
    position = 0
    for match in MARKER.finditer(answer.text):
        segments.append((int(match.group(1)), answer.text[position : match.start()]))
        position = match.end()
    assert not answer.text[position:].strip(), "answer text after the last citation marker"
    return segments


def assert_verbatim_and_cited(
    answer: Answer, passages: list[Hit], max_sentences: int, max_chars: int
) -> None:
    """Every sentence is note text from the passage its marker names; citations match the markers."""
    assert not answer.refused and answer.backend == "extractive"
    assert len(answer.text) <= max_chars
    segments = cited_segments(answer)
    assert segments
    n_sentences = 0
    for number, segment in segments:
        assert 1 <= number <= len(passages)
        chunk_text = passages[number - 1].chunk.text
        for line in segment.strip().splitlines():
            line = line.strip().removesuffix("…")
            assert line and line in chunk_text, f"not verbatim from passage {number}: {line!r}"
            n_sentences += len(sentence_spans(line))
    assert n_sentences <= max_sentences
    numbers = [n for n, _ in segments]
    assert [c.number for c in answer.citations] == sorted(set(numbers))
    for citation in answer.citations:
        hit = passages[citation.number - 1]
        assert (citation.doc_id, citation.chunk_id, citation.document) == (
            hit.chunk.doc_id,
            hit.chunk.chunk_id,
            hit.document_title,
        )
        assert citation.snippet in hit.chunk.text
        assert note(citation.doc_id)[citation.snippet_start : citation.snippet_end] == citation.snippet
        for number, segment in segments:  # the snippet holds the cited sentences
            if number == citation.number:
                assert segment.strip().splitlines()[0].strip().removesuffix("…") in citation.snippet


# ------------------------------------------------------------------------------------------ extractive

CASES = [
    (
        "CAP 理论说的是哪三个特性？",
        ("CAP理论", "FLP不可能原理", "一致性（consistency）"),
        ["一致性", "可用性", "分区"],
    ),
    ("GRU 有哪两个门？", ("门循环单元（GRU）", "门(gate)", "感知机(Perceptron)"), ["更新门", "重置门"]),
    (
        "LoRA 的秩是什么意思？",
        ("LoRA(LOW-RANK ADAPTATION, 低秩适配)", "Parameter-Efficient Fine-Tuning (PEFT)"),
        ["秩"],
    ),
    (
        "如何解决灾难性遗忘问题？",
        ("Parameter-Efficient Fine-Tuning (PEFT)", "灾难性遗忘（Catastrophic Forgetting）"),
        ["经验回放"],
    ),
    (
        "What is catastrophic forgetting?",
        ("灾难性遗忘（Catastrophic Forgetting）", "checkpoint"),
        ["忘记之前学习到的知识"],
    ),
    (
        "大模型的幻觉有哪些类型？",
        ("大模型的“幻觉”（Hallucination）", "LLMs 复读机问题"),
        ["逻辑谬误", "捏造事实"],
    ),
]


@pytest.mark.parametrize(("question", "headings", "expected"), CASES)
def test_extractive_answer_is_verbatim_cited_and_relevant(
    question: str, headings: tuple[str, ...], expected: list[str], tokenizer: Tokenizer
) -> None:
    passages = hits(*headings)
    answer = extractive(tokenizer).generate(question, passages)
    assert_verbatim_and_cited(answer, passages, max_sentences=4, max_chars=600)
    for keyword in expected:
        assert keyword in answer.text


@pytest.mark.parametrize(("max_sentences", "max_chars"), [(1, 600), (2, 120), (4, 60), (3, 50)])
def test_bounds_are_respected(max_sentences: int, max_chars: int, tokenizer: Tokenizer) -> None:
    passages = hits("灾难性遗忘（Catastrophic Forgetting）", "LLMs 复读机问题")
    gen = extractive(tokenizer, answer_max_sentences=max_sentences, answer_max_chars=max_chars)
    answer = gen.generate("灾难性遗忘是什么，怎么解决？", passages)
    assert_verbatim_and_cited(answer, passages, max_sentences, max_chars)


def test_sentences_follow_passage_then_note_order(tokenizer: Tokenizer) -> None:
    passages = hits("LoRA(LOW-RANK ADAPTATION, 低秩适配)", "Parameter-Efficient Fine-Tuning (PEFT)")
    answer = extractive(tokenizer, answer_max_sentences=6, answer_max_chars=1200).generate(
        "LoRA 和 PEFT 是怎么减少训练参数的？", passages
    )
    assert_verbatim_and_cited(answer, passages, 6, 1200)
    order = []
    for number, segment in cited_segments(answer):
        for line in segment.strip().splitlines():
            order.append((number, passages[number - 1].chunk.text.index(line.strip())))
    assert len(order) >= 2 and order == sorted(order)


def test_duplicate_passages_give_no_duplicate_sentences(tokenizer: Tokenizer) -> None:
    hit = section_hit("CAP理论", 1)
    twin = Hit(chunk=hit.chunk, score=0.5, rank=2, document_title=hit.document_title)
    answer = extractive(tokenizer).generate("CAP 理论是什么？", [hit, twin])
    lines = [
        line for _, seg in cited_segments(answer) for line in re.split(r"(?<=[。；])", seg) if line.strip()
    ]
    assert len(lines) == len({line.strip() for line in lines})


def test_headings_urls_and_images_are_not_quoted(tokenizer: Tokenizer) -> None:
    passages = [section_hit("强化学习", 1, doc_id="learning-notes.md", level="#")]
    answer = extractive(tokenizer).generate("强化学习是什么？", passages)
    assert "强化学习是机器通过与环境交互来实现目标的一种计算方法。" in answer.text
    assert "http" not in answer.text and "image.png" not in answer.text and "#" not in answer.text


def test_code_lines_are_not_quoted(tokenizer: Tokenizer) -> None:
    passages = hits("Parameter-Efficient Fine-Tuning (PEFT)")
    answer = extractive(tokenizer, answer_max_sentences=8, answer_max_chars=2000).generate(
        "PEFT 模型怎么加载预训练模型？", passages
    )
    assert "from_pretrained" not in answer.text and "创建基础transformer模型" not in answer.text


def test_colon_sentence_brings_the_items_after_it(tokenizer: Tokenizer) -> None:
    passages = hits("LLMs 复读机问题")
    answer = extractive(tokenizer).generate("怎样缓解 LLMs 复读机问题，可以尝试哪些方法？", passages)
    assert "可以尝试以下方法：" in answer.text
    assert "1、多样性训练数据" in answer.text  # the first item explains the colon sentence


def test_stream_yields_the_text_then_one_answer(tokenizer: Tokenizer) -> None:
    items = list(extractive(tokenizer).stream("GRU 有哪两个门？", hits("门循环单元（GRU）")))
    assert isinstance(items[-1], Answer) and all(isinstance(i, str) for i in items[:-1])
    assert "".join(items[:-1]) == items[-1].text


def test_embeddings_rescore_only_a_few_candidates(tokenizer: Tokenizer) -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        """A real (if tiny) embedder: hashed character bigrams, L2-normalised."""
        calls.append(texts)
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            for gram in char_bigrams(text):
                out[row, zlib.crc32(gram.encode()) % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    passages = hits(
        "灾难性遗忘（Catastrophic Forgetting）", "LLMs 复读机问题", "Parameter-Efficient Fine-Tuning (PEFT)"
    )
    question = "灾难性遗忘是什么？"
    lexical = extractive(tokenizer).generate(question, passages)
    assert "灾难性遗忘（Catastrophic Forgetting）是指" in lexical.text  # a definition for "是什么"
    assert calls == []

    answer = ExtractiveGenerator(Settings(_env_file=None), tokenizer, embed_query=embed).generate(
        question, passages
    )
    assert len(calls) == 1 and calls[0][0] == question and 3 <= len(calls[0]) <= 9
    all_text = "".join(hit.chunk.text for hit in passages)
    assert all(sentence in all_text for sentence in calls[0][1:])  # candidates are note sentences
    assert_verbatim_and_cited(answer, passages, 4, 600)


def test_real_embedder_refines_the_answer(embedder, tokenizer: Tokenizer) -> None:
    """The engine passes the shared e5 embedder's embed_queries; answers stay verbatim and on topic."""
    passages = hits("门循环单元（GRU）", "门(gate)", "LoRA(LOW-RANK ADAPTATION, 低秩适配)")
    gen = ExtractiveGenerator(Settings(_env_file=None), tokenizer, embed_query=embedder.embed_queries)
    answer = gen.generate("GRU 的重置门和更新门分别做什么？", passages)
    assert_verbatim_and_cited(answer, passages, 4, 600)
    assert "重置门" in answer.text and "更新门" in answer.text


def test_a_failing_embedder_only_costs_the_refinement(tokenizer: Tokenizer) -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model not loaded")

    passages = hits("门循环单元（GRU）")
    answer = ExtractiveGenerator(Settings(_env_file=None), tokenizer, embed_query=broken).generate(
        "GRU 有哪两个门？", passages
    )
    assert "重置门" in answer.text and answer.citations


def test_no_passages_is_a_refusal(tokenizer: Tokenizer) -> None:
    answer = extractive(tokenizer).generate("LoRA 是什么？", [])
    assert answer.refused and answer.citations == [] and answer.text == REFUSAL_ZH


def test_make_generator_without_llm_is_extractive(tokenizer: Tokenizer) -> None:
    gen = make_generator(Settings(_env_file=None, llm_model=None), tokenizer)
    assert isinstance(gen, ExtractiveGenerator) and gen.name == "extractive"


# -------------------------------------------------------------------------------------------- refusal


@pytest.mark.parametrize(
    ("question", "text"),
    [
        ("期权里的看涨期权是什么？", REFUSAL_ZH),
        ("How many hours of audio was Whisper trained on?", REFUSAL_EN),
        ("ＬｏＲＡ是什么", REFUSAL_ZH),
        ("???", REFUSAL_ZH),
    ],
)
def test_refusal_answer_speaks_the_question_language(question: str, text: str) -> None:
    answer = refusal_answer(question)
    assert answer.refused and answer.citations == [] and answer.text == text and answer.question == question


# ------------------------------------------------------------------------------------ parse_citations


@pytest.mark.parametrize(
    ("text", "n", "cleaned", "numbers"),
    [
        ("A。[1] B。[2]", 3, "A。[1] B。[2]", [1, 2]),
        ("A[2][1] B[2]", 3, "A[2][1] B[2]", [2, 1]),
        ("A[1, 3]。", 3, "A[1][3]。", [1, 3]),
        ("A[1，2、3]", 3, "A[1][2][3]", [1, 2, 3]),
        ("A［2］B【3】", 3, "A[2]B[3]", [2, 3]),
        ("A [9]。", 3, "A。", []),
        ("A[1, 9]", 3, "A[1]", [1]),
        ("A[0] B[4]", 3, "A B", []),
        ("A[1-3]", 3, "A[1][2][3]", [1, 2, 3]),
        ("A[99999999999999999999]", 3, "A", []),
        ("A[1]", 0, "A", []),
        ("数组 a[i] 与 [x] 不是引用", 3, "数组 a[i] 与 [x] 不是引用", []),
    ],
)
def test_parse_citations_cases(text: str, n: int, cleaned: str, numbers: list[int]) -> None:
    assert parse_citations(text, n) == (cleaned, numbers)


_MARKERISH = st.text(alphabet="[]［］【】0123456789,，、-~ 9abc。\n", max_size=60)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), _MARKERISH), n=st.integers(min_value=0, max_value=12))
def test_parse_citations_never_raises_and_keeps_only_valid_numbers(text: str, n: int) -> None:
    cleaned, numbers = parse_citations(text, n)
    assert len(numbers) == len(set(numbers)) and all(1 <= k <= n for k in numbers)
    again, numbers_again = parse_citations(cleaned, n)
    assert again == cleaned and set(numbers_again) == set(numbers)
