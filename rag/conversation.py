"""Follow-up questions: make "那它有什么缺点？" standalone using the conversation history.

`resolve_question` is the one entry point: a question that looks like a follow-up is rewritten by the LLM,
reached through the generator's `rewrite()` (prompts/rewrite.txt). `resolve_followup` is the heuristic that
stands in when there is no LLM, or when its call fails or its reply is unusable: the key terms of the previous
user question are prepended.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag.answer.llm import is_garbage, is_refusal, strip_thinking
from rag.answer.prompts import load_prompt, neutralise
from rag.text import Tokenizer, normalize
from rag.types import Turn

if TYPE_CHECKING:
    from rag.answer import Generator


def _word_set(text: str) -> frozenset[str]:
    """Whitespace-separated words of a multi-line literal."""
    return frozenset(text.split())


# Pronouns / demonstratives that point back into the conversation. "该" is skipped after 应/活 ("应该"),
# "其" inside common words (其他, 其中, 尤其, 其实...) does not count.
_ZH_REFERENCE = re.compile(
    r"它们?|这个|那个|这种|那种|这些|那些|这类|那类|这样|那样|这两|上述|前者|后者|(?<![因如彼从])此|(?<![应活])该(?![怎如不])"
    r"|(?<![尤极])其(?![他它中实余次后])"
)
_EN_REFERENCE = re.compile(r"\b(?:it|its|this|that|they|them|their|these|those|one)\b", re.I)
_CONTINUATION_START = re.compile(
    r"^\s*(?:那么|那|还有|另外|然后呢|接着|and\b|also\b|what about\b|how about\b|and what about\b|then\b)",
    re.I,
)
# Words that ask *about* a subject without naming one: "缺点", "原理", "example"...
_GENERIC = _word_set(
    """
    缺点 优点 优缺点 优势 劣势 不足 局限 局限性 原理 例子 举例 示例 应用 用途 场景 应用场景 步骤 流程 方法 办法
    特点 作用 意义 含义 定义 概念 意思 介绍 解释 详细 详细点 公式 参数 实现 代码 哪里 怎么用 用法 好处 坏处
    advantages disadvantages advantage disadvantage pros cons example examples use uses usage more detail
    details why how works work mean means meaning definition define
    """
)
_MAX_TERMS = 4


def _content_terms(text: str, tokenizer: Tokenizer) -> list[str]:
    """Precise-mode words that name a subject: stopwords, references and generic asks removed."""
    terms: list[str] = []
    for word in tokenizer.words(text):
        if word in _GENERIC or _ZH_REFERENCE.fullmatch(word) or _EN_REFERENCE.fullmatch(word):
            continue
        if len(word) == 1 and not word.isascii():
            continue  # single CJK characters are too vague to carry a topic
        if word not in terms:
            terms.append(word)
    return terms


def looks_like_followup(question: str, tokenizer: Tokenizer) -> bool:
    """Short / pronoun-led / continuation-led questions, or ones naming no subject of their own."""
    text = unicodedata.normalize("NFKC", question).strip()
    content = _content_terms(text, tokenizer)
    if not content:
        return True
    if _CONTINUATION_START.match(text) and len(content) <= 3:
        return True
    has_reference = bool(_ZH_REFERENCE.search(text) or _EN_REFERENCE.search(text))
    return has_reference and len(content) <= 2


def _original_case(term: str, source: str) -> str:
    """`term` (normalized) as spelled in `source` ("lora" -> "LoRA")."""
    match = re.search(re.escape(term), unicodedata.normalize("NFKC", source), re.I)
    return match.group(0) if match else term


def previous_user_questions(question: str, history: Sequence[Turn]) -> list[str]:
    """Earlier user questions, most recent first (the current question itself skipped if repeated)."""
    current = normalize(question).strip()
    return [
        turn.content
        for turn in reversed(history)
        if turn.role == "user" and turn.content.strip() and normalize(turn.content).strip() != current
    ]


def resolve_followup(question: str, history: Sequence[Turn], tokenizer: Tokenizer, _depth: int = 0) -> str:
    """Prepend the previous question's key terms to a follow-up; return other questions unchanged.

    A previous question that was itself a follow-up is resolved first, so a chain of follow-ups keeps
    the subject of the question that started it.
    """
    if not history or not looks_like_followup(question, tokenizer):
        return question
    own = set(_content_terms(question, tokenizer))
    norm_question = normalize(question)
    current = normalize(question).strip()
    for i in range(len(history) - 1, -1, -1):
        turn = history[i]
        if turn.role != "user" or not turn.content.strip() or normalize(turn.content).strip() == current:
            continue
        previous = turn.content
        if _depth < 3:
            previous = resolve_followup(previous, history[:i], tokenizer, _depth + 1)
        terms = [t for t in _content_terms(previous, tokenizer) if t not in own and t not in norm_question]
        if terms:
            prefix = " ".join(_original_case(t, previous) for t in terms[:_MAX_TERMS])
            return f"{prefix} {question.strip()}"
    return question


# ---------------------------------------------------------------------------------------- LLM rewrite

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
    question: str, history: Sequence[Turn], generator: Generator, tokenizer: Tokenizer
) -> str:
    """A standalone version of a follow-up question, written by the generator's LLM (prompts/rewrite.txt).

    Without an earlier user question the question is returned as is; without an LLM, or when the call fails
    or its reply is unusable, the heuristic `resolve_followup` result is returned.
    """
    if not previous_user_questions(question, history):
        return question
    reply = generator.rewrite(_rewrite_messages(question, history))
    rewritten = _clean_rewrite(reply, question) if reply is not None else None
    return rewritten if rewritten is not None else resolve_followup(question, history, tokenizer)


def resolve_question(
    question: str, history: Sequence[Turn], generator: Generator, tokenizer: Tokenizer
) -> str:
    """A standalone question: a follow-up is resolved against the history; any other question is returned as is."""
    if not history or not looks_like_followup(question, tokenizer):
        return question
    return rewrite_followup(question, history, generator, tokenizer)
