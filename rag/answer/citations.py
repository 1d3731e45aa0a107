"""Citations: the [n] markers of an answer text, and the `Citation` records that point back into the notes.

`parse_citations` finds and validates markers in any text (never raises); `citation_from_hit` is the one place
a `Citation` is built from a retrieved `Hit`; `llm_citations` picks, for each number an LLM reply cites, the
passage sentence nearest the claim it follows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.answer.sentences import split_passage
from rag.text import char_bigrams, sentence_spans
from rag.types import Citation, Hit

_MARKER = re.compile(r"[ \t]*[\[［【]\s*(\d+(?:\s*(?:[,，、;；]|-|–|~|～)\s*\d+)*)\s*[\]］】]")
_MARKER_PART = re.compile(r"(\d+)\s*(?:(?:-|–|~|～)\s*(\d+))?")
_MAX_RANGE = 20
# a markdown link or image ("[label](target)", "![alt](src)"), as `rag.answer.llm.sanitize_reply` removes them
_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\((?:[^()\n]|\([^()\n]*\))*\)")


def _marker_numbers(body: str) -> list[int]:
    numbers: list[int] = []
    for match in _MARKER_PART.finditer(body):
        first, last = match.group(1), match.group(2)
        if len(first) > 6 or (last is not None and len(last) > 6):
            continue  # absurdly large: certainly out of range (and int() of huge strings is refused)
        a = int(first)
        if last is None:
            numbers.append(a)
            continue
        b = int(last)
        if a <= b and b - a <= _MAX_RANGE:
            numbers.extend(range(a, b + 1))
        else:
            numbers.extend((a, b))
    return numbers


def _citation_pass(text: str, n_passages: int) -> tuple[str, list[int]]:
    used: list[int] = []

    def replace(match: re.Match[str]) -> str:
        valid: list[int] = []
        for number in _marker_numbers(match.group(1)):
            if 1 <= number <= n_passages and number not in valid:
                valid.append(number)
        for number in valid:
            if number not in used:
                used.append(number)
        if not valid:
            return ""  # drop the marker and the blank before it
        whole = match.group(0)
        return whole[: len(whole) - len(whole.lstrip(" \t"))] + "".join(f"[{n}]" for n in valid)

    return _MARKER.sub(replace, text), used


def parse_citations(text: str, n_passages: int) -> tuple[str, list[int]]:
    """Find [n], [n, m], [n-m], [n][m], ［n］, 【n】 markers; keep the valid ones as "[n]".

    Out-of-range numbers are dropped and their markers removed (until nothing changes, so removing "[9]"
    from "[[9]0]" cannot leave a new marker behind, nor "[[9]](x)" a link). Returns the cleaned text and the
    valid numbers in order of first use. Never raises.
    """
    cleaned, used = _citation_pass(text, n_passages)
    for _ in range(len(text) + 1):  # every pass that changes the text removes a marker: this terminates
        again, used = _citation_pass(cleaned, n_passages)
        if again != cleaned:
            cleaned = again
            continue
        # a dropped marker can join what surrounded it into a link ("[[9]](x)" -> "[](x)"): only its label stays
        again = _MD_LINK.sub(lambda m: m.group(1), cleaned) if cleaned != text else cleaned
        if again == cleaned:
            break
        cleaned = again
    return cleaned, used


def strip_markers(text: str) -> str:
    """The text without any citation-like marker (and the blank before each)."""
    return _MARKER.sub("", text)


def citation_from_hit(
    number: int,
    hit: Hit,
    snippet: str,
    *,
    start: int | None = None,
    end: int | None = None,
    score: float | None = None,
) -> Citation:
    """Citation `number` of a passage: `snippet` is the quoted text, `start`/`end` its offsets in chunk.text.

    The snippet's note offsets are set when `start`/`end` are given; `score` defaults to the hit's score.
    """
    chunk = hit.chunk
    return Citation(
        number=number,
        doc_id=chunk.doc_id,
        document=hit.document_title or chunk.doc_id,
        heading_path=tuple(chunk.heading_path),
        chunk_id=chunk.chunk_id,
        start=chunk.start,
        end=chunk.end,
        snippet=snippet,
        score=float(hit.score) if score is None else score,
        snippet_start=None if start is None else chunk.start + start,
        snippet_end=None if end is None else chunk.start + end,
        page=chunk.page_at(chunk.start + (start or 0)),
    )


def _best_snippet(claim: str, hit: Hit) -> tuple[str, int, int]:
    """The passage sentence sharing most character bigrams with `claim`: (text, start, end) in chunk.text."""
    chunk_text = hit.chunk.text
    claim_grams = char_bigrams(claim)
    best: tuple[float, int, int] | None = None
    for s in split_passage(0, hit):
        if s.kind != "text":
            continue
        grams = char_bigrams(s.text)
        overlap = len(grams & claim_grams) / (len(grams) ** 0.5 + 1.0)
        if best is None or overlap > best[0]:
            best = (overlap, s.start, s.end)
    if best is None:
        stripped = chunk_text.strip()
        start = chunk_text.find(stripped[:1]) if stripped else 0
        end = min(len(chunk_text), start + 200)
        return chunk_text[start:end], start, end
    return chunk_text[best[1] : best[2]], best[1], best[2]


def llm_citations(text: str, numbers: Sequence[int], passages: Sequence[Hit]) -> list[Citation]:
    """Citations for the valid numbers of an LLM reply; each snippet is the passage sentence nearest its claim."""
    spans = sentence_spans(text)
    citations = []
    for number in numbers:
        marker = f"[{number}]"
        claim = " ".join(text[s:e] for s, e in spans if marker in text[s:e]) or text
        # A marker often trails its sentence ("……。[1]"): look at the sentence before it too.
        if claim.strip().startswith(marker):
            idx = text.find(marker)
            claim = text[max(0, idx - 200) : idx]
        hit = passages[number - 1]
        snippet, start, end = _best_snippet(claim, hit)
        citations.append(citation_from_hit(number, hit, snippet, start=start, end=end))
    return citations
