"""The answerer's contract and its language rules: the `Generator` Protocol, refusals, the question language.

Every backend (`rag.answer.extractive`, `rag.answer.llm`) implements `Generator`: `stream()` yields text deltas
and then exactly one final `Answer`; `generate()` consumes the stream and returns that Answer; `rewrite()`
answers a short non-streamed request (the follow-up rewrite of `rag.question_rewrite`), or None without an LLM.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from rag.errors import GenerationError
from rag.text import is_cjk, normalize
from rag.types import Answer, Hit

if TYPE_CHECKING:
    import numpy as np

    from rag.answer.reader import Reading

REFUSAL_ZH = "知识库中没有找到与该问题相关的内容。"
REFUSAL_EN = "The knowledge base does not contain information about this question."

Language = Literal["zh", "en"]
EmbedFn = Callable[[list[str]], "np.ndarray"]


class Generator(Protocol):
    """What the engine calls: passages are already retrieved and gated."""

    name: str

    def stream(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Iterator[str | Answer]:
        """Yield text deltas, then exactly one final Answer. `reading` is the reader's verdict on the passages."""
        ...

    def generate(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Answer:
        """The final Answer of `stream()`."""
        ...

    def rewrite(self, messages: list[dict[str, str]]) -> str | None:
        """The model's reply to a short chat request (the follow-up rewrite); None without a model or on failure."""
        ...


def question_language(question: str) -> Language:
    """'zh' when the question holds CJK (or no letters at all), else 'en'."""
    if is_cjk(question):
        return "zh"
    return "en" if re.search(r"[A-Za-z]", normalize(question)) else "zh"


def refusal_sentence(question: str) -> str:
    """The fixed refusal sentence in the question's language."""
    return REFUSAL_ZH if question_language(question) == "zh" else REFUSAL_EN


def refusal_answer(question: str) -> Answer:
    """The refusal: no citations, in the question's language."""
    return Answer(question=question, text=refusal_sentence(question), citations=[], refused=True)


def consume(stream: Iterator[str | Answer]) -> Answer:
    """The final Answer of a generator stream (the deltas before it are dropped)."""
    final: Answer | None = None
    for item in stream:
        if isinstance(item, Answer):
            final = item
    if final is None:  # pragma: no cover - every stream ends with an Answer
        raise GenerationError("the generator produced no answer")
    return final
