"""The extractive answerer: the most relevant verbatim sentences of the passages, each cited with [n].

No LLM: fast and deterministic. Sentences are scored by IDF-weighted query coverage (their own words and the
heading above them), passage rank and position; near-ties among the best few are broken by embedding
similarity when an embedder is given. n is the 1-based position of the sentence's passage.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag.answer.base import EmbedFn, consume, question_language, refusal_answer
from rag.answer.citations import citation_from_hit
from rag.answer.reader import Reading
from rag.answer.sentence_form import LEANS_BACK
from rag.answer.sentences import LIST_ITEM, MEANINGFUL, Sentence, clause_cut, split_passage
from rag.answer.spans import compose
from rag.text import Tokenizer, char_bigrams, normalize
from rag.types import Answer, Citation, Hit

if TYPE_CHECKING:
    from rag.config import Settings

log = logging.getLogger(__name__)

# A sentence opening with a demonstrative leans on the one before it; one opening with a connective continues it.
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

# English sentences on one line keep the space between them ("linear; merge keeps", "pulled.[1] Rebase"); Chinese
# ones join without one, as written.
_LATIN_END = re.compile(r"[A-Za-z0-9.,;:!?)\]`'\"]\Z")
_LATIN_START = re.compile(r"[A-Za-z0-9`(\"']")

# Said after the quote when the question asks for a formula or a number that no retrieved sentence gives.
_NOT_STATED = {
    "zh": {"formula": "（笔记中没有给出具体公式。）", "number": "（笔记中没有给出具体数值。）"},
    "en": {"formula": "(The notes give no formula for this.)", "number": "(The notes give no figure for this.)"},
}


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

    def generate(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Answer:
        """The extractive Answer."""
        return consume(self.stream(question, passages, reading))

    def stream(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Iterator[str | Answer]:
        """Yield the answer line by line, then the Answer."""
        answer = self.answer(question, passages) if reading is None else self.answer_from(question, passages, reading)
        pieces = answer.text.splitlines(keepends=True)
        yield from (piece for piece in pieces if piece)
        yield answer

    def rewrite(self, messages: list[dict[str, str]]) -> str | None:
        """No model to ask: None (the follow-up heuristic stands in)."""
        return None

    # ----------------------------------------------------------------------------- with the reader
    def answer_from(self, question: str, passages: Sequence[Hit], reading: Reading) -> Answer:
        """The reader's best span (and a second passage's where the question has two parts), cited."""
        chosen, missing = compose(reading, len(passages), max_chars=self.max_chars)
        if not chosen:
            return refusal_answer(question)
        text, chosen = self._render(chosen)
        if missing:
            text += "\n" + _NOT_STATED[question_language(question)][missing]
        cited = sorted({s.passage + 1 for s in chosen})
        citations = [
            self._citation(n, passages[n - 1], [s for s in chosen if s.passage == n - 1]) for n in cited
        ]
        return Answer(question=question, text=text, citations=citations, backend=self.name)

    # ----------------------------------------------------------------------------- without the reader
    def answer(self, question: str, passages: Sequence[Hit]) -> Answer:
        """Select, order and cite sentences; refuse when there is nothing to quote."""
        sentences = [s for i, hit in enumerate(passages) for s in split_passage(i, hit)]
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

    def _score(self, question: str, passages: Sequence[Hit], sentences: list[Sentence]) -> _Query:
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
            length = min(1.0, len(MEANINGFUL.findall(s.text)) / 15.0)
            defines = wants_definition and s.lex > 0 and _DEFINES.search(s.text) is not None
            s.score = 0.55 * lexical + 0.3 * rank_prior + 0.1 * pos_prior + 0.05 * length + 0.1 * defines
        return query

    def _rerank_with_embeddings(self, question: str, ranked: list[Sentence]) -> list[Sentence]:
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

    def _select(self, ranked: list[Sentence], all_sentences: list[Sentence], query: _Query) -> list[Sentence]:
        """Best sentence, what it leans on or continues into, then other strong sentences, within bounds."""
        by_passage: dict[int, list[Sentence]] = {}
        for s in all_sentences:
            by_passage.setdefault(s.passage, []).append(s)
        chosen: list[Sentence] = []
        seen: list[str] = []
        used = 0

        def key(s: Sentence) -> str:
            return re.sub(r"[\W_]+", "", normalize(s.text))

        def add(s: Sentence) -> bool:
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

        def sibling(s: Sentence, step: int) -> Sentence | None:
            siblings = by_passage[s.passage]
            i = s.pos + step
            return siblings[i] if 0 <= i < len(siblings) else None

        def follow(s: Sentence, limit: int) -> None:
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
                and (_CONTINUES.match(nxt.text) or (LIST_ITEM.match(nxt.text) and nxt.lex > 0))
            ):
                add(nxt)

        best = ranked[0]
        if not add(best):  # only when it has no word characters at all
            chosen.append(best)
        if LEANS_BACK.match(best.text):  # "这种现象……" needs the sentence it refers to
            prev = sibling(best, -1)
            if prev is not None and prev.kind == "text" and not prev.ends_colon:
                add(prev)
        follow(best, limit=3)
        whole_list = False
        if best.bullet and best.line_start:
            # one item of a list under the asked-about heading: its sibling items complete the answer
            for sib in by_passage[best.passage]:
                if (
                    sib is not best
                    and sib.bullet
                    and sib.line_start
                    and sib.kind == "text"
                    and sib.heading == best.heading
                ):
                    whole_list = add(sib) or whole_list
        # Fill greedily: base score plus what a sentence adds to the query coverage so far (so a second
        # subject of the question, e.g. the other half of a comparison, gets its sentence).
        pool = [s for s in ranked[1:] if s.kind == "text" and s.lex > 0 and s not in chosen]
        while pool and len(chosen) < self.max_sentences:
            covered_w = set().union(*(c.matched_words for c in chosen))
            covered_g = set().union(*(c.matched_grams for c in chosen))

            def gain(s: Sentence, cw: set[str] = covered_w, cg: set[str] = covered_g) -> float:
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

    def _render(self, chosen: list[Sentence]) -> tuple[str, list[Sentence]]:
        """Join sentences; one [n] after each run of adjacent sentences of one passage on one line (every line
        a reader sees ends with its source), and after a code block rather than inside it.

        Returns the text and the sentences it really contains (a lone over-long sentence is cut).
        """
        parts: list[str] = []
        previous: Sentence | None = None
        for i, s in enumerate(chosen):
            if previous is not None:
                parts.append("\n" if _new_line(s, previous) else " " if _latin_join(parts[-1], s.text) else "")
            parts.append(s.text)
            nxt = chosen[i + 1] if i + 1 < len(chosen) else None
            run_ends = nxt is None or nxt.passage != s.passage or nxt.pos != s.pos + 1
            if run_ends or (_new_line(nxt, s) and s.kind != "code"):
                # a code block keeps its lines as written: its source follows its closing fence, on a line of its own
                parts.append(("\n" if s.text.lstrip().startswith("```") else "") + f"[{s.passage + 1}]")
            previous = s
        text = "".join(parts)
        if len(text) <= self.max_chars:
            return text, chosen
        first = chosen[0]
        marker = f"[{first.passage + 1}]"
        return f"{clause_cut(first.text, self.max_chars - len(marker) - 1)}…{marker}", [first]

    def _citation(self, number: int, hit: Hit, cited: list[Sentence]) -> Citation:
        """A citation whose snippet is the verbatim note text from the first to the last cited sentence."""
        chunk = hit.chunk
        start = min(s.start for s in cited)
        end = max(s.end for s in cited)
        return citation_from_hit(number, hit, chunk.text[start:end], start=start, end=end)


def _latin_join(before: str, after: str) -> bool:
    """Whether two pieces of one answer line meet as English text does, with a space."""
    return bool(_LATIN_END.search(before)) and bool(_LATIN_START.match(after))


def _new_line(s: Sentence, previous: Sentence) -> bool:
    """Whether `s` starts a new line of the answer: a new line of the note, another passage, or a step back
    within the passage."""
    if s.continues and s.passage == previous.passage and s.pos == previous.pos + 1:
        return False  # the note's line break fell inside the sentence
    return s.line_start or s.gap_newline or s.passage != previous.passage or s.pos < previous.pos
