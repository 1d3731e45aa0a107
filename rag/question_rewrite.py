"""Follow-up questions rewritten by the LLM: `resolve_question` is the one entry point for a question asked
with a history.

A question that leans on the conversation (`rag.conversation.continues_conversation`) is rewritten by the LLM, reached
through the generator's `rewrite()` (prompts/rewrite.txt); without an LLM, or when its call fails or its reply is
unusable, the heuristic `rag.conversation.resolve_followup` stands in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from rag.answer.llm import is_garbage, is_refusal, strip_thinking
from rag.answer.prompts import load_prompt, neutralise
from rag.conversation import Known, continues_conversation, previous_user_questions, resolve_followup
from rag.index import IndexBackend
from rag.notes_spelling import writes
from rag.text import Tokenizer
from rag.types import Turn

if TYPE_CHECKING:
    from rag.answer import Generator

_REWRITE_PREFIX = re.compile(
    r"^(?:standalone question|rewritten question|question|改写后的问题|独立问题|问题)\s*[:：]\s*", re.I
)


def _rewrite_messages(question: str, history: Sequence[Turn]) -> list[dict[str, str]]:
    lines = []
    for turn in list(history)[-6:]:
        who = "User" if turn.role == "user" else "Assistant"
        content = neutralise(turn.content.strip().replace("\n", " "))
        lines.append(f"{who}: {content[:500]}")
    user = (
        "Conversation so far:\n"
        + "\n".join(lines)
        + f"\n\nLatest question: {neutralise(question.strip())}\n\nStandalone question:"
    )
    system = load_prompt("rewrite.txt").safe_substitute()
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user}]


def _clean_rewrite(reply: str, question: str) -> str | None:
    """The first line of the reply without quotes or a 'Standalone question:' preface; None if unusable."""
    lines = [line.strip() for line in strip_thinking(reply).splitlines() if line.strip()]
    if not lines:
        return None
    text = _REWRITE_PREFIX.sub("", lines[0]).strip().strip("\"'“”「」`").strip()
    if not text or len(text) > max(200, 3 * len(question) + 100) or is_garbage(text) or is_refusal(text):
        return None
    return text


def rewrite_followup(
    question: str, history: Sequence[Turn], generator: Generator, tokenizer: Tokenizer, known: Known = None
) -> str:
    """A standalone version of a follow-up question, written by the generator's LLM (prompts/rewrite.txt).

    Without an earlier user question the question is returned as is; without an LLM, or when the call fails
    or its reply is unusable, the heuristic `resolve_followup` result is returned (`known`: whether the notes
    use a word).
    """
    if not previous_user_questions(question, history):
        return question
    reply = generator.rewrite(_rewrite_messages(question, history))
    rewritten = _clean_rewrite(reply, question) if reply is not None else None
    return rewritten if rewritten is not None else resolve_followup(question, history, tokenizer, known)


def resolve_question(
    question: str,
    history: Sequence[Turn],
    generator: Generator,
    tokenizer: Tokenizer,
    index: IndexBackend | None = None,
) -> str:
    """A standalone question: a follow-up is resolved against the history; any other question is returned as is.
    With the notes' `index`, the heuristic names a version as they write it ("它的第二版" -> GPT-2)."""
    if not continues_conversation(question, history, tokenizer):
        return question
    known = partial(writes, tokenizer=tokenizer, index=index) if index is not None else None
    return rewrite_followup(question, history, generator, tokenizer, known)
