"""A Chinese term the notes never write, spelled as they do: "全量微调" is written "全参数微调" in the notes; and a
Latin word mistyped ("transfomer") written as the notes write it ("transformer").

A user's word for a concept often differs from the notes' in its middle only: the same first character, the
same last word, a few characters of its own between (`rag.text.written_form`). BM25 cannot match such a
variant, and the question's own word for it weighs nothing, so a question about 全量微调 is answered with
sentences about 微调 in general. `notes_spellings` finds, for each word of the question that no passage
contains, the variant that the passages retrieved by the question's other words write most often; the
retriever then searches with the question as the notes would write it. `writes` says whether the notes write a
name at all, case, spaces and hyphens aside: the follow-up resolver names a version as they do ("GPT-2").
A Chinese word mistyped with a character of the same sound, as pinyin input methods do ("梯度小失", "加噪生",
"学习律"), is written as the passages write it ("梯度消失", "噪声", "学习率"): `sound_slips`. A colloquial way of
asking for a fix ("过拟合怎么办", "咋整") is asked as the notes would say it: "怎么解决".
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache

from pypinyin import Style, pinyin

from rag.index import IndexBackend
from rag.text import STOPWORDS, Tokenizer, is_cjk, written_forms

POOL = 30  # passages the variants are looked for in: those BM25 ranks first for the question's known words
MAX_COMPOUNDS = 8  # a long question's unknown compounds beyond these are left as written
COMMON_WORD = 100  # a word jieba's general dictionary counts this often is everyday language, not a term
# A Latin word no passage writes is read as a slip of the keys for one the passages write one letter away, when
# both are this long: shorter names one letter apart are other names ("BLOOMZ" is not BLOOM), and a version
# ("GPT-5") is never a slip, as digits are not letters.
MIN_SLIP_CHARS = 7
SOUND_SLIP_CHARS = 4  # a Chinese word this long or shorter may hold one character typed for another of the same sound
_LATIN_WORD = re.compile(rf"[a-z]{{{MIN_SLIP_CHARS},}}")
# Colloquial ways of asking for a fix. The notes say 解决 ("欠拟合的解决方法：", "能有效防止过拟合"), and these words
# are stopwords, so "过拟合怎么办？" asked about 过拟合 alone and was answered with its definition. Not 怎么破解 or
# 怎么整理, which ask something else.
_FIX_ASKED = re.compile(r"该?(?:怎么办|咋办|咋整|咋弄|怎么整(?![理合])|怎么破(?![解坏译]))")
FIX_WORDING = "怎么解决"


def first_passages(index: IndexBackend, query: Mapping[str, float], n: int) -> list[str]:
    """The texts of the `n` passages BM25 ranks first for the weighted `query` (none for an empty one)."""
    rows = [row for row, _ in index.keyword_search(query, n)] if query else []
    return [chunk.text for chunk in index.chunks(rows)] if rows else []


def question_pieces(query: str, tokenizer: Tokenizer) -> list[str]:
    """The question's jieba pieces, blanks left out: what both kinds of unwritten word are read from."""
    return [w for w in tokenizer.pieces(query) if w.strip()]


def unwritten_compounds(
    query: str, tokenizer: Tokenizer, index: IndexBackend, pieces: Sequence[str] | None = None
) -> list[str]:
    """The question's compounds of a word that no passage contains and the domain term that follows it ("全量"
    + "微调"): the domain term is what a variant must end with. The first word is one jieba's general dictionary
    does not know as everyday language ("好几个", "本事" are), and starts with no function character ("哪类").
    In question order, no repeats. `pieces`: the question's `question_pieces`, if known."""
    words = question_pieces(query, tokenizer) if pieces is None else pieces
    compounds: list[str] = []
    for word, head in itertools.pairwise(words):
        if len(compounds) >= MAX_COMPOUNDS:
            break
        if (
            _unknown_word(word, tokenizer, index)
            and all(is_cjk(ch) for ch in head)
            and tokenizer.is_user_word(head)
            and (compound := word + head) not in compounds
        ):
            compounds.append(compound)
    return compounds


def notes_spellings(query: str, tokens: Sequence[str], tokenizer: Tokenizer, index: IndexBackend) -> dict[str, str]:
    """{compound of the question: how the notes write it} for the question's compounds that no passage writes
    (`unwritten_compounds`), when the passages BM25 ranks first for its other words write a variant of it; and
    {Latin word: the word those passages write} for a long Latin word no passage writes, one slip away
    (`one_slip`)."""
    pieces = question_pieces(query, tokenizer)
    compounds = unwritten_compounds(query, tokenizer, index, pieces)
    misspelled = [t for t in dict.fromkeys(tokens) if _LATIN_WORD.fullmatch(t) and not index.has_term(t)]
    misspelled = misspelled[:MAX_COMPOUNDS]  # a long question's further unknown words are left as written
    slipped = unwritten_words(query, tokenizer, index, pieces)
    if not compounds and not misspelled and not slipped:
        return {}
    known = {t: 1.0 for t in tokens if index.has_term(t)}
    passages = first_passages(index, known, POOL)
    texts = [re.sub(r"\s+", "", text) for text in passages]
    if not texts:
        return {}
    spellings: dict[str, str] = {}
    written = Counter(w for text in passages for w in _LATIN_WORD.findall(text.lower())) if misspelled else Counter()
    for word in misspelled:  # "transfomer" where the passages write "Transformer"
        slips = [w for w in written if one_slip(word, w)]
        if slips:
            spellings[word] = max(slips, key=lambda w: (written[w], w))
    for compound in compounds:
        counts = Counter(form for text in texts for form in written_forms(compound, text) if form != compound)
        if counts:
            # the form written most often; among equals, the longest ("全参数微调", not "全微调" of 完全微调)
            spellings[compound] = max(counts, key=lambda form: (counts[form], len(form)))
    joined = "\n".join(texts)  # no slip spans a line: the patterns are Chinese characters only
    for word in slipped:
        if any(word in known for known in spellings):
            continue
        # a word of the notes that is a word of the language or a domain term, not a piece jieba cut ("值会")
        counts = Counter(
            form
            for form in sound_slips(word, joined)
            if index.has_term(form) and (tokenizer.general_frequency(form) > 0 or tokenizer.is_user_word(form))
        )
        if counts:
            spellings[word] = max(counts, key=lambda form: (counts[form], form))
    return spellings


def unwritten_words(
    query: str, tokenizer: Tokenizer, index: IndexBackend, pieces: Sequence[str] | None = None
) -> list[str]:
    """The question's Chinese words of 2-4 characters that no passage contains, no stopword, and that jieba's
    general dictionary barely knows (so not everyday language: "预料" stays), alone or with a one-character word
    after them, which jieba may have cut off ("过拟" + "和"). At most MAX_COMPOUNDS, in question order.
    `pieces`: the question's `question_pieces`, if known."""
    pieces = question_pieces(query, tokenizer) if pieces is None else pieces
    words: list[str] = []
    for i, piece in enumerate(pieces):
        if len(words) >= MAX_COMPOUNDS:
            break
        if not (
            len(piece) <= SOUND_SLIP_CHARS
            and piece not in STOPWORDS  # "老是" is chatter, not 老师 mistyped
            and _unknown_word(piece, tokenizer, index)
        ):
            continue
        following = pieces[i + 1] if i + 1 < len(pieces) else ""
        joined = piece + following if len(following) == 1 and is_cjk(following) else ""
        for word in (piece, joined):
            if word and word not in words and len(word) <= SOUND_SLIP_CHARS:
                words.append(word)
    return words[:MAX_COMPOUNDS]


def _unknown_word(word: str, tokenizer: Tokenizer, index: IndexBackend) -> bool:
    """A Chinese word of two characters or more that no passage writes, that starts with no function character
    ("哪类") and that jieba's general dictionary does not know as everyday language ("好几个", "本事", "预料")."""
    return (
        len(word) >= 2
        and all(is_cjk(ch) for ch in word)
        and word[0] not in STOPWORDS
        and tokenizer.general_frequency(word) < COMMON_WORD
        and not index.has_term(word)
    )


def sound_slips(word: str, text: str) -> list[str]:
    """Every word of `text` that is `word` with one character replaced by another of the same sound ("小失" ->
    "消失", "噪生" -> "噪声"), as often as `text` writes it."""
    out = []
    for i, ch in enumerate(word):
        # any character, checked after: a pattern with a class of every Chinese character compiles slowly
        pattern = re.escape(word[:i]) + "(.)" + re.escape(word[i + 1 :])
        for match in re.finditer(pattern, text):
            other = match.group(1)
            if other != ch and is_cjk(other) and _sounds(other) & _sounds(ch):
                out.append(match.group(0))
    return out


@lru_cache(maxsize=4096)
def _sounds(ch: str) -> frozenset[str]:
    """The toneless readings of a Chinese character ("率": lv, shuai, lve)."""
    return frozenset(pinyin(ch, style=Style.NORMAL, heteronym=True)[0])


def fix_asked_plainly(query: str) -> tuple[str, dict[str, str]]:
    """The question with each colloquial way of asking for a fix ("该怎么办", "咋整", "怎么破") written as the
    notes would ask it ("怎么解决"), and {what was written: what it became} for explain. A question that is
    nothing but the ask ("怎么办？", "那该怎么办呢") names no problem and stays as written."""
    found = {m.group(): FIX_WORDING for m in _FIX_ASKED.finditer(query)}
    rest = _FIX_ASKED.sub("", query)
    if not found or not any(ch.isalnum() and ch not in STOPWORDS for ch in rest):
        return query, {}
    return _FIX_ASKED.sub(FIX_WORDING, query), found


def respelled(query: str, spellings: dict[str, str]) -> str:
    """The query with each compound (or misspelled Latin word) of `spellings` written as the notes write it."""
    for compound, form in spellings.items():
        if _LATIN_WORD.fullmatch(compound):
            query = re.sub(rf"(?<![A-Za-z]){re.escape(compound)}(?![A-Za-z])", form, query, flags=re.I)
        else:
            query = query.replace(compound, form)
    return query


def one_slip(word: str, other: str) -> bool:
    """Whether `other` is `word` with one letter dropped, added, changed or two neighbours swapped."""
    if word == other or abs(len(word) - len(other)) > 1 or len(other) < MIN_SLIP_CHARS:
        return False
    if len(word) == len(other):
        diff = [i for i, (a, b) in enumerate(zip(word, other, strict=True)) if a != b]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and word[diff[0]] == other[diff[1]] and word[diff[1]] == other[diff[0]]
        return len(diff) == 1 or swapped
    short, long = sorted((word, other), key=len)
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    return short[i:] == long[i + 1 :]


def writes(name: str, tokenizer: Tokenizer, index: IndexBackend) -> bool:
    """Whether the notes write the name `name` ("DCN-V2" as "DCN-v2", "GPT-2" as "GPT2"; case, spaces and
    hyphens aside): a name of one token when they use the token, one of several when a passage BM25 finds for
    those tokens holds them in a row."""
    tokens = tokenizer.tokenize(name)
    if len(tokens) == 1 or not all(index.has_term(t) for t in tokens):
        return len(tokens) == 1 and index.has_term(tokens[0])
    key = _squeezed(name)
    return any(key in _squeezed(text) for text in first_passages(index, dict.fromkeys(tokens, 1.0), POOL))


def _squeezed(text: str) -> str:
    return re.sub(r"[\s\-_]+", "", text.lower())
