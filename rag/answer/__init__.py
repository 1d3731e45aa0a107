"""Answer generation over already retrieved (and gated) passages.

Two backends share one interface (`Generator`, in `base`): `ExtractiveGenerator` (default, no LLM) quotes the
most relevant verbatim sentences of the passages and cites each with [n]; `LiteLLMGenerator` asks any litellm
model and falls back to the extractive answer on every kind of failure. `make_generator` picks one from the
settings. The rooms: `citations` (markers and Citation records), `sentences` (passages cut into sentences),
`extractive`, `prompts` (package data under rag/prompts/) and `llm` (litellm, reply sanitising, the stream
cleaner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.answer.base import (
    REFUSAL_EN,
    REFUSAL_ZH,
    EmbedFn,
    Generator,
    Language,
    question_language,
    refusal_answer,
    refusal_sentence,
)
from rag.answer.extractive import ExtractiveGenerator
from rag.answer.llm import LiteLLMGenerator

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.text import Tokenizer

__all__ = [
    "REFUSAL_EN",
    "REFUSAL_ZH",
    "EmbedFn",
    "ExtractiveGenerator",
    "Generator",
    "Language",
    "LiteLLMGenerator",
    "make_generator",
    "question_language",
    "refusal_answer",
    "refusal_sentence",
]


def make_generator(settings: Settings, tokenizer: Tokenizer, embed_query: EmbedFn | None = None) -> Generator:
    """The extractive answerer, or the LiteLLM one (with extractive fallback) when `llm_model` is set."""
    extractive = ExtractiveGenerator(settings, tokenizer, embed_query)
    if settings.llm_model:
        return LiteLLMGenerator(settings, extractive)
    return extractive
