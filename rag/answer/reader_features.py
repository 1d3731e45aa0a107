"""Features of the reader: does this sentence answer this question? Pure functions over text and numbers.

A question is profiled once (its weighted terms, the answer types it asks for, its subject); every candidate
sentence of the top passages then gets a vector of general features: term coverage (IDF-weighted, aliases and
bridged terms counted, in the sentence, with its heading, in a window of neighbours, and weighted by how rare
the term is among the candidates), dense similarity of heading plus sentence to the question, the passage's
rank and fused score, the sentence's position and form, and whether it holds the asked answer type (the cues
are in `rag.answer_types`). Nothing here is tied to a question of an evaluation set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rag.answer.sentence_form import (
    LEAD_IN,
    PARENTHESES,
    SENTENCE_PUNCT,
    TITLE_CHARS,
    is_enumeration,
    is_link,
)
from rag.answer_types import QUESTION_TYPES, is_instruction, question_types, sentence_types
from rag.text import CJK_CHARS, char_bigrams, is_cjk, normalize

QUESTION_END = re.compile(r"[？?]\s*$")
_COUNT_UNIT = re.compile(f"(?:几|多少)([{CJK_CHARS}])")
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")

# Weight of a term that came from alias expansion or the cross-lingual bridge, relative to the question's own.
EXPANSION_SHARE = 1.0
SUBJECT_TERMS = 2  # the rarest own terms of a question stand for its subject
# A word that only asks ("哪儿" of "DCN-V2 改了哪儿？"), which the notes rarely write: never the question's subject
_ASKING_WORD = re.compile(r"哪(?:儿|里|边|些|个|种)?|什么|啥|怎么|咋|怎样|如何|为什么|为啥|多少|几")
SUBJECT_OPENING = 16  # characters: a sentence's subject stands at its start
# Features an English question gets its own copy of ("en_<name>", 0 for other questions): it reads Chinese notes
# through bridged terms and cross-lingual vectors, where the same figure means something else.
ENGLISH_SPECIFIC = ("dense_gap", "cover", "cover_window", "rank_inverse", "position", "predicate")


@dataclass(frozen=True)
class QuestionProfile:
    """What the reader knows about a question before it reads any sentence."""

    text: str
    words: dict[str, float]  # the question's own words, IDF-weighted
    expansions: dict[str, float]  # alias / bridged names' tokens, weighted by expansion weight x IDF
    tokens: frozenset[str]  # search-mode tokens of the question (for rarity among candidates)
    grams: frozenset[str]  # character bigrams / Latin terms of the question
    types: frozenset[str]  # answer types asked for
    subject: dict[str, float]  # the rarest own words
    count_units: tuple[str, ...]  # "几位" -> ("位",): a number with this unit answers
    english: bool  # mostly Latin letters (Chinese questions naming several Latin terms count)
    no_chinese: bool  # not one Chinese character: it reaches the notes only through translation
    # the Chinese words of the English attribute words the notes never use ("computed": 计算, 公式…), which
    # count for the asked predicate when judging whether anything answers (`rag.answer.reader`)
    attribute_words: Mapping[str, float] = field(default_factory=dict)

    @property
    def all_terms(self) -> dict[str, float]:
        return {**self.expansions, **self.words}


def mostly_latin(text: str) -> bool:
    letters = _LETTER.findall(text)
    return bool(letters) and sum(1 for c in letters if _LATIN.match(c)) / len(letters) > 0.5


def profile_question(
    text: str,
    words: Mapping[str, float],
    expansions: Mapping[str, float],
    tokens: Sequence[str],
) -> QuestionProfile:
    """Profile a question from its IDF-weighted words, its expansion tokens and its search tokens."""
    own = {normalize(w): float(v) for w, v in words.items()}
    extra = {normalize(t): float(v) for t, v in expansions.items() if normalize(t) not in own}
    # the subject: the rarest own words that are not the asked attribute (缺点, 公式, 区别 ...)
    named = {
        w: v
        for w, v in own.items()
        if not any(p.search(w) for p in QUESTION_TYPES.values()) and not _ASKING_WORD.fullmatch(w)
    }
    subject = dict(sorted(named.items(), key=lambda item: -item[1])[:SUBJECT_TERMS])
    return QuestionProfile(
        text=text,
        words=own,
        expansions=extra,
        tokens=frozenset(normalize(t) for t in tokens),
        grams=frozenset(char_bigrams(text)),
        types=question_types(text),
        subject=subject,
        count_units=tuple(dict.fromkeys(_COUNT_UNIT.findall(text))),
        english=mostly_latin(text),
        no_chinese=not is_cjk(text),
    )


def coverage(text: str, weights: Mapping[str, float], extra: Mapping[str, float] | None = None) -> float:
    """IDF-weighted share of `weights`' terms found in `text` (normalized); `extra` terms (aliases, bridged
    names) found there count towards the same total, so an alias can stand in for the word it translates."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    found = sum(w for term, w in weights.items() if term in text)
    if extra:
        found += EXPANSION_SHARE * sum(w for term, w in extra.items() if term in text)
    return min(1.0, found / total)


# A degree of an adjective ("太大", "过小") and the other ways notes say it ("较大", "偏小", "很大", and "越大……越" of
# what grows with it).
DEGREE_FORMS = ("太", "过", "较", "偏", "很", "更", "越")
_DEGREE = re.compile(rf"(?:{'|'.join(DEGREE_FORMS)})([大小高低多少快慢长短深浅])")


def degree_variants(words: Mapping[str, float]) -> dict[str, float]:
    """Every way of saying a degree the question asks, at the asked word's weight: "太大" asked, "较大的学习率"
    written."""
    out: dict[str, float] = {}
    for word, weight in words.items():
        degree = _DEGREE.fullmatch(word)
        if degree:
            for form in DEGREE_FORMS:
                out.setdefault(form + degree.group(1), weight)
    return out


# 即 as "namely", not 即可 ("and that is all"), 即使 / 即便 ("even if"), 即将, 即时; 是 not negated (不是, 并非是)
# nor asking (是否)
_DEFINED = r".{0,12}?(?:(?<![不非])是(?!否)|指|就是|即(?![可使便将时刻])|称为|可以看做|可以看作|refers to|is a|is an|means)"


def defined_share(text: str, subject: Mapping[str, float]) -> float:
    """Share of the subject's weight whose term the sentence goes on to define or describe ("X 是…", "X 的思想，就是…")."""
    total = sum(subject.values())
    if total <= 0:
        return 0.0
    # a gloss in parentheses sits between the term and its definition: "长度外推性（Length Extrapolation）是指…"
    text = PARENTHESES.sub("", text)
    # the plain test first: most sentences hold no subject term, and each term's pattern is compiled anew
    return sum(w for t, w in subject.items() if t in text and re.search(re.escape(t) + _DEFINED, text)) / total


def rarity_weights(terms: Sequence[str], texts: Sequence[str]) -> dict[str, float]:
    """Local IDF of each term among the candidate texts: a term in every sentence (the subject) says little
    about which sentence answers."""
    n = len(texts)
    return {t: math.log(1.0 + (n + 1) / (sum(1 for x in texts if t in x) + 0.5)) for t in dict.fromkeys(terms)}


def share(text: str, weights: Mapping[str, float]) -> float:
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in text) / total if total > 0 else 0.0


@dataclass(frozen=True)
class CandidateContext:
    """A candidate sentence with what surrounds it, all text normalized."""

    text: str  # the sentence as written (for form features)
    norm: str  # normalized sentence
    heading: str  # normalized heading path + nearest heading
    window: str  # normalized previous + this + next sentence
    previous: str  # the previous sentence as written ("" at the start)
    kind: str  # sentence kind from rag.answer.sentences
    bullet: bool
    previous_bullet: bool
    position: int  # index among the passage's sentences
    passage_sentences: int
    passage_rank: int  # 1-based
    fused_relative: float  # passage score / best passage score
    passage_coverage_gap: float  # passage coverage minus the best passage's coverage (<= 0)
    dense: float  # similarity of "heading：sentence" to the question (best of question and translation)
    dense_gap: float  # dense minus the best candidate's dense (<= 0)
    passage_dense_gap: float  # the passage's best dense minus the best candidate's dense (<= 0)


def candidate_features(
    q: QuestionProfile,
    c: CandidateContext,
    local: Mapping[str, float],
    local_grams: Mapping[str, float],
    predicate: Mapping[str, float],
) -> dict[str, float]:
    """The reader's features of one candidate sentence (names are the keys of the fitted weights)."""
    types = sentence_types(c.text)
    with_heading = f"{c.norm} {c.heading}"
    lead_in = bool(LEAD_IN.search(c.text))
    first_item = c.bullet and not c.previous_bullet
    f: dict[str, float] = {
        "cover": coverage(c.norm, q.words, q.expansions),
        "cover_heading": coverage(with_heading, q.words, q.expansions),
        "cover_window": coverage(f"{c.window} {c.heading}", q.words, q.expansions),
        "heading_only": coverage(c.heading, q.words, q.expansions),
        "local": share(c.norm, local),
        "local_window": share(c.window, local),
        "local_grams": share(c.norm, local_grams),
        "predicate": coverage(c.norm, predicate, q.attribute_words) if predicate else 0.0,
        "subject_heading": coverage(c.heading, q.subject) if q.subject else 0.0,
        "subject_opening": coverage(c.norm[:SUBJECT_OPENING], q.subject) if q.subject else 0.0,
        "subject_window": coverage(f"{c.window} {c.heading}", q.subject) if q.subject else 0.0,
        "subject_defined": defined_share(c.norm, q.subject),
        "grams": len(q.grams & char_bigrams(c.text)) / len(q.grams) if q.grams else 0.0,
        "dense": c.dense,
        "dense_gap": c.dense_gap,
        "passage_dense_gap": c.passage_dense_gap,
        "rank_inverse": 1.0 / c.passage_rank,
        "rank_first": float(c.passage_rank == 1),
        "fused_relative": c.fused_relative,
        "passage_coverage_gap": c.passage_coverage_gap,
        "position": c.position / max(1, c.passage_sentences),
        "opening": float(c.position <= 1),
        "lead_in": float(lead_in),
        "after_lead_in": float(bool(c.previous and LEAD_IN.search(c.previous))),
        "list_item": float(c.bullet),
        "code": float(c.kind == "code"),
        "short": float(c.kind == "short"),
        "length": min(1.0, len(c.text) / 120),
        "question_like": float(bool(QUESTION_END.search(c.text))),
        "instruction": float(is_instruction(c.text)),
        "title_like": float(len(c.text) <= TITLE_CHARS and not SENTENCE_PUNCT.search(c.text)),
        "enumeration": float(is_enumeration(c.text)),
        "link": float(is_link(c.text)),
    }
    for name in QUESTION_TYPES:
        f[f"type_{name}"] = float(name in q.types and name in types)
    # what follows from something is read as its cause is: the labelled questions ask "why" far more than "what happens"
    f["type_cause"] = max(f["type_cause"], f.pop("type_effect"))
    # the asked kind of answer among the question's words: a formula of another thing answers nothing
    f["type_near_terms"] = max(f[f"type_{name}"] for name in QUESTION_TYPES if name != "effect") * f["cover_window"]
    asks_list = "list" in q.types
    f["list_lead_in"] = float(asks_list and lead_in)
    f["list_first_item"] = float(asks_list and first_item)
    f["formula_code"] = float("formula" in q.types and c.kind == "code")
    f["definition_opening"] = float("definition" in q.types and c.position <= 1)
    f["count_unit"] = float(any(re.search(rf"\d\s*{re.escape(u)}", c.text) for u in q.count_units))
    for name in ENGLISH_SPECIFIC:
        f[f"en_{name}"] = f[name] if q.english else 0.0
    return f


def question_features(
    q: QuestionProfile,
    features: Sequence[Mapping[str, float]],
    scores: Sequence[float],
    gate_score: float,
    gate_features: Mapping[str, float],
) -> dict[str, float]:
    """Evidence that any candidate answers the question: the relevance gate's verdict, the best sentence's
    figures and whether a sentence of the asked type exists near the question's terms."""
    g = min(max(gate_score, 1e-4), 1 - 1e-4)
    out = {
        "gate_logit": math.log(g / (1 - g)),
        "english": float(q.english),
        "unknown_latin": float(gate_features.get("unknown_latin", 0.0)),
        "corpus_coverage": float(gate_features.get("corpus_coverage", 0.0)),
    }
    if not features:
        out.update(best_cover_window=0.0, best_dense=0.0, max_dense=0.0, max_local_window=0.0,
                   max_cover_heading=0.0, max_predicate=0.0, type_available=0.0, best_score=-10.0,
                   max_subject_window=0.0, best_states=0.0)
        return out
    best = max(range(len(features)), key=lambda i: scores[i])
    asked = [t for t in ("formula", "number") if t in q.types]
    available = 1.0
    if asked:
        available = max(f[f"type_{t}"] * f["cover_heading"] for f in features for t in asked)
    out.update(
        best_cover_window=features[best]["cover_window"],
        best_dense=features[best]["dense"],
        max_dense=max(f["dense"] for f in features),
        max_local_window=max(f["local_window"] for f in features),
        max_cover_heading=max(f["cover_heading"] for f in features),
        max_predicate=max(f["predicate"] for f in features),
        type_available=available,
        best_score=float(scores[best]),
        max_subject_window=max(f["subject_window"] for f in features),
        best_states=1.0 - max(features[best]["enumeration"], features[best]["link"], features[best]["title_like"]),
    )
    return out


def reader_text(heading: str, sentence: str, limit: int = 160) -> str:
    """The text a candidate sentence is embedded as: its nearest heading, then the sentence."""
    return f"{heading}：{sentence}"[:limit]
