"""Hybrid retrieval (BM25 + dense, score-fused; adjacent chunks merged and passages read on into the next chunk
of their section by `rag.chunk_merging`), judged by the relevance gate (`rag.relevance_gate`).

`Retriever.search` is the one code path behind `rag search`, `rag ask`, `/search` and `/ask`, so the
search test and the chat always rank the same passages the same way.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rag.aliases import AliasIndex
from rag.answer.sentence_form import count_in_chinese
from rag.answer_types import REMEDY_WORDS, is_remedy_verb, question_types, searched_attribute_names
from rag.chunk_merging import continued, merge_adjacent
from rag.config import Settings
from rag.crosslingual import (
    GENERIC_ANCHORS,
    TRANSLATION_NAMES,
    TermBridge,
    blended_translation,
    gloss_term,
    glossed_phrases,
    mixed_names,
    mostly_english,
    translated_query,
)
from rag.embedding import Embedder
from rag.fusion import rrf, score_fusion
from rag.index import IndexBackend
from rag.named_documents import document_names, named_documents, named_lifted
from rag.notes_spelling import first_passages, fix_asked_plainly, notes_spellings, respelled
from rag.relevance_gate import LATIN_WORD, GateDecision, RelevanceGate
from rag.sentence_ranking import best_sentence_similarities, rescored
from rag.text import (
    Tokenizer,
    is_cjk,
    normalize,
    singular,
    unglued,
)
from rag.types import Chunk, Hit, RetrievalMode

GLOSS_POOL = 10  # passages an English question's phrases are looked for as glosses in
MIN_COMMON_PASSAGES = 3  # a bridge target found in this many passages or fewer is never too common


class Reranker(Protocol):
    def predict(self, pairs: list[tuple[str, str]]) -> Any: ...


@dataclass
class SearchResult:
    query: str
    searched: str  # the query as searched: a term the notes never write spelled as they do (rag.notes_spelling)
    hits: list[Hit]
    gate: GateDecision
    mode: RetrievalMode
    timings: dict[str, float] = field(default_factory=dict)
    explanation: dict | None = None
    weighted_query: dict[str, float] = field(default_factory=dict)  # BM25 tokens with expansion weights
    query_vectors: np.ndarray | None = None  # (1, dim): the question's vector, or its translation's
    name_forms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # its names' forms (Latin; alias groups)
    phrase_forms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # its English phrases' Chinese names


def phrase_forms(expansions: list[dict] | None) -> dict[str, tuple[str, ...]]:
    """The Chinese names the glossary or the bridge gave each English phrase of several words the question
    spells: "discount factor" -> ("折扣率", "折扣因子")."""
    out: dict[str, tuple[str, ...]] = {}
    for item in expansions or []:
        matched = normalize(item.get("matched", ""))
        names = tuple(normalize(a) for a in item.get("added", ()) if is_cjk(a) and len(a) >= 2)
        if " " in matched.strip() and not is_cjk(matched) and names:
            out[matched] = names
    return out


class Retriever:
    """Searches one loaded index. Cheap to build; the engine makes a new one when the index is swapped."""

    def __init__(
        self,
        index: IndexBackend,
        embedder: Embedder,
        tokenizer: Tokenizer,
        aliases: AliasIndex,
        settings: Settings,
        reranker: Reranker | None = None,
        gate_weights: dict[str, float] | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.aliases = aliases
        self.settings = settings
        self.reranker = reranker
        documents = index.documents()
        self._titles = {d["doc_id"]: d["title"] for d in documents}
        self._names = document_names(documents)
        self._alias_of: dict[str, list[str]] = {}
        for group in index.alias_groups:
            for member in group:
                # an acronym may stand in several groups: it stands for all their members
                self._alias_of.setdefault(normalize(member), []).extend(group)
        self.gate = RelevanceGate(index, tokenizer, self._alias_of, settings.gate_threshold, gate_weights)
        self._term_rows = {term: row for row, term in enumerate(index.vector_terms)}
        # a term found in more than 5% of the passages (and more than a few: in a small knowledge base every term
        # is in 5% of them) says nothing about any of them: never a bridge target
        common = max(0.05 * len(index), MIN_COMMON_PASSAGES)
        everywhere = {t for t in index.vector_terms if index.doc_freq(normalize(t)) > common}
        self.bridge = TermBridge(
            index.alias_groups,
            index.vector_terms,
            index.term_vectors,
            threshold=settings.cross_lingual_threshold,
            exclude=everywhere,
        )

    def search(
        self,
        query: str,
        *,
        top_k: int | None = None,
        mode: RetrievalMode = "hybrid",
        explain: bool = False,
        expansion: bool | None = None,
        rows: Collection[int] | None = None,
    ) -> SearchResult:
        """Rank passages for `query` and decide whether they answer it.

        `rows`: rank only these chunk rows (a search filtered by tags or folder); None ranks every chunk.
        """
        s = self.settings
        top_k = top_k or s.top_k
        n = max(s.candidates, top_k * 3)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()

        asked = query
        fixes: dict[str, str] = {}
        if not mostly_english(query):  # "过拟合怎么办" is searched, judged and read as "过拟合怎么解决"
            query, fixes = fix_asked_plainly(query)
        tokens = unglued(self.tokenizer.tokenize(query), self.index.has_term)
        use_expansion = s.query_expansion if expansion is None else expansion
        translated = query_vector = None
        spellings = notes_spellings(query, tokens, self.tokenizer, self.index) if use_expansion and not mostly_english(query) else {}
        if spellings:  # "全量微调" is searched, judged and read as the notes write it: "全参数微调"
            query = respelled(query, spellings)
            tokens = unglued(self.tokenizer.tokenize(query), self.index.has_term)
        spellings = {**fixes, **spellings}
        if use_expansion:
            weighted, expansions = self.aliases.expand_explained(tokens, self.tokenizer, query)
            if s.cross_lingual and mostly_english(query):
                translated, query_vector = self._bridge(query, weighted, expansions)
        else:
            weighted, expansions = dict.fromkeys(tokens, 1.0), []
        # passages ranked by their best sentence afterwards are fetched from deeper down: a paraphrase's passage
        # that BM25 ranks 40th and the dense model 2nd then counts both, and its best sentence can lift it
        rescoring = mode == "hybrid" and s.sentence_weight > 0 and self.reranker is None and not mostly_english(query)
        deep = max(n, s.deep_candidates) if rescoring and s.fusion == "score" else n
        bm25 = self.index.keyword_search(weighted, deep if rows is None else len(self.index)) if weighted else []
        if rows is not None:
            bm25 = [(row, score) for row, score in bm25 if row in rows][:deep]
        t1 = time.perf_counter()
        timings["bm25_ms"] = (t1 - t0) * 1000

        # An English question with a translation (the question followed by the Chinese names its terms stand
        # for) is embedded as that translation alone: the ranking and the gate both judge it through the names
        # the notes use, and one sequence costs half of embedding the question and its translation side by side.
        # The bridge's model call may have computed that vector already.
        if query_vector is not None:
            vectors = query_vector[None, :]
        else:
            vectors = self.embedder.embed_queries([translated or query])
        dense = self._dense(vectors[0], deep, rows)
        t2 = time.perf_counter()
        timings["dense_ms"] = (t2 - t1) * 1000

        bm25_rank = {row: (rank, score) for rank, (row, score) in enumerate(bm25, start=1)}
        dense_rank = {row: (rank, score) for rank, (row, score) in enumerate(dense, start=1)}
        if mode == "bm25":
            fused = [(row, score, {"bm25": score}) for row, score in bm25]
        elif mode == "dense":
            fused = [(row, score, {"dense": score}) for row, score in dense]
        elif s.fusion == "rrf":
            fused = rrf(
                {"bm25": [r for r, _ in bm25], "dense": [r for r, _ in dense]},
                k=s.rrf_k,
                weights={"bm25": s.bm25_weight, "dense": s.dense_weight},
            )
        else:
            # every candidate gets its exact dense similarity, so a passage only BM25 found is not scored as
            # if the dense model had rejected it
            candidates = list(dict.fromkeys([r for r, _ in bm25] + [r for r, _ in dense]))
            similarity = self.index.similarities(vectors, candidates)
            fused = score_fusion(
                {"bm25": dict(bm25), "dense": dict(zip(candidates, map(float, similarity), strict=True))},
                weights={"bm25": s.bm25_weight, "dense": s.dense_weight},
                basis=list(dict.fromkeys([r for r, _ in bm25[:n]] + [r for r, _ in dense[:n]])),
            )
        fused = fused[: max(top_k * 3, 10)]
        rows = [int(row) for row, _, _ in fused]
        chunks = dict(zip(rows, self.index.chunks(rows), strict=True))
        hits = []
        for row, score, _parts in fused:
            # a single-retriever mode reports only the evidence it ranked by
            b = bm25_rank.get(row) if mode != "dense" else None
            d = dense_rank.get(row) if mode != "bm25" else None
            hits.append(
                Hit(
                    chunk=chunks[row],
                    score=float(score),
                    rank=0,
                    bm25_score=b[1] if b else None,
                    bm25_rank=b[0] if b else None,
                    dense_score=d[1] if d else None,
                    dense_rank=d[0] if d else None,
                    chunk_ids=(chunks[row].chunk_id,),
                )
            )
        if self.reranker is not None and hits:
            hits = self._rerank(query, hits)
        elif hits and rescoring:
            # an English question's similarities to single Chinese sentences run low and flat: they would only
            # add noise to a ranking its bridged names already steer
            similarities = best_sentence_similarities(self.index, vectors[0], hits)
            if similarities is not None:
                hits = rescored(hits, similarities, s.sentence_weight)
        # each candidate's sentence evidence, for explain: before a named note's lift and before merging (which
        # gives a merged hit another chunk)
        by_chunk = {h.chunk.chunk_id: h for h in hits} if explain else {}
        named = named_documents(query, self._names)
        hits = named_lifted(hits, named)  # "周会记录里……": that note's passages lifted
        merged = merge_adjacent(hits)
        merged = continued(merged, self._following(merged, chunks))
        hits = merged[:top_k]
        for rank, hit in enumerate(hits, start=1):
            hit.rank = rank
            hit.document_title = self._titles.get(hit.chunk.doc_id, hit.chunk.doc_id)
        t3 = time.perf_counter()
        timings["fuse_ms"] = (t3 - t2) * 1000

        # the gate reads the top 3 passages whatever the caller's top_k: that is what it was calibrated on
        features = self.gate.features(query, weighted, merged, dense, bm25, expansions)
        gate = self.gate.decide(features)
        timings["gate_ms"] = (time.perf_counter() - t3) * 1000
        timings["retrieval_ms"] = (time.perf_counter() - t0) * 1000

        explanation = None
        if explain:
            explanation = {
                "query": asked,
                "notes_spellings": spellings,
                "tokens": tokens,
                "expansions": expansions,
                "translated_query": translated,
                "named_documents": sorted(named),
                "weighted_query": weighted,
                "bm25": [
                    {
                        "rank": rank,
                        "chunk_id": self.index.chunks([row])[0].chunk_id,
                        "score": round(score, 4),
                        "matched_terms": self._matched_terms(row, weighted),
                    }
                    for rank, (row, score) in enumerate(bm25[:10], start=1)
                ],
                "dense": [
                    {"rank": rank, "chunk_id": self.index.chunks([row])[0].chunk_id, "similarity": round(score, 4)}
                    for rank, (row, score) in enumerate(dense[:10], start=1)
                ],
                "fused": [
                    {
                        "rank": rank,
                        "chunk_id": chunks[int(row)].chunk_id,
                        "score": round(score, 6),
                        "contributions": {k: round(v, 6) for k, v in parts.items()},
                        **_sentence_evidence(by_chunk[chunks[int(row)].chunk_id], score),
                    }
                    for rank, (row, score, parts) in enumerate(fused[:10], start=1)
                ],
                "gate": {
                    "answerable": gate.answerable,
                    "score": round(gate.score, 4),
                    "threshold": gate.threshold,
                    "features": {k: round(v, 4) for k, v in gate.features.items()},
                    "reason": gate.reason,
                },
                "mode": mode,
                "top_k": top_k,
            }
        return SearchResult(
            query=asked,
            searched=query,
            hits=hits,
            gate=gate,
            mode=mode,
            timings=timings,
            explanation=explanation,
            weighted_query=dict(weighted),
            query_vectors=vectors,
            name_forms=self.gate.name_forms(query, expansions),
            phrase_forms=phrase_forms(expansions),
        )

    def _following(self, hits: Sequence[Hit], chunks: dict[int, Chunk]) -> list[Chunk | None]:
        """The chunk after each hit's last one (`chunks`: the hits' chunks by row). Ingest writes a note's chunks
        in order, one row after the other; `continued` checks that the one after is of the same section."""
        row_of = {chunk.chunk_id: row for row, chunk in chunks.items()}
        last = [max((row_of[i] for i in hit.chunk_ids if i in row_of), default=None) for hit in hits]
        after = [row + 1 if row is not None and row + 1 < len(self.index) else None for row in last]
        wanted = sorted({row for row in after if row is not None})
        found = dict(zip(wanted, self.index.chunks(wanted), strict=True))
        return [found.get(row) if row is not None else None for row in after]

    def _dense(self, vector: np.ndarray, n: int, rows: Collection[int] | None) -> list[tuple[int, float]]:
        """Top-n (row, cosine) over every chunk, or exactly over `rows` when the search is filtered."""
        if rows is None:
            return self.index.dense_search(vector, n)
        candidates = sorted(rows)
        if not candidates:
            return []
        scores = self.index.similarities(vector[None, :], candidates)
        return sorted(zip(candidates, map(float, scores), strict=True), key=lambda item: (-item[1], item[0]))[:n]

    def _bridge(
        self, query: str, weighted: dict[str, float], expansions: list[dict]
    ) -> tuple[str | None, np.ndarray | None]:
        """The cross-lingual part of the expansion, for an English question; updates `weighted` and
        `expansions` in place. Returns the question with the Chinese names of its terms (or None), and the
        question's own vector when the bridge's model call computed it (or None).

        English names the glossary matched bring their Chinese aliases; the remaining English phrases are
        linked by the term bridge to Chinese-only terms, whose names join the BM25 query like aliases.
        """
        names: list[str] = []
        matched_words: set[str] = set()
        for item in expansions:
            if not is_cjk(item["matched"]):
                matched_words.update(singular(w) for w in LATIN_WORD.findall(normalize(item["matched"])))
                names.extend([m for m in item["added"] if is_cjk(m)][:2])

        # English phrases the notes name in Chinese where the glossary does not link them: a gloss after a
        # Chinese term ("指令微调（instruction tuning，…）"), a name half in Chinese ("CAP理论"); as sure as an alias
        for phrase, term in self._named_in_notes(query, weighted).items():
            added = self.aliases.add_names(weighted, [term], self.tokenizer, expansions)
            expansions.append({"matched": phrase, "added": [term], "tokens": added, "named_in_notes": term})
            matched_words.update(phrase.split())
            names.append(term)

        # An attribute the notes name in Chinese ("limitations": a section "## 不足"), searched as a weak alias
        for word in [w for w, weight in weighted.items() if weight == 1.0 and not self.index.has_term(w)]:
            attribute = [n for n in searched_attribute_names(word) if self.index.has_term(n)]
            if attribute:
                added = self.aliases.add_names(weighted, attribute, self.tokenizer, expansions)
                expansions.append({"matched": word, "added": attribute, "tokens": added, "attribute": True})

        # a verb of remedy ("How to prevent overfitting?"): the notes' own words for it ("能有效防止过拟合",
        # "欠拟合的解决方法"), searched as a weak alias, whatever else the notes write the verb in ("reduce_sum");
        # not when the question asks why something remedies ("Why does dropout reduce overfitting?")
        remedy = next((w for w, weight in weighted.items() if weight == 1.0 and is_remedy_verb(w)), None)
        if remedy is not None and "cause" not in question_types(query):
            remedies = [n for n in REMEDY_WORDS if self.index.has_term(n)]
            if remedies:
                added = self.aliases.add_names(weighted, remedies, self.tokenizer, expansions)
                expansions.append({"matched": remedy, "added": remedies, "tokens": added, "attribute": True})

        # a count of parts the notes write in Chinese ("two main parts": 两个部分), searched as a weak alias too
        counted = list(count_in_chinese(query))
        if counted:
            added = self.aliases.add_names(weighted, counted, self.tokenizer, expansions)
            expansions.append({"matched": "count", "added": counted, "tokens": added, "count": True})

        # The question, with the names the glossary gave it, rides in the phrases' model call: the default
        # encoder packs a few short texts into one sequence (no padding to the question's length). The names
        # the bridge links are blended in from their stored vectors: no second model call.
        glossary_names = list(dict.fromkeys(names))[:TRANSLATION_NAMES]
        provisional = translated_query(query, names) if names else query
        query_vector: np.ndarray | None = None

        def embed_with_query(phrases: Sequence[str]) -> np.ndarray:
            nonlocal query_vector
            vectors = self.embedder.embed_queries([*phrases, provisional])
            query_vector = vectors[-1]
            return vectors[:-1]

        if self.bridge.needs_anchors:  # a small knowledge base: measured once, on its first English question
            self.bridge.use_anchors(self.embedder.embed_queries(GENERIC_ANCHORS))
        for bridge in self.bridge.link(query, embed_with_query, matched_words, known=self.index.has_term):
            chinese = [name for name in bridge.names if is_cjk(name)]
            added = self.aliases.add_names(weighted, chinese, self.tokenizer, expansions)
            expansions.append(
                {
                    "matched": bridge.phrase,
                    "added": chinese,
                    "tokens": added,
                    "bridged_to": bridge.term,
                    "similarity": round(bridge.score, 4),
                }
            )
            names.extend(chinese[:2])
        if not names:
            return None, query_vector
        bridged = [n for n in dict.fromkeys(names) if n not in glossary_names][: TRANSLATION_NAMES - len(glossary_names)]
        if query_vector is not None and bridged:
            rows = [self._term_rows.get(name) for name in bridged]
            if all(row is not None for row in rows):
                vectors = [self.index.term_vectors[row] for row in rows]
                query_vector = blended_translation(query_vector, provisional, bridged, vectors)
            else:  # a name without a stored vector: the translation is embedded after all
                query_vector = None
        return translated_query(query, names), query_vector

    def _named_in_notes(self, query: str, weighted: dict[str, float]) -> dict[str, str]:
        """{English phrase: the notes' Chinese name for it} from the passages BM25 ranks first for the
        question's own English words: a phrase they give as a gloss (`glossed_phrases`: "full fine tuning" is
        全参数微调 there, whatever the glossary made of "fine tuning"), or a name and its kind they write half
        in Chinese (`mixed_names`: "CAP theorem" is CAP理论)."""
        own = {token: 1.0 for token, weight in weighted.items() if weight == 1.0 and not is_cjk(token)}
        texts = first_passages(self.index, own, GLOSS_POOL)
        if not texts:
            return {}
        named = {
            phrase: gloss_term(run, self.tokenizer.pieces(run), self.tokenizer.is_user_word)
            for phrase, run in glossed_phrases(query, texts).items()
        }
        return named | {phrase: name for phrase, name in mixed_names(query, texts).items() if phrase not in named}

    def _matched_terms(self, row: int, weighted: dict[str, float]) -> list[str]:
        text = normalize(self.index.chunks([row])[0].index_text)
        return [t for t in weighted if t in text]

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        assert self.reranker is not None
        scores = self.reranker.predict([(query, h.chunk.index_text) for h in hits])
        for hit, score in zip(hits, np.asarray(scores, dtype=float).ravel(), strict=True):
            hit.rerank_score = float(score)
            hit.score = float(score)
        return sorted(hits, key=lambda h: -h.score)


def _sentence_evidence(hit: Hit, fused_score: float) -> dict[str, float]:
    """A candidate's best sentence similarity and what it moved its score by (nothing when not compared)."""
    if hit.sentence_similarity is None:
        return {}
    return {"best_sentence": round(hit.sentence_similarity, 4), "sentence_shift": round(hit.score - fused_score, 6)}
