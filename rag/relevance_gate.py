"""The relevance gate: whether the retrieved passages cover a question at all, before any sentence is read.

A logistic combination of a few figures (dense similarity of the best passage, IDF-weighted coverage of the
question's words in the top passages and in the whole index, BM25 strength, a name the notes never spell),
fitted by `scripts/calibrate_gate.py`. The reader (`rag.answer.reader`) takes its verdict as one input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rag.answer_types import attribute_translations
from rag.index import IndexBackend
from rag.question_names import ENGLISH_NAME, latin_names, without_glosses, written_together
from rag.text import (
    STOPWORDS,
    Tokenizer,
    char_bigrams,
    is_cjk,
    known_words,
    normalize,
    sentence_spans,
    spelled_as_one,
)
from rag.types import Hit

LATIN_WORD = re.compile(r"[a-z][a-z0-9+#\-]*[a-z0-9+#]|[a-z]{2,}")
TOGETHER_PASSAGES = 5  # the passages read for two Latin words of a question written apart in one of them
_LATIN_PHRASE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:[ \t]+[a-z][a-z0-9]*(?:-[a-z0-9]+)*)+")  # "kv cache"


@dataclass
class GateDecision:
    """Whether the retrieved evidence covers the question, with the figures behind the decision."""

    answerable: bool
    score: float
    threshold: float
    features: dict[str, float]
    reason: str


# Logistic weights of the relevance gate over `RelevanceGate.features`, fitted on the dev and
# calibration questions together (see README "Relevance gate"); the threshold is `Settings.gate_threshold`.
GATE_WEIGHTS: dict[str, float] = {
    "dense_top": 27.719,
    "coverage": 0.732,
    "window_coverage": 1.761,
    "corpus_coverage": 1.914,
    "bigram_coverage": 1.602,
    "bm25_norm": 4.075,
    "unknown_latin": -3.179,
    "latin_share": 0.729,
    "dense_x_latin": 0.844,
    "bias": -28.275,
}


def _alias_names(expansions: list[dict] | None) -> list[tuple[str, list[str]]]:
    """Each alias expansion of a question as (the words it matched, normalized; every name of its group)."""
    return [(normalize(item["matched"]), [item["matched"], *item["added"]]) for item in expansions or []]


class RelevanceGate:
    """Judges the evidence one retrieval found for a question, over one loaded index."""

    def __init__(
        self,
        index: IndexBackend,
        tokenizer: Tokenizer,
        alias_of: dict[str, list[str]],
        threshold: float,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.index = index
        self.tokenizer = tokenizer
        self._alias_of = alias_of  # normalized glossary name -> every name of its groups
        self.threshold = threshold
        self.weights = weights or GATE_WEIGHTS

    def features(
        self,
        query: str,
        weighted: dict[str, float],
        hits: list[Hit],
        dense: list[tuple[int, float]],
        bm25: list[tuple[int, float]],
        expansions: list[dict] | None = None,
    ) -> dict[str, float]:
        """Evidence that the notes answer `query`, each feature roughly in 0..1.

        coverage: IDF-weighted share of the question's words found in the top-3 passages (a word inside an
        alias the question names counts as found when any alias of it is there, so English questions about
        Chinese notes are not penalised); corpus_coverage: the same share over the whole vocabulary.
        """
        top_text = normalize(" ".join(h.chunk.index_text for h in hits[:3]))
        alias_names = _alias_names(expansions)
        text, tokens = normalize(query), self.tokenizer.tokenize(query)
        words = [
            part
            for w in self.tokenizer.words(query)
            if len(w) > 1 or is_cjk(w)
            for part in known_words(w, text, tokens, self.index.has_term)
        ]
        english = not is_cjk(query)
        total = found = in_corpus = 0.0
        for word in dict.fromkeys(words):
            known = self.index.has_term(word)
            weight = max(self.index.idf(word) if known else self._max_idf(), 0.1)
            total += weight
            names = self._names(word, alias_names, english)
            if any(normalize(m) in top_text for m in names):
                found += weight
            if known or any(self.index.has_term(normalize(m)) for m in names[1:]):
                in_corpus += weight
        coverage = found / total if total else 0.0
        window_coverage = self._window_coverage(words, hits[:3], alias_names, english)
        corpus_coverage = in_corpus / total if total else 0.0

        grams = char_bigrams(query)
        top_grams = char_bigrams(top_text)
        bigram_coverage = len(grams & top_grams) / len(grams) if grams else 0.0

        max_score = self.index.keyword_max_score(weighted) if weighted else 0.0
        bm25_norm = (bm25[0][1] / max_score) if bm25 and max_score > 0 else 0.0

        norm_query = normalize(query)
        unknown_latin = 0.0
        if is_cjk(query):
            named = without_glosses(norm_query, top_text)  # a gloss of a term the passages write names nothing new
            for term in set(LATIN_WORD.findall(named)):
                # "chatglm-6b" is indexed as "chatglm" + "6b": a compound the top passages spell is known, with a
                # space, "_" or nothing for any hyphen ("p-tuning-v2" of a resolved follow-up, "P-Tuning v2")
                spelled = spelled_as_one(term.split("-"))
                if len(term) >= 2 and not self.index.has_term(term) and term not in self._alias_of and not spelled.search(top_text):
                    unknown_latin = 1.0
            if _LATIN_PHRASE.search(named) and self._unknown_latin_phrase(named, query, top_text, hits):
                unknown_latin = 1.0
        elif self._unknown_english_name(query, top_text, alias_names):
            unknown_latin = 1.0
        letters = [c for c in norm_query if c.isalpha()]
        latin_share = sum(1 for c in letters if "a" <= c <= "z") / len(letters) if letters else 0.0
        dense_top = float(dense[0][1]) if dense else 0.0
        return {
            "dense_top": dense_top,
            "coverage": coverage,
            "window_coverage": window_coverage,
            "corpus_coverage": corpus_coverage,
            "bigram_coverage": bigram_coverage,
            "bm25_norm": min(bm25_norm, 1.0),
            "unknown_latin": unknown_latin,
            "latin_share": latin_share,
            # cross-lingual similarities run lower than same-language ones: let the gate weigh them apart
            "dense_x_latin": dense_top * latin_share,
        }

    def name_forms(self, query: str, expansions: list[dict] | None = None) -> dict[str, tuple[str, ...]]:
        """Every normalized form that counts for each name the question spells in Latin letters (itself, its
        glossary aliases, the alias groups the question names it in): "gan" -> ("gan", "生成对抗网络"); and for
        each Chinese name of an alias group the question spells, the group's names: "批归一化" -> ("批归一化",
        "批标准化")."""
        alias_names = _alias_names(expansions)
        forms = {
            name: tuple(dict.fromkeys(normalize(m) for m in self._names(name, alias_names, english=False)))
            for name in latin_names(query)
        }
        for matched, members in alias_names:
            if is_cjk(matched):
                forms.setdefault(matched, tuple(dict.fromkeys(normalize(m) for m in members)))
        return forms

    def _names(self, word: str, alias_names: list[tuple[str, list[str]]], english: bool) -> list[str]:
        """Every name that counts for `word`: itself, its glossary aliases, the members of the alias groups the
        question names it in, and for an English word the notes never use that asks for a kind of answer, the
        Chinese words of that kind ("disadvantages": 缺点, 不足…)."""
        names = list(self._alias_of.get(word, [word]))
        for matched, members in alias_names:
            if word in matched:
                names += members
        if english and not self.index.has_term(word):
            names += attribute_translations(word)
        return names

    def _window_coverage(
        self, words: list[str], hits: list[Hit], alias_names: list[tuple[str, list[str]]], english: bool = False
    ) -> float:
        """Best IDF-weighted share of the question's words inside 3 consecutive sentences of one passage.

        Whole passages can cover a question's words by accident; an answer usually sits in a few sentences.
        """
        unique = list(dict.fromkeys(words))
        if not unique or not hits:
            return 0.0
        variants = []
        for word in unique:
            names = self._names(word, alias_names, english)
            weight = max(self.index.idf(word) if self.index.has_term(word) else self._max_idf(), 0.1)
            variants.append(({normalize(n) for n in names}, weight))
        total = sum(w for _, w in variants)
        best = 0.0
        for hit in hits:
            text = normalize(hit.chunk.index_text)
            sentences = [text[a:b] for a, b in sentence_spans(text)] or [text]
            for i in range(len(sentences)):
                window = " ".join(sentences[i : i + 3])
                share = sum(w for names, w in variants if any(n in window for n in names)) / total
                best = max(best, share)
        return best

    def decide(self, features: dict[str, float]) -> GateDecision:
        """Logistic combination of the features against `Settings.gate_threshold`."""
        w = self.weights
        z = w.get("bias", 0.0) + sum(w.get(k, 0.0) * v for k, v in features.items())
        score = 1.0 / (1.0 + math.exp(-z))
        threshold = self.threshold
        answerable = score >= threshold
        if answerable:
            reason = "the retrieved passages cover the question"
        elif features.get("unknown_latin"):
            reason = "the question names a term that appears nowhere in the notes"
        else:
            reason = "the retrieved passages do not cover the question's terms"
        return GateDecision(answerable, score, threshold, features, reason)

    def _max_idf(self) -> float:
        n = max(len(self.index), 1)
        return math.log((n + 0.5) / 0.5 + 1)

    def _unknown_latin_phrase(self, norm_query: str, query: str, top_text: str, hits: Sequence[Hit]) -> bool:
        """A name of several Latin words in a Chinese question ("KV cache") of which no two neighbouring words
        make a term of the notes or a glossary name, or are spelled together in the top passages (with a space,
        "_", "-" or nothing between, stopwords kept: "python for ai"): each word may occur in the notes, the name
        does not. Two names side by side are no name of two words: "LSTM GRU", "word2vec CBOW", each typed as a
        name in `query` (acronyms, inner capitals, digits) and each a term of the notes. Nor are two words one of
        the first TOGETHER_PASSAGES `hits` writes both of, the way Chinese questions mix in English ("LoRA rank",
        "attention mask", "transformer encoder"): no passage writes both "kv" and "cache"."""
        typed_names = {normalize(m.group(0)) for m in ENGLISH_NAME.finditer(query)}
        passages = [normalize(h.chunk.index_text) for h in hits[:TOGETHER_PASSAGES]]
        for match in _LATIN_PHRASE.finditer(norm_query):
            words = match.group(0).split()
            content = [i for i, w in enumerate(words) if w not in STOPWORDS]
            if len(content) < 2 or " ".join(words) in self._alias_of:
                continue
            pairs = [words[a : b + 1] for a, b in zip(content, content[1:], strict=False)]
            if not any(
                self._known_name(pair)
                or spelled_as_one(pair).search(top_text)
                or self._two_names(pair, typed_names)
                or written_together(pair, passages)
                for pair in pairs
            ):
                return True
        return False

    def _two_names(self, pair: list[str], typed_names: Collection[str]) -> bool:
        """Two neighbouring words each typed as a name and each a term of the notes or a glossary name."""
        return len(pair) == 2 and all(w in typed_names and self._known_name([w]) for w in pair)

    def _unknown_english_name(self, query: str, top_text: str, alias_names: list[tuple[str, list[str]]]) -> bool:
        """A name in an English question ("HNSW", "efConstruction") that is no term of the notes, no glossary
        name, not spelled in the top passages and inside no phrase the glossary or the bridge linked."""
        linked = " ".join(matched for matched, _ in alias_names)
        for match in ENGLISH_NAME.finditer(query):
            name = normalize(match.group(0))
            spelled = spelled_as_one([name])
            if self.index.has_term(name) or name in self._alias_of or spelled.search(top_text) or spelled.search(linked):
                continue
            return True
        return False

    def _known_name(self, words: list[str]) -> bool:
        """The words, joined as one term ("pretraining", "pre-training"), are a term of the notes or a glossary name."""
        joined = ("".join(words), "-".join(words), " ".join(words))
        return any(self.index.has_term(name) or name in self._alias_of for name in joined)
