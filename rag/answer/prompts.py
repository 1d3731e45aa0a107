"""Prompts for the LLM backend: templates shipped as package data under rag/prompts/, and the messages built
from them. Every passage is wrapped in a numbered, delimited block, and text that goes into a prompt is
neutralised so that it cannot forge a block delimiter.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from rag.answer.base import REFUSAL_EN, REFUSAL_ZH, refusal_sentence
from rag.types import Hit

if TYPE_CHECKING:
    from rag.answer.reader import Reading

KEY_SENTENCES = 2  # the reader's best sentences marked per passage
KEY_MARGIN = 2.0  # ... when they score within this of the best sentence overall (logit units)


@lru_cache(maxsize=8)
def load_prompt(name: str) -> string.Template:
    """A prompt template shipped as package data under rag/prompts/."""
    text = resources.files("rag").joinpath("prompts", name).read_text(encoding="utf-8")
    return string.Template(text)


_DELIM_RUN = re.compile(r"[<＜﹤〈《‹«]{3,}|[>＞﹥〉》›»]{3,}")


def neutralise(text: str) -> str:
    """Make text unable to contain a block delimiter: every run of 3+ angle brackets becomes two."""
    return _DELIM_RUN.sub(lambda m: m.group(0)[:2], text)


def format_passages(passages: Sequence[Hit], reading: Reading | None = None) -> str:
    """Numbered, delimited passage blocks with document title and heading path.

    With a reading, the blocks come in reader order (each keeps its number) and each block lists the
    reader's best sentences in it as key evidence.
    """
    order = list(range(len(passages)))
    key: dict[int, list[str]] = {}
    if reading is not None:
        best: dict[int, float] = {}
        for c in reading.candidates:
            if c.passage < len(passages):
                best.setdefault(c.passage, c.score)
                if len(key.get(c.passage, [])) < KEY_SENTENCES and c.score >= reading.candidates[0].score - KEY_MARGIN:
                    key.setdefault(c.passage, []).append(c.sentence.text)
        order.sort(key=lambda i: -best.get(i, float("-inf")))
    blocks = []
    for index in order:
        number, hit = index + 1, passages[index]
        chunk = hit.chunk
        title = neutralise(hit.document_title or chunk.doc_id)
        heading = neutralise(" > ".join(chunk.heading_path)) or "-"
        blocks.append(
            f"<<<PASSAGE {number}>>>\n"
            f"Document: {title}\n"
            f"Section: {heading}\n"
            f"Text:\n{neutralise(chunk.text.strip())}\n"
            + "".join(f"Key evidence: {neutralise(text)}\n" for text in key.get(index, []))
            + f"<<<END PASSAGE {number}>>>"
        )
    return "\n\n".join(blocks)


def build_messages(
    question: str, passages: Sequence[Hit], max_sentences: int = 4, reading: Reading | None = None
) -> list[dict[str, str]]:
    """System + user messages for a retrieval-grounded answer."""
    system = load_prompt("system.txt").safe_substitute(
        refusal_zh=REFUSAL_ZH,
        refusal_en=REFUSAL_EN,
        n_passages=str(len(passages)),
        max_sentences=str(max_sentences),
    )
    user = load_prompt("user.txt").safe_substitute(
        passages=format_passages(passages, reading),
        question=neutralise(question.strip()),
        refusal=refusal_sentence(question),
    )
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]
