"""The reader: judges, sentence by sentence, whether the top passages answer the question.

It sits between retrieval and the answer. Every sentence of the top passages (headings, links and citation-like
lines excluded) becomes a candidate with the general features of `reader_features`; a linear model fitted on
labelled sentences (`scripts/fit_reader.py`, weights shipped as `reader_weights.json`) ranks them, and a
second small model decides from the best candidates and the relevance gate whether any sentence answers at
all (`refusal_rules` refuses some questions whatever it says). The extractive answer quotes the best span, the
engine refuses when no sentence answers, the LLM prompt gets the passages in reader order with the top sentences
marked, and explanations show the figures.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

import numpy as np

from rag.answer.leading import (
    figure_first,
    leading_first,
    naming_topic,
    subject_phrase_names,
    translation_first,
)
from rag.answer.reader_features import (
    CandidateContext,
    QuestionProfile,
    candidate_features,
    coverage,
    degree_variants,
    profile_question,
    question_features,
    rarity_weights,
    reader_text,
)
from rag.answer.refusal_rules import lacks_figure, passages_naming, read_text, refusal_rule, subject_names
from rag.answer.sentence_form import count_asked, list_lead_in, name_given_after
from rag.answer.sentences import Sentence, lines_before, sentence_run, split_passage, whole_sentence
from rag.answer_types import (
    DRAWBACK_NAMED,
    REMEDY_WORDS,
    asks_remedy,
    attribute_translations,
    is_remedy_verb,
    searched_attribute_names,
)
from rag.question_names import names_asked_together
from rag.question_subject import GENERIC, content_terms
from rag.text import Tokenizer, fold_hyphens, is_cjk, known_words, normalize
from rag.types import Chunk, Hit

log = logging.getLogger(__name__)

READ_PASSAGES = 5  # the reader reads this many top passages, whatever the caller's top_k
NOT_CANDIDATES = frozenset({"heading", "url", "marker"})
MAX_EMBEDDED_NOW = 8  # sentences without a stored vector embedded at question time (the rest get the floor)
WEIGHTS_FILE = "reader_weights.json"
# An English question whose words (and their Chinese translations) no candidate holds this much of reads the notes
# only across languages: its own ranker orders the candidates (`reads_across_languages`).
ACROSS_LANGUAGES_COVER = 0.3


class IndexTerms(Protocol):
    """What the reader needs of the index: term statistics and the stored sentence vectors."""

    def idf(self, term: str) -> float: ...

    def has_term(self, term: str) -> bool: ...

    def __len__(self) -> int: ...

    def reader_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Candidate:
    """One sentence of one passage, with its features and the reader's score."""

    sentence: Sentence
    features: dict[str, float]
    score: float = 0.0

    @property
    def passage(self) -> int:
        return self.sentence.passage


@dataclass
class Reading:
    """The reader's verdict on one question over its passages."""

    profile: QuestionProfile
    candidates: list[Candidate]  # best first
    sentences: list[list[Sentence]]  # every sentence of every passage read, by passage
    answerable: bool
    probability: float
    threshold: float
    features: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    veto: str = ""  # why a rule refuses whatever the probability ("" when none does)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def explain(self, hits: Sequence[Hit], top: int = 5) -> dict[str, Any]:
        """The top sentences with their figures, for `--explain` and `explain: true`."""
        return {
            "answerable": self.answerable,
            "probability": round(self.probability, 4),
            "threshold": self.threshold,
            "reason": self.reason,
            "question_types": sorted(self.profile.types),
            "features": {k: round(v, 4) for k, v in self.features.items()},
            "top_sentences": [
                {
                    "passage": c.passage + 1,
                    "doc_id": hits[c.passage].chunk.doc_id,
                    "document": hits[c.passage].document_title or hits[c.passage].chunk.doc_id,
                    "heading_path": list(hits[c.passage].chunk.heading_path),
                    "sentence": c.sentence.text,
                    "start": hits[c.passage].chunk.start + c.sentence.start,
                    "end": hits[c.passage].chunk.start + c.sentence.end,
                    "score": round(c.score, 4),
                    "features": {k: round(v, 4) for k, v in c.features.items() if v},
                }
                for c in self.candidates[:top]
            ],
        }


@dataclass(frozen=True)
class Ranker:
    """A linear sentence ranker over standardized features."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ranker:
        return cls(
            features=tuple(data["features"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            weights=np.asarray(data["weights"], dtype=np.float64),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist()}

    def scores(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        x = np.array([[r.get(k, 0.0) for k in self.features] for r in rows], dtype=np.float64)
        return ((x - self.mean) / self.scale) @ self.weights


@dataclass(frozen=True)
class ReaderModel:
    """Fitted weights: sentence rankers (one for every question, and one of its own for English questions,
    which read Chinese notes through cross-lingual vectors rather than shared words) and an answerability
    model, all linear over standardized features."""

    sentence: Ranker
    question_features: tuple[str, ...]
    question_mean: np.ndarray
    question_scale: np.ndarray
    question_weights: np.ndarray
    question_bias: float
    threshold: float
    english: Ranker | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReaderModel:
        q = data["question"]
        return cls(
            sentence=Ranker.from_dict(data["sentence"]),
            question_features=tuple(q["features"]),
            question_mean=np.asarray(q["mean"], dtype=np.float64),
            question_scale=np.asarray(q["scale"], dtype=np.float64),
            question_weights=np.asarray(q["weights"], dtype=np.float64),
            question_bias=float(q["bias"]),
            threshold=float(q["threshold"]),
            english=Ranker.from_dict(data["sentence_english"]) if data.get("sentence_english") else None,
        )

    def rank_scores(self, rows: Sequence[Mapping[str, float]], *, english: bool = False) -> np.ndarray:
        """Each candidate's score (logit units); `english`: by the English ranker (`reads_across_languages`)."""
        ranker = self.english if english and self.english is not None else self.sentence
        return ranker.scores(rows)

    def answer_probability(self, features: Mapping[str, float]) -> float:
        x = np.array([features.get(k, 0.0) for k in self.question_features], dtype=np.float64)
        z = float(((x - self.question_mean) / self.question_scale) @ self.question_weights + self.question_bias)
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


def reads_across_languages(profile: QuestionProfile, rows: Sequence[Mapping[str, float]]) -> bool:
    """Whether the English ranker orders this question's candidates: it has no Chinese character, and no
    candidate holds much of its words or their translations, so word overlaps say little ("For PaLM 540B, how
    much of the pretraining compute…"). Where its words are found ("How does QLoRA save memory?"), the shared
    ranker reads them as it reads a Chinese question's."""
    return profile.no_chinese and max((r.get("cover", 0.0) for r in rows), default=0.0) < ACROSS_LANGUAGES_COVER


@lru_cache(maxsize=1)
def default_model() -> ReaderModel:
    """The weights shipped with the package (refit with `python scripts/fit_reader.py`)."""
    text = resources.files("rag.answer").joinpath(WEIGHTS_FILE).read_text(encoding="utf-8")
    return ReaderModel.from_dict(json.loads(text))


EmbedPassages = Callable[[list[str]], np.ndarray]


class Reader:
    """Reads the top passages of one index for a question."""

    def __init__(
        self,
        index: IndexTerms,
        tokenizer: Tokenizer,
        model: ReaderModel | None = None,
        embed_passages: EmbedPassages | None = None,
        threshold: float | None = None,
    ) -> None:
        self.index = index
        self.tokenizer = tokenizer
        self.model = model or default_model()
        self.embed_passages = embed_passages
        self.threshold = self.model.threshold if threshold is None else threshold
        n = max(len(index), 1)
        self._max_idf = math.log((n + 0.5) / 0.5 + 1)

    # --- the question ---------------------------------------------------------------------------

    def profile(self, question: str, weighted: Mapping[str, float]) -> QuestionProfile:
        """The question's own words (IDF) and its expansion tokens (expansion weight x IDF)."""
        words = {}
        tokens = self.tokenizer.tokenize(question)
        text = normalize(question)
        for w in self.tokenizer.words(question):
            if len(w) > 1 or is_cjk(w):
                for part in known_words(w, text, tokens, self.index.has_term):
                    words[part] = self._idf(part)
        # a lone character the notes never index as a word is a fragment of one ("横" of 横纵坐标), not the
        # rarest word of the question: it weighs as little as the commonest word the notes know
        known = [v for w, v in words.items() if self.index.has_term(w)]
        for w in [w for w in words if len(w) == 1 and is_cjk(w) and not self.index.has_term(w)]:
            words[w] = min(known, default=words[w])
        # an attribute the search added ("limitations": 不足) counts when judging (`_judging_profile`), not ranking
        searched = {n for w in words if not self.index.has_term(w) for n in searched_attribute_names(w)}
        expansions = {
            t: wt * self._idf(t) for t, wt in weighted.items() if wt < 1.0 and t not in words and t not in searched
        }
        for term, weight in degree_variants(words).items():
            expansions.setdefault(term, weight)
        return profile_question(question, words, expansions, tokens)

    def _judging_profile(self, profile: QuestionProfile) -> QuestionProfile:
        """The profile whose English attribute words the notes never use count their answer type's Chinese words
        ("disadvantages": 缺点, 不足…); `profile` itself when there are none."""
        if not profile.no_chinese:
            return profile
        # at the word's own weight, also where the search already added them as weaker aliases
        translated = {
            term: weight
            for word, weight in profile.words.items()
            if not self.index.has_term(word) or is_remedy_verb(word)
            for term in attribute_translations(word)
        }
        if not translated:
            return profile
        return replace(profile, expansions={**profile.expansions, **translated}, attribute_words=translated)

    def _idf(self, term: str) -> float:
        return max(self.index.idf(term) if self.index.has_term(term) else self._max_idf, 0.1)

    # --- reading ----------------------------------------------------------------------------------

    def read(
        self,
        question: str,
        hits: Sequence[Hit],
        *,
        weighted: Mapping[str, float],
        query_vectors: np.ndarray | None,
        gate_score: float,
        gate_features: Mapping[str, float],
        name_forms: Mapping[str, Sequence[str]] | None = None,
        phrase_forms: Mapping[str, Sequence[str]] | None = None,
    ) -> Reading:
        """Rank the candidate sentences of the top passages and decide whether any of them answers;
        `phrase_forms`: the Chinese names of an English question's phrases (`rag.retrieval.phrase_forms`)."""
        profile = self.profile(question, weighted)
        passages = list(hits[:READ_PASSAGES])
        sentences = [split_passage(i, hit) for i, hit in enumerate(passages)]
        pool = [s for group in sentences for s in group if s.kind not in NOT_CANDIDATES]
        dense = self._dense(pool, query_vectors, passages) if pool else []
        features = self._features(profile, passages, sentences, pool, dense)
        # whether any sentence answers is judged on the shared ranker's scale, the one it was fitted on
        shared = self.model.rank_scores(features)
        across = reads_across_languages(profile, features)
        scores = self.model.rank_scores(features, english=True) if across else shared
        candidates = [Candidate(s, f, float(z)) for s, f, z in zip(pool, features, scores, strict=True)]
        candidates.sort(key=lambda c: (-c.score, c.passage, c.sentence.pos))
        # where a passage sits: its note's title and file, and its heading path
        headings = [normalize(" ".join((h.document_title, h.chunk.doc_id, *h.chunk.heading_path))) for h in passages]
        names = subject_names(question, profile, read_text(sentences, headings))
        naming = passages_naming(names, name_forms or {}, sentences, headings) if names else set()
        # without a Latin name, the passages that write its Chinese subject ("思维链") answer first, alike
        topic = naming if names else naming_topic(profile.subject, [read_text([g], []) for g in sentences], headings)
        candidates = leading_first(
            candidates, topic, asks_list="list" in profile.types, count=count_asked(question), subject=profile.subject,
            question=normalize(question), is_word=self.index.has_term, asks_compare="compare" in profile.types,
            lead_in=lambda c: list_lead_in(sentences[c.passage], c.sentence),
            asks_drawback=DRAWBACK_NAMED.search(question) is not None,
            takes_code=bool(profile.types & {"formula", "how"}),
            translated=[t for t in profile.expansions if is_cjk(t)] if profile.no_chinese else (),
            remedy_of=remedy_asked(question, profile),
            named_after=lambda c: name_given_after(sentences[c.passage], c.sentence),
            names_together=names_asked_together(question, self.index.has_term) if profile.no_chinese else (),
        )
        if lacks_figure(question, profile, candidates, sentences):  # else refused below, for want of a figure
            candidates = figure_first(candidates)
        if profile.no_chinese and not names:  # a Latin name the question is about decides first (above)
            candidates = translation_first(candidates, subject_phrase_names(question, phrase_forms or {}))
        # whether anything answers is judged with the English question's attribute words read in Chinese
        # ("disadvantages" found where the notes say 缺点); the ranking above is left as fitted
        judge = self._judging_profile(profile)
        judged = features if judge is profile else self._features(judge, passages, sentences, pool, dense)
        judged_scores = shared if judged is features else self.model.rank_scores(judged)
        q_features = question_features(judge, judged, list(judged_scores), gate_score, gate_features)
        probability = self.model.answer_probability(q_features)
        veto = refusal_rule(
            question, profile, candidates, sentences, gate_features, name_forms, headings, naming, phrase_forms,
            names_nothing=names_nothing(question, profile, self.tokenizer),
        )
        answerable = bool(candidates) and probability >= self.threshold and not veto
        if veto:
            reason = veto
        elif not candidates:
            reason = "the retrieved passages hold no sentence to quote"
        elif answerable:
            reason = "a sentence of the notes answers the question"
        else:
            reason = "no sentence of the retrieved passages answers the question"
        return Reading(
            profile, candidates, sentences, answerable, probability, self.threshold, q_features, reason, veto
        )

    def _features(
        self,
        q: QuestionProfile,
        passages: Sequence[Hit],
        sentences: Sequence[Sequence[Sentence]],
        pool: Sequence[Sentence],
        dense: Sequence[float],
    ) -> list[dict[str, float]]:
        """Every candidate's features; `dense`: each candidate's similarity to the question (`_dense`)."""
        if not pool:
            return []
        norms = {id(s): fold_hyphens(s.text) for group in sentences for s in group}
        best_dense = max(dense)
        passage_dense: dict[int, float] = {}
        for s, d in zip(pool, dense, strict=True):
            passage_dense[s.passage] = max(passage_dense.get(s.passage, -1.0), d)
        headings = [fold_hyphens(" ".join(h.chunk.heading_path)) for h in passages]
        passage_cover = [
            coverage(f"{headings[i]} {fold_hyphens(h.chunk.text)}", q.words, q.expansions) for i, h in enumerate(passages)
        ]
        best_cover = max(passage_cover) if passage_cover else 0.0
        top_score = passages[0].score if passages and passages[0].score > 0 else 1.0
        texts = [norms[id(s)] for s in pool]
        local = rarity_weights(sorted(q.tokens | set(q.expansions)), texts)
        own = set(q.tokens) | set(q.words)
        local = {t: w * (1.0 if t in own else 0.5) for t, w in local.items()}
        local_grams = rarity_weights(sorted(q.grams), texts)
        top_heading = headings[0] if headings else ""
        predicate = {t: w for t, w in q.words.items() if t not in top_heading}
        rows = []
        position = {id(s): i for i, s in enumerate(pool)}
        for s, d in zip(pool, dense, strict=True):
            # a piece of a sentence a line break cut is judged as the whole sentence the answer quotes
            group = sentences[s.passage]
            run = sentence_run(group, s)
            text = whole_sentence(group, s) if len(run) > 1 else s.text
            norm = fold_hyphens(text) if len(run) > 1 else norms[id(s)]
            d = max(dense[position[id(x)]] for x in (group[i] for i in run) if id(x) in position)
            prev = group[run.start - 1] if run.start > 0 else None
            nxt = group[run.stop] if run.stop < len(group) else None
            window = " ".join(norms[id(x)] if x is not s else norm for x in (prev, s, nxt) if x is not None)
            context = CandidateContext(
                text=text,
                norm=norm,
                heading=f"{headings[s.passage]} {fold_hyphens(s.heading)}",
                window=window,
                previous=prev.text if prev is not None else "",
                kind=s.kind,
                bullet=s.bullet,
                previous_bullet=bool(prev is not None and prev.bullet),
                position=s.pos,
                passage_sentences=len(group),
                passage_rank=s.passage + 1,
                fused_relative=passages[s.passage].score / top_score,
                passage_coverage_gap=passage_cover[s.passage] - best_cover,
                dense=d,
                dense_gap=d - best_dense,
                passage_dense_gap=passage_dense[s.passage] - best_dense,
            )
            rows.append(candidate_features(q, context, local, local_grams, predicate))
        return rows

    def _dense(
        self, pool: Sequence[Sentence], query_vectors: np.ndarray | None, passages: Sequence[Hit]
    ) -> list[float]:
        """Similarity of each candidate's "heading：sentence" vector to the question (or its translation), from
        the vector ingest stored for it; a sentence of a passage merged from several chunks may have been stored
        under another heading than it reads under now."""
        if query_vectors is None or len(query_vectors) == 0:
            return [0.0] * len(pool)
        texts = [reader_text(s.heading, s.text) for s in pool]
        vectors, found = self.index.reader_vectors(texts)
        missing = [i for i in range(len(texts)) if not found[i]]
        if missing:
            # ingest read each chunk alone: a sentence a merged passage reads under a heading line of its first chunk
            # was stored under the section's heading, and one under a line the passage reads as a list item
            # ("55. PolynomialDecay" before "56. ……") under that line. Section first, then each line up, one lookup.
            def headings(s: Sentence) -> tuple[str, ...]:
                chunk = passages[s.passage].chunk
                return (chunk.heading_path[-1] if chunk.heading_path else "", *lines_before(chunk.text, s.start))

            tried = [[reader_text(heading, pool[i].text) for heading in headings(pool[i])] for i in missing]
            stored, known = self.index.reader_vectors([text for group in tried for text in group])
            start = 0
            for i, group in zip(missing, tried, strict=True):
                first = next((start + j for j in range(len(group)) if known[start + j]), None)
                if first is not None:
                    vectors[i], found[i] = stored[first], True
                start += len(group)
            missing = [i for i in missing if not found[i]]
        if missing and self.embed_passages is not None:
            now = missing[:MAX_EMBEDDED_NOW]
            try:
                vectors[now] = np.asarray(self.embed_passages([texts[i] for i in now]), dtype=np.float32)
                found[now] = True
            except Exception:  # an embedder failure costs this feature, never the answer
                log.warning("embedding reader sentences failed; dense features left at the floor", exc_info=True)
        sims = (vectors @ np.asarray(query_vectors, dtype=np.float32).T).max(axis=1)
        floor = float(sims[found].min()) if found.any() else 0.0
        return [float(sims[i]) if found[i] else floor for i in range(len(texts))]


# One-character words that only ask ("这个怎么算？", "该怎么办呢"); any other may be a term of its own (熵, 秩).
_ASKING_CHARACTERS = frozenset("算办做用弄搞整该")


def remedy_asked(question: str, profile: QuestionProfile) -> str:
    """The problem a question asks how to fix: its rarest subject word of two characters or more that is no word of
    remedy ("过拟合" of "过拟合怎么解决？"); "" when it asks no fix, or names nothing that long ("长文本怎么办")."""
    if not asks_remedy(question):
        return ""
    words = [t for t in profile.subject if len(t) >= 2 and t not in REMEDY_WORDS and not is_remedy_verb(t)]
    return max(words, key=lambda t: profile.subject[t], default="")


def names_nothing(question: str, profile: QuestionProfile, tokenizer: Tokenizer) -> bool:
    """Whether the question names no subject, only what it asks about one ("有什么缺点？", "原理是什么？", "怎么解决？",
    "What are its drawbacks?"): every content word, and every own word the reader weighs, is a generic ask or a
    word of remedy."""
    def asks_only(words: Iterable[str]) -> bool:
        return all(w in GENERIC or w in _ASKING_CHARACTERS or w in REMEDY_WORDS or is_remedy_verb(w) for w in words)

    # the profile's words first: most questions name something there, and the jieba cut is then not needed
    return asks_only(profile.words) and asks_only(content_terms(question, tokenizer))


def reader_texts(chunks: Sequence[Chunk]) -> list[str]:
    """The texts ingest embeds for the reader: every candidate sentence of every chunk, with its heading."""
    texts: list[str] = []
    for chunk in chunks:
        hit = Hit(chunk=chunk, score=0.0, rank=0)
        texts.extend(reader_text(s.heading, s.text) for s in split_passage(0, hit) if s.kind not in NOT_CANDIDATES)
    return list(dict.fromkeys(texts))
