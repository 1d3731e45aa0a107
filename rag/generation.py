"""Answer generation over already retrieved (and gated) passages.

Two backends share one interface (`Generator`): `stream()` yields text deltas and then exactly one final
`Answer`; `generate()` consumes the stream and returns that Answer.

- `ExtractiveGenerator` (default, no LLM): picks the most relevant verbatim sentences of the passages and
  cites each with [n], n being the 1-based position of its passage.
- `LiteLLMGenerator`: any litellm model. The prompt wraps every passage in delimited untrusted-data blocks;
  the reply's citations are validated, forged links removed; any failure falls back to the extractive answer
  with a visible note (`Answer.fallback_reason`).
"""

from __future__ import annotations

import logging
import math
import re
import string
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rag.errors import GenerationError
from rag.text import Tokenizer, char_bigrams, is_cjk, normalize, sentence_spans
from rag.types import Answer, Citation, Hit, Turn

if TYPE_CHECKING:
    import numpy as np

    from rag.config import Settings

log = logging.getLogger(__name__)

REFUSAL_ZH = "知识库中没有找到与该问题相关的内容。"
REFUSAL_EN = "The knowledge base does not contain information about this question."

Language = Literal["zh", "en"]
EmbedFn = Callable[[list[str]], "np.ndarray"]


class Generator(Protocol):
    """What the engine calls: passages are already retrieved and gated."""

    name: str

    def stream(self, question: str, passages: Sequence[Hit]) -> Iterator[str | Answer]:
        """Yield text deltas, then exactly one final Answer."""
        ...

    def generate(self, question: str, passages: Sequence[Hit]) -> Answer:
        """The final Answer of `stream()`."""
        ...


def make_generator(settings: Settings, tokenizer: Tokenizer, embed_query: EmbedFn | None = None) -> Generator:
    """The extractive answerer, or the LiteLLM one (with extractive fallback) when `llm_model` is set."""
    extractive = ExtractiveGenerator(settings, tokenizer, embed_query)
    if settings.llm_model:
        return LiteLLMGenerator(settings, extractive)
    return extractive


# --------------------------------------------------------------------------------------------- language


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


def _consume(stream: Iterator[str | Answer]) -> Answer:
    final: Answer | None = None
    for item in stream:
        if isinstance(item, Answer):
            final = item
    if final is None:  # pragma: no cover - every stream ends with an Answer
        raise GenerationError("the generator produced no answer")
    return final


# ------------------------------------------------------------------------------------------ citations

_MARKER = re.compile(r"[ \t]*[\[［【]\s*(\d+(?:\s*(?:[,，、;；]|-|–|~|～)\s*\d+)*)\s*[\]］】]")
_MARKER_PART = re.compile(r"(\d+)\s*(?:(?:-|–|~|～)\s*(\d+))?")
_MAX_RANGE = 20


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
    from "[[9]0]" cannot leave a new marker behind). Returns the cleaned text and the valid numbers in order of
    first use. Never raises.
    """
    cleaned, used = _citation_pass(text, n_passages)
    for _ in range(len(text) + 1):  # every pass that changes the text removes a marker: this terminates
        again, used = _citation_pass(cleaned, n_passages)
        if again == cleaned:
            break
        cleaned = again
    return cleaned, used


# ------------------------------------------------------------------------------------ sentence pieces

_PREFIX = re.compile(r"^(?:#{1,6}[ \t]+|>[ \t]*|[-*+•●▪◦·][ \t]+)+")
_HEADING_LINE = re.compile(r"^[ \t]*#{1,6}[ \t]")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_URL_TOKEN = re.compile(r"^(?:<?(?:https?://|www\.)\S+>?|!?\[[^\]]*\]\([^)]*\))$", re.I)
_CODE_LINE = re.compile(
    r"^(?:import\s|from\s+\S+\s+import\s|def\s|class\s+\w+\s*[(:]|return\b|print\s*\(|>>>|\$\s|"
    r"In\s*\[\d*\]|Out\s*\[\d*\]|@\w+|[\w.]+\s*\(.*\)\s*;?$|[\w.\[\], ]+\s*[-+*/%]?=\s*\S|[{}()\[\];]+$)"
)
_CODE_SYMBOLS = set("{}()[]=;<>_/\\|$`")
# "2.3 设置学习率的过程": a numbered title line without punctuation, used as a heading by web-page notes.
_TITLE_LINE = re.compile(r"^\d{1,2}(?:\.\d{1,2})*\.?\s+[^，,。；;：:！？!?、]{1,40}$")
_CITE_LIKE = re.compile(r"[\[［【]\s*\d+\s*[\]］】]")
_CJK = re.compile(r"[\u3400-\u9fff]")
_MEANINGFUL = re.compile(r"[\u3400-\u9fffA-Za-z0-9]")
_LIST_ITEM = re.compile(r"^(?:\d{1,2}\s*[、.．)）]|[（(]\d{1,2}[)）]|[①-⑳]|[-*+•●▪◦·]\s)")
# A sentence opening with a demonstrative leans on the one before it; one opening with a connective continues it.
_LEANS_BACK = re.compile(r"^(?:这|该|其|它|此|上述|(?:this|that|these|those|it|such)\b)", re.I)
_CONTINUES = re.compile(
    r"^(?:这|该|其|它|此|即|因此|所以|也就是|例如|比如|(?:this|it|such|so|thus|therefore)\b)", re.I
)
# "X 是什么" asks for a definition; "X 是指……" / "X is a ……" gives one.
_ASKS_DEFINITION = re.compile(
    r"是什么|什么是|指什么|是啥|啥是|什么意思|含义|定义|概念|(?:^|\b)(?:what\s+(?:is|are|does)|define|meaning\b)",
    re.I,
)
_DEFINES = re.compile(
    r"是指|指的是|是一种|是一个|是一类|定义为|称为|也叫|又称|的缩写|\b(?:is an?|are|refers? to|stands? for|means)\b",
    re.I,
)
_COLON_END = re.compile(r"[：:]\s*$")
_BULLET = re.compile(r"[-*+•●▪◦·]")


@dataclass
class _Sentence:
    """One candidate sentence of one passage; `start`/`end` index the passage's chunk.text."""

    passage: int  # 0-based index into passages
    pos: int  # index among the passage's sentences
    start: int
    end: int
    text: str
    kind: str  # "text", "heading", "code", "url", "short", "marker"
    line_start: bool
    gap_newline: bool  # a line break separates it from the previous sentence
    heading: str = ""  # the nearest heading above it (markdown or numbered title line)
    bullet: bool = False  # a list item ("- x", "• x", "1. x")
    matched_words: frozenset[str] = frozenset()  # query words it contains
    matched_grams: frozenset[str] = frozenset()  # query character bigrams / Latin terms it contains
    lex: float = 0.0  # IDF-weighted share of the query it covers by itself
    score: float = 0.0

    @property
    def ends_colon(self) -> bool:
        return _COLON_END.search(self.text) is not None


@dataclass(frozen=True)
class _Query:
    """IDF weights of the question's words and of its character bigrams / Latin terms."""

    words: dict[str, float]
    grams: dict[str, float]

    def coverage(self, words: set[str] | frozenset[str], grams: set[str] | frozenset[str]) -> float:
        """Weighted share of the query that these terms cover (0..1), words and bigrams equally."""
        w_total, g_total = sum(self.words.values()), sum(self.grams.values())
        w = sum(self.words[t] for t in words if t in self.words) / w_total if w_total else 0.0
        g = sum(self.grams[t] for t in grams if t in self.grams) / g_total if g_total else w
        return 0.5 * (w + g)


def _fenced_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of lines inside ``` fences (fence lines included)."""
    spans: list[tuple[int, int]] = []
    inside = False
    offset = 0
    for line in text.splitlines(keepends=True):
        fence = _FENCE.match(line) is not None
        if inside or fence:
            spans.append((offset, offset + len(line)))
        if fence:
            inside = not inside
        offset += len(line)
    return spans


def _url_only(text: str) -> bool:
    """A line made only of URLs / markdown links or images."""
    tokens = [t for t in re.split(r"[\s,，、;；]+", text) if t]
    return bool(tokens) and all(_URL_TOKEN.match(t) for t in tokens)


def _classify(raw_line: str, text: str, in_fence: bool) -> str:
    if in_fence:
        return "code"
    if _HEADING_LINE.match(raw_line) or _TITLE_LINE.match(text):
        return "heading"
    if _url_only(text):
        return "url"
    if _CITE_LIKE.search(text):
        return "marker"  # would be confused with our own citation markers
    if not _CJK.search(text):
        if _CODE_LINE.match(text):
            return "code"
        symbols = sum(1 for ch in text if ch in _CODE_SYMBOLS)
        if symbols >= 3 and symbols / max(1, len(text)) > 0.12:
            return "code"
    if len(_MEANINGFUL.findall(text)) < 4:
        return "short"
    return "text"


def _merged_spans(text: str) -> list[tuple[int, int]]:
    """sentence_spans, re-joining splits at an ASCII '!'/'?' glued between two non-blank characters ("10!种")."""
    merged: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        if (
            merged
            and text[merged[-1][1] - 1] in "!?"
            and merged[-1][1] >= 2
            and text[merged[-1][1] - 2].isalnum()
            and not text[start].isspace()
        ):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _split_passage(index: int, hit: Hit) -> list[_Sentence]:
    """Sentences of a passage, stripped of heading markers / bullets, classified."""
    text = hit.chunk.text
    fenced = _fenced_lines(text)
    out: list[_Sentence] = []
    prev_end = 0
    heading = hit.chunk.heading_path[-1] if hit.chunk.heading_path else ""
    for s, e in _merged_spans(text):
        piece = text[s:e]
        raw_start = s + len(piece) - len(piece.lstrip())
        line_begin = text.rfind("\n", 0, raw_start) + 1
        line_end = text.find("\n", raw_start)
        raw_line = text[line_begin : line_end if line_end >= 0 else len(text)]
        body = text[raw_start:e].rstrip()
        prefix = _PREFIX.match(body)
        body = (body[prefix.end() :] if prefix else body).strip()
        if not body:
            prev_end = e
            continue
        body_start = text.index(body, raw_start)
        in_fence = any(a <= body_start < b for a, b in fenced)
        kind = _classify(raw_line, body, in_fence)
        if kind == "heading":
            heading = body
        out.append(
            _Sentence(
                passage=index,
                pos=len(out),
                start=body_start,
                end=body_start + len(body),
                text=body,
                kind=kind,
                line_start=not text[line_begin:raw_start].strip(),
                gap_newline=bool(out) and "\n" in text[prev_end:body_start],
                heading=heading,
                bullet=bool(prefix and _BULLET.search(prefix.group())) or bool(_LIST_ITEM.match(body)),
            )
        )
        prev_end = e
    return out


def _clause_cut(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` chars, cut after a clause mark when possible."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(ch) for ch in "，,；;、：:）)")
    return head[: cut + 1] if cut >= limit // 2 else head


# ------------------------------------------------------------------------------------------ extractive


class ExtractiveGenerator:
    """Verbatim sentence extraction with [n] citations: fast, deterministic, no LLM."""

    name = "extractive"

    def __init__(self, settings: Settings, tokenizer: Tokenizer, embed_query: EmbedFn | None = None) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.embed_query = embed_query
        self.max_sentences = settings.answer_max_sentences
        self.max_chars = settings.answer_max_chars
        self.embed_candidates = 8  # at most this many sentences are embedded per answer (~10 ms each on CPU)
        self.embed_margin = 0.2  # ... and only those within this lexical score of the best (near-ties)

    def generate(self, question: str, passages: Sequence[Hit]) -> Answer:
        """The extractive Answer."""
        return _consume(self.stream(question, passages))

    def stream(self, question: str, passages: Sequence[Hit]) -> Iterator[str | Answer]:
        """Yield the answer line by line, then the Answer."""
        answer = self.answer(question, passages)
        pieces = answer.text.splitlines(keepends=True)
        yield from (piece for piece in pieces if piece)
        yield answer

    # ----------------------------------------------------------------------------- pipeline
    def answer(self, question: str, passages: Sequence[Hit]) -> Answer:
        """Select, order and cite sentences; refuse when there is nothing to quote."""
        sentences = [s for i, hit in enumerate(passages) for s in _split_passage(i, hit)]
        usable = [s for s in sentences if s.kind == "text"] or sentences  # headings, code, URLs: last resort
        if not usable:
            return refusal_answer(question)
        query = self._score(question, passages, usable)
        ranked = sorted(usable, key=lambda s: (-s.score, s.passage, s.pos))
        ranked = self._rerank_with_embeddings(question, ranked)
        text, chosen = self._render(self._select(ranked, sentences, query))
        cited = sorted({s.passage + 1 for s in chosen})
        citations = [
            self._citation(n, passages[n - 1], [s for s in chosen if s.passage == n - 1]) for n in cited
        ]
        return Answer(question=question, text=text, citations=citations, backend=self.name)

    def _score(self, question: str, passages: Sequence[Hit], sentences: list[_Sentence]) -> _Query:
        """IDF-weighted query coverage (own words, heading context), passage rank and position priors."""
        tok = self.tokenizer
        q_words = set(tok.tokenize(question))
        q_grams: set[str] = set()
        for word in q_words:
            q_grams |= char_bigrams(word)  # CJK bigrams; Latin terms come back whole
        word_sets = [set(tok.tokenize(s.text)) for s in sentences]
        gram_sets = [char_bigrams(s.text) for s in sentences]
        n = len(sentences)

        def idf(terms: set[str], sets: list[set[str]]) -> dict[str, float]:
            return {t: math.log(1.0 + (n + 1) / (sum(1 for x in sets if t in x) + 0.5)) for t in terms}

        query = _Query(idf(q_words, word_sets), idf(q_grams, gram_sets))
        wants_definition = _ASKS_DEFINITION.search(question) is not None
        context_cache: dict[tuple[int, str], tuple[set[str], set[str]]] = {}
        for s, words, grams in zip(sentences, word_sets, gram_sets, strict=True):
            s.matched_words = frozenset(q_words & words)
            s.matched_grams = frozenset(q_grams & grams)
            key = (s.passage, s.heading)
            if key not in context_cache:
                context = " ".join((*passages[s.passage].chunk.heading_path, s.heading))
                context_cache[key] = (set(tok.tokenize(context)), char_bigrams(context))
            ctx_words, ctx_grams = context_cache[key]
            s.lex = query.coverage(s.matched_words, s.matched_grams)
            inherited = query.coverage((q_words & ctx_words) - words, (q_grams & ctx_grams) - grams)
            lexical = s.lex + 0.4 * inherited
            rank_prior = 1.0 / (1.0 + 1.0 * s.passage)
            pos_prior = 1.0 / (1.0 + 0.2 * s.pos)
            length = min(1.0, len(_MEANINGFUL.findall(s.text)) / 15.0)
            defines = wants_definition and s.lex > 0 and _DEFINES.search(s.text) is not None
            s.score = 0.55 * lexical + 0.3 * rank_prior + 0.1 * pos_prior + 0.05 * length + 0.1 * defines
        return query

    def _rerank_with_embeddings(self, question: str, ranked: list[_Sentence]) -> list[_Sentence]:
        """Break near-ties among the few best candidates by query-sentence embedding similarity."""
        if self.embed_query is None or len(ranked) < 2:
            return ranked
        floor = ranked[0].score - self.embed_margin
        top = [s for s in ranked[: self.embed_candidates] if s.score >= floor]
        if len(top) < 2:
            return ranked  # a clear lexical winner: skip the embedding cost
        try:
            import numpy as np

            texts = [question] + [s.text[:200] for s in top]
            vectors = np.asarray(self.embed_query(texts), dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
            sims = vectors[1:] @ vectors[0]
        except Exception:  # an embedder failure only costs this refinement, never the answer
            log.warning(
                "embedding re-scoring of answer sentences failed; using lexical scores", exc_info=True
            )
            return ranked
        low, high = float(sims.min()), float(sims.max())
        spread = max(high - low, 0.1)  # a tiny spread is noise: do not stretch it to the full weight
        for s, sim in zip(top, sims, strict=True):
            s.score += 0.2 * (float(sim) - low) / spread
        return sorted(top, key=lambda s: (-s.score, s.passage, s.pos)) + ranked[len(top) :]

    def _select(
        self, ranked: list[_Sentence], all_sentences: list[_Sentence], query: _Query
    ) -> list[_Sentence]:
        """Best sentence, what it leans on or continues into, then other strong sentences, within bounds."""
        by_passage: dict[int, list[_Sentence]] = {}
        for s in all_sentences:
            by_passage.setdefault(s.passage, []).append(s)
        chosen: list[_Sentence] = []
        seen: list[str] = []
        used = 0

        def key(s: _Sentence) -> str:
            return re.sub(r"[\W_]+", "", normalize(s.text))

        def add(s: _Sentence) -> bool:
            nonlocal used
            k = key(s)
            if not k or any(k in other or other in k for other in seen):
                return False
            cost = len(s.text) + 5  # separator and "[n]"
            if chosen and (len(chosen) >= self.max_sentences or used + cost > self.max_chars):
                return False
            chosen.append(s)
            seen.append(k)
            used += cost
            return True

        def sibling(s: _Sentence, step: int) -> _Sentence | None:
            siblings = by_passage[s.passage]
            i = s.pos + step
            return siblings[i] if 0 <= i < len(siblings) else None

        def follow(s: _Sentence, limit: int) -> None:
            """Add what continues `s`: the items after a colon, or a next sentence that leans on it."""
            if s.ends_colon:  # the items that follow, one line each (an item's later sentences are skipped)
                nxt, taken = sibling(s, 1), 0
                while nxt is not None and taken < limit and nxt.kind == "text":
                    if nxt.line_start or taken == 0:
                        if not add(nxt):
                            break
                        taken += 1
                        if nxt.ends_colon:
                            break
                    nxt = sibling(nxt, 1)
                return
            nxt = sibling(s, 1)
            if (
                nxt is not None
                and nxt.kind == "text"
                and (_CONTINUES.match(nxt.text) or (_LIST_ITEM.match(nxt.text) and nxt.lex > 0))
            ):
                add(nxt)

        best = ranked[0]
        if not add(best):  # only when it has no word characters at all
            chosen.append(best)
        if _LEANS_BACK.match(best.text):  # "这种现象……" needs the sentence it refers to
            prev = sibling(best, -1)
            if prev is not None and prev.kind == "text" and not prev.ends_colon:
                add(prev)
        follow(best, limit=3)
        whole_list = False
        if best.bullet and best.line_start:
            # one item of a list under the asked-about heading: its sibling items complete the answer
            for sib in by_passage[best.passage]:
                if sib is not best and sib.bullet and sib.line_start and sib.kind == "text" and sib.heading == best.heading:
                    whole_list = add(sib) or whole_list
        # Fill greedily: base score plus what a sentence adds to the query coverage so far (so a second
        # subject of the question, e.g. the other half of a comparison, gets its sentence).
        pool = [s for s in ranked[1:] if s.kind == "text" and s.lex > 0 and s not in chosen]
        while pool and len(chosen) < self.max_sentences:
            covered_w = set().union(*(c.matched_words for c in chosen))
            covered_g = set().union(*(c.matched_grams for c in chosen))

            def gain(s: _Sentence, cw: set[str] = covered_w, cg: set[str] = covered_g) -> float:
                return query.coverage(s.matched_words - cw, s.matched_grams - cg)

            candidate = max(pool, key=lambda s: s.score + 0.5 * gain(s))
            pool.remove(candidate)
            if candidate.score < 0.6 * best.score and not (
                candidate.score >= 0.4 * best.score and gain(candidate) >= 0.2
            ):
                continue
            # Another passage earns a citation only with strong evidence: every extra source is one more
            # place the reader must check, and a weak one is usually a near-miss.
            if candidate.passage != best.passage and whole_list:
                continue  # a whole list already answers; other passages would only dilute it
            if candidate.passage != best.passage and not (
                candidate.passage < 3 and candidate.score >= 0.7 * best.score and gain(candidate) >= 0.35
            ):
                continue
            if add(candidate):
                follow(candidate, limit=2)
        return sorted(chosen, key=lambda s: (s.passage, s.start))

    def _render(self, chosen: list[_Sentence]) -> tuple[str, list[_Sentence]]:
        """Join sentences; one [n] after each run of adjacent sentences of one passage.

        Returns the text and the sentences it really contains (a lone over-long sentence is cut).
        """
        parts: list[str] = []
        previous: _Sentence | None = None
        for i, s in enumerate(chosen):
            if previous is not None:
                parts.append("\n" if (s.line_start or s.gap_newline or s.passage != previous.passage) else "")
            parts.append(s.text)
            nxt = chosen[i + 1] if i + 1 < len(chosen) else None
            if nxt is None or nxt.passage != s.passage or nxt.pos != s.pos + 1:
                parts.append(f"[{s.passage + 1}]")
            previous = s
        text = "".join(parts)
        if len(text) <= self.max_chars:
            return text, chosen
        first = chosen[0]
        marker = f"[{first.passage + 1}]"
        return f"{_clause_cut(first.text, self.max_chars - len(marker) - 1)}…{marker}", [first]

    def _citation(self, number: int, hit: Hit, cited: list[_Sentence]) -> Citation:
        """A citation whose snippet is the verbatim note text from the first to the last cited sentence."""
        chunk = hit.chunk
        start = min(s.start for s in cited)
        end = max(s.end for s in cited)
        return Citation(
            number=number,
            doc_id=chunk.doc_id,
            document=hit.document_title or chunk.doc_id,
            heading_path=tuple(chunk.heading_path),
            chunk_id=chunk.chunk_id,
            start=chunk.start,
            end=chunk.end,
            snippet=chunk.text[start:end],
            score=float(hit.score),
            snippet_start=chunk.start + start,
            snippet_end=chunk.start + end,
        )


# ------------------------------------------------------------------------------------------- prompts


@lru_cache(maxsize=8)
def load_prompt(name: str) -> string.Template:
    """A prompt template shipped as package data under rag/prompts/."""
    text = resources.files("rag").joinpath("prompts", name).read_text(encoding="utf-8")
    return string.Template(text)


_DELIM_RUN = re.compile(r"[<＜﹤〈《‹«]{3,}|[>＞﹥〉》›»]{3,}")


def neutralise(text: str) -> str:
    """Make text unable to contain a block delimiter: every run of 3+ angle brackets becomes two."""
    return _DELIM_RUN.sub(lambda m: m.group(0)[:2], text)


def format_passages(passages: Sequence[Hit]) -> str:
    """Numbered, delimited passage blocks with document title and heading path."""
    blocks = []
    for number, hit in enumerate(passages, start=1):
        chunk = hit.chunk
        title = neutralise(hit.document_title or chunk.doc_id)
        heading = neutralise(" > ".join(chunk.heading_path)) or "-"
        blocks.append(
            f"<<<PASSAGE {number}>>>\n"
            f"Document: {title}\n"
            f"Section: {heading}\n"
            f"Text:\n{neutralise(chunk.text.strip())}\n"
            f"<<<END PASSAGE {number}>>>"
        )
    return "\n\n".join(blocks)


def build_messages(question: str, passages: Sequence[Hit], max_sentences: int = 4) -> list[dict[str, str]]:
    """System + user messages for a retrieval-grounded answer."""
    system = load_prompt("system.txt").safe_substitute(
        refusal_zh=REFUSAL_ZH,
        refusal_en=REFUSAL_EN,
        n_passages=str(len(passages)),
        max_sentences=str(max_sentences),
    )
    user = load_prompt("user.txt").safe_substitute(
        passages=format_passages(passages),
        question=neutralise(question.strip()),
        refusal=refusal_sentence(question),
    )
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


# -------------------------------------------------------------------------------------- sanitising

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_LINK_TARGET = r"\((?:[^()\n]|\([^()\n]*\))*\)"  # one level of nested parentheses: (javascript:f(1))
_MD_IMAGE = re.compile(r"!\[[^\]\n]*\]" + _LINK_TARGET)
_MD_LINK = re.compile(r"\[([^\]\n]*)\]" + _LINK_TARGET)
_REF_DEF = re.compile(r"^\s*\[[^\]\n]+\]:\s*\S+.*$", re.M)
_HTML_BLOCK = re.compile(r"<(script|style|iframe|object|embed)\b.*?(?:</\1\s*>|$)", re.S | re.I)
_HTML_TAG = re.compile(
    r"</?(?:a|img|script|style|iframe|object|embed|svg|link|meta|form|input|button)\b[^>]*>?", re.I
)
_BAD_SCHEME = re.compile(
    r"(?:java\s*script|vb\s*script|livescript)\s*:[^\s)\]>\"'，。；]*|data:[a-z]+/[^\s)\]>\"'，。；]*|file://\S*",
    re.I,
)
_BARE_URL = re.compile(r"<?(?:https?|ftp)://[^\s<>\"'）)\]，。；]+>?", re.I)


def sanitize_reply(text: str, passages: Sequence[Hit] = ()) -> str:
    """Remove forged links from an LLM reply: markdown links/images, HTML tags, script URLs, foreign URLs.

    A markdown link keeps its label (a numeric label becomes a citation marker); bare http(s) URLs survive
    only when they occur verbatim in one of the passages. Passes repeat until nothing changes, so a removal
    cannot join the text around it into a new link or scheme ("java<http://x>script:").
    """
    for _ in range(len(text) + 1):  # a pass that changes the text shortens it: this terminates
        cleaned = _sanitize_pass(text, passages)
        if cleaned == text:
            break
        text = cleaned
    return text


def _sanitize_pass(text: str, passages: Sequence[Hit]) -> str:
    text = _THINK.sub("", text)
    text = _HTML_BLOCK.sub("", text)
    text = _MD_IMAGE.sub("", text)

    def link(match: re.Match[str]) -> str:
        label = match.group(1).strip()
        return f"[{label}]" if label.isdigit() else label

    text = _MD_LINK.sub(link, text)
    text = _REF_DEF.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _BAD_SCHEME.sub("", text)
    sources = [hit.chunk.text for hit in passages]

    def url(match: re.Match[str]) -> str:
        found = match.group(0).strip("<>")
        return match.group(0) if any(found in source for source in sources) else ""

    text = _BARE_URL.sub(url, text)
    return re.sub(r"(?<=\S)[ \t]{2,}(?=\S)", " ", text)  # gaps left by removals; indentation is kept


def _comparable(text: str) -> str:
    text = _MARKER.sub("", unicodedata.normalize("NFKC", text))
    return re.sub(r"[\W_]+", "", text.lower())


_REFUSALS = {_comparable(REFUSAL_ZH), _comparable(REFUSAL_EN)}


def is_refusal(text: str) -> bool:
    """True when the reply is the fixed refusal sentence (either language; citations, quotes ignored)."""
    return _comparable(text) in _REFUSALS


def _is_garbage(text: str) -> bool:
    """No letters or digits at all, or mostly replacement/control characters."""
    if not text.strip():
        return True
    letters = sum(1 for ch in text if ch.isalnum())
    broken = sum(
        1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\n\t\r")
    )
    return letters == 0 or broken / len(text) > 0.1


def _best_snippet(claim: str, hit: Hit) -> tuple[str, int, int]:
    """The passage sentence sharing most character bigrams with `claim`: (text, start, end) in chunk.text."""
    chunk_text = hit.chunk.text
    claim_grams = char_bigrams(claim)
    best: tuple[float, int, int] | None = None
    for s in _split_passage(0, hit):
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
        chunk = hit.chunk
        citations.append(
            Citation(
                number=number,
                doc_id=chunk.doc_id,
                document=hit.document_title or chunk.doc_id,
                heading_path=tuple(chunk.heading_path),
                chunk_id=chunk.chunk_id,
                start=chunk.start,
                end=chunk.end,
                snippet=snippet,
                score=float(hit.score),
                snippet_start=chunk.start + start,
                snippet_end=chunk.start + end,
            )
        )
    return citations


class _StreamCleaner:
    """Turns raw LLM deltas into safe deltas: holds back a tail that might still become a marker or link."""

    _PAIRS = {"[": "]", "［": "］", "【": "】"}

    def __init__(self, passages: Sequence[Hit]) -> None:
        self.passages = passages
        self.raw = ""
        self.emitted = ""

    def _safe_end(self) -> int:
        raw = self.raw
        end = len(raw)
        tail = re.search(r"[\x21-\x7e]+$", raw)  # a partial marker, URL or scheme may still be growing
        if tail:
            end = tail.start()
        for i in range(end - 1, max(0, end - 300) - 1, -1):
            ch = raw[i]
            if ch in self._PAIRS and self._PAIRS[ch] not in raw[i + 1 : end]:
                end = i  # an unclosed bracket
            elif ch == "(" and i > 0 and raw[i - 1] == "]" and ")" not in raw[i + 1 : end]:
                end = max(0, raw.rfind("[", 0, i))  # a link target still streaming: hold its label too
            elif (
                ch == "<"
                and (i + 1 >= end or re.match(r"[A-Za-z/!]", raw[i + 1]))
                and ">" not in raw[i + 1 : end]
            ):
                end = i  # an unclosed tag
        return end

    def _release(self, cleaned: str) -> str:
        if not cleaned.startswith(self.emitted) or len(cleaned) <= len(self.emitted):
            return ""
        new = cleaned[len(self.emitted) :]
        self.emitted = cleaned
        return new

    def feed(self, delta: str) -> str:
        """The newly safe text after adding `delta` ("" when nothing can be released yet)."""
        self.raw += delta
        safe = self.raw[: self._safe_end()]
        cleaned, _ = parse_citations(sanitize_reply(safe, self.passages), len(self.passages))
        return self._release(cleaned.lstrip())

    def flush(self, final_text: str) -> str:
        """The rest of the final text, when what was streamed is a prefix of it."""
        return self._release(final_text)


# -------------------------------------------------------------------------------------------- litellm


@lru_cache(maxsize=1)
def _litellm() -> Any:
    """Import litellm lazily (slow import; must not fetch its cost map from the internet)."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def litellm_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and sampling arguments for litellm.completion from the settings."""
    kwargs: dict[str, Any] = {
        "model": settings.llm_model,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
        "timeout": settings.llm_timeout,
        # Retries are done here (see LiteLLMGenerator): litellm's own num_retries needs tenacity.
        "num_retries": 0,
        "max_retries": 0,
    }
    if settings.llm_api_base:
        kwargs["api_base"] = settings.llm_api_base
    if settings.llm_api_key is not None:
        kwargs["api_key"] = settings.llm_api_key.get_secret_value()
    return kwargs


@dataclass(frozen=True)
class _Failure:
    """Why the LLM answer was abandoned."""

    code: str  # "timeout", "busy", "http", "connection", "empty", "garbage", "error"
    detail: str = ""


_REASONS = {
    "timeout": ("超时", "timeout"),
    "busy": ("并发已满，等待超时", "too many concurrent requests"),
    "http": ("服务返回错误", "the service returned an error"),
    "connection": ("连接失败", "connection failed"),
    "stream": ("流式输出中断", "the stream broke off"),
    "empty": ("返回空答案", "empty reply"),
    "garbage": ("返回内容无法解析", "unreadable reply"),
    "error": ("未知错误", "unexpected error"),
}


def fallback_note(code: str, question: str) -> str:
    """The visible note shown with an extractive stand-in answer."""
    zh, en = _REASONS.get(code, _REASONS["error"])
    if question_language(question) == "zh":
        return f"LLM 调用失败（{zh}），以下为抽取式答案"
    return f"LLM call failed ({en}); showing the extractive answer instead"


def classify_exception(exc: BaseException) -> _Failure:
    """Map an exception (by type) to a failure code."""
    import httpx
    import openai

    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return _Failure("timeout", type(exc).__name__)
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | ConnectionError):
        return _Failure("connection", type(exc).__name__)
    if isinstance(exc, openai.APIStatusError):
        code = "stream" if isinstance(exc, _litellm().exceptions.MidStreamFallbackError) else "http"
        return _Failure(code, f"{type(exc).__name__} {getattr(exc, 'status_code', '')}".strip())
    if isinstance(exc, openai.OpenAIError | httpx.HTTPError | GenerationError | ValueError):
        return _Failure("garbage" if isinstance(exc, ValueError) else "http", type(exc).__name__)
    return _Failure("error", type(exc).__name__)


def _retryable(exc: BaseException) -> bool:
    import httpx
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = getattr(exc, "status_code", 0) or 0
        return status >= 500 or status in (408, 409, 429)
    return isinstance(exc, openai.APIConnectionError | httpx.TransportError | TimeoutError | ConnectionError)


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    content = getattr(delta, "content", None) if delta is not None else None
    return content if isinstance(content, str) else ""


class LiteLLMGenerator:
    """Grounded answers from any litellm model, with extractive fallback on every kind of failure."""

    def __init__(self, settings: Settings, extractive: ExtractiveGenerator) -> None:
        if not settings.llm_model:
            raise GenerationError("LiteLLMGenerator needs settings.llm_model")
        self.settings = settings
        self.extractive = extractive
        self.model = settings.llm_model
        self.name = f"litellm:{settings.llm_model}"
        self._slots = threading.BoundedSemaphore(settings.llm_max_concurrency)

    def generate(self, question: str, passages: Sequence[Hit]) -> Answer:
        """The final Answer of `stream()`."""
        return _consume(self.stream(question, passages))

    def stream(self, question: str, passages: Sequence[Hit]) -> Iterator[str | Answer]:
        """Yield safe text deltas as the model streams, then the final (authoritative) Answer."""
        if not passages:
            yield self._refusal(question)
            return
        if not self._slots.acquire(timeout=self.settings.llm_timeout):
            yield self._fallback(question, passages, _Failure("busy"))
            return
        cleaner = _StreamCleaner(passages)
        failure: _Failure | None = None
        try:
            attempts = self.settings.llm_retries + 1
            for attempt in range(attempts):
                deltas = self._deltas(question, passages)
                try:
                    for delta in deltas:
                        safe = cleaner.feed(delta)
                        if safe:
                            yield safe
                    failure = None
                    break
                except Exception as exc:  # classified by type; an LLM failure never crashes the request
                    failure = classify_exception(exc)
                    if failure.code == "error":
                        log.exception("unexpected LLM failure (%s)", self.model)
                    else:
                        log.warning("LLM call failed (%s): %s %s", self.model, failure.code, failure.detail)
                    if cleaner.raw or attempt + 1 >= attempts or not _retryable(exc):
                        break
                    time.sleep(min(0.2 * (attempt + 1), 1.0))
                finally:
                    deltas.close()
        finally:
            self._slots.release()
        if failure is not None:
            yield self._fallback(question, passages, failure)
            return
        answer = self._finish(question, passages, cleaner.raw)
        if answer.backend == self.name and not answer.refused:
            rest = cleaner.flush(answer.text)
            if rest:
                yield rest
        yield answer

    def _deltas(self, question: str, passages: Sequence[Hit]) -> Iterator[str]:
        """Raw content deltas of one streaming call; raises on failure or when the call overruns its time."""
        litellm = _litellm()
        messages = build_messages(question, passages, self.settings.answer_max_sentences)
        # Time spent waiting for the model (not for our consumer) counts against llm_timeout.
        started = time.monotonic()
        response = litellm.completion(messages=messages, stream=True, **litellm_kwargs(self.settings))
        waited = time.monotonic() - started
        iterator = iter(response)
        try:
            while True:
                started = time.monotonic()
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                waited += time.monotonic() - started
                if waited > self.settings.llm_timeout:
                    raise TimeoutError(f"LLM stream exceeded {self.settings.llm_timeout}s")
                text = _delta_text(chunk)
                if text:
                    yield text
        finally:
            # litellm's stream wrapper has no close() (only aclose()): close the provider stream it wraps too,
            # so an abandoned answer ends the HTTP call now rather than whenever garbage collection gets to it.
            for stream in (response, getattr(response, "completion_stream", None)):
                close = getattr(stream, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:  # closing a broken stream must not mask the original outcome
                        log.debug("closing the LLM stream failed", exc_info=True)

    def _finish(self, question: str, passages: Sequence[Hit], raw: str) -> Answer:
        """Validate the complete reply: refusal, sanitising, citations, emptiness."""
        if not raw.strip():
            return self._fallback(question, passages, _Failure("empty"))
        cleaned = sanitize_reply(raw, passages)
        if is_refusal(cleaned):
            return self._refusal(question)
        text, numbers = parse_citations(cleaned, len(passages))
        text = text.strip()
        if not text:
            return self._fallback(question, passages, _Failure("empty"))
        if _is_garbage(_MARKER.sub("", text)):
            return self._fallback(question, passages, _Failure("garbage"))
        return Answer(
            question=question,
            text=text,
            citations=llm_citations(text, numbers, passages),
            backend=self.name,
            uncited=not numbers,
        )

    def _refusal(self, question: str) -> Answer:
        answer = refusal_answer(question)
        answer.backend = self.name
        return answer

    def _fallback(self, question: str, passages: Sequence[Hit], failure: _Failure) -> Answer:
        answer = self.extractive.generate(question, passages)
        answer.fallback_reason = fallback_note(failure.code, question)
        return answer


# ------------------------------------------------------------------------------------ follow-up rewrite

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
    lines = [line.strip() for line in _THINK.sub("", reply).splitlines() if line.strip()]
    if not lines:
        return None
    text = _REWRITE_PREFIX.sub("", lines[0]).strip().strip("\"'“”「」`").strip()
    if not text or len(text) > max(200, 3 * len(question) + 100) or _is_garbage(text) or is_refusal(text):
        return None
    return text


def rewrite_with_llm(
    question: str, history: Sequence[Turn], settings: Settings, tokenizer: Tokenizer | None = None
) -> str:
    """A standalone version of a follow-up question, written by the LLM (prompts/rewrite.txt).

    Without an earlier user question the question is returned as is; without an LLM, or when the call fails
    or its reply is unusable, the heuristic `resolve_followup` result is returned.
    """
    from rag.conversation import previous_user_questions, resolve_followup

    if not previous_user_questions(question, history):
        return question

    def heuristic() -> str:
        return resolve_followup(question, history, tokenizer if tokenizer is not None else Tokenizer())

    if not settings.llm_model:
        return heuristic()
    kwargs = litellm_kwargs(settings)
    kwargs.update(temperature=0.0, max_tokens=min(settings.llm_max_tokens, 200))
    try:
        response = _litellm().completion(
            messages=_rewrite_messages(question, history), stream=False, **kwargs
        )
        content = response.choices[0].message.content or ""
    except Exception as exc:  # classified for the log; the heuristic always stands in
        failure = classify_exception(exc)
        log.warning(
            "follow-up rewrite by LLM failed (%s %s); using the heuristic", failure.code, failure.detail
        )
        return heuristic()
    rewritten = _clean_rewrite(content, question)
    return rewritten if rewritten is not None else heuristic()
