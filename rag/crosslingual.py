"""Cross-lingual bridging: English phrases of a question linked to the notes' Chinese-only terms.

The glossary links the names the notes spell out themselves ("灾难性遗忘（Catastrophic Forgetting）"). Many
terms have only a Chinese name ("折扣率: 又叫折扣因子"), and an English question about them matches nothing in
BM25, while a small multilingual embedder ranks the passage only loosely (cross-lingual similarities run low
and flat). So each English phrase of the question is compared with the embeddings of those Chinese-only
terms, computed at ingest and stored with the index.

Raw cosine favours "hub" terms that sit close to everything; CSLS (cross-domain similarity local scaling,
from bilingual lexicon induction) discounts each side's mean similarity to its nearest neighbours:

    csls(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)

with r_T(x) the mean cosine of phrase x to its k nearest Chinese terms and r_S(y) the mean cosine of term y
to its k nearest English names in the glossary. A phrase is linked to its best term when csls reaches the
threshold; the best-scoring phrases are taken first and a word joins at most one link. A single word counts
half (it must reach twice the threshold): alone, English words are ambiguous ("point", "store", "mount")
where a phrase names a concept.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from rag.text import CJK_CHARS, STOPWORDS, is_cjk, normalize, singular

# Question words that name no topic, on top of the shared stopwords.
_QUESTION_WORDS = frozenset(
    """
    mean means meaning stand stands known called used use uses using way ways much many far difference differ
    differs compare compared work works happen happens get make makes end need needs bring good best better
    some any all each other such also only just very really
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:[-'][a-z0-9]+)*|\S")
_UNIT = re.compile(rf"[{CJK_CHARS}]|[a-z0-9]+|[^\sa-z0-9{CJK_CHARS}]")
PROMPT_UNITS = 5  # the query prompt and the special tokens around a text
TRANSLATION_NAMES = 8  # Chinese names a translated question carries at most
# The term side's hubness is measured against the glossary's English names; a knowledge base with fewer than
# MIN_ANCHORS of them (a few personal notes) is measured against everyday English words instead, which stand
# for what an English question may say. Without them every phrase "links" to some term.
MIN_ANCHORS = 20
GENERIC_ANCHORS = tuple(
    """
    time year people way day man thing woman life child world school state family student group country problem
    hand part place case week company system program question work government number night point home water room
    mother area money story fact month lot right study book eye job word business issue side kind head house
    service friend father power hour game line end member law car city community name president team minute idea
    kid body information back parent face others level office door health person art war history party result
    change morning reason research girl guy moment air teacher force education food music price market
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_WORD = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_GLOSS_PHRASES = 24  # phrases a question is looked up by as glosses: a long question costs a bounded scan
_GLOSS_WORD_GAP = r"[\s-]*"  # "fine tuning" is glossed "fine-tuning" or "finetuning" too
_GLOSSED_RUN = re.compile(rf"([{CJK_CHARS}]{{2,12}})\s*$")

Embed = Callable[[Sequence[str]], np.ndarray]
SINGLE_WORD_FACTOR = 2.0  # a one-word phrase needs this multiple of the threshold
_PHRASE_PRIORITY = {2: 0, 3: 1, 1: 2}  # by words: the order phrases are tried in when there are too many


@dataclass(frozen=True, slots=True)
class Bridge:
    """One link: `phrase` of the question stands for `term`, one of the Chinese `names` of a glossary group."""

    phrase: str
    term: str
    names: tuple[str, ...]
    score: float  # CSLS


def english_phrases(query: str) -> list[list[str]]:
    """Runs of consecutive English content words: stopwords, question words, digits, CJK and punctuation
    break a run. "What does the discount factor mean in RL?" -> [["discount", "factor"], ["rl"]]."""
    runs: list[list[str]] = []
    current: list[str] = []
    for token in _TOKEN.findall(normalize(query)):
        word = token.split("'")[0]  # "openai's" -> "openai"
        if _WORD.fullmatch(word) and word not in STOPWORDS and word not in _QUESTION_WORDS and len(word) > 1:
            current.append(word)
            if "'" in token:  # a possessive ends the name
                runs.append(current)
                current = []
            continue
        if current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def mostly_english(query: str, share: float = 0.8) -> bool:
    """True when at least `share` of the question's letters are Latin (and there are some)."""
    letters = [c for c in normalize(query) if c.isalpha()]
    latin = sum(1 for c in letters if "a" <= c <= "z")
    return bool(letters) and latin / len(letters) >= share


class TermBridge:
    """Links English phrases to the notes' Chinese-only terms by CSLS over their stored embeddings.

    `terms` / `vectors` are the glossary names and heading terms embedded at ingest (as queries: term-to-term
    similarity is symmetric). Targets are the Chinese terms without an English alias (the others are
    already reachable through the glossary); anchors, used for the term side's hubness, are the glossary's
    English names. A target stands for its whole alias group; `exclude` lists terms never to link to.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[str]],
        terms: Sequence[str],
        vectors: np.ndarray,
        *,
        threshold: float = 0.04,
        neighbours: int = 10,
        max_words: int = 4,
        max_phrases: int = 5,
        exclude: Collection[str] = (),
    ) -> None:
        self.threshold = threshold
        self.max_words = max_words
        self.max_phrases = max_phrases
        self._k = neighbours
        group_of: dict[str, Sequence[str]] = {}
        for group in groups:
            for member in group:
                group_of.setdefault(member, group)
        target_rows: list[int] = []
        anchor_rows: list[int] = []
        self.targets: list[str] = []
        self.target_names: list[tuple[str, ...]] = []
        for row, term in enumerate(terms):
            group = group_of.get(term, (term,))
            if not is_cjk(term):
                if term in group_of:
                    anchor_rows.append(row)
            elif term not in exclude and all(is_cjk(member) for member in group):  # no English name yet
                target_rows.append(row)
                self.targets.append(term)
                self.target_names.append(tuple(group))
        dim = vectors.shape[1] if vectors.ndim == 2 else 0
        self._targets = np.asarray(vectors[target_rows], dtype=np.float32).reshape(len(target_rows), dim)
        self._anchors = np.asarray(vectors[anchor_rows], dtype=np.float32).reshape(len(anchor_rows), dim)
        self._target_hubness = self._hubness(self._anchors)
        self._generic_anchors = False

    @property
    def needs_anchors(self) -> bool:
        """Too few English names in the glossary to measure the terms' hubness: see `use_anchors`."""
        return len(self.targets) > 0 and len(self._anchors) < MIN_ANCHORS and not self._generic_anchors

    def use_anchors(self, vectors: np.ndarray) -> None:
        """Measure the terms' hubness against these English vectors too (`GENERIC_ANCHORS`, embedded as queries)."""
        self._target_hubness = self._hubness(np.vstack([self._anchors, np.asarray(vectors, dtype=np.float32)]))
        self._generic_anchors = True

    def _hubness(self, anchors: np.ndarray) -> np.ndarray:
        if not len(self._targets) or not len(anchors):
            return np.zeros(len(self._targets), dtype=np.float32)
        sims = self._targets @ anchors.T
        k = min(self._k, sims.shape[1])
        return np.sort(sims, axis=1)[:, -k:].mean(axis=1)

    def __len__(self) -> int:
        return len(self.targets)

    def link(
        self,
        query: str,
        embed: Embed,
        skip_words: Collection[str] = frozenset(),
        known: Callable[[str], bool] = lambda word: False,
    ) -> list[Bridge]:
        """Links for the English phrases of `query`, in query order. Words in `skip_words` (say, already
        matched by the glossary) break phrases and are never linked; a `known` word (one the notes contain as
        it is, so BM25 finds it unaided) is not tried on its own, only inside longer phrases."""
        if not len(self.targets):
            return []
        candidates: list[tuple[int, int, int, str]] = []  # (run, start, length, phrase)
        runs: list[list[str]] = []
        for run in english_phrases(query):
            for part in _split_at(run, skip_words):
                runs.append(part)
        for r, words in enumerate(runs):
            for length in range(min(self.max_words, len(words)), 0, -1):
                for start in range(len(words) - length + 1):
                    if length > 1 or _tried_alone(words, start, known):
                        candidates.append((r, start, length, " ".join(words[start : start + length])))
        # a long question costs one bounded model call: two-word phrases (what most links are) come first, then
        # longer ones, then single words
        candidates.sort(key=lambda c: _PHRASE_PRIORITY.get(c[2], len(_PHRASE_PRIORITY)))
        candidates = candidates[: self.max_phrases]
        if not candidates:
            return []
        vectors = embed([phrase for *_, phrase in candidates])
        sims = vectors @ self._targets.T  # (candidates, targets)
        k = min(self._k, sims.shape[1])
        phrase_hubness = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
        csls = 2 * sims - phrase_hubness[:, None] - self._target_hubness[None, :]
        best = np.argmax(csls, axis=1)
        # a one-word phrase counts half: it must reach twice the threshold, and a phrase beats its words
        effective = csls[np.arange(len(candidates)), best] / np.array(
            [1.0 if length > 1 else SINGLE_WORD_FACTOR for _, _, length, _ in candidates]
        )
        used = [[False] * len(words) for words in runs]
        links: list[tuple[int, int, Bridge]] = []
        for i in np.argsort(-effective, kind="stable"):  # best phrases first; a word joins one link
            r, start, length, phrase = candidates[i]
            if effective[i] < self.threshold:
                break
            if any(used[r][start : start + length]):
                continue
            term = int(best[i])
            links.append((r, start, Bridge(phrase, self.targets[term], self.target_names[term], float(csls[i, term]))))
            used[r][start : start + length] = [True] * length
        return [bridge for _, _, bridge in sorted(links, key=lambda item: (item[0], item[1]))]


def _tried_alone(words: list[str], i: int, known: Callable[[str], bool]) -> bool:
    """Whether word `i` of a run is tried as a phrase of its own: not when the notes contain it as it is (BM25
    finds it unaided), nor when it is one word of a longer run (unless a hyphenated compound such as
    "feed-forward"). A lone word must reach twice the threshold, so inside a run the phrases that hold it
    link it instead; tried alone, each word of a long question added a text to the model call and next to
    never a link."""
    word = words[i]
    return not known(word) and (len(words) == 1 or "-" in word)


def _split_at(words: list[str], skip: Collection[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word in skip or singular(word) in skip:
            parts.append([])
        else:
            parts[-1].append(word)
    return [part for part in parts if part]


def bridge_terms(groups: Sequence[Sequence[str]], words: Sequence[str]) -> list[str]:
    """What ingest embeds for the bridge: the distinct names of all alias groups, then the other `words`
    (the notes' heading terms), in order."""
    return list(dict.fromkeys([*(member for group in groups for member in group), *words]))


def translated_query(query: str, names: Sequence[str], limit: int = TRANSLATION_NAMES) -> str:
    """The question followed by the Chinese names its English terms stand for: "What is X? (中文名, ...)".

    The dense retriever sees this besides the question itself, so an English question can land near a
    passage that names its terms only in Chinese.
    """
    chosen = list(dict.fromkeys(names))[:limit]
    return f"{query} ({', '.join(chosen)})" if chosen else query


def text_units(text: str) -> int:
    """About how many model tokens `text` makes: one per Chinese character, Latin word or symbol."""
    return len(_UNIT.findall(normalize(text)))


def blended_translation(
    vector: np.ndarray, text: str, names: Sequence[str], name_vectors: Sequence[np.ndarray]
) -> np.ndarray:
    """The vector of `text` followed by `names` (as `translated_query` writes it) without a model call.

    A mean-pooled encoder's vector of a concatenation is about the length-weighted mean of its parts' vectors:
    `vector` is the embedding of `text`, `name_vectors` those of the names (stored at ingest). On the eval
    questions' translations its cosine to the embedded translation is 0.985 or more.
    """
    blend = vector * float(text_units(text) + PROMPT_UNITS)
    for name, name_vector in zip(names, name_vectors, strict=True):
        blend = blend + name_vector * float(text_units(name))
    return (blend / max(float(np.linalg.norm(blend)), 1e-12)).astype(np.float32)


def glossed_phrases(query: str, texts: Sequence[str]) -> dict[str, str]:
    """{English phrase of the question: the run of Chinese right before it, where `texts` give the phrase as a
    gloss in parentheses} ("指令微调（instruction tuning，正如……）" for "What is instruction tuning?"): the
    notes' own translation, for phrases of two to four words the glossary does not hold (it reads only
    heading-like lines). The phrase must be the whole gloss or its first item; longer phrases first, and a
    word joins one phrase; at most MAX_GLOSS_PHRASES phrases are tried."""
    texts = [text for text in map(normalize, texts) if "(" in text]
    found: dict[str, str] = {}
    tried = 0
    for run in english_phrases(query) if texts else []:
        used = [False] * len(run)
        for length in range(min(4, len(run)), 1, -1):
            for start in range(len(run) - length + 1):
                if any(used[start : start + length]) or tried >= MAX_GLOSS_PHRASES:
                    continue
                tried += 1
                words = run[start : start + length]
                # the parenthesis and the phrase first (a literal start keeps the scan fast), then the run before
                gloss = re.compile(rf"\(\s*{_GLOSS_WORD_GAP.join(map(re.escape, words))}\s*[,;:/)]")
                run_before = next(
                    (before.group(1) for text in texts for m in gloss.finditer(text)
                     if (before := _GLOSSED_RUN.search(text, max(0, m.start() - 16), m.start()))),
                    None,
                )
                if run_before:
                    found[" ".join(words)] = run_before
                    used[start : start + length] = [True] * length
    return found


def gloss_term(run: str, pieces: Sequence[str], known: Callable[[str], bool]) -> str:
    """The term a run of Chinese before a gloss ends with: what follows its last function word ("使用了指令微调"
    -> 指令微调), or the longest known term that ends it when that is all but a word shorter ("都会应用层归一化"
    -> 层归一化, but 全参数微调 stays whole rather than 微调). `pieces`: the run cut into words."""
    start = max((i + 1 for i, piece in enumerate(pieces) if piece in STOPWORDS), default=0)
    tail = "".join(pieces[start:])
    if len(tail) < 2:
        return run
    named = [t for i in range(start, len(pieces)) if len(t := "".join(pieces[i:])) >= 2 and known(t)]
    return named[0] if named and len(named[0]) >= len(tail) - 2 else tail


# What an English name's last word says of its kind, as a Chinese name ending in it writes it ("CAP theorem" is
# CAP理论 in the notes, "NFL theorem" NFL定理).
_KIND_IN_CHINESE = {
    "theorem": ("定理", "理论", "原理"),
    "theory": ("理论",),
    "principle": ("原理",),
    "algorithm": ("算法",),
    "mechanism": ("机制",),
    "function": ("函数",),
    "loss": ("损失",),
    "framework": ("框架",),
    "architecture": ("架构",),
}


def mixed_names(query: str, texts: Sequence[str]) -> dict[str, str]:
    """{English phrase of the question: the notes' name for it} for a name and its kind ("CAP theorem") that
    `texts` write as the name followed by the Chinese for its kind ("CAP理论"), as written there."""
    found: dict[str, str] = {}
    for run in english_phrases(query):
        for name, kind in itertools.pairwise(run):
            chinese = _KIND_IN_CHINESE.get(singular(kind))
            if not chinese or any(re.search(rf"\b{re.escape(kind)}\b", text, re.I) for text in texts):
                continue  # the passages write the kind word in English: the phrase needs no Chinese name
            written = re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}\s?(?:{'|'.join(chinese)})", re.I)
            match = next((m for text in texts if (m := written.search(text))), None)
            if match:
                found[f"{name} {kind}"] = match.group(0)
    return found
